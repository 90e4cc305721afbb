"""The paradigms report: models grouped by paradigm → ``report_paradigms.md``, tables, figures.

    python -m sphere_bench.report.paradigms --runs results/runs --out results

Reads the records of the ``quick_paradigms`` preset (sweeps ``quick_paradigms_seg`` and
``quick_paradigms_cls``; ``--sweep`` picks others) and groups the models by paradigm
(:func:`paradigm`):

* **exact SO(3)** — the S2CNN (exact S²/SO(3) Fourier transforms on the SOFT grid);
* **S² local** — the DISCO CNN (torch-harmonics, local continuous kernels);
* **HEALPix graph** — the DeepSphere-style graph CNN (Chebyshev filters of the pixel graph);
* **planar CNN** — ordinary convolutions on the ``[beta, alpha]`` array.

Writes ``<out>/report_paradigms.md``, ``<out>/tables/paradigms_<task>.{md,csv}`` and
``<out>/figures/paradigms_*.png`` (metric vs N, metric vs parameters, metric vs latency,
equivariance error), never the quick preset's ``report.md``. The answer to "which paradigm gives
the best rotated-test score per parameter and per millisecond" is computed from the records: for
each paradigm its best R-test score over the training rotations, divided by its parameters (per
100k) and by its batch-1 forward latency (per ms).
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from sphere_bench.io import atomic_write_text
from sphere_bench.report.records import flatten, load_runs, to_float
from sphere_bench.report.text import markdown_table
from sphere_bench.schema import ROTATION_LABEL

log = logging.getLogger(__name__)

PARADIGMS = ("exact SO(3)", "S² local (DISCO)", "HEALPix graph", "planar CNN")
COLORS = dict(zip(PARADIGMS, ("tab:red", "tab:green", "tab:purple", "tab:blue"), strict=True))
DEFAULT_SWEEPS = ("quick_paradigms_seg", "quick_paradigms_cls")
METRIC = {"segmentation": "mIoU (non-background, %)", "classification": "accuracy (%)"}


def paradigm(model_name: str) -> str:
    """The paradigm of a zoo model from its config name (``s2cnn_*``, ``disco_*``, ``hpgcnn_*``)."""
    name = model_name.lower()
    if name.startswith("s2cnn") or name.startswith("fa_s2cnn"):
        return "exact SO(3)"
    if name.startswith("disco"):
        return "S² local (DISCO)"
    if name.startswith("hpgcnn"):
        return "HEALPix graph"
    return "planar CNN"


def frame(records: Sequence[dict]) -> pd.DataFrame:
    """One row per record: :func:`sphere_bench.report.records.flatten` plus paradigm columns."""
    rows = []
    for record in records:
        row = flatten(record)
        equiv = (record.get("evaluation") or {}).get("equivariance") or {}
        row["paradigm"] = paradigm(row["model"])
        row["eq_spectral"] = to_float(equiv.get("spectral_rel_error"))
        row["eq_floor"] = to_float(equiv.get("spectral_floor"))
        row["eq_lmax"] = to_float(equiv.get("spectral_lmax"))
        row["grid"] = row.get("grid") or "soft"
        rows.append(row)
    return pd.DataFrame(rows)


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per (task, paradigm, model, grid, rotate_train, n_train)."""
    keys = ["task", "paradigm", "model", "grid", "rotate_train", "n_train"]
    values = [
        "parameters",
        "test_nr",
        "test_r",
        "lat_b1_ms",
        "lat_b32_ms",
        "thr_b32",
        "mem_b32_mb",
        "eq_grid",
        "eq_haar",
        "eq_spectral",
        "eq_floor",
        "train_seconds",
    ]
    present = [v for v in values if v in df]
    agg = df.groupby(keys, dropna=False)[present].mean().reset_index()
    agg["seeds"] = df.groupby(keys, dropna=False).size().to_numpy()
    agg["order"] = agg["paradigm"].map({p: i for i, p in enumerate(PARADIGMS)})
    return agg.sort_values(["task", "order", "model", "rotate_train", "n_train"])


def _f(value: float, digits: int = 1) -> str:
    return (
        "–"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (f"{value:.{digits}f}")
    )


def _eq(row: pd.Series) -> float:
    return row["eq_spectral"] if row["task"] == "segmentation" else row["eq_haar"]


def task_table(agg: pd.DataFrame, task: str) -> tuple[list[str], list[list[str]]]:
    headers = [
        "paradigm",
        "model",
        "grid",
        "params",
        "trained on",
        "N",
        "NR test",
        "R test",
        "latency b=1 (ms)",
        "latency b=32 (ms)",
        "img/s b=32",
        "equivariance error",
        "floor",
        "half-turn error",
        "train (s)",
    ]
    rows = []
    for _, r in agg[agg["task"] == task].iterrows():
        rows.append(
            [
                r["paradigm"],
                r["model"],
                r["grid"],
                f"{int(r['parameters']):,}",
                ROTATION_LABEL.get(r["rotate_train"], r["rotate_train"]),
                f"{int(r['n_train']):,}",
                _f(r["test_nr"]),
                _f(r["test_r"]),
                _f(r["lat_b1_ms"], 2),
                _f(r["lat_b32_ms"], 1),
                _f(r["thr_b32"], 0),
                _f(_eq(r), 3),
                _f(r["eq_floor"], 3),
                _f(r["eq_grid"], 3),
                _f(r["train_seconds"], 0),
            ]
        )
    return headers, rows


def answer(agg: pd.DataFrame, task: str) -> tuple[pd.DataFrame, list[str]]:
    """Per paradigm its best R-test score and that score per 100k parameters and per ms."""
    part = agg[agg["task"] == task].dropna(subset=["test_r"])
    if part.empty:
        return pd.DataFrame(), []
    best = part.loc[part.groupby("paradigm")["test_r"].idxmax()].copy()
    best["per_100k_params"] = best["test_r"] / (best["parameters"] / 1e5)
    best["per_ms"] = best["test_r"] / best["lat_b1_ms"]
    best["per_ms_b32"] = best["test_r"] / (best["lat_b32_ms"] / 32)
    best = best.sort_values("test_r", ascending=False)
    metric = METRIC[task].split(" (")[0]
    lines = []
    top = best.iloc[0]
    lines.append(
        f"- Best rotated-test {metric}: **{top['paradigm']}** ({top['model']}, trained on "
        f"{ROTATION_LABEL.get(top['rotate_train'])}) with {top['test_r']:.1f} %."
    )
    for column, what in (
        ("per_100k_params", "per 100k parameters"),
        ("per_ms", "per ms of batch-1 forward latency"),
        ("per_ms_b32", "per ms of forward time per image at batch 32"),
    ):
        ranked = best.sort_values(column, ascending=False)
        first, second = ranked.iloc[0], ranked.iloc[1] if len(ranked) > 1 else None
        tail = f"; next {second['paradigm']} ({second[column]:.1f})" if second is not None else ""
        lines.append(
            f"- Best rotated-test {metric} {what}: **{first['paradigm']}** "
            f"({first['test_r']:.1f} % → {first[column]:.1f}{tail})."
        )
    return best, lines


# ------------------------------------------------------------------------------------------------
# figures
# ------------------------------------------------------------------------------------------------
def _scatter(agg: pd.DataFrame, task: str, x: str, xlabel: str, path: Path, log_x: bool) -> Path:
    import matplotlib.pyplot as plt

    part = agg[agg["task"] == task]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, (col, title) in zip(axes, (("test_nr", "NR test"), ("test_r", "R test")), strict=True):
        for _, r in part.iterrows():
            marker = "o" if r["rotate_train"] == "none" else "^"
            ax.scatter(r[x], r[col], color=COLORS[r["paradigm"]], marker=marker, s=60)
            ax.annotate(
                r["model"], (r[x], r[col]), fontsize=6, xytext=(3, 3), textcoords="offset points"
            )
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        if log_x:
            ax.set_xscale("log")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel(METRIC[task])
    handles = [plt.Line2D([], [], color=c, marker="s", ls="", label=p) for p, c in COLORS.items()]
    handles += [
        plt.Line2D([], [], color="k", marker=m, ls="", label=f"trained on {t}")
        for m, t in (("o", "NR"), ("^", "R"))
    ]
    axes[1].legend(handles=handles, fontsize=7, loc="best")
    fig.suptitle(f"{task}: {METRIC[task]} vs {xlabel}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _equivariance_figure(agg: pd.DataFrame, task: str, path: Path) -> Path | None:
    import matplotlib.pyplot as plt

    part = agg[agg["task"] == task].copy()
    part["eq"] = part.apply(_eq, axis=1)
    part = part.dropna(subset=["eq"])
    if part.empty:
        return None
    fig, ax = plt.subplots(figsize=(8, 3.6))
    labels = []
    for i, (_, r) in enumerate(part.iterrows()):
        ax.bar(i, r["eq"], color=COLORS[r["paradigm"]])
        if task == "segmentation" and not math.isnan(r["eq_floor"]):
            ax.plot([i - 0.4, i + 0.4], [r["eq_floor"]] * 2, "k--", lw=1)
        labels.append(f"{r['model']}\n({ROTATION_LABEL.get(r['rotate_train'])})")
    ax.set_xticks(range(len(labels)), labels, fontsize=6, rotation=30, ha="right")
    what = (
        "spectral equivariance error (degree < L); dashes: floor (identity)"
        if task == "segmentation"
        else "logit change under Haar rotations"
    )
    ax.set_ylabel("relative error")
    ax.set_title(f"{task}: {what}", fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------
def build(runs_dir: Path, out_dir: Path, sweeps: Sequence[str]) -> Path:
    """Write the paradigms report; returns the path of ``report_paradigms.md``."""
    runs = load_runs(runs_dir, list(sweeps))
    if not runs.complete:
        raise SystemExit(
            f"no complete records of sweeps {', '.join(sweeps)} under {runs_dir}; run "
            "`make sweep PRESET=quick_paradigms` (or python -m sphere_bench.train -m "
            "experiment=quick_paradigms) first"
        )
    agg = aggregate(frame(runs.complete))
    tables, figures = out_dir / "tables", out_dir / "figures"
    tables.mkdir(parents=True, exist_ok=True)
    figures.mkdir(parents=True, exist_ok=True)
    md = [
        "# Four paradigms on spherical MNIST",
        "",
        f"Records: {len(runs.complete)} complete, {len(runs.failed)} failed, sweeps "
        f"{', '.join(sweeps)} (`python -m sphere_bench.report.paradigms`). Paradigms: exact SO(3) "
        "(S2CNN), S² local (DISCO, torch-harmonics), HEALPix graph (DeepSphere-style Chebyshev "
        "filters), planar CNN. Every model sees the same digits under the same rotations, "
        "projected onto its own grid. Metrics in percent; latency is the forward pass on the "
        "evaluation device (median); the equivariance error is the relative L² change of the "
        "degree-< L output under Haar rotations of the input (segmentation; the floor is the "
        "same comparison for the identity, what the grid contributes for inputs like these; a "
        "smoother output can score below it) or the relative logit change (classification); the "
        "half-turn error is that under the grid's exact half-turns (0 for an exactly equivariant "
        "model). Latencies come from each training job's evaluation step (1 warm-up, 3 repeats): "
        "on a machine shared with other jobs they vary several-fold between jobs, so read the "
        "per-ms ranking only from records made on a quiet machine.",
        "",
    ]
    for failed in runs.failed:
        md.append(f"- failed: {failed.get('run_name')}: {(failed.get('error') or {}).get('type')}")
    for task in ("segmentation", "classification"):
        if not (agg["task"] == task).any():
            continue
        headers, rows = task_table(agg, task)
        table = markdown_table(headers, rows)
        atomic_write_text(tables / f"paradigms_{task}.md", table)
        atomic_write_text(tables / f"paradigms_{task}.csv", agg[agg["task"] == task].to_csv())
        best, lines = answer(agg, task)
        md += [
            f"## {task.capitalize()}",
            "",
            table,
            "### Which paradigm gives the best "
            "rotated-test score per parameter and per millisecond?",
            "",
            *lines,
            "",
        ]
        if not best.empty:
            md += [
                markdown_table(
                    [
                        "paradigm",
                        "model",
                        "R test",
                        "params",
                        "per 100k params",
                        "latency b=1 (ms)",
                        "per ms (b=1)",
                        "per ms per image (b=32)",
                    ],
                    [
                        [
                            r["paradigm"],
                            r["model"],
                            _f(r["test_r"]),
                            f"{int(r['parameters']):,}",
                            _f(r["per_100k_params"]),
                            _f(r["lat_b1_ms"], 2),
                            _f(r["per_ms"]),
                            _f(r["per_ms_b32"]),
                        ]
                        for _, r in best.iterrows()
                    ],
                ),
                "",
            ]
        for kind, x, label, log_x in (
            ("n", "n_train", "N (training spheres)", True),
            ("params", "parameters", "parameters", True),
            ("latency", "lat_b1_ms", "batch-1 latency (ms)", True),
        ):
            path = _scatter(agg, task, x, label, figures / f"paradigms_{task}_vs_{kind}.png", log_x)
            md.append(f"![{task} vs {kind}](figures/{path.name})")
        eq_path = _equivariance_figure(agg, task, figures / f"paradigms_{task}_equivariance.png")
        if eq_path is not None:
            md.append(f"![{task} equivariance](figures/{eq_path.name})")
        md.append("")
    devices = sorted({str(v) for v in frame(runs.complete)["eval_device"].dropna()})
    md += [f"Evaluation device(s): {', '.join(devices) or 'unknown'}.", ""]
    report = out_dir / "report_paradigms.md"
    atomic_write_text(report, "\n".join(md))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="results/runs", help="folder of <sweep>/<hash>.json")
    parser.add_argument("--out", default="results", help="report_paradigms.md, tables/, figures/")
    parser.add_argument("--sweep", action="append", help="sweep names (repeatable)")
    args = parser.parse_args(argv)
    path = build(Path(args.runs), Path(args.out), args.sweep or list(DEFAULT_SWEEPS))
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

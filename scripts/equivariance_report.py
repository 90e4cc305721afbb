"""Report of the quick_equivariance preset: routes to rotation robustness, score vs cost.

Reads the records of ``<runs>/quick_equivariance`` and ``<out>/ensemble.json`` (written by
``python -m sphere_bench.evaluate.ensemble``) and writes ``<out>/report.md``,
``<out>/routes.csv`` and ``<out>/figures/routes.png``: for every route (plain CNN on NR, CNN with
augmentation, frame averaging, soft-equivariance penalty, deep ensembles of K CNNs, S2CNN with
and without the anti-aliased ReLU) its R-test accuracy, NR-test accuracy, equivariance errors,
parameters, training time and inference latency, and for each R-test level the cheapest route
that reaches it. An ensemble's training time is the sum of its members' and its latency the sum
of their latencies (members run one after the other).

    python scripts/equivariance_report.py --runs results/runs --out results/equivariance
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from sphere_bench.io import atomic_write_text
from sphere_bench.report.figures import pyplot, save_figure
from sphere_bench.report.records import load_runs

SWEEP = "quick_equivariance"
SOFT_NET = "bl_cnn_cls_quick_115k"  # the network of the soft-equivariance runs
PASSES_NET = "cnn_cls_quick_115k"  # routes built on this CNN compare by network passes
BASE_EPOCHS = 6  # the preset's epochs; other epoch counts are named in the labels


def _latency(record: dict[str, Any], batch: int = 32) -> float:
    for entry in (record.get("evaluation") or {}).get("latency", []):
        if entry.get("batch_size") == batch:
            return float(entry["median_ms"])
    return math.nan


def _weight(record: dict[str, Any]) -> float:
    return float(record["config"].get("lit", {}).get("equivariance_weight", 0.0) or 0.0)


def _epochs(record: dict[str, Any]) -> int:
    return int(record["config"].get("trainer", {}).get("max_epochs", 0) or 0)


def passes_per_sample(record: dict[str, Any]) -> int:
    """Forward+backward passes of the network per training sample over the whole training.

    ``epochs × (3 with the soft-equivariance penalty: the cross-entropy on x, the penalty on
    P_B x and R P_B x; else 1) × (4 for a frame-averaged model: one pass per frame element)``.
    The training-cost unit of the report (machine- and load-independent); comparable between
    routes built on the same network.
    """
    passes = 3 if _weight(record) > 0 else 1
    if record["model"]["name"].startswith("fa_"):
        passes *= 4
    return _epochs(record) * passes


def _route(record: dict[str, Any]) -> tuple[str, str]:
    """(route, label) of one record."""
    config = record["config"]
    model = record["model"]["name"]
    rot = record["data"]["rotate_train"]
    weight = _weight(record)
    oversampling = float(config.get("model", {}).get("oversampling", 1.0) or 1.0)
    train = "R" if rot == "random" else "NR"
    epochs = _epochs(record)
    suffix = f", {epochs} ep" if epochs and epochs != BASE_EPOCHS else ""
    augmented = " + augmentation" if train == "R" else ""
    if model.startswith("fa_"):
        return "frame averaging", f"{model} ({train}{suffix})"
    if weight > 0:
        return "soft equivariance" + augmented, f"{model} λ={weight:g} ({train}{suffix})"
    if model.startswith("bl_"):
        return "band-limited CNN" + augmented, f"{model} λ=0 ({train}{suffix})"
    if model.startswith("s2cnn"):
        if oversampling > 1:
            return "S2CNN anti-aliased", f"{model} ReLU×{oversampling:g} ({train})"
        return "S2CNN", f"{model} ({train})"
    return ("augmentation" if train == "R" else "plain CNN"), f"{model} ({train}{suffix})"


def rot_random(record: dict[str, Any]) -> bool:
    return record["data"]["rotate_train"] == "random"


def latest_records(runs_dir: Path) -> list[dict[str, Any]]:
    """The complete records of the sweep, one per config: where records of the same config
    carry different hashes (written under an older hashing rule), the latest finished."""
    latest: dict[str, dict[str, Any]] = {}
    for r in sorted(load_runs(runs_dir, [SWEEP]).complete, key=lambda r: r.get("finished_at", "")):
        latest[json.dumps(r["config"], sort_keys=True, default=str)] = r
    return list(latest.values())


def collect(runs_dir: Path, out_dir: Path) -> list[dict[str, Any]]:
    """One row per route: metrics and costs (see the module docstring)."""
    records = latest_records(runs_dir)
    rows = []
    seeds: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in records:
        key = (record["model"]["name"], record["data"]["rotate_train"])
        seeds.setdefault(key, []).append(record)
        if int(record.get("seed", 0)) != 0:
            continue  # ensemble members: in the ensemble rows
        route, label = _route(record)
        eq = (record.get("evaluation") or {}).get("equivariance", {})
        rows.append({
            "route": route, "label": label, "parameters": record["model"]["parameters"],
            "model": record["model"]["name"], "train": "R" if rot_random(record) else "NR",
            "weight": _weight(record), "epochs": _epochs(record),
            "passes": passes_per_sample(record),
            "n_train": record["data"]["n_train"],
            "r_acc": 100 * record["test"]["r"]["acc"], "nr_acc": 100 * record["test"]["nr"]["acc"],
            "haar_error": eq.get("haar_rel_error", math.nan),
            "haar_changed": eq.get("haar_changed_fraction", math.nan),
            "grid_error": eq.get("grid_rel_error", math.nan),
            "train_seconds": float(record["timing"]["train_seconds"]),
            "latency_ms_b32": _latency(record),
        })  # fmt: skip
    ensemble_path = out_dir / "ensemble.json"
    if ensemble_path.is_file():
        ensembles = json.loads(ensemble_path.read_text())
        for group, entry in ensembles.items():
            model, _, rot, _ = group.split("/")[:4]
            rot = rot.removeprefix("rot_")
            members = sorted(seeds.get((model, rot), []), key=lambda r: int(r.get("seed", 0)))
            for row in entry["rows"]:
                k = row["k"]
                if k == 1:
                    continue  # = the seed-0 CNN, already a row
                used = members[:k]
                train = "R" if rot == "random" else "NR"
                eq = row["equivariance"]
                rows.append({
                    "route": "ensemble" + (" + augmentation" if train == "R" else ""),
                    "label": f"{k} × {model} ({train})",
                    "parameters": k * used[0]["model"]["parameters"] if used else math.nan,
                    "model": model, "train": train, "weight": 0.0,
                    "epochs": _epochs(used[0]) if used else math.nan,
                    "passes": sum(passes_per_sample(r) for r in used)
                    if len(used) == k else math.nan,
                    "n_train": used[0]["data"]["n_train"] if used else math.nan,
                    "r_acc": 100 * row["test"]["r"]["acc"],
                    "nr_acc": 100 * row["test"]["nr"]["acc"],
                    "haar_error": eq.get("haar_rel_error", math.nan),
                    "haar_changed": eq.get("haar_changed_fraction", math.nan),
                    "grid_error": eq.get("grid_rel_error", math.nan),
                    "train_seconds": sum(float(r["timing"]["train_seconds"]) for r in used)
                    if len(used) == k else math.nan,
                    "latency_ms_b32": sum(_latency(r) for r in used)
                    if len(used) == k else math.nan,
                })  # fmt: skip
    return sorted(rows, key=lambda r: (-r["r_acc"], r["train_seconds"]))


def _pick(reach: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    finite = [r for r in reach if r[key] == r[key]]  # drop NaN costs
    return min(finite, key=lambda r: (r[key], -r["r_acc"])) if finite else None


def cheapest(rows: list[dict[str, Any]], levels: list[float]) -> list[str]:
    """Per R-test level: the route cheapest to train (measured seconds), the route with the
    fewest network passes per training sample among those built on ``PASSES_NET`` (the same
    network, so passes compare), and the fastest at inference; each with its R-test accuracy."""
    lines = [
        "| R-test accuracy ≥ | cheapest to train (s) | R (%) | training (s) | fewest passes, "
        f"{PASSES_NET} routes | R (%) | passes / sample | fastest at inference | R (%) | "
        "latency batch 32 (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for level in levels:
        reach = [r for r in rows if r["r_acc"] >= level]
        if not reach:
            lines.append(f"| {level:.0f} % | none reaches it | | | | | | | | |")
            continue
        cells = [f"{level:.0f} %"]
        for key, pool, fmt in (
            ("train_seconds", reach, "{:.0f}"),
            ("passes", [r for r in reach if r["model"].endswith(PASSES_NET)], "{:.0f}"),
            ("latency_ms_b32", reach, "{:.1f}"),
        ):
            best = _pick(pool, key)
            if best is None:
                cells += ["none reaches it", "", ""]
            else:
                cells += [f"{best['label']} [{best['route']}]", f"{best['r_acc']:.1f}",
                          fmt.format(best[key])]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def soft_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The band-limited CNN's rows (every λ and epoch count), NR before R, then λ, then epochs."""
    sel = [r for r in rows if r["model"] == SOFT_NET]
    return sorted(sel, key=lambda r: (r["train"] != "NR", r["weight"], r["epochs"]))


def soft_table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown table of the soft-equivariance runs (:func:`soft_rows`)."""
    lines = [
        "| training | λ | epochs | passes / sample | R acc (%) | NR acc (%) | Haar error | "
        "Haar changed | grid error | training (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in soft_rows(rows):
        lines.append(
            f"| {r['train']} | {r['weight']:g} | {r['epochs']} | {r['passes']} | "
            f"{r['r_acc']:.1f} | {r['nr_acc']:.1f} | {r['haar_error']:.3f} | "
            f"{r['haar_changed']:.3f} | {r['grid_error']:.2g} | {r['train_seconds']:.0f} |"
        )
    return lines


def soft_summary(rows: list[dict[str, Any]]) -> list[str]:
    """One sentence per training set: the best penalty run vs the λ = 0 run at equal cost."""
    sentences = []
    for train in ("NR", "R"):
        mine = [r for r in soft_rows(rows) if r["train"] == train]
        penalty = [r for r in mine if r["weight"] > 0]
        equal = [r for r in mine if r["weight"] == 0 and r["epochs"] == 3 * BASE_EPOCHS]
        plain = [r for r in mine if r["weight"] == 0 and r["epochs"] == BASE_EPOCHS]
        if not penalty or not equal:
            continue
        best = max(penalty, key=lambda r: r["r_acc"])
        text = (
            f"Trained on {train}: the best penalty run (λ = {best['weight']:g}, "
            f"{best['passes']} passes / sample) scores {best['r_acc']:.1f} % on R "
            f"({best['nr_acc']:.1f} % NR, Haar error {best['haar_error']:.3f}); λ = 0 at the "
            f"same cost ({equal[0]['epochs']} epochs) {equal[0]['r_acc']:.1f} % "
            f"({equal[0]['nr_acc']:.1f} % NR, Haar error {equal[0]['haar_error']:.3f})"
        )
        if plain:
            text += (f", λ = 0 at {BASE_EPOCHS} epochs {plain[0]['r_acc']:.1f} % (Haar error "
                     f"{plain[0]['haar_error']:.3f})")  # fmt: skip
        sentences.append(text + ".")
    return sentences


def soft_section(rows: list[dict[str, Any]], out: Path) -> list[str]:
    """The report's soft-equivariance section: definition of equal cost, table, figure."""
    if not soft_rows(rows):
        return []
    lines = [
        "## Soft equivariance at equal training cost",
        "",
        f"`{SOFT_NET}` (the CNN on the band-limited projection `P_B` of its input, "
        "`sphere_bench/models/band_limited.py`) trained with the penalty `λ ‖f(R P_B x) − "
        "f(P_B x)‖²` (`+lit.equivariance_weight=λ`, `sphere_bench/train/equivariance_loss.py`) "
        f"for {BASE_EPOCHS} epochs. A penalty step runs the network on 3 batches (the "
        "cross-entropy on x, the penalty on P_B x and R P_B x), so equal training cost = equal "
        "forward + backward passes per training sample: the λ = 0 baseline at equal cost trains "
        f"{3 * BASE_EPOCHS} epochs on the same N (same data, same optimiser). Passes, not "
        "seconds, define the budget because the shared CPU's load changes seconds by up to "
        "6× between runs; the seconds (same load only) add the spectral transforms' overhead.",
        "",
        *soft_summary(rows),
        "",
        *soft_table(rows),
        "",
    ]
    if soft_figure(rows, out / "figures" / "soft_equivariance.png"):
        lines += ["![soft equivariance](figures/soft_equivariance.png)", ""]
    return lines


def soft_figure(rows: list[dict[str, Any]], path: Path) -> bool:
    """R-test accuracy and Haar error vs λ (symlog axis), NR and R training; the λ = 0 runs at
    the penalty runs' cost (3× the epochs) as dashed lines. False (nothing written) if no rows."""
    sel = soft_rows(rows)
    if not sel:
        return False
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    cmap = plt.get_cmap("tab10")
    for i, train in enumerate(("NR", "R")):
        mine = [r for r in sel if r["train"] == train]
        curve = sorted((r for r in mine if r["epochs"] == BASE_EPOCHS), key=lambda r: r["weight"])
        equal = [r for r in mine if r["weight"] == 0 and r["epochs"] == 3 * BASE_EPOCHS]
        for ax, key in zip(axes, ("r_acc", "haar_error"), strict=True):
            ax.plot([r["weight"] for r in curve], [r[key] for r in curve], "o-", color=cmap(i),
                    label=f"trained on {train}, {BASE_EPOCHS} epochs")  # fmt: skip
            for r in equal:
                ax.axhline(r[key], color=cmap(i), ls="--", lw=1,
                           label=f"trained on {train}, λ = 0, {r['epochs']} epochs "
                                 "(equal cost)")  # fmt: skip
    for ax, ylabel in zip(axes, ("R-test accuracy (%)", "Haar error (relative)"), strict=True):
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_xlim(left=-0.02)  # λ >= 0
        ax.set_xlabel("penalty weight λ")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    return True


def copy_records(records: list[dict[str, Any]], folder: Path) -> None:
    """Replace the ``*.json`` of ``folder`` by copies of ``records`` (their files)."""
    folder.mkdir(parents=True, exist_ok=True)
    keep = {Path(r["_path"]).name for r in records}
    for old in folder.glob("*.json"):
        if old.name not in keep:
            old.unlink()
    for record in records:
        source = Path(record["_path"])
        atomic_write_text(folder / source.name, source.read_text(encoding="utf-8"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default="results/runs")
    parser.add_argument("--out", default="results/equivariance")
    parser.add_argument("--wall-seconds", type=float, default=None,
                        help="the preset's wall time, quoted in the report")  # fmt: skip
    parser.add_argument("--load", default=None,
                        help="the machine's load during the run (e.g. `uptime` at start and "
                             "end), quoted beside the wall time")  # fmt: skip
    parser.add_argument("--copy-records", default=None,
                        help="folder that receives a copy of the records the report used "
                             "(its old *.json are removed first)")  # fmt: skip
    parser.add_argument("--wall-note", default=None,
                        help="text that replaces the wall-time sentence (e.g. when the records "
                             "come from several partial runs)")  # fmt: skip
    args = parser.parse_args()
    out = Path(args.out)
    rows = collect(Path(args.runs), out)
    if not rows:
        raise SystemExit(f"no complete records in {args.runs}/{SWEEP}; run "
                         "scripts/quick_equivariance.sh first")  # fmt: skip
    fields = list(rows[0])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "routes.csv", buffer.getvalue())

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    routes = sorted({r["route"] for r in rows})
    cmap = plt.get_cmap("tab10")
    for i, route in enumerate(routes):
        sel = [r for r in rows if r["route"] == route]
        for ax, key in zip(axes, ("train_seconds", "latency_ms_b32"), strict=True):
            ax.scatter([r[key] for r in sel], [r["r_acc"] for r in sel], color=cmap(i),
                       label=route)  # fmt: skip
            for r in sel:
                ax.annotate(r["label"], (r[key], r["r_acc"]),
                            fontsize=6, alpha=0.7)  # fmt: skip
    axes[0].set_xlabel("training time (s, 1 thread)")
    axes[1].set_xlabel("inference latency, batch 32 (ms)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_ylabel("R-test accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / "figures" / "routes.png")

    levels = [lv for lv in (30, 40, 50, 60, 70, 80, 90) if lv <= max(r["r_acc"] for r in rows)]
    lines = [
        "# Routes to rotation robustness: R-test score vs cost (preset `quick_equivariance`)",
        "",
        "MNIST classification at B = 16, trained 6 epochs (labels name other epoch counts) on "
        "N = 3,000 spheres (S2CNNs 1,000), "
        "tested on 1,000 NR and 1,000 R spheres; one seed (ensembles: seeds 0–7). Produced by "
        "`scripts/quick_equivariance.sh` (records in `results/runs/quick_equivariance`, copied to "
        "`results/equivariance/records`).",
    ]
    if args.wall_note:
        lines.append(args.wall_note)
    elif args.wall_seconds:
        lines.append(f"Wall time of the preset: {args.wall_seconds / 60:.1f} min on the 2-core "
                     "CPU (2 jobs in parallel, 1 thread each; `scripts/quick_equivariance.sh`)"
                     + (f"; load: {args.load}" if args.load else "") + ".")  # fmt: skip
    lines += [
        "Training times are per job with 1 thread, measured under the load of the moment: "
        "compare ratios of jobs run together, not with other runs. Passes / sample = forward + "
        "backward passes of the network per training sample over the whole training "
        "(epochs × 3 with the soft-equivariance penalty × 4 with frame averaging), a "
        "load-independent cost for routes built on the same network.",
        "",
        "## Which route is cheapest for a given R-test score",
        "",
        *cheapest(rows, levels),
        "",
        *soft_section(rows, out),
        "## All routes",
        "",
        "| route | model | params | R acc (%) | NR acc (%) | Haar error | Haar changed | "
        "grid error | passes / sample | training (s) | latency b32 (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['route']} | {r['label']} | {r['parameters']:,} | {r['r_acc']:.1f} | "
            f"{r['nr_acc']:.1f} | {r['haar_error']:.3f} | {r['haar_changed']:.3f} | "
            f"{r['grid_error']:.2g} | {r['passes']} | {r['train_seconds']:.0f} | "
            f"{r['latency_ms_b32']:.1f} |"
        )
    lines += [
        "",
        "Errors: relative change of the logits under the grid half-turns and under Haar "
        "rotations of re-rendered inputs, and the fraction of changed predictions "
        "(`sphere_bench/evaluate/equivariance.py`).",
        "",
        "![routes](figures/routes.png)",
        "",
    ]
    if (out / "ensemble.md").is_file():
        lines += ["## Deep ensembles vs K", "", *(out / "ensemble.md").read_text().splitlines()[2:],
                  "", "![ensemble](figures/ensemble.png)", ""]  # fmt: skip
    tables = sorted(Path("results/antialias").glob("*.md"))
    if tables:
        lines += ["## S2CNN equivariance error vs ReLU oversampling (`results/antialias/`)", ""]
        for table in tables:
            lines += [f"`{table.name}`:", "", *table.read_text().splitlines()[2:], ""]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    if args.copy_records:
        copy_records(latest_records(Path(args.runs)), Path(args.copy_records))
    print(f"wrote {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

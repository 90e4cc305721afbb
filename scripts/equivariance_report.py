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


def _latency(record: dict[str, Any], batch: int = 32) -> float:
    for entry in (record.get("evaluation") or {}).get("latency", []):
        if entry.get("batch_size") == batch:
            return float(entry["median_ms"])
    return math.nan


def _route(record: dict[str, Any]) -> tuple[str, str]:
    """(route, label) of one record."""
    config = record["config"]
    model = record["model"]["name"]
    rot = record["data"]["rotate_train"]
    weight = float(config.get("lit", {}).get("equivariance_weight", 0.0) or 0.0)
    oversampling = float(config.get("model", {}).get("oversampling", 1.0) or 1.0)
    train = "R" if rot == "random" else "NR"
    if model.startswith("fa_"):
        return "frame averaging", f"{model} ({train})"
    if weight > 0:
        return "soft equivariance", f"{model} λ={weight:g} ({train})"
    if model.startswith("s2cnn"):
        if oversampling > 1:
            return "S2CNN anti-aliased", f"{model} ReLU×{oversampling:g} ({train})"
        return "S2CNN", f"{model} ({train})"
    return ("augmentation" if train == "R" else "plain CNN"), f"{model} ({train})"


def collect(runs_dir: Path, out_dir: Path) -> list[dict[str, Any]]:
    """One row per route: metrics and costs (see the module docstring)."""
    latest: dict[str, dict[str, Any]] = {}  # one record per config without its hash (latest)
    for r in sorted(load_runs(runs_dir, [SWEEP]).complete, key=lambda r: r.get("finished_at", "")):
        latest[json.dumps(r["config"], sort_keys=True, default=str)] = r
    records = list(latest.values())
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


def cheapest(rows: list[dict[str, Any]], levels: list[float]) -> list[str]:
    lines = [
        "| R-test accuracy ≥ | cheapest to train | training time (s) | fastest at inference | "
        "latency batch 32 (ms) |",
        "|---|---|---|---|---|",
    ]
    for level in levels:
        reach = [r for r in rows if r["r_acc"] >= level]
        if not reach:
            lines.append(f"| {level:.0f} % | none reaches it | | | |")
            continue
        train = min(reach, key=lambda r: r["train_seconds"])
        infer = min(reach, key=lambda r: r["latency_ms_b32"])
        lines.append(
            f"| {level:.0f} % | {train['label']} [{train['route']}] | {train['train_seconds']:.0f} "
            f"| {infer['label']} [{infer['route']}] | {infer['latency_ms_b32']:.1f} |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default="results/runs")
    parser.add_argument("--out", default="results/equivariance")
    parser.add_argument("--wall-seconds", type=float, default=None,
                        help="the preset's wall time, quoted in the report")  # fmt: skip
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
        "MNIST classification at B = 16, trained 6 epochs on N = 3,000 spheres (S2CNNs 1,000), "
        "tested on 1,000 NR and 1,000 R spheres; one seed (ensembles: seeds 0–7). Produced by "
        "`scripts/quick_equivariance.sh` (records in `results/runs/quick_equivariance`, copied to "
        "`results/equivariance/records`).",
    ]
    if args.wall_seconds:
        lines.append(f"Wall time of the preset: {args.wall_seconds / 60:.1f} min on the shared "
                     "2-core CPU (2 jobs in parallel, 1 thread each).")  # fmt: skip
    lines += [
        "Training times are per job with 1 thread on a CPU shared with other work: compare "
        "ratios within this table, not with other runs.",
        "",
        "## Which route is cheapest for a given R-test score",
        "",
        *cheapest(rows, levels),
        "",
        "## All routes",
        "",
        "| route | model | params | R acc (%) | NR acc (%) | Haar error | Haar changed | "
        "grid error | training (s) | latency b32 (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['route']} | {r['label']} | {r['parameters']:,} | {r['r_acc']:.1f} | "
            f"{r['nr_acc']:.1f} | {r['haar_error']:.3f} | {r['haar_changed']:.3f} | "
            f"{r['grid_error']:.2g} | {r['train_seconds']:.0f} | {r['latency_ms_b32']:.1f} |"
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
    print(f"wrote {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

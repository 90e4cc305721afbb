"""Deep ensembles of CNNs: accuracy / mIoU and equivariance error of the ensemble mean vs K.

Gerken & Kessel, "Emergent Equivariance in Deep Ensembles" (ICML 2024), show that the *mean*
output of an ensemble of networks trained independently with full data augmentation over a group
becomes equivariant as the ensemble grows (exactly so in the infinite-width, infinite-ensemble
limit, at every point of training and off the data manifold), though no member is. This module
measures it: the members are the jobs of a sweep that differ only in ``seed``
(:func:`ensemble_groups`), the ensemble of size ``K`` is the mean of the first ``K`` members'
logits (:class:`EnsembleMean`; their theory is about the mean of the network outputs, i.e. the
logits; ``average="probs"`` averages softmax probabilities instead), and for K = 1, 2, 4, 8 we
report the ensemble's test metrics on NR and R (argmax of the mean) and its equivariance error
(:func:`sphere_bench.evaluate.equivariance.equivariance_errors`: grid half-turns, and Haar
rotations with re-rendered inputs), on the test sets of the first member's data config.

Command line (writes ``<out>/ensemble.json``, ``<out>/ensemble.md`` and
``<out>/figures/ensemble.png``)::

    python -m sphere_bench.evaluate.ensemble --runs results/runs --sweeps quick_equivariance \\
        --out results/equivariance
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sphere_bench.data.planar_source import load_planar_split
from sphere_bench.data.spherical_dataset import render_samples
from sphere_bench.evaluate.equivariance import equivariance_errors
from sphere_bench.io import atomic_write_text
from sphere_bench.schema import MAIN_METRIC, SEGMENTATION
from sphere_bench.train.metrics import ConfusionMetrics
from sphere_bench.train.record import config_hash, safe_instantiate

__all__ = [
    "EnsembleMean",
    "ensemble_groups",
    "load_member",
    "evaluate_ensemble",
    "ensemble_metrics",
    "main",
]

log = logging.getLogger(__name__)
AVERAGES = ("logits", "probs")
DEFAULT_KS = (1, 2, 4, 8)


class EnsembleMean(nn.Module):
    """The mean output of ``members`` (all ``[N, ...] → [N, C, ...]`` logits).

    Args:
        members: the networks (same task and output shape).
        average: ``logits`` (mean of the logits) or ``probs`` (log of the mean softmax
            probabilities, so that argmax and cross-entropy apply as to logits).

    Raises:
        ValueError: no members, or an unknown ``average``.
    """

    def __init__(self, members: Sequence[nn.Module], average: str = "logits") -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if average not in AVERAGES:
            raise ValueError(f"average must be one of {list(AVERAGES)}, got {average!r}")
        self.members = nn.ModuleList(members)
        self.average = average

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = torch.stack([member(x) for member in self.members])
        if self.average == "logits":
            return outputs.mean(0)
        return torch.log(torch.softmax(outputs, dim=2).mean(0).clamp_min(1e-30))


def _without_seed(config: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(config)
    out.pop("seed", None)
    if isinstance(out.get("data"), dict):
        out["data"].pop("seed", None)
    return out


def ensemble_groups(records: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Complete records grouped by their config without ``seed`` / ``data.seed``, seed-sorted.

    One record per seed: of several records of the same config and seed (e.g. written by two
    versions of the code, whose config hashes differ), the one finished last is kept.

    Returns:
        ``{label: [records sorted by seed]}``; the label is ``<model>/<data>/rot_<rotate_train>/
        n<n_train>`` (plus the group's hash when two groups would share it).
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    labels: dict[str, str] = {}
    for record in records:
        if record.get("status") != "complete":
            continue
        key = config_hash(_without_seed(record["config"]))
        groups.setdefault(key, []).append(record)
        data = record.get("data", {})
        labels[key] = (
            f"{record['model']['name']}/{data.get('name')}/rot_{data.get('rotate_train')}/"
            f"n{data.get('n_train')}"
        )
    out: dict[str, list[dict[str, Any]]] = {}
    for key, members in groups.items():
        label = labels[key]
        if label in out or list(labels.values()).count(label) > 1:
            label = f"{label}/{key[:8]}"
        by_seed: dict[int, dict[str, Any]] = {}
        for record in sorted(members, key=lambda r: str(r.get("finished_at", ""))):
            seed = int(record.get("seed", 0))
            if seed in by_seed:
                log.warning("%s: two records of seed %d; keeping the later one (%s)", label,
                            seed, record.get("config_hash"))  # fmt: skip
            by_seed[seed] = record
        out[label] = [by_seed[s] for s in sorted(by_seed)]
    return out


def _checkpoint_path(record: dict[str, Any]) -> Path:
    ckpt = record.get("checkpoint") or {}
    candidates = []
    for key in ("best", "last"):
        if ckpt.get(key):
            path = Path(ckpt[key])
            candidates.append(path)
            if "_path" in record:  # the record's own folder: <sweep>/<hash>/checkpoints/<file>
                here = Path(record["_path"]).parent / record["config_hash"] / "checkpoints"
                candidates.append(here / path.name)
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"no checkpoint of run {record.get('config_hash')} (seed {record.get('seed')}) found; "
        f"looked at {[str(p) for p in candidates]}. Rerun its sweep to recreate the checkpoints."
    )


def load_member(record: dict[str, Any], device: torch.device | str = "cpu") -> nn.Module:
    """The trained net of one result record (its model config + best checkpoint), in eval mode."""
    net = safe_instantiate(record["config"]["model"], "model", record.get("_path", "record"))
    state = torch.load(_checkpoint_path(record), map_location=device, weights_only=True)
    weights = {k[4:]: v for k, v in state["state_dict"].items() if k.startswith("net.")}
    net.load_state_dict(weights)
    return net.to(device).eval()


@torch.no_grad()
def ensemble_metrics(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    task: str,
    num_classes: int,
    batch_size: int = 64,
) -> dict[str, float]:
    """Test metrics of ``model`` (argmax of its output) on ``inputs`` ``[n, 1, 2B, 2B]``.

    Returns the metrics of :class:`sphere_bench.train.metrics.ConfusionMetrics` (``acc``; or
    ``miou``, ``miou_all``, ``pixel_acc``, per-class IoU) as floats.
    """
    metric = ConfusionMetrics(num_classes, task, 0)
    for start in range(0, len(inputs), batch_size):
        metric.update(
            model(inputs[start : start + batch_size]), targets[start : start + batch_size]
        )
    return {k: float(v) for k, v in metric.compute().items()}


def evaluate_ensemble(
    records: Sequence[dict[str, Any]],
    ks: Sequence[int] = DEFAULT_KS,
    average: str = "logits",
    equivariance_samples: int = 16,
    haar_draws: int = 2,
    n_test: int | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    data_root: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Metrics and equivariance errors of the ensemble of the first K members, for each K.

    Args:
        records: the members' result records (same config up to the seed), in member order.
        ks: ensemble sizes; sizes above ``len(records)`` are skipped with a warning.
        average: see :class:`EnsembleMean`.
        equivariance_samples: test samples for the equivariance error.
        haar_draws: Haar rotations per sample.
        n_test: test samples for the metrics (default: the record's ``data.n_test``).
        seed: seeds the Haar rotations (the same rotations for every K).
        device: where the nets run.
        data_root: overrides the records' ``data.root`` (where MNIST is read).

    Returns:
        One row per K: ``k``, ``members`` (their seeds), ``test`` (per test set, e.g. ``nr``/``r``,
        the metrics of :func:`ensemble_metrics`) and ``equivariance`` (of
        :func:`equivariance_errors`, on the first test set).
    """
    if not records:
        raise ValueError("no member records")
    data_cfg = copy.deepcopy(records[0]["config"]["data"])
    if n_test is not None:
        data_cfg["n_test"] = int(n_test)
    data_cfg["progress"] = False
    if data_root is not None:
        data_cfg["root"] = str(data_root)
    datamodule = safe_instantiate(data_cfg, "data", records[0].get("_path", "record"))
    datamodule.setup("test")  # generates (and caches) the test sets only
    task, num_classes = datamodule.task, datamodule.num_classes
    members = [load_member(r, device) for r in records]
    sets = {}
    for name, dataset in datamodule.test_sets.items():
        tensors = dataset.tensors
        sets[name] = (tensors.inputs.to(torch.float32).unsqueeze(1).to(device),
                      tensors.targets.long().to(device))  # fmt: skip
    first = next(iter(datamodule.test_sets))
    spec, tensors = datamodule.test_specs[first], datamodule.test_sets[first].tensors
    n_eq = min(equivariance_samples, len(tensors.inputs))
    ids = torch.arange(n_eq)
    source = load_planar_split(spec.dataset, "test", datamodule.root, datamodule.download_root)
    own = tensors.rotations[:n_eq].to(torch.float32)

    def rerender(extra: torch.Tensor) -> torch.Tensor:
        x, _ = render_samples(spec, source, ids, extra.to(torch.float32) @ own)
        return x.to(torch.float32).unsqueeze(1)

    rows = []
    for k in ks:
        if k > len(members):
            log.warning("ensemble size %d skipped: only %d members", k, len(members))
            continue
        model = EnsembleMean(members[:k], average).eval()
        test = {
            name: ensemble_metrics(model, x, y, task, num_classes) for name, (x, y) in sets.items()
        }
        errors = equivariance_errors(
            model, sets[first][0][:n_eq], task, rerender, n_haar=haar_draws,
            generator=torch.Generator().manual_seed(seed),
        )  # fmt: skip
        rows.append({
            "k": int(k), "members": [int(r.get("seed", 0)) for r in records[:k]],
            "test": test, "equivariance": {**errors, "n_samples": n_eq, "test_set": first},
        })  # fmt: skip
    return rows


# ------------------------------------------------------------------------------------------------
# command line: table and figure
# ------------------------------------------------------------------------------------------------
def _main_metric(task: str) -> str:
    return MAIN_METRIC.get(task, MAIN_METRIC[SEGMENTATION])


def write_outputs(results: dict[str, dict[str, Any]], out_dir: Path) -> list[Path]:
    """``ensemble.json``, ``ensemble.md`` and ``figures/ensemble.png`` from :func:`main`'s data."""
    from sphere_bench.report.figures import pyplot, save_figure, series_colors

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "ensemble.json", out_dir / "ensemble.md"]
    atomic_write_text(paths[0], json.dumps(results, indent=1, sort_keys=True))
    lines = [
        "# Deep ensembles: the ensemble mean vs K",
        "",
        "Mean of the members' logits (Gerken & Kessel, ICML 2024); members = seeds of one config.",
        "Metric in %, equivariance errors relative (grid half-turns; Haar, re-rendered inputs).",
        "",
        "| group | K | seeds | NR | R | grid error | Haar error | Haar changed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, entry in results.items():
        metric = _main_metric(entry["task"])
        for row in entry["rows"]:
            eq = row["equivariance"]
            lines.append(
                f"| {label} | {row['k']} | {','.join(map(str, row['members']))} | "
                f"{100 * row['test'].get('nr', {}).get(metric, float('nan')):.1f} | "
                f"{100 * row['test'].get('r', {}).get(metric, float('nan')):.1f} | "
                f"{eq['grid_rel_error']:.3f} | {eq.get('haar_rel_error', float('nan')):.3f} | "
                f"{eq.get('haar_changed_fraction', float('nan')):.3f} |"
            )
    atomic_write_text(paths[1], "\n".join(lines) + "\n")
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    colors = series_colors(list(results))
    for label, entry in results.items():
        ks = [row["k"] for row in entry["rows"]]
        metric = _main_metric(entry["task"])
        r = [100 * row["test"].get("r", {}).get(metric, float("nan")) for row in entry["rows"]]
        grid = [row["equivariance"]["grid_rel_error"] for row in entry["rows"]]
        haar = [row["equivariance"].get("haar_rel_error", float("nan")) for row in entry["rows"]]
        for ax, values in zip(axes, (r, grid, haar), strict=True):
            ax.plot(ks, values, "o-", color=colors[label], label=label)
    titles = ("R-test metric (%)", "grid-rotation error", "Haar-rotation error")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("ensemble size K")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    paths.append(save_figure(fig, out_dir / "figures" / "ensemble.png"))
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: evaluate every seed group of the given sweeps (module docstring)."""
    from sphere_bench.report.records import load_runs

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default="results/runs", help="folder of sweep folders")
    parser.add_argument("--sweeps", nargs="*", default=None, help="sweep names (default: all)")
    parser.add_argument("--out", default="results/equivariance", help="output folder")
    parser.add_argument("--ks", type=int, nargs="+", default=list(DEFAULT_KS))
    parser.add_argument("--min-members", type=int, default=2,
                        help="skip groups with fewer members")  # fmt: skip
    parser.add_argument("--average", choices=AVERAGES, default="logits")
    parser.add_argument("--equivariance-samples", type=int, default=16)
    parser.add_argument("--n-test", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    runs = load_runs(args.runs, args.sweeps)
    results = {}
    for label, records in ensemble_groups(runs.complete).items():
        if len(records) < args.min_members:
            continue
        log.info("ensemble %s: %d members", label, len(records))
        rows = evaluate_ensemble(records, args.ks, args.average, args.equivariance_samples,
                                 n_test=args.n_test)  # fmt: skip
        results[label] = {"task": records[0]["data"]["task"], "rows": rows}
    if not results:
        raise SystemExit(
            f"no group of >= {args.min_members} seeds in {args.runs} (sweeps {args.sweeps}); run "
            "a sweep over seed=0,1,... first"
        )
    for path in write_outputs(results, Path(args.out)):
        log.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

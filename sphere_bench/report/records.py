"""Result records → one row each → mean ± std per configuration; the paper's values.

Records are read through :class:`sphere_bench.schema.Record` (the schema the training side writes
with); the test sets, tasks and their metrics are the vocabulary of :mod:`sphere_bench.schema`.
Records are data. Reading one never runs code it names: models and datamodules are built from a
record's config with :func:`sphere_bench.train.record.safe_instantiate` (allowlisted sphere_bench
classes only; anything else raises ``UntrustedTargetError``). A record of the wrong shape (valid
JSON but not a result record) is skipped with a warning naming its file.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sphere_bench.schema import (
    MAIN_METRIC,
    ROTATION_OF_TEST_SET,
    STATUS_COMPLETE,
    TEST_SETS,
    Record,
    RecordError,
)
from sphere_bench.train.record import (  # noqa: F401 - re-exported: the report's safe builder
    ALLOWED_TARGETS,
    UntrustedTargetError,
    safe_instantiate,
)

log = logging.getLogger("sphere_bench.report")

SETTING: tuple[str, ...] = ("task", "dataset", "n_items")
SERIES: tuple[str, ...] = ("model", "rotate_train")
KEY: tuple[str, ...] = (
    "task",
    "dataset",
    "n_items",
    "model",
    "rotate_train",
    "n_train",
    "bandwidth",
)
SET_TITLES = {"nr": "NR test set (unrotated)", "r": "R test set (randomly rotated)"}
METRIC_AXIS = {"acc": "test accuracy (%)", "miou": "test mIoU, non-background (%)"}
METRIC_NAME = {"acc": "accuracy", "miou": "mIoU"}
DATASET_NAME = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
FIGURE_NAME = {
    "fig4": "Fig. 4",
    "fig5_left": "Fig. 5 left",
    "fig5_right": "Fig. 5 right",
    "fig7": "Fig. 7",
    "fig9": "Fig. 9",
}

#: Latency columns (ms per batch: median and p10/p90 at batch 1 and 32).
LATENCY_COLUMNS: tuple[str, ...] = (
    "lat_b1_ms",
    "lat_b1_p10_ms",
    "lat_b1_p90_ms",
    "lat_b32_ms",
    "lat_b32_p10_ms",
    "lat_b32_p90_ms",
)

#: Numeric per-record columns that are averaged over seeds (``test_*`` in percent).
VALUE_COLUMNS: tuple[str, ...] = (
    *(f"test_{name}" for name in TEST_SETS),
    "drop",
    *(f"test_{name}_miou_all" for name in TEST_SETS),
    *(f"test_{name}_pixel_acc" for name in TEST_SETS),
    "val_best",
    "epochs_run",
    "train_seconds",
    "total_seconds",
    "mean_epoch_seconds",
    "seconds_to_best_epoch",
    *LATENCY_COLUMNS,
    "thr_b1",
    "thr_b32",
    "mem_b1_mb",
    "mem_b32_mb",
    "eq_grid",
    "eq_grid_changed",
    "eq_haar",
    "eq_haar_changed",
)


# ============================================================================ loading
@dataclass
class Runs:
    """Records found under a runs folder."""

    complete: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)


def record_paths(runs_dir: Path | str, sweeps: Sequence[str] | None = None) -> list[Path]:
    """``<runs>/<sweep>/*.json`` (only the named ``sweeps`` if given), plus ``<runs>/*.json``."""
    runs_dir = Path(runs_dir)
    paths: list[Path] = []
    if not sweeps:
        paths.extend(sorted(runs_dir.glob("*.json")))
        folders = sorted(p for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else []
    else:
        folders = [runs_dir / name for name in sweeps]
        for folder in folders:
            if not folder.is_dir():
                log.warning("sweep folder %s does not exist", folder)
    for folder in folders:
        paths.extend(sorted(p for p in folder.glob("*.json") if p.is_file()))
    return paths




def load_runs(runs_dir: Path | str, sweeps: Sequence[str] | None = None) -> Runs:
    """Read every record; unreadable or wrong-shaped files are skipped with a warning naming
    them, and kept in the result."""
    runs = Runs()
    for path in record_paths(runs_dir, sweeps):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            Record.from_dict(record)  # raises RecordError if it is not shaped like a record
        except (OSError, ValueError, RecordError) as err:
            log.warning("skipping unreadable record %s: %s", path, err)
            runs.unreadable.append((path, str(err)))
            continue
        record["_path"] = str(path)
        (runs.complete if record.get("status") == STATUS_COMPLETE else runs.failed).append(record)
    return runs


def family(model_name: str, target: str | None = None) -> str:
    """``s2cnn`` or ``cnn``, from the model config name (else its ``_target_``)."""
    text = f"{model_name} {target or ''}".lower()
    return "s2cnn" if "s2cnn" in text or "s2_" in model_name.lower() else "cnn"


def to_float(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) else math.nan


def _latency_entry(latency: Any, batch_size: int) -> Mapping[str, Any]:
    if not isinstance(latency, list):
        return {}
    entries = [e for e in latency if isinstance(e, Mapping) and e.get("batch_size") == batch_size]
    forward = [e for e in entries if e.get("mode", "forward") == "forward"]
    return (forward or entries or [{}])[0]


def flatten(record: Mapping[str, Any]) -> dict[str, Any]:
    """One row per record: setting, series, N, seed and the numeric :data:`VALUE_COLUMNS`."""
    rec = Record.from_dict(dict(record))
    data, model, evaluation = rec.data, rec.model, rec.evaluation
    config, timing, env = rec.config, rec.timing, rec.env
    metric = MAIN_METRIC.get(data.task, "acc")
    name = model.name or "?"
    row: dict[str, Any] = {
        "sweep": rec.sweep_name,
        "config_hash": rec.config_hash,
        "run_name": rec.run_name,
        "record_path": rec.extra.get("_path"),
        "task": data.task,
        "dataset": data.dataset,
        "n_items": int(data.n_items or 1),
        "model": name,
        "family": family(name, model.target),
        "parameters": to_float(model.parameters),
        "rotate_train": data.rotate_train,
        "n_train": int(data.n_train) if data.n_train is not None else -1,
        "bandwidth": int(data.bandwidth) if data.bandwidth is not None else -1,
        "grid": data.grid,
        "seed": rec.seed,
        "metric": metric,
        "max_epochs": ((config.get("trainer") or {}).get("max_epochs")),
        "device": env.get("device"),
        "threads": env.get("threads"),
        "torch": env.get("torch"),
        "eval_device": (evaluation.get("device") or {}).get("device_name")
        or (evaluation.get("device") or {}).get("device"),
        "eval_threads": (evaluation.get("device") or {}).get("threads"),
        "checkpoint_best": rec.checkpoint.get("best"),
    }
    for set_name in TEST_SETS:
        row[f"test_{set_name}"] = 100 * to_float(rec.test_metric(set_name, metric))
        row[f"test_{set_name}_miou_all"] = 100 * to_float(rec.test_metric(set_name, "miou_all"))
        row[f"test_{set_name}_pixel_acc"] = 100 * to_float(rec.test_metric(set_name, "pixel_acc"))
    row["drop"] = row["test_nr"] - row["test_r"]
    row["val_best"] = 100 * to_float(rec.val_best)
    row["epochs_run"] = to_float(rec.epochs_run)
    for key in ("train_seconds", "total_seconds", "mean_epoch_seconds", "seconds_to_best_epoch"):
        row[key] = to_float(timing.get(key))
    for batch in (1, 32):
        entry = _latency_entry(evaluation.get("latency"), batch)
        row[f"lat_b{batch}_ms"] = to_float(entry.get("median_ms"))
        row[f"lat_b{batch}_p10_ms"] = to_float(entry.get("p10_ms"))
        row[f"lat_b{batch}_p90_ms"] = to_float(entry.get("p90_ms"))
        row[f"thr_b{batch}"] = to_float(entry.get("images_per_s"))
        row[f"mem_b{batch}_mb"] = to_float(entry.get("peak_memory_mb"))
    equiv = evaluation.get("equivariance") or {}
    for short, key in (
        ("eq_grid", "grid_rel_error"),
        ("eq_grid_changed", "grid_changed_fraction"),
        ("eq_haar", "haar_rel_error"),
        ("eq_haar_changed", "haar_changed_fraction"),
    ):
        row[short] = to_float(equiv.get(key))
    return row


def runs_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The flattened records (one row each), or an empty frame with the key columns."""
    rows = [flatten(r) for r in records]
    if not rows:
        return pd.DataFrame(
            columns=[*KEY, "family", "parameters", "metric", "seed", *VALUE_COLUMNS]
        )
    return pd.DataFrame(rows)


# ============================================================================ aggregation
def aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (ddof 1; NaN for one seed) and count of every value column per :data:`KEY`.

    Columns: the key, ``family``, ``metric``, ``parameters``, ``seeds`` (records in the group),
    ``seed_list``, ``duplicate_seeds`` (records sharing a seed: configs that differ in something
    outside the key, e.g. epochs, were merged), ``sweeps`` and ``<value>_mean`` / ``<value>_std``.
    """
    if frame.empty:
        return pd.DataFrame(columns=[*KEY, "family", "metric", "parameters", "seeds"])
    groups = frame.groupby(list(KEY), dropna=False, sort=True)
    values = [c for c in VALUE_COLUMNS if c in frame.columns]
    mean = groups[values].mean().add_suffix("_mean")
    std = groups[values].std(ddof=1).add_suffix("_std")
    meta = groups.agg(
        family=("family", "first"),
        metric=("metric", "first"),
        parameters=("parameters", "max"),
        seeds=("model", "size"),
        seed_list=("seed", lambda s: ",".join(str(v) for v in sorted({x for x in s if x == x}))),
        unique_seeds=("seed", "nunique"),
        sweeps=("sweep", lambda s: ",".join(sorted({str(v) for v in s}))),
    )
    out = pd.concat([meta, mean, std], axis=1).reset_index()
    out["duplicate_seeds"] = out["seeds"] - out["unique_seeds"]
    out = out.drop(columns="unique_seeds")
    for _, row in out[out["duplicate_seeds"] > 0].iterrows():
        log.warning(
            "%s %s N=%s: %d records share a seed (configs differing outside the key were merged)",
            row["model"],
            row["rotate_train"],
            row["n_train"],
            row["duplicate_seeds"],
        )
    return out.sort_values(
        by=[
            "task",
            "dataset",
            "n_items",
            "family",
            "model",
            "rotate_train",
            "n_train",
            "bandwidth",
        ],
        ascending=[True, True, True, False, True, True, True, True],
        ignore_index=True,
    )


def settings(agg: pd.DataFrame) -> list[tuple[str, str, int]]:
    """The ``(task, dataset, n_items)`` present, classification first."""
    if agg.empty:
        return []
    keys = {(str(t), str(d), int(k)) for t, d, k in agg[list(SETTING)].itertuples(index=False)}
    return sorted(keys)


def select(frame: pd.DataFrame, setting: tuple[str, str, int]) -> pd.DataFrame:
    """Rows of ``frame`` in ``setting``."""
    task, dataset, n_items = setting
    mask = (frame["task"] == task) & (frame["dataset"] == dataset) & (frame["n_items"] == n_items)
    return frame[mask]


def series_keys(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """``(model, rotate_train)`` pairs, S2CNNs first."""
    if frame.empty:
        return []
    pairs = {(str(m), str(r)) for m, r in frame[list(SERIES)].itertuples(index=False)}
    return sorted(pairs, key=lambda p: (family(p[0]) != "s2cnn", p[0], p[1]))


def slug(setting: tuple[str, str, int]) -> str:
    task, dataset, n_items = setting
    return f"{task}_{dataset}_k{n_items}"


def setting_title(setting: tuple[str, str, int]) -> str:
    task, dataset, n_items = setting
    items = f"{n_items} item{'s' if n_items != 1 else ''} per sphere"
    return f"{task.capitalize()}: spherical {DATASET_NAME.get(dataset, dataset)}, {items}"


# ============================================================================ paper values
def load_paper(path: Path | str | None) -> pd.DataFrame:
    """``results/paper_reference.csv`` (``#`` comments); empty frame if missing."""
    columns = [
        "figure",
        "task",
        "dataset",
        "n_items",
        "model",
        "rotate_train",
        "rotate_test",
        "n_train",
        "metric",
        "value",
        "uncertainty",
    ]
    if path is None or not Path(path).is_file():
        if path is not None:
            log.warning("paper reference %s not found; no paper values drawn", path)
        return pd.DataFrame(columns=columns)
    try:
        paper = pd.read_csv(path, comment="#")
        missing = [c for c in columns if c not in paper.columns]
        if missing:
            raise ValueError(f"columns {missing} missing")
        paper["n_items"] = paper["n_items"].astype(int)
        paper["n_train"] = paper["n_train"].astype(int)
        paper["value"] = paper["value"].astype(float)
    except (OSError, ValueError, TypeError, pd.errors.ParserError) as err:
        log.warning("paper reference %s is unreadable (%s); no paper values drawn", path, err)
        return pd.DataFrame(columns=columns)
    return paper


def paper_setting(
    paper: pd.DataFrame, setting: tuple[str, str, int], set_name: str, metric: str
) -> pd.DataFrame:
    """Paper rows of ``setting`` on test set ``set_name`` (``nr``/``r``) for ``metric``."""
    if paper.empty:
        return paper
    rows = select(paper, setting)
    same_set = rows["rotate_test"] == ROTATION_OF_TEST_SET[set_name]
    return rows[same_set & (rows["metric"] == metric)]


def match_paper(
    paper: pd.DataFrame,
    setting: tuple[str, str, int],
    model: str,
    rotate_train: str,
    set_name: str,
    metric: str,
) -> pd.DataFrame:
    """Paper rows with the same dataset, task, items, model, training and test rotation and
    metric, sorted by N (empty when the paper has no such curve)."""
    rows = paper_setting(paper, setting, set_name, metric)
    if rows.empty:
        return rows
    rows = rows[(rows["model"] == model) & (rows["rotate_train"] == rotate_train)]
    return rows.sort_values("n_train")


def params_from_name(name: str) -> float:
    """Parameter count encoded in a paper model name: ``204k`` → 204e3, ``5m5`` → 5.5e6."""
    found = re.search(r"_(\d+)([km])(\d*)$", name)
    if not found:
        return math.nan
    whole, unit, frac = found.groups()
    value = float(f"{whole}.{frac}" if frac else whole)
    return value * (1e3 if unit == "k" else 1e6)

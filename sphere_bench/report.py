"""The report: tables, figures and ``report.md`` from the training records.

    python -m sphere_bench.report --runs results/runs --out results
    python -m sphere_bench.report --runs results/runs --sweep quick --out results --wandb

Reads every record ``<runs>/<sweep>/<config hash>.json`` (:mod:`sphere_bench.train.record`; an
unreadable file is skipped with a warning, a failed run is listed with its error), groups them by
``(task, dataset, n_items, model, rotate_train, n_train, bandwidth)`` — several seeds give mean ±
std — and writes under ``--out``:

* ``tables/<task>_<dataset>_k<items>.{md,csv}``: model × N with the metric on the NR and R test
  sets (``test_nr``, ``test_r``; accuracy for classification, non-background mIoU for
  segmentation, in percent), parameters, latency at batch 1 and 32, training time and
  equivariance error; ``tables/answer.{md,csv}``: per model its best rotated-test metric.
* ``figures/report_*.png``: metric vs N per model in the layout of the paper's Figs. 4, 5, 7 and 9
  (one figure per setting, a panel per test set; the paper's values as dashed lines where the
  configuration matches, else in a separate reference panel), metric vs parameters, latency vs
  parameters, equivariance error per model, and sample predictions on a rotated test sphere.
* ``report.md``: the above tied together, the setup, and an "Answer" section whose sentences are
  computed from the data.

``--wandb`` also logs the tables (``wandb.Table``) and figures (``wandb.Image``) in a run with
``job_type="report"``, offline unless ``WANDB_MODE=online``, under ``<out>/wandb``.

Records store metrics as fractions; every metric here is in percent like the paper's. The optional
``evaluation`` key of a record (latency, equivariance, device) fills the latency and equivariance
columns; without it they read "–".
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import logging
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sphere_bench.data.cache import atomic_write_bytes, atomic_write_text

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
TEST_SETS: tuple[str, ...] = ("nr", "r")
ROTATE_OF_SET = {"nr": "none", "r": "random"}
SET_TITLES = {"nr": "NR test set (unrotated)", "r": "R test set (randomly rotated)"}
TRAIN_LABEL = {"none": "NR", "random": "R"}
METRIC_OF_TASK = {"classification": "acc", "segmentation": "miou"}
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

#: Numeric per-record columns that are averaged over seeds (``test_*`` in percent).
VALUE_COLUMNS: tuple[str, ...] = (
    "test_nr",
    "test_r",
    "drop",
    "test_nr_miou_all",
    "test_r_miou_all",
    "test_nr_pixel_acc",
    "test_r_pixel_acc",
    "val_best",
    "epochs_run",
    "train_seconds",
    "total_seconds",
    "mean_epoch_seconds",
    "seconds_to_best_epoch",
    "lat_b1_ms",
    "lat_b1_p10_ms",
    "lat_b1_p90_ms",
    "lat_b32_ms",
    "lat_b32_p10_ms",
    "lat_b32_p90_ms",
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
    """Read every record; unreadable files are skipped with a warning and kept in the result."""
    runs = Runs()
    for path in record_paths(runs_dir, sweeps):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(record, dict) or "status" not in record:
                raise ValueError("not a result record (no 'status')")
        except (OSError, ValueError) as err:
            log.warning("skipping unreadable record %s: %s", path, err)
            runs.unreadable.append((path, str(err)))
            continue
        record["_path"] = str(path)
        (runs.complete if record.get("status") == "complete" else runs.failed).append(record)
    return runs


def family(model_name: str, target: str | None = None) -> str:
    """``s2cnn`` or ``cnn``, from the model config name (else its ``_target_``)."""
    text = f"{model_name} {target or ''}".lower()
    return "s2cnn" if "s2cnn" in text or "s2_" in model_name.lower() else "cnn"


def _num(value: Any) -> float:
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
    data = record.get("data") or {}
    model = record.get("model") or {}
    timing = record.get("timing") or {}
    env = record.get("env") or {}
    test = record.get("test") or {}
    evaluation = record.get("evaluation") or {}
    config = record.get("config") or {}
    task = data.get("task")
    metric = METRIC_OF_TASK.get(task, "acc")
    name = model.get("name") or "?"
    row: dict[str, Any] = {
        "sweep": record.get("sweep_name"),
        "config_hash": record.get("config_hash"),
        "run_name": record.get("run_name"),
        "record_path": record.get("_path"),
        "task": task,
        "dataset": data.get("dataset"),
        "n_items": int(data.get("n_items") or 1),
        "model": name,
        "family": family(name, model.get("target")),
        "parameters": _num(model.get("parameters")),
        "rotate_train": data.get("rotate_train"),
        "n_train": int(data["n_train"]) if data.get("n_train") is not None else -1,
        "bandwidth": int(data["bandwidth"]) if data.get("bandwidth") is not None else -1,
        "grid": data.get("grid"),
        "seed": record.get("seed"),
        "metric": metric,
        "max_epochs": ((config.get("trainer") or {}).get("max_epochs")),
        "device": env.get("device"),
        "threads": env.get("threads"),
        "torch": env.get("torch"),
        "eval_device": (evaluation.get("device") or {}).get("device_name")
        or (evaluation.get("device") or {}).get("device"),
        "eval_threads": (evaluation.get("device") or {}).get("threads"),
        "checkpoint_best": (record.get("checkpoint") or {}).get("best"),
    }
    for set_name in TEST_SETS:
        results = test.get(set_name) or {}
        row[f"test_{set_name}"] = 100 * _num(results.get(metric))
        row[f"test_{set_name}_miou_all"] = 100 * _num(results.get("miou_all"))
        row[f"test_{set_name}_pixel_acc"] = 100 * _num(results.get("pixel_acc"))
    row["drop"] = row["test_nr"] - row["test_r"]
    row["val_best"] = 100 * _num(record.get("val_best"))
    row["epochs_run"] = _num(record.get("epochs_run"))
    for key in ("train_seconds", "total_seconds", "mean_epoch_seconds", "seconds_to_best_epoch"):
        row[key] = _num(timing.get(key))
    for batch in (1, 32):
        entry = _latency_entry(evaluation.get("latency"), batch)
        row[f"lat_b{batch}_ms"] = _num(entry.get("median_ms"))
        row[f"lat_b{batch}_p10_ms"] = _num(entry.get("p10_ms"))
        row[f"lat_b{batch}_p90_ms"] = _num(entry.get("p90_ms"))
        row[f"thr_b{batch}"] = _num(entry.get("images_per_s"))
        row[f"mem_b{batch}_mb"] = _num(entry.get("peak_memory_mb"))
    equiv = evaluation.get("equivariance") or {}
    for short, key in (
        ("eq_grid", "grid_rel_error"),
        ("eq_grid_changed", "grid_changed_fraction"),
        ("eq_haar", "haar_rel_error"),
        ("eq_haar_changed", "haar_changed_fraction"),
    ):
        row[short] = _num(equiv.get(key))
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
    paper = pd.read_csv(path, comment="#")
    paper["n_items"] = paper["n_items"].astype(int)
    paper["n_train"] = paper["n_train"].astype(int)
    return paper


def paper_setting(
    paper: pd.DataFrame, setting: tuple[str, str, int], set_name: str, metric: str
) -> pd.DataFrame:
    """Paper rows of ``setting`` on test set ``set_name`` (``nr``/``r``) for ``metric``."""
    if paper.empty:
        return paper
    rows = select(paper, setting)
    return rows[(rows["rotate_test"] == ROTATE_OF_SET[set_name]) & (rows["metric"] == metric)]


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


# ============================================================================ formatting
def fmt_params(value: float) -> str:
    """20643 → ``20.6k``, 5.5e6 → ``5.5M``."""
    if not np.isfinite(value):
        return "–"
    if value >= 1e6:
        return f"{value / 1e6:.3g}M"
    if value >= 1e3:
        return f"{value / 1e3:.3g}k"
    return f"{value:.0f}"


def fmt_n(value: float) -> str:
    """N for axes and text: 64, 1k, 2.5k, 240k."""
    if not np.isfinite(value):
        return "–"
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def fmt_pm(mean: float, std: float = math.nan, digits: int = 1) -> str:
    """``mean ± std`` (just the mean when the std is undefined), ``–`` when missing."""
    if not np.isfinite(mean):
        return "–"
    text = f"{mean:.{digits}f}"
    return f"{text} ± {std:.{digits}f}" if np.isfinite(std) else text


def fmt_sig(value: float, digits: int = 3) -> str:
    """A number with ``digits`` significant digits (no exponent for ms and seconds)."""
    if not np.isfinite(value):
        return "–"
    if value == 0 or 1e-3 <= abs(value) < 1e6:
        magnitude = 0 if value == 0 else math.floor(math.log10(abs(value)))
        return f"{value:.{max(digits - 1 - magnitude, 0)}f}"
    return f"{value:.{digits - 1}e}"


def series_label(model: str, rotate_train: str, parameters: float) -> str:
    return (
        f"{model} ({fmt_params(parameters)}, train {TRAIN_LABEL.get(rotate_train, rotate_train)})"
    )


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub Markdown table (``|`` in cells escaped)."""

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(cell(h) for h in headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    lines.extend("| " + " | ".join(cell(v) for v in row) + " |" for row in rows)
    return "\n".join(lines) + "\n"


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """``frame`` as CSV, atomically."""
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, float_format="%.6g")
    atomic_write_text(path, buffer.getvalue())
    return path


# ============================================================================ tables
def setting_table(agg_setting: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Markdown headers and rows of one setting: one row per model, training rotation and N."""
    metric = METRIC_NAME[str(agg_setting["metric"].iloc[0])]
    classification = (agg_setting["task"] == "classification").any()
    headers = [
        "model",
        "params",
        "train",
        "N",
        "B",
        "seeds",
        f"NR test {metric} %",
        f"R test {metric} %",
        "NR→R drop",
        "latency b1 ms",
        "latency b32 ms",
        "train time s",
        "equiv. err. Haar",
        "equiv. err. grid",
    ]
    if classification:
        headers.append("pred. changed (Haar) %")
    rows = []
    for _, r in agg_setting.iterrows():
        row = [
            r["model"],
            fmt_params(r["parameters"]),
            TRAIN_LABEL.get(r["rotate_train"], "?"),
            fmt_n(r["n_train"]),
            "–" if r["bandwidth"] < 0 else str(int(r["bandwidth"])),
            str(int(r["seeds"])),
            fmt_pm(r["test_nr_mean"], r["test_nr_std"]),
            fmt_pm(r["test_r_mean"], r["test_r_std"]),
            fmt_pm(r["drop_mean"], r["drop_std"]),
            fmt_sig(r["lat_b1_ms_mean"]),
            fmt_sig(r["lat_b32_ms_mean"]),
            fmt_sig(r["train_seconds_mean"]),
            fmt_sig(r["eq_haar_mean"], 2),
            fmt_sig(r["eq_grid_mean"], 2),
        ]
        if classification:
            row.append(fmt_pm(100 * r["eq_haar_changed_mean"]))
        rows.append(row)
    return headers, rows


def best_rows(agg_setting: pd.DataFrame) -> pd.DataFrame:
    """Per series the row with the best rotated-test metric (the NR one if there is no R)."""
    out = []
    for model, rotate in series_keys(agg_setting):
        rows = agg_setting[
            (agg_setting["model"] == model) & (agg_setting["rotate_train"] == rotate)
        ]
        column = "test_r_mean" if rows["test_r_mean"].notna().any() else "test_nr_mean"
        if rows[column].notna().any():
            out.append(rows.loc[rows[column].idxmax()])
        else:
            out.append(rows.sort_values("n_train").iloc[-1])
    return pd.DataFrame(out).reset_index(drop=True)


def answer_frame(agg: pd.DataFrame) -> pd.DataFrame:
    """The compact answer: per setting and model its best R-test metric and costs."""
    rows = []
    for setting in settings(agg):
        best = best_rows(select(agg, setting))
        for _, r in best.iterrows():
            rows.append(
                {
                    "setting": slug(setting),
                    "model": r["model"],
                    "family": r["family"],
                    "rotate_train": r["rotate_train"],
                    "parameters": r["parameters"],
                    "metric": r["metric"],
                    "best_test_r": r["test_r_mean"],
                    "best_test_r_std": r["test_r_std"],
                    "at_n_train": r["n_train"],
                    "test_nr_at_best": r["test_nr_mean"],
                    "seeds": r["seeds"],
                    "lat_b1_ms": r["lat_b1_ms_mean"],
                    "lat_b32_ms": r["lat_b32_ms_mean"],
                    "train_seconds": r["train_seconds_mean"],
                    "eq_haar": r["eq_haar_mean"],
                    "eq_grid": r["eq_grid_mean"],
                }
            )
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame = frame.sort_values(
            ["setting", "best_test_r"], ascending=[True, False], ignore_index=True
        )
    return frame


def answer_markdown(answer: pd.DataFrame) -> str:
    headers = [
        "setting",
        "model",
        "train",
        "params",
        "best R-test metric %",
        "at N",
        "NR test % (same N)",
        "latency b1 ms",
        "latency b32 ms",
        "train time s",
        "equiv. err. Haar",
    ]
    rows = [
        [
            r["setting"],
            r["model"],
            TRAIN_LABEL.get(r["rotate_train"], "?"),
            fmt_params(r["parameters"]),
            f"{METRIC_NAME[r['metric']]} {fmt_pm(r['best_test_r'], r['best_test_r_std'])}",
            fmt_n(r["at_n_train"]),
            fmt_pm(r["test_nr_at_best"]),
            fmt_sig(r["lat_b1_ms"]),
            fmt_sig(r["lat_b32_ms"]),
            fmt_sig(r["train_seconds"]),
            fmt_sig(r["eq_haar"], 2),
        ]
        for _, r in answer.iterrows()
    ]
    return markdown_table(headers, rows)


# ============================================================================ answer sentences
def _label(row: Mapping[str, Any]) -> str:
    return (
        f"**{row['model']}** (train {TRAIN_LABEL.get(row['rotate_train'], '?')}, "
        f"{fmt_params(row['parameters'])} parameters)"
    )


def _noise_note(a: Mapping[str, Any], b: Mapping[str, Any], column: str) -> str:
    """How much a difference between two aggregated rows can be trusted."""
    if a["seeds"] < 2 or b["seeds"] < 2:
        return " (single seed: no error bar)"
    spread = math.hypot(_num(a[f"{column}_std"]), _num(b[f"{column}_std"]))
    diff = abs(_num(a[f"{column}_mean"]) - _num(b[f"{column}_mean"]))
    if np.isfinite(spread) and diff <= spread:
        return " — within the seed spread"
    return ""


def _ratio_text(a: float, b: float, noun: str, than: str) -> str:
    """``2.5× more parameters than the S2CNN`` (``a`` relative to ``b``), or ``""``."""
    if not (np.isfinite(a) and np.isfinite(b)) or a <= 0 or b <= 0:
        return ""
    if a == b:
        return f"as many {noun} as {than}"
    ratio = a / b
    more = ratio > 1
    return f"{ratio if more else 1 / ratio:.2g}× {'more' if more else 'fewer'} {noun} than {than}"


def answer_sentences(agg_setting: pd.DataFrame) -> list[str]:
    """Data-driven sentences for one setting (aggregated rows of one task/dataset/items)."""
    if agg_setting.empty:
        return []
    metric = METRIC_NAME[str(agg_setting["metric"].iloc[0])]
    out: list[str] = []
    has_r = agg_setting["test_r_mean"].notna().any()
    column = "test_r" if has_r else "test_nr"
    test_name = "rotated (R)" if has_r else "unrotated (NR)"
    scored = agg_setting[agg_setting[f"{column}_mean"].notna()]
    if scored.empty:
        return [f"No run has a test {metric} yet."]

    # 1. the winner on the rotated test set, and the best S2CNN vs the best CNN
    best = scored.loc[scored[f"{column}_mean"].idxmax()]
    out.append(
        f"On the {test_name} test set the best model is {_label(best)}: {metric} "
        f"{fmt_pm(best[f'{column}_mean'], best[f'{column}_std'])} % "
        f"at N = {fmt_n(best['n_train'])}."
    )
    s2 = scored[scored["family"] == "s2cnn"]
    cnn = scored[scored["family"] == "cnn"]
    if not s2.empty and not cnn.empty:
        b_s2 = s2.loc[s2[f"{column}_mean"].idxmax()]
        b_cnn = cnn.loc[cnn[f"{column}_mean"].idxmax()]
        diff = b_s2[f"{column}_mean"] - b_cnn[f"{column}_mean"]
        verb = "beats" if diff > 0 else ("ties with" if diff == 0 else "stays below")
        params = _ratio_text(b_cnn["parameters"], b_s2["parameters"], "parameters", "the S2CNN")
        out.append(
            f"Best against best, the S2CNN {_label(b_s2)} {verb} the best CNN {_label(b_cnn)} by "
            f"{abs(diff):.1f} points ({b_s2[f'{column}_mean']:.1f} vs "
            f"{b_cnn[f'{column}_mean']:.1f} %){_noise_note(b_s2, b_cnn, column)}"
            + (f"; the CNN has {params}." if params else ".")
        )
        common = sorted(set(s2["n_train"]) & set(cnn["n_train"]))
        if common:
            n = common[-1]
            a = s2[s2["n_train"] == n]
            b = cnn[cnn["n_train"] == n]
            a = a.loc[a[f"{column}_mean"].idxmax()]
            b = b.loc[b[f"{column}_mean"].idxmax()]
            d = a[f"{column}_mean"] - b[f"{column}_mean"]
            out.append(
                f"At equal N = {fmt_n(n)} (the largest N both were trained with) the S2CNN is "
                f"{'ahead' if d > 0 else 'behind'} by {abs(d):.1f} points "
                f"({a[f'{column}_mean']:.1f} vs {b[f'{column}_mean']:.1f} % for {b['model']}, "
                f"train {TRAIN_LABEL.get(b['rotate_train'], '?')})."
            )

    # 2. the NR -> R drop of every model trained without rotations
    if has_r:
        drops = []
        for model, rotate in series_keys(agg_setting):
            if rotate != "none":
                continue
            rows = agg_setting[
                (agg_setting["model"] == model)
                & (agg_setting["rotate_train"] == rotate)
                & agg_setting["drop_mean"].notna()
            ]
            if rows.empty:
                continue
            r = rows.sort_values("n_train").iloc[-1]
            kept = (
                f", keeps {100 * r['test_r_mean'] / r['test_nr_mean']:.0f} % of its NR score"
                if r["test_nr_mean"] > 0
                else ""
            )
            sign = "−" if r["drop_mean"] >= 0 else "+"
            drops.append(
                f"{r['model']} {r['test_nr_mean']:.1f} → {r['test_r_mean']:.1f} % "
                f"({sign}{abs(r['drop_mean']):.1f} points{kept}, N = {fmt_n(r['n_train'])})"
            )
        if drops:
            out.append(
                "Trained without rotations (NR), NR test → R test: " + "; ".join(drops) + "."
            )

    # 3. how the CNNs' rotated-test metric changes with N
    trends = []
    for model, rotate in series_keys(cnn if not cnn.empty else scored):
        rows = scored[(scored["model"] == model) & (scored["rotate_train"] == rotate)]
        rows = rows.sort_values("n_train")
        if len(rows) < 2:
            continue
        values = rows[f"{column}_mean"].to_numpy()
        first, last = rows.iloc[0], rows.iloc[-1]
        diff = last[f"{column}_mean"] - first[f"{column}_mean"]
        steps = np.diff(values)
        shape = (
            "rising at every step"
            if (steps > 0).all()
            else "falling at every step"
            if (steps < 0).all()
            else "not monotone"
        )
        trends.append(
            f"{model} (train {TRAIN_LABEL.get(rotate, '?')}) "
            f"{'gains' if diff >= 0 else 'loses'} {abs(diff):.1f} points from N = "
            f"{fmt_n(first['n_train'])} to {fmt_n(last['n_train'])} "
            f"({first[f'{column}_mean']:.1f} → {last[f'{column}_mean']:.1f} %, {shape})"
        )
    if trends:
        out.append(
            f"With more training data, {test_name} test {metric}: " + "; ".join(trends) + "."
        )
    if not s2.empty and not cnn.empty:
        s2_first = s2.sort_values(["n_train", f"{column}_mean"], ascending=[True, False]).iloc[0]
        cnn_best = cnn.loc[cnn[f"{column}_mean"].idxmax()]
        reached = cnn_best[f"{column}_mean"] >= s2_first[f"{column}_mean"]
        out.append(
            f"The S2CNN at its smallest N = {fmt_n(s2_first['n_train'])} scores "
            f"{s2_first[f'{column}_mean']:.1f} %; "
            + (
                f"the CNNs reach that ({cnn_best['model']} at N = {fmt_n(cnn_best['n_train'])}: "
                f"{cnn_best[f'{column}_mean']:.1f} %)."
                if reached
                else f"no CNN reaches that at any N tried (best {cnn_best[f'{column}_mean']:.1f} %"
                f" by {cnn_best['model']} at N = {fmt_n(cnn_best['n_train'])})."
            )
        )

    # 4. costs and equivariance of the best S2CNN vs the best CNN
    if not s2.empty and not cnn.empty:
        b_s2 = s2.loc[s2[f"{column}_mean"].idxmax()]
        b_cnn = cnn.loc[cnn[f"{column}_mean"].idxmax()]
        costs = []
        for col, noun in (
            ("lat_b1_ms_mean", "latency at batch 1"),
            ("lat_b32_ms_mean", "latency at batch 32"),
            ("train_seconds_mean", "training time"),
        ):
            a, b = _num(b_s2[col]), _num(b_cnn[col])
            if np.isfinite(a) and np.isfinite(b) and b > 0:
                unit = "s" if col.startswith("train") else "ms"
                costs.append(f"{noun} {fmt_sig(a)} vs {fmt_sig(b)} {unit} ({a / b:.2g}×)")
        if costs:
            out.append("Cost of the best S2CNN vs the best CNN: " + "; ".join(costs) + ".")
    eq = agg_setting[agg_setting["eq_haar_mean"].notna()]
    if not eq.empty:
        parts = []
        for model, rotate in series_keys(eq):
            rows = eq[(eq["model"] == model) & (eq["rotate_train"] == rotate)]
            parts.append(
                f"{model} (train {TRAIN_LABEL.get(rotate, '?')}) "
                f"{fmt_sig(rows['eq_haar_mean'].mean(), 2)}"
            )
        out.append(
            "Equivariance error under Haar rotations (relative output change, mean over "
            "runs): " + "; ".join(parts) + "."
        )
    return out


def paper_comparison(agg_setting: pd.DataFrame, paper: pd.DataFrame) -> str | None:
    """Mean and largest |ours − paper| over the configurations the paper has, or None."""
    diffs = []
    for _, r in agg_setting.iterrows():
        setting = (r["task"], r["dataset"], int(r["n_items"]))
        for set_name in TEST_SETS:
            rows = match_paper(paper, setting, r["model"], r["rotate_train"], set_name, r["metric"])
            rows = rows[rows["n_train"] == r["n_train"]]
            if not rows.empty and np.isfinite(r[f"test_{set_name}_mean"]):
                diffs.append(r[f"test_{set_name}_mean"] - float(rows["value"].iloc[0]))
    if not diffs:
        return None
    arr = np.asarray(diffs)
    return (
        f"Against the paper's values at matching configurations ({len(arr)} points): ours are on "
        f"average {arr.mean():+.1f} points off "
        f"(largest deviation {arr[np.abs(arr).argmax()]:+.1f})."
    )


# ============================================================================ figures
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """PNG atomically; closes ``fig``."""
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def series_colors(keys: Sequence[Any]) -> dict[Any, Any]:
    """A stable colour per key."""
    plt = _pyplot()
    cmap = plt.get_cmap("tab10" if len(keys) <= 10 else "tab20")
    return {k: cmap(i % cmap.N) for i, k in enumerate(keys)}


def _n_axis(ax: Any, values: Iterable[float]) -> None:
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    values = sorted({float(v) for v in values if np.isfinite(v) and v > 0})
    ax.set_xscale("log")
    ax.set_xlabel("N (training images, log scale)")
    if values:
        gap = (math.log10(values[-1]) - math.log10(values[0])) / 9  # at most ~10 labels
        ticks = [values[0]]
        for v in values[1:]:
            if math.log10(v) - math.log10(ticks[-1]) >= gap:
                ticks.append(v)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt_n(v)))
    if values:
        lo, hi = values[0], values[-1]
        pad = (hi / lo) ** 0.05 if hi > lo else 1.3
        ax.set_xlim(lo / pad, hi * pad)


def _paper_series(rows: pd.DataFrame) -> list[tuple[tuple[str, str], pd.DataFrame]]:
    keys = sorted(
        {(m, r) for m, r in rows[["model", "rotate_train"]].itertuples(index=False)},
        key=lambda p: (family(p[0]) != "s2cnn", params_from_name(p[0])),
    )
    return [
        (k, rows[(rows["model"] == k[0]) & (rows["rotate_train"] == k[1])].sort_values("n_train"))
        for k in keys
    ]


def figure_metric_vs_n(
    agg_setting: pd.DataFrame,
    paper: pd.DataFrame,
    setting: tuple[str, str, int],
    path: Path,
    colors: Mapping[Any, Any],
) -> tuple[Path, str]:
    """Metric vs N per model, a panel per test set (the paper's Figs. 4, 5, 7, 9 layout).

    Returns the path and a note on how the paper's values are shown: dashed in the same colour
    for every series the paper has, else — if the paper has the setting at all — the paper's
    curves in a separate reference row.
    """
    plt = _pyplot()
    metric = str(agg_setting["metric"].iloc[0])
    sets = [s for s in TEST_SETS if agg_setting[f"test_{s}_mean"].notna().any()] or ["nr"]
    keys = series_keys(agg_setting)
    matched = {(k, s): match_paper(paper, setting, *k, s, metric) for k in keys for s in sets}
    matched = {k: v for k, v in matched.items() if not v.empty}
    reference = {s: paper_setting(paper, setting, s, metric) for s in sets}
    show_reference = not matched and any(not v.empty for v in reference.values())
    n_rows = 2 if show_reference else 1
    fig, axes = plt.subplots(
        n_rows, len(sets), figsize=(5.6 * len(sets), 4.2 * n_rows), squeeze=False
    )
    for j, set_name in enumerate(sets):
        ax = axes[0][j]
        n_values: list[float] = []
        for key in keys:
            rows = agg_setting[
                (agg_setting["model"] == key[0]) & (agg_setting["rotate_train"] == key[1])
            ].sort_values("n_train")
            rows = rows[rows[f"test_{set_name}_mean"].notna()]
            if rows.empty:
                continue
            n_values.extend(rows["n_train"])
            ax.errorbar(
                rows["n_train"],
                rows[f"test_{set_name}_mean"],
                yerr=rows[f"test_{set_name}_std"].fillna(0),
                marker="o",
                capsize=3,
                color=colors.get(key),
                label=series_label(*key, rows["parameters"].max()),
            )
            ref = matched.get((key, set_name))
            if ref is not None:
                n_values.extend(ref["n_train"])
                ax.plot(
                    ref["n_train"],
                    ref["value"],
                    linestyle="--",
                    marker="x",
                    color=colors.get(key),
                    alpha=0.8,
                    label=f"paper {FIGURE_NAME.get(ref['figure'].iloc[0], '')}: {key[0]}",
                )
        _n_axis(ax, n_values)
        ax.set_ylabel(METRIC_AXIS[metric])
        ax.set_title(SET_TITLES[set_name])
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        if show_reference:
            rax = axes[1][j]
            ref_rows = reference[set_name]
            if ref_rows.empty:
                rax.axis("off")
                rax.text(
                    0.5,
                    0.5,
                    "the paper has no curve for this test set",
                    ha="center",
                    va="center",
                    transform=rax.transAxes,
                )
                continue
            figs = ", ".join(FIGURE_NAME.get(f, f) for f in sorted(set(ref_rows["figure"])))
            ref_colors = series_colors([k for k, _ in _paper_series(ref_rows)])
            for key, rows in _paper_series(ref_rows):
                rax.plot(
                    rows["n_train"],
                    rows["value"],
                    linestyle="--",
                    marker="x",
                    color=ref_colors[key],
                    label=f"{key[0]} ({fmt_params(params_from_name(key[0]))}, train "
                    f"{TRAIN_LABEL.get(key[1], key[1])})",
                )
            _n_axis(rax, ref_rows["n_train"])
            rax.set_ylabel(METRIC_AXIS[metric])
            rax.set_title(
                f"PAPER REFERENCE ({figs}): other models and N — compare shapes only", fontsize=9
            )
            rax.grid(True, alpha=0.3)
            rax.legend(fontsize=7)
    fig.suptitle(
        f"{setting_title(setting)} — {METRIC_NAME[metric]} vs N "
        "(mean ± std over seeds; dashed: paper)"
    )
    fig.tight_layout()
    if matched:
        names = sorted(
            {
                f"{k[0]} (train {TRAIN_LABEL.get(k[1], k[1])}, {s.upper()} test)"
                for (k, s) in matched
            }
        )
        note = "Paper values (dashed) drawn for: " + ", ".join(names) + "."
    elif show_reference:
        note = (
            "No run matches a configuration of the paper (model, training rotation, N range), "
            "so the paper's curves for this setting are shown in a separate reference row."
        )
    else:
        note = "The paper has no values for this setting."
    return save_figure(fig, path), note


def figure_metric_vs_params(
    agg_setting: pd.DataFrame,
    paper: pd.DataFrame,
    setting: tuple[str, str, int],
    path: Path,
    colors: Mapping[Any, Any],
) -> Path:
    """Metric at each series' largest N vs parameters (log x); the paper's largest-N values as
    hollow markers."""
    plt = _pyplot()
    metric = str(agg_setting["metric"].iloc[0])
    sets = [s for s in TEST_SETS if agg_setting[f"test_{s}_mean"].notna().any()] or ["nr"]
    fig, axes = plt.subplots(1, len(sets), figsize=(5.6 * len(sets), 4.2), squeeze=False)
    for j, set_name in enumerate(sets):
        ax = axes[0][j]
        for key in series_keys(agg_setting):
            rows = agg_setting[
                (agg_setting["model"] == key[0])
                & (agg_setting["rotate_train"] == key[1])
                & agg_setting[f"test_{set_name}_mean"].notna()
            ]
            if rows.empty:
                continue
            r = rows.sort_values("n_train").iloc[-1]
            ax.errorbar(
                [r["parameters"]],
                [r[f"test_{set_name}_mean"]],
                yerr=[_num(r[f"test_{set_name}_std"]) if r["seeds"] > 1 else 0],
                marker="o" if key[1] == "random" else "s",
                capsize=3,
                color=colors.get(key),
                linestyle="none",
                label=f"{series_label(*key, r['parameters'])}, N = {fmt_n(r['n_train'])}",
            )
        ref = paper_setting(paper, setting, set_name, metric)
        for key, rows in _paper_series(ref) if not ref.empty else []:
            r = rows.iloc[-1]
            ax.plot(
                [params_from_name(key[0])],
                [r["value"]],
                marker="D",
                markerfacecolor="none",
                color="0.4",
                linestyle="none",
            )
            ax.annotate(
                f"paper {key[0]}",
                (params_from_name(key[0]), r["value"]),
                fontsize=6,
                xytext=(3, 3),
                textcoords="offset points",
            )
        if not ref.empty:
            ax.plot(
                [],
                [],
                marker="D",
                markerfacecolor="none",
                color="0.4",
                linestyle="none",
                label=f"paper at N = {fmt_n(ref['n_train'].max())}",
            )
        ax.set_xscale("log")
        ax.set_xlabel("parameters (count, log scale)")
        ax.set_ylabel(METRIC_AXIS[metric])
        ax.set_title(f"{SET_TITLES[set_name]}, at each model's largest N")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{setting_title(setting)} — {METRIC_NAME[metric]} vs parameters")
    fig.tight_layout()
    return save_figure(fig, path)


def figure_equivariance(
    agg_setting: pd.DataFrame, setting: tuple[str, str, int], path: Path
) -> Path | None:
    """Equivariance error per model and training rotation (bars, log y); None without data."""
    plt = _pyplot()
    keys = [
        k
        for k in series_keys(agg_setting)
        if agg_setting.loc[
            (agg_setting["model"] == k[0]) & (agg_setting["rotate_train"] == k[1]),
            ["eq_haar_mean", "eq_grid_mean"],
        ]
        .notna()
        .any()
        .any()
    ]
    if not keys:
        return None
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(keys) + 2), 4.2))
    floor = 1e-9
    x = np.arange(len(keys))
    for offset, (column, name, color) in enumerate(
        (
            ("eq_grid", "exact grid rotations (half-turns)", "tab:blue"),
            ("eq_haar", "Haar-random rotations (band-limited)", "tab:orange"),
        )
    ):
        means, stds = [], []
        for key in keys:
            rows = agg_setting[
                (agg_setting["model"] == key[0]) & (agg_setting["rotate_train"] == key[1])
            ]
            values = rows[f"{column}_mean"].dropna()
            means.append(max(values.mean(), floor) if len(values) else math.nan)
            stds.append(values.std(ddof=1) if len(values) > 1 else 0.0)
        means_a, stds_a = np.asarray(means), np.nan_to_num(np.asarray(stds))
        lower = np.minimum(stds_a, np.nan_to_num(means_a) * 0.9)
        ax.bar(
            x + (offset - 0.5) * 0.38,
            np.nan_to_num(means_a, nan=floor),
            width=0.38,
            yerr=[lower, stds_a],
            capsize=3,
            color=color,
            label=name,
        )
    ax.set_yscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels([f"{m}\ntrain {TRAIN_LABEL.get(r, r)}" for m, r in keys], fontsize=7)
    ax.set_ylabel("relative output change ‖f(Rx) − R f(x)‖ / ‖f(x)‖")
    ax.set_title(
        f"{setting_title(setting)}\nequivariance error per model (mean over runs)", fontsize=9
    )
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def figure_latency(frame: pd.DataFrame, path: Path) -> Path | None:
    """Forward latency at batch 1 and 32 vs parameters (log x, log y); None without data."""
    plt = _pyplot()
    rows = frame[frame["lat_b1_ms"].notna() | frame["lat_b32_ms"].notna()]
    if rows.empty:
        return None
    groups = rows.groupby(["model", "bandwidth"], sort=True)
    stats = groups.agg(
        parameters=("parameters", "max"),
        **{
            c: (c, "median")
            for c in (
                "lat_b1_ms",
                "lat_b1_p10_ms",
                "lat_b1_p90_ms",
                "lat_b32_ms",
                "lat_b32_p10_ms",
                "lat_b32_p90_ms",
            )
        },
    ).reset_index()
    colors = series_colors(list(stats["model"].unique()))
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for _, r in stats.iterrows():
        for batch, marker in ((1, "o"), (32, "s")):
            median = r[f"lat_b{batch}_ms"]
            if not np.isfinite(median):
                continue
            err = [
                [max(median - _num(r[f"lat_b{batch}_p10_ms"]), 0)],
                [max(_num(r[f"lat_b{batch}_p90_ms"]) - median, 0)],
            ]
            ax.errorbar(
                [r["parameters"]],
                [median],
                yerr=np.nan_to_num(err),
                marker=marker,
                color=colors[r["model"]],
                capsize=3,
                linestyle="none",
                label=f"{r['model']} ({fmt_params(r['parameters'])}, B = "
                f"{int(r['bandwidth'])}), batch {batch}",
            )
    devices = sorted({str(d) for d in rows["eval_device"].dropna()}) or ["unknown device"]
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters (count, log scale)")
    ax.set_ylabel("forward latency per batch (ms, median; bars p10–p90)")
    ax.set_title(f"Latency vs parameters — {', '.join(devices)}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    return save_figure(fig, path)


# ============================================================================ sample predictions
def _checkpoint(record: Mapping[str, Any], runs_dir: Path) -> Path | None:
    """The best (else last) checkpoint of a record, also looked up next to the record."""
    ckpt = record.get("checkpoint") or {}
    for key in ("best", "last"):
        value = ckpt.get(key)
        if not value:
            continue
        path = Path(value)
        if path.is_file():
            return path
        if record.get("_path"):
            local = Path(record["_path"]).with_suffix("") / "checkpoints" / path.name
            if local.is_file():
                return local
    return None


def load_net(record: Mapping[str, Any], checkpoint: Path) -> Any:
    """The record's net with the weights of ``checkpoint`` (a Lightning checkpoint)."""
    import torch
    from hydra.utils import instantiate

    net = instantiate(dict(record["config"]["model"]))
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    net.load_state_dict(
        {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    )
    return net.eval()


def _sample_miou(pred: np.ndarray, target: np.ndarray, background: int = 0) -> float:
    classes = sorted((set(np.unique(pred)) | set(np.unique(target))) - {background})
    ious = [
        np.sum((pred == c) & (target == c)) / np.sum((pred == c) | (target == c)) for c in classes
    ]
    return 100 * float(np.mean(ious)) if ious else math.nan


def _record_family(record: Mapping[str, Any]) -> str:
    return family(record["model"]["name"], record["model"].get("target"))


def _largest_n(
    candidates: list[tuple[Mapping[str, Any], Path]], rotate_train: str | None = None
) -> tuple[Mapping[str, Any], Path] | None:
    """The candidate with the largest N (lowest seed on ties), optionally of one training
    rotation."""
    pool = [
        rc
        for rc in candidates
        if rotate_train is None or rc[0]["data"].get("rotate_train") == rotate_train
    ]
    if not pool:
        return None
    return max(pool, key=lambda rc: (rc[0]["data"].get("n_train") or 0, -(rc[0].get("seed") or 0)))


def pick_sample_records(
    records: Sequence[Mapping[str, Any]], runs_dir: Path
) -> tuple[dict[str, tuple[Mapping[str, Any], Path]], str]:
    """Records for the sample figure: an S2CNN (NR-trained preferred) and the CNNs trained R and
    NR, in one segmentation setting, each at its largest N with a checkpoint on disk.

    Returns ``{role: (record, checkpoint)}`` (roles ``s2cnn``, ``cnn_r``, ``cnn_nr``) and a reason
    when it is empty.
    """
    seg = [r for r in records if (r.get("data") or {}).get("task") == "segmentation"]
    if not seg:
        return {}, "no segmentation runs"
    by_setting: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in seg:
        d = r["data"]
        key = (
            d.get("dataset") != "mnist",
            d.get("n_items") or 1,
            d.get("dataset"),
            d.get("bandwidth"),
            d.get("grid"),
        )
        by_setting.setdefault(key, []).append(r)
    reason = "no segmentation setting has both an S2CNN and a CNN with a checkpoint on disk"
    for key in sorted(by_setting, key=str):
        pool = [(r, _checkpoint(r, runs_dir)) for r in by_setting[key]]
        missing = sum(c is None for _, c in pool)
        pool = [(r, c) for r, c in pool if c is not None]
        s2 = [rc for rc in pool if _record_family(rc[0]) == "s2cnn"]
        cnn = [rc for rc in pool if _record_family(rc[0]) == "cnn"]
        picks = {
            "s2cnn": _largest_n(s2, "none") or _largest_n(s2),
            "cnn_r": _largest_n(cnn, "random"),
            "cnn_nr": _largest_n(cnn, "none"),
        }
        picks = {k: v for k, v in picks.items() if v is not None}
        if "s2cnn" in picks and len(picks) > 1:
            return picks, ""
        if missing:
            reason += f" ({missing} checkpoint(s) missing)"
    return {}, reason


def figure_samples(
    records: Sequence[Mapping[str, Any]], runs_dir: Path, path: Path, index: int = 0
) -> tuple[Path | None, str]:
    """Input, ground truth and predictions of the picked models on one rotated test sphere, in
    equirectangular and Mollweide views. Returns ``(path or None, note)``."""
    picks, reason = pick_sample_records(records, runs_dir)
    if not picks:
        return None, f"Sample predictions skipped: {reason}."
    import matplotlib
    import torch
    from hydra.utils import instantiate

    from sphere_bench.data.preview import MASK_COLORS, equirectangular

    data_record = picks["s2cnn"][0]
    try:
        data_cfg = dict(data_record["config"]["data"])
        data_cfg["progress"] = False
        dm = instantiate(data_cfg)
        if "r" not in dm.test_set_names:
            return None, "Sample predictions skipped: the runs have no rotated (R) test set."
        dm.test_specs = {"r": dm.test_specs["r"]}  # generate / load only the R test set
        dm.setup("test")
        loader = dm.test_dataloader()[dm.test_set_names.index("r")]
        x, y = dm.on_after_batch_transfer(next(iter(loader)), 0)
        index = min(index, x.shape[0] - 1)
        x, y = x[index : index + 1], y[index]
        columns: list[tuple[str, np.ndarray]] = [
            ("input (R test sample)", x[0, 0].numpy()),
            ("ground truth", y.numpy()),
        ]
        titles = {"s2cnn": "S2CNN", "cnn_r": "CNN", "cnn_nr": "CNN"}
        with torch.no_grad():
            for role in ("s2cnn", "cnn_r", "cnn_nr"):
                if role not in picks:
                    continue
                record, ckpt = picks[role]
                net = load_net(record, ckpt)
                pred = net(x).argmax(1)[0].numpy()
                miou = _sample_miou(pred, y.numpy())
                columns.append(
                    (
                        f"{titles[role]} {record['model']['name']} "
                        f"(train {TRAIN_LABEL.get(record['data'].get('rotate_train'), '?')}, "
                        f"N = {fmt_n(record['data'].get('n_train') or 0)})\nthis sample: mIoU "
                        f"{miou:.0f} %",
                        pred,
                    )
                )
    except Exception as err:  # noqa: BLE001 - any failure here only drops one figure
        log.warning("sample predictions skipped: %s: %s", type(err).__name__, err)
        return None, f"Sample predictions skipped: {type(err).__name__}: {err}."
    plt = _pyplot()
    cmap = matplotlib.colors.ListedColormap(MASK_COLORS)
    grid = dm.grid
    fig = plt.figure(figsize=(3.3 * len(columns), 4.6))
    for c, (title, values) in enumerate(columns):
        raster = equirectangular(np.asarray(values, dtype=float).reshape(-1), grid)
        is_mask = c > 0
        style = (
            {"cmap": cmap, "vmin": -0.5, "vmax": len(MASK_COLORS) - 0.5}
            if is_mask
            else {"cmap": "gray"}
        )
        ax = fig.add_subplot(2, len(columns), c + 1)
        ax.imshow(raster, extent=(-180, 180, -90, 90), interpolation="nearest", **style)
        ax.set_title(title, fontsize=7)
        ax.set_xlabel("longitude (°)", fontsize=7)
        if c == 0:
            ax.set_ylabel("equirectangular\nlatitude (°)", fontsize=7)
        ax.tick_params(labelsize=6)
        ax = fig.add_subplot(2, len(columns), len(columns) + c + 1, projection="mollweide")
        lat = np.linspace(np.pi / 2, -np.pi / 2, raster.shape[0] + 1)
        lon = np.linspace(-np.pi, np.pi, raster.shape[1] + 1)
        ax.pcolormesh(lon, lat, raster, **style)
        ax.set_xticklabels([])
        ax.set_yticklabels([])
        ax.grid(True, alpha=0.3)
        if c == 0:
            ax.set_ylabel("Mollweide", fontsize=7)
    names = ", ".join(f"{k}={n}" for k, n in enumerate(dm.class_names))
    fig.suptitle(f"Predictions on rotated test sphere #{index} [{names}]", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path), (
        f"Rotated test sample #{index} of {data_record['data'].get('dataset')} "
        f"(B = {data_record['data'].get('bandwidth')}); models at their largest N."
    )


# ============================================================================ report
@dataclass
class Report:
    """What :func:`build_report` wrote."""

    markdown: Path
    tables: dict[str, Path]
    figures: dict[str, Path]
    frames: dict[str, pd.DataFrame]
    sentences: dict[str, list[str]]
    notes: list[str]


def _setup_lines(frame: pd.DataFrame, agg: pd.DataFrame, runs: Runs) -> list[str]:
    def values(column: str) -> str:
        if column not in frame or frame[column].dropna().empty:
            return "–"
        return ", ".join(sorted({str(v) for v in frame[column].dropna()}))

    lines = [
        f"- Records: {len(runs.complete)} complete, {len(runs.failed)} failed, "
        f"{len(runs.unreadable)} unreadable; sweeps: {values('sweep')}.",
        f"- Training device: {values('device')}; torch threads: {values('threads')}; "
        f"torch {values('torch')}.",
        f"- Evaluation (latency, equivariance) device: {values('eval_device')}; threads: "
        f"{values('eval_threads')}.",
    ]
    if not agg.empty:
        rows = []
        for setting in settings(agg):
            part = select(frame, setting)
            rows.append(
                [
                    setting_title(setting),
                    ", ".join(sorted({str(b) for b in part["bandwidth"]})),
                    ", ".join(fmt_n(n) for n in sorted(set(part["n_train"]))),
                    ", ".join(str(s) for s in sorted(set(part["seed"].dropna()))),
                    ", ".join(sorted(set(part["model"]))),
                    ", ".join(TRAIN_LABEL.get(r, r) for r in sorted(set(part["rotate_train"]))),
                    ", ".join(
                        str(e) for e in sorted({str(v) for v in part["max_epochs"].dropna()})
                    ),
                ]
            )
        lines += [
            "",
            markdown_table(
                [
                    "setting",
                    "bandwidth B",
                    "N values",
                    "seeds",
                    "models",
                    "train rotation",
                    "max epochs",
                ],
                rows,
            ),
        ]
    return lines


def _failed_lines(runs: Runs) -> list[str]:
    if not runs.failed and not runs.unreadable:
        return ["None."]
    lines = []
    if runs.failed:
        rows = []
        for r in runs.failed:
            err = r.get("error") or {}
            message = str(err.get("message") or "").strip().splitlines()
            message = message[0][:200] if message else ""
            data = r.get("data") or {}
            rows.append(
                [
                    r.get("sweep_name"),
                    (r.get("model") or {}).get("name"),
                    data.get("name"),
                    fmt_n(_num(data.get("n_train"))),
                    TRAIN_LABEL.get(data.get("rotate_train"), "?"),
                    r.get("seed"),
                    err.get("type", "?"),
                    message,
                ]
            )
        lines.append(
            markdown_table(
                ["sweep", "model", "data", "N", "train", "seed", "error", "message"], rows
            )
        )
    if runs.unreadable:
        lines.append("Unreadable records (skipped):\n")
        lines += [f"- `{p}`: {why}" for p, why in runs.unreadable]
    return lines


def build_report(
    runs_dir: Path | str,
    out_dir: Path | str,
    paper_path: Path | str | None = None,
    sweeps: Sequence[str] | None = None,
    samples: bool = True,
    use_wandb: bool = False,
    command: str | None = None,
) -> Report:
    """Load, aggregate and write every table, figure and ``report.md`` under ``out_dir``."""
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    runs = load_runs(runs_dir, sweeps)
    frame = runs_frame(runs.complete)
    agg = aggregate(frame)
    paper = load_paper(paper_path)
    tables_dir, figures_dir = out_dir / "tables", out_dir / "figures"
    tables: dict[str, Path] = {}
    figures: dict[str, Path] = {}
    frames: dict[str, pd.DataFrame] = {}
    sentences: dict[str, list[str]] = {}
    notes: list[str] = []
    colors = series_colors(series_keys(agg))

    def rel(path: Path) -> str:
        return os.path.relpath(path, out_dir)

    md = ["# sphere_bench report: S2CNN vs CNN with rotation augmentation", ""]
    md += [
        f"Generated {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')} by "
        f"`{command or 'python -m sphere_bench.report'}` from `{runs_dir}`. Metrics in percent "
        "(records store fractions): classification accuracy, segmentation mIoU over the ten "
        "non-background classes (the paper's number). NR = unrotated, R = Haar-random rotations; "
        "'train NR/R' is the training set, the NR and R test sets are the columns. Mean ± std "
        "over seeds (std only with ≥ 2 seeds). Paper values: Gerken et al., ICML 2022, read off "
        "the figures (`paper_reference.csv`).",
        "",
    ]
    answer = answer_frame(agg)
    md += ["## Answer", ""]
    if agg.empty:
        md += ["No complete run yet: nothing to answer.", ""]
    for setting in settings(agg):
        part = select(agg, setting)
        lines = answer_sentences(part)
        comparison = paper_comparison(part, paper)
        if comparison:
            lines.append(comparison)
        sentences[slug(setting)] = lines
        md += [f"**{setting_title(setting)}**", ""] + [f"- {s}" for s in lines] + [""]
    if not answer.empty:
        tables["answer"] = write_csv(answer, tables_dir / "answer.csv")
        text = answer_markdown(answer)
        tables["answer_md"] = tables_dir / "answer.md"
        atomic_write_text(tables["answer_md"], text)
        frames["answer"] = answer
        md += [
            "Per model its best rotated-test metric over N, with costs at that N "
            f"([CSV]({rel(tables['answer'])})):",
            "",
            text,
        ]

    md += ["## Setup", ""] + _setup_lines(frame, agg, runs) + [""]

    for setting in settings(agg):
        part = select(agg, setting)
        name = slug(setting)
        md += [f"## {setting_title(setting)}", ""]
        headers, rows = setting_table(part)
        text = markdown_table(headers, rows)
        tables[name] = write_csv(part, tables_dir / f"{name}.csv")
        tables[f"{name}_md"] = tables_dir / f"{name}.md"
        atomic_write_text(tables[f"{name}_md"], f"# {setting_title(setting)}\n\n{text}")
        frames[name] = part
        md += [text, f"[CSV with means, stds and all metrics]({rel(tables[name])})", ""]
        path, note = figure_metric_vs_n(
            part, paper, setting, figures_dir / f"report_metric_vs_n_{name}.png", colors
        )
        figures[f"metric_vs_n_{name}"] = path
        md += [f"![metric vs N]({rel(path)})", "", note, ""]
        path = figure_metric_vs_params(
            part, paper, setting, figures_dir / f"report_metric_vs_params_{name}.png", colors
        )
        figures[f"metric_vs_params_{name}"] = path
        md += [f"![metric vs parameters]({rel(path)})", ""]
        path = figure_equivariance(part, setting, figures_dir / f"report_equivariance_{name}.png")
        if path is not None:
            figures[f"equivariance_{name}"] = path
            md += [f"![equivariance error]({rel(path)})", ""]
        else:
            md += ["No equivariance measurements in these records.", ""]

    md += ["## Latency", ""]
    path = (
        figure_latency(frame, figures_dir / "report_latency_vs_params.png")
        if not frame.empty
        else None
    )
    if path is not None:
        figures["latency_vs_params"] = path
        md += [f"![latency vs parameters]({rel(path)})", ""]
    else:
        md += ["No latency measurements in these records (no `evaluation.latency`).", ""]

    md += ["## Sample predictions", ""]
    if samples:
        path, note = figure_samples(
            runs.complete, runs_dir, figures_dir / "report_sample_predictions.png"
        )
        if path is not None:
            figures["sample_predictions"] = path
            md += [f"![sample predictions]({rel(path)})", ""]
        md += [note, ""]
        notes.append(note)
    else:
        md += ["Sample predictions not requested (`--no-samples`).", ""]

    md += ["## Failed runs", ""] + _failed_lines(runs) + [""]
    report_path = out_dir / "report.md"
    atomic_write_text(report_path, "\n".join(md).rstrip() + "\n")
    log.info("wrote %s (%d tables, %d figures)", report_path, len(tables), len(figures))
    report = Report(report_path, tables, figures, frames, sentences, notes)
    if use_wandb:
        log_to_wandb(report, out_dir)
    return report


def log_to_wandb(report: Report, out_dir: Path) -> None:
    """Log tables and figures to W&B (offline unless ``WANDB_MODE=online``), job_type report."""
    import wandb

    mode = "online" if os.environ.get("WANDB_MODE", "offline").lower() == "online" else "offline"
    wandb_dir = out_dir / "wandb"
    wandb_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project="sphere_bench",
        job_type="report",
        name="report",
        mode=mode,
        dir=str(wandb_dir),
        reinit="finish_previous",
    )
    try:
        for name, frame in report.frames.items():
            clean = frame.astype(object).where(frame.notna(), None)
            run.log({f"table/{name}": wandb.Table(dataframe=clean)})
        for name, path in report.figures.items():
            run.log({f"figure/{name}": wandb.Image(str(path))})
        run.summary["report"] = str(report.markdown)
    finally:
        run.finish()


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m sphere_bench.report --runs results/runs --out results``."""
    parser = argparse.ArgumentParser(
        prog="python -m sphere_bench.report", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--runs", default="results/runs", help="folder of <sweep>/<hash>.json")
    parser.add_argument(
        "--sweep",
        action="append",
        default=None,
        help="only this sweep (repeatable); default: every sweep",
    )
    parser.add_argument("--out", default="results", help="report.md, tables/ and figures/ here")
    parser.add_argument("--paper", default="results/paper_reference.csv")
    parser.add_argument("--wandb", action="store_true", help="log tables and figures to W&B")
    parser.add_argument("--no-samples", action="store_true", help="skip the sample predictions")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    command = "python -m sphere_bench.report " + " ".join(
        sys.argv[1:] if argv is None else list(argv)
    )
    report = build_report(
        args.runs,
        args.out,
        args.paper,
        args.sweep,
        samples=not args.no_samples,
        use_wandb=args.wandb,
        command=command.strip(),
    )
    print(report.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

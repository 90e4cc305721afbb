"""Number formatting, Markdown/CSV tables and the data-driven answer sentences."""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sphere_bench.io import atomic_write_text
from sphere_bench.report.records import (
    FIGURE_NAME,
    METRIC_NAME,
    match_paper,
    select,
    series_keys,
    settings,
    slug,
    to_float,
)
from sphere_bench.schema import ROTATION_LABEL, TEST_SETS


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
    train = ROTATION_LABEL.get(rotate_train, rotate_train)
    return f"{model} ({fmt_params(parameters)}, train {train})"


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
            ROTATION_LABEL.get(r["rotate_train"], "?"),
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
            ROTATION_LABEL.get(r["rotate_train"], "?"),
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
        f"**{row['model']}** (train {ROTATION_LABEL.get(row['rotate_train'], '?')}, "
        f"{fmt_params(row['parameters'])} parameters)"
    )


def _noise_note(a: Mapping[str, Any], b: Mapping[str, Any], column: str) -> str:
    """How much a difference between two aggregated rows can be trusted."""
    if a["seeds"] < 2 or b["seeds"] < 2:
        return " (single seed: no error bar)"
    spread = math.hypot(to_float(a[f"{column}_std"]), to_float(b[f"{column}_std"]))
    diff = abs(to_float(a[f"{column}_mean"]) - to_float(b[f"{column}_mean"]))
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


@dataclass(frozen=True)
class _Scored:
    """The rows of one setting that have a test metric, and how the sentences name it."""

    metric: str  # "accuracy" | "mIoU"
    column: str  # "test_r" (when any run has an R test) else "test_nr"
    test_name: str  # "rotated (R)" | "unrotated (NR)"
    rows: pd.DataFrame  # the aggregated rows with a finite f"{column}_mean"
    s2: pd.DataFrame  # those of the S2CNN family
    cnn: pd.DataFrame  # those of the CNN family

    @property
    def mean(self) -> str:
        return f"{self.column}_mean"

    def best(self, rows: pd.DataFrame) -> pd.Series:
        return rows.loc[rows[self.mean].idxmax()]


def answer_sentences(agg_setting: pd.DataFrame) -> list[str]:
    """Data-driven sentences for one setting (aggregated rows of one task/dataset/items).

    In order: the winner on the rotated test set and the best S2CNN against the best CNN
    (:func:`_winner_sentences`), the NR → R drop of the models trained on NR
    (:func:`_drop_sentence`), the CNNs' trend with N (:func:`_trend_sentence`), the N from which
    a CNN matches the S2CNN's smallest-N score (:func:`_catch_up_sentence`), the costs of the best
    S2CNN against the best CNN (:func:`_cost_sentence`) and the equivariance errors
    (:func:`_equivariance_sentence`). A sentence without data is left out.
    """
    if agg_setting.empty:
        return []
    has_r = agg_setting["test_r_mean"].notna().any()
    column = "test_r" if has_r else "test_nr"
    rows = agg_setting[agg_setting[f"{column}_mean"].notna()]
    sc = _Scored(
        metric=METRIC_NAME[str(agg_setting["metric"].iloc[0])],
        column=column,
        test_name="rotated (R)" if has_r else "unrotated (NR)",
        rows=rows,
        s2=rows[rows["family"] == "s2cnn"],
        cnn=rows[rows["family"] == "cnn"],
    )
    if rows.empty:
        return [f"No run has a test {sc.metric} yet."]
    out = _winner_sentences(sc)
    if has_r:
        out.append(_drop_sentence(agg_setting))
    out += [
        _trend_sentence(sc),
        _catch_up_sentence(sc),
        _cost_sentence(sc),
        _equivariance_sentence(agg_setting),
    ]
    return [sentence for sentence in out if sentence]


def _winner_sentences(sc: _Scored) -> list[str]:
    """The best model on the test set; the best S2CNN against the best CNN, overall and at the
    largest N both were trained with."""
    column, mean = sc.column, sc.mean
    best = sc.best(sc.rows)
    out = [
        f"On the {sc.test_name} test set the best model is {_label(best)}: {sc.metric} "
        f"{fmt_pm(best[mean], best[f'{column}_std'])} % "
        f"at N = {fmt_n(best['n_train'])}."
    ]
    if sc.s2.empty or sc.cnn.empty:
        return out
    b_s2, b_cnn = sc.best(sc.s2), sc.best(sc.cnn)
    diff = b_s2[mean] - b_cnn[mean]
    verb = "beats" if diff > 0 else ("ties with" if diff == 0 else "stays below")
    params = _ratio_text(b_cnn["parameters"], b_s2["parameters"], "parameters", "the S2CNN")
    out.append(
        f"Best against best, the S2CNN {_label(b_s2)} {verb} the best CNN {_label(b_cnn)} by "
        f"{abs(diff):.1f} points ({b_s2[mean]:.1f} vs "
        f"{b_cnn[mean]:.1f} %){_noise_note(b_s2, b_cnn, column)}"
        + (f"; the CNN has {params}." if params else ".")
    )
    common = sorted(set(sc.s2["n_train"]) & set(sc.cnn["n_train"]))
    if common:
        n = common[-1]
        a = sc.best(sc.s2[sc.s2["n_train"] == n])
        b = sc.best(sc.cnn[sc.cnn["n_train"] == n])
        d = a[mean] - b[mean]
        out.append(
            f"At equal N = {fmt_n(n)} (the largest N both were trained with) the S2CNN is "
            f"{'ahead' if d > 0 else 'behind'} by {abs(d):.1f} points "
            f"({a[mean]:.1f} vs {b[mean]:.1f} % for {b['model']}, "
            f"train {ROTATION_LABEL.get(b['rotate_train'], '?')})."
        )
    return out


def _drop_sentence(agg_setting: pd.DataFrame) -> str:
    """The NR → R drop of every model trained without rotations, at its largest N."""
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
    if not drops:
        return ""
    return "Trained without rotations (NR), NR test → R test: " + "; ".join(drops) + "."


def _trend_sentence(sc: _Scored) -> str:
    """How the CNNs' (else every model's) test metric changes from the smallest to the largest N."""
    mean = sc.mean
    trends = []
    for model, rotate in series_keys(sc.cnn if not sc.cnn.empty else sc.rows):
        rows = sc.rows[(sc.rows["model"] == model) & (sc.rows["rotate_train"] == rotate)]
        rows = rows.sort_values("n_train")
        if len(rows) < 2:
            continue
        values = rows[mean].to_numpy()
        first, last = rows.iloc[0], rows.iloc[-1]
        diff = last[mean] - first[mean]
        steps = np.diff(values)
        shape = (
            "rising at every step"
            if (steps > 0).all()
            else "falling at every step"
            if (steps < 0).all()
            else "not monotone"
        )
        trends.append(
            f"{model} (train {ROTATION_LABEL.get(rotate, '?')}) "
            f"{'gains' if diff >= 0 else 'loses'} {abs(diff):.1f} points from N = "
            f"{fmt_n(first['n_train'])} to {fmt_n(last['n_train'])} "
            f"({first[mean]:.1f} → {last[mean]:.1f} %, {shape})"
        )
    if not trends:
        return ""
    return f"With more training data, {sc.test_name} test {sc.metric}: " + "; ".join(trends) + "."


def _catch_up_sentence(sc: _Scored) -> str:
    """The S2CNN's score at its smallest N, and the least N from which some CNN reaches it."""
    if sc.s2.empty or sc.cnn.empty:
        return ""
    mean = sc.mean
    s2_first = sc.s2.sort_values(["n_train", mean], ascending=[True, False]).iloc[0]
    target = s2_first[mean]
    reaching = sc.cnn[sc.cnn[mean] >= target]
    if reaching.empty:
        cnn_best = sc.best(sc.cnn)
        verdict = (
            f"no CNN reaches that at any N tried (best {cnn_best[mean]:.1f} %"
            f" by {cnn_best['model']} at N = {fmt_n(cnn_best['n_train'])})."
        )
    else:  # the least training data with which some CNN matches it
        row = reaching.sort_values(["n_train", mean], ascending=[True, False]).iloc[0]
        verdict = (
            f"the CNNs reach that from N = {fmt_n(row['n_train'])} on ({row['model']}, train "
            f"{ROTATION_LABEL.get(row['rotate_train'], '?')}: {row[mean]:.1f} %)."
        )
    return (
        f"The S2CNN at its smallest N = {fmt_n(s2_first['n_train'])} scores {target:.1f} %; "
        + verdict
    )


def _cost_sentence(sc: _Scored) -> str:
    """Latency (batch 1 and 32) and training time of the best S2CNN against the best CNN."""
    if sc.s2.empty or sc.cnn.empty:
        return ""
    b_s2, b_cnn = sc.best(sc.s2), sc.best(sc.cnn)
    costs = []
    for col, noun in (
        ("lat_b1_ms_mean", "latency at batch 1"),
        ("lat_b32_ms_mean", "latency at batch 32"),
        ("train_seconds_mean", "training time"),
    ):
        a, b = to_float(b_s2[col]), to_float(b_cnn[col])
        if np.isfinite(a) and np.isfinite(b) and b > 0:
            unit = "s" if col.startswith("train") else "ms"
            costs.append(f"{noun} {fmt_sig(a)} vs {fmt_sig(b)} {unit} ({a / b:.2g}×)")
    if not costs:
        return ""
    return "Cost of the best S2CNN vs the best CNN: " + "; ".join(costs) + "."


def _equivariance_sentence(agg_setting: pd.DataFrame) -> str:
    """The mean Haar equivariance error of every series that has one."""
    eq = agg_setting[agg_setting["eq_haar_mean"].notna()]
    if eq.empty:
        return ""
    parts = []
    for model, rotate in series_keys(eq):
        rows = eq[(eq["model"] == model) & (eq["rotate_train"] == rotate)]
        parts.append(
            f"{model} (train {ROTATION_LABEL.get(rotate, '?')}) "
            f"{fmt_sig(rows['eq_haar_mean'].mean(), 2)}"
        )
    return (
        "Equivariance error under Haar rotations (relative output change, mean over "
        "runs): " + "; ".join(parts) + "."
    )


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


def paper_points_table(
    agg_setting: pd.DataFrame, paper: pd.DataFrame
) -> tuple[list[str], list[list[str]]] | None:
    """Our points next to the paper's at the same configuration, with the difference in points.

    One row per (model, training rotation, N, test set) for which the paper has a value (same
    task, dataset, items, model name, training and test rotation, metric and N; values read off
    the paper's figures). ``None`` when there is no such point.
    """
    metric = METRIC_NAME[str(agg_setting["metric"].iloc[0])]
    rows = []
    ordered = agg_setting.sort_values(["model", "rotate_train", "n_train"])
    for _, r in ordered.iterrows():
        setting = (r["task"], r["dataset"], int(r["n_items"]))
        for set_name in TEST_SETS:
            ref = match_paper(paper, setting, r["model"], r["rotate_train"], set_name, r["metric"])
            ref = ref[ref["n_train"] == r["n_train"]]
            ours = to_float(r[f"test_{set_name}_mean"])
            if ref.empty or not np.isfinite(ours):
                continue
            value, unc = float(ref["value"].iloc[0]), float(ref["uncertainty"].iloc[0])
            figure = str(ref["figure"].iloc[0])
            rows.append([
                FIGURE_NAME.get(figure, figure), r["model"],
                ROTATION_LABEL.get(r["rotate_train"], r["rotate_train"]), set_name.upper(),
                fmt_n(r["n_train"]), fmt_pm(ours, to_float(r[f"test_{set_name}_std"])),
                f"{value:.1f} ± {unc:.1f}", f"{ours - value:+.1f}",
            ])  # fmt: skip
    if not rows:
        return None
    headers = [
        "paper figure", "model", "train", "test", "N", f"ours ({metric} %)",
        "paper (% ± read-off unc.)", "ours − paper (points)",
    ]  # fmt: skip
    return headers, rows

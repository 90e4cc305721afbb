"""The report's figures (PNG, matplotlib Agg, written atomically)."""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sphere_bench.io import atomic_write_bytes
from sphere_bench.report.records import (
    FIGURE_NAME,
    LATENCY_COLUMNS,
    METRIC_AXIS,
    METRIC_NAME,
    SET_TITLES,
    family,
    match_paper,
    paper_setting,
    params_from_name,
    series_keys,
    setting_title,
    to_float,
)
from sphere_bench.report.text import fmt_n, fmt_params, series_label
from sphere_bench.schema import ROTATION_LABEL, TEST_SETS


# ============================================================================ figures
def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """PNG atomically; closes ``fig``."""
    plt = pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def series_colors(keys: Sequence[Any]) -> dict[Any, Any]:
    """A stable colour per key."""
    plt = pyplot()
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
    plt = pyplot()
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
                    f"{ROTATION_LABEL.get(key[1], key[1])})",
                )
            _n_axis(rax, ref_rows["n_train"])
            rax.set_ylabel(METRIC_AXIS[metric])
            rax.set_title(f"PAPER REFERENCE ({figs}): other models and N, shapes only", fontsize=9)
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
                f"{k[0]} (train {ROTATION_LABEL.get(k[1], k[1])}, {s.upper()} test)"
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
    plt = pyplot()
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
                yerr=[to_float(r[f"test_{set_name}_std"]) if r["seeds"] > 1 else 0],
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
    plt = pyplot()
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
    ax.set_xticklabels([f"{m}\ntrain {ROTATION_LABEL.get(r, r)}" for m, r in keys], fontsize=7)
    invariance = (agg_setting["task"] == "classification").all()
    ax.set_ylabel(
        "relative logit change ‖f(Rx) − f(x)‖ / ‖f(x)‖ (invariance)"
        if invariance
        else "relative output change ‖f(Rx) − R f(x)‖ / ‖f(x)‖"
    )
    ax.set_title(
        f"{setting_title(setting)}\nequivariance error per model (mean over runs)", fontsize=9
    )
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def figure_latency(frame: pd.DataFrame, path: Path) -> Path | None:
    """Forward latency at batch 1 and 32 vs parameters (log x, log y); None without data."""
    plt = pyplot()
    rows = frame[frame["lat_b1_ms"].notna() | frame["lat_b32_ms"].notna()]
    if rows.empty:
        return None
    groups = rows.groupby(["model", "bandwidth"], sort=True)
    stats = groups.agg(
        parameters=("parameters", "max"),
        **{
            c: (c, "median")
            for c in LATENCY_COLUMNS
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
                [max(median - to_float(r[f"lat_b{batch}_p10_ms"]), 0)],
                [max(to_float(r[f"lat_b{batch}_p90_ms"]) - median, 0)],
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

"""The architecture-search report: every trial of a search sweep, ranked on validation.

    python -m sphere_bench.report.search --runs results/records --sweep search_paper_fig4_cnn \\
        --baseline-sweep paper_fig4_cpu --planned 20 --out results/fig4_cpu/search.md

Reads the records of one ``hparams_search`` sweep (``conf/hparams_search/``; each trial is an
ordinary job whose record holds the net that was trained) and writes one Markdown page: a row per
trial with its shape (widths, kernels, strides, head), parameters, epochs, the best validation
value (the selection criterion, as in Gerken et al., ICML 2022, App. C: the best of 20 random
architectures on the hold-out set) and the test values, sorted by validation. The pick is the
first row; test values are shown for every trial but never used to choose. With
``--baseline-sweep``, the records of that sweep with the same model config name, data and N as
the trials (e.g. ``cnn_cls_114k`` of ``paper_fig4_cpu``) are listed below the table for
comparison, and the pick's test values are set beside them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sphere_bench.io import atomic_write_text
from sphere_bench.report.records import load_runs, to_float
from sphere_bench.report.text import markdown_table
from sphere_bench.schema import ROTATION_LABEL
from sphere_bench.train.search import base_model_name

log = logging.getLogger(__name__)

__all__ = ["main", "search_page", "trial_row"]

HEADERS = (
    "rank", "config hash", "widths", "kernels", "strides", "head", "parameters", "epochs (best)",
    "val", "test R", "test NR", "train time",
)  # fmt: skip


def _percent(value: Any) -> str:
    number = to_float(value)
    return "–" if number != number else f"{100 * number:.2f}"


def _test(record: Mapping[str, Any], test_set: str, metric: str) -> Any:
    return ((record.get("test") or {}).get(test_set) or {}).get(metric)


def _metric(record: Mapping[str, Any]) -> str:
    """``acc`` or ``miou`` from the record's monitored value (``val/acc``, ``val/miou``)."""
    return str(record.get("monitor") or "val/acc").split("/")[-1]


def _minutes(record: Mapping[str, Any]) -> str:
    seconds = to_float((record.get("timing") or {}).get("train_seconds"))
    return "–" if seconds != seconds else f"{seconds / 60:.0f} min"


def trial_row(rank: int | str, record: Mapping[str, Any]) -> list[str]:
    """One table row (:data:`HEADERS`) for a trial's (or a baseline's) record."""
    model = (record.get("config") or {}).get("model") or {}
    timing = record.get("timing") or {}
    best = timing.get("best_epoch")
    metric = _metric(record)
    return [
        str(rank),
        str(record.get("config_hash", "?")),
        str(model.get("features", "–")),
        str(model.get("kernel_sizes", "–")),
        str(model.get("strides", "–")),
        str(model.get("head", "mean")),
        f"{int((record.get('model') or {}).get('parameters', 0)):,}",
        f"{record.get('epochs_run', '–')} ({best if best is not None else '–'})",
        _percent(record.get("val_best")),
        _percent(_test(record, "r", metric)),
        _percent(_test(record, "nr", metric)),
        _minutes(record),
    ]


def _model_name(record: Mapping[str, Any]) -> str:
    return base_model_name(str((record.get("model") or {}).get("name", "")))


def _same_setting(record: Mapping[str, Any], trial: Mapping[str, Any]) -> bool:
    keys = ("name", "n_train", "bandwidth", "rotate_train", "grid")
    return all(
        (record.get("data") or {}).get(k) == (trial.get("data") or {}).get(k) for k in keys
    ) and _model_name(record) == _model_name(trial)


def search_page(
    trials: Sequence[Mapping[str, Any]],
    sweep: str,
    baselines: Sequence[Mapping[str, Any]] = (),
    failed: int = 0,
    planned: int | None = None,
) -> str:
    """The Markdown page: trials ranked by validation value, the pick, and the baselines.

    Raises
    ------
    ValueError
        When ``trials`` is empty (nothing to rank).
    """
    if not trials:
        raise ValueError(f"sweep {sweep!r} has no complete trial records to rank")
    ranked = sorted(trials, key=lambda r: -to_float(r.get("val_best")))
    pick = ranked[0]
    metric = _metric(pick)
    data = pick.get("data") or {}
    search = (pick.get("config") or {}).get("search") or {}
    rotation = ROTATION_LABEL.get(str(data.get("rotate_train")), data.get("rotate_train"))
    lines = [
        f"# Architecture search `{sweep}`",
        "",
        f"{len(trials)} complete trials"
        + (f" of {planned} planned (the search is not finished: the ranking can change)"
           if planned and len(trials) < planned else "")
        + (f" ({failed} failed or not run)" if failed else "")
        + f" of `{_model_name(pick)}`'s family on {data.get('name')} "
        f"(N = {data.get('n_train')}, B = {data.get('bandwidth')}, trained on "
        f"{rotation}), budget {int(search.get('param_budget', 0)):,} parameters "
        f"± {100 * float(search.get('budget_tolerance', 0)):.0f} %. Ranked by the best validation "
        f"{metric} (the selection criterion); the test columns are shown, never used to choose.",
        "",
        markdown_table(HEADERS, [trial_row(i + 1, r) for i, r in enumerate(ranked)]),
        f"**Pick:** `{pick.get('config_hash')}`: {metric} {_percent(pick.get('val_best'))} % on "
        f"validation, {_percent(_test(pick, 'r', metric))} % on the R test set, "
        f"{_percent(_test(pick, 'nr', metric))} % on NR.",
    ]
    matching = [b for b in baselines if _same_setting(b, pick)]
    if matching:
        lines += ["", "Baseline (the hand-designed net of the same name, same data and N):", ""]
        lines.append(markdown_table(HEADERS, [trial_row("–", b) for b in matching]))
        for base in matching:
            delta = 100 * (to_float(_test(pick, "r", metric)) - to_float(_test(base, "r", metric)))
            lines.append(
                f"The pick's R-test {metric} minus the baseline `{base.get('config_hash')}`'s: "
                f"{delta:+.2f} points."
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="results/runs", help="folder of <sweep>/<hash>.json")
    parser.add_argument("--sweep", required=True, help="the search sweep's name")
    parser.add_argument("--baseline-sweep", help="a sweep with the hand-designed net to compare")
    parser.add_argument("--out", required=True, help="the Markdown file to write")
    parser.add_argument("--planned", type=int, help="the search's n_trials (says when unfinished)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    runs = load_runs(args.runs, [args.sweep])
    if not runs.complete:
        print(f"error: no complete records in {Path(args.runs) / args.sweep}", file=sys.stderr)
        return 1
    baselines = load_runs(args.runs, [args.baseline_sweep]).complete if args.baseline_sweep else []
    page = search_page(
        runs.complete, args.sweep, baselines, failed=len(runs.failed), planned=args.planned
    )
    atomic_write_text(Path(args.out), page)
    log.info("wrote %s (%d trials)", args.out, len(runs.complete))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

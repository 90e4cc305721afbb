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

Modules: :mod:`~sphere_bench.report.records` (loading, aggregation, paper values),
:mod:`~sphere_bench.report.text` (formatting, tables, answer sentences),
:mod:`~sphere_bench.report.figures`, :mod:`~sphere_bench.report.samples` (sample predictions) and
:mod:`~sphere_bench.report.build` (``report.md``, W&B, command line).

Records store metrics as fractions; every metric here is in percent like the paper's. The optional
``evaluation`` key of a record (latency, equivariance, device) fills the latency and equivariance
columns; without it they read "–".
"""

from __future__ import annotations

from sphere_bench.report.build import Report, build_report, log_to_wandb, main
from sphere_bench.report.figures import (
    figure_equivariance,
    figure_latency,
    figure_metric_vs_n,
    figure_metric_vs_params,
    series_colors,
)
from sphere_bench.report.records import (
    KEY,
    Runs,
    aggregate,
    flatten,
    load_paper,
    load_runs,
    match_paper,
    paper_setting,
    params_from_name,
    runs_frame,
    select,
    series_keys,
    settings,
)
from sphere_bench.report.samples import figure_samples, load_net, pick_sample_records
from sphere_bench.report.text import (
    answer_frame,
    answer_sentences,
    fmt_n,
    fmt_params,
    fmt_pm,
    markdown_table,
    paper_comparison,
    setting_table,
)

__all__ = [
    "KEY", "Report", "Runs", "aggregate", "answer_frame", "answer_sentences", "build_report",
    "figure_equivariance", "figure_latency", "figure_metric_vs_n", "figure_metric_vs_params",
    "figure_samples", "flatten", "fmt_n", "fmt_params", "fmt_pm", "load_net", "load_paper",
    "load_runs", "log_to_wandb", "main", "markdown_table", "match_paper", "paper_comparison",
    "paper_setting", "params_from_name", "pick_sample_records", "runs_frame", "select",
    "series_colors", "series_keys", "setting_table", "settings",
]  # fmt: skip

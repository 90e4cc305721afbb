"""``report.md``: tables, figures and answer tied together; W&B logging; command line."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sphere_bench.io import atomic_write_text
from sphere_bench.report.figures import (
    figure_equivariance,
    figure_latency,
    figure_metric_vs_n,
    figure_metric_vs_params,
    series_colors,
)
from sphere_bench.report.records import (
    Runs,
    aggregate,
    load_paper,
    load_runs,
    runs_frame,
    select,
    series_keys,
    setting_title,
    settings,
    slug,
    to_float,
)
from sphere_bench.report.samples import figure_samples
from sphere_bench.report.text import (
    answer_frame,
    answer_markdown,
    answer_sentences,
    fmt_n,
    markdown_table,
    paper_comparison,
    paper_points_table,
    setting_table,
    write_csv,
)
from sphere_bench.schema import ROTATION_LABEL

log = logging.getLogger("sphere_bench.report")


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
                    ", ".join(ROTATION_LABEL.get(r, r) for r in sorted(set(part["rotate_train"]))),
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
                    fmt_n(to_float(data.get("n_train"))),
                    ROTATION_LABEL.get(data.get("rotate_train"), "?"),
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


@dataclass
class _Outputs:
    """Where the report's files go, and what has been written so far (becomes the Report)."""

    out_dir: Path
    tables: dict[str, Path] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    sentences: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def tables_dir(self) -> Path:
        return self.out_dir / "tables"

    @property
    def figures_dir(self) -> Path:
        return self.out_dir / "figures"

    def rel(self, path: Path) -> str:
        """``path`` relative to the report, as its Markdown links it."""
        return os.path.relpath(path, self.out_dir)


def build_report(
    runs_dir: Path | str,
    out_dir: Path | str,
    paper_path: Path | str | None = None,
    sweeps: Sequence[str] | None = None,
    samples: bool = True,
    use_wandb: bool = False,
    command: str | None = None,
    explanations: Path | str | None = None,
) -> Report:
    """Load, aggregate and write every table, figure and ``report.md`` under ``out_dir``.

    ``report.md`` has, in order: a header, the answer (:func:`_answer_section`), the
    explanations of where our numbers differ from the paper's (the markdown file
    ``explanations``, verbatim, when given; :func:`_explanations_section`), the setup, one
    section per setting (task, dataset, items; :func:`_setting_section`), latency, sample
    predictions (skipped with ``samples=False``) and the failed runs.

    Raises ``FileNotFoundError`` naming ``explanations`` when that file does not exist.
    """
    runs_dir = Path(runs_dir)
    out = _Outputs(Path(out_dir))
    runs = load_runs(runs_dir, sweeps)
    frame = runs_frame(runs.complete)
    agg = aggregate(frame)
    paper = load_paper(paper_path)
    colors = series_colors(series_keys(agg))

    md = _header_lines(runs_dir, command)
    md += _answer_section(out, agg, paper)
    md += _explanations_section(explanations)
    md += ["## Setup", ""] + _setup_lines(frame, agg, runs) + [""]
    for setting in settings(agg):
        md += _setting_section(out, select(agg, setting), setting, paper, colors)
    md += _latency_section(out, frame)
    md += _samples_section(out, runs, runs_dir, samples)
    md += ["## Failed runs", ""] + _failed_lines(runs) + [""]

    report_path = out.out_dir / "report.md"
    atomic_write_text(report_path, "\n".join(md).rstrip() + "\n")
    log.info("wrote %s (%d tables, %d figures)", report_path, len(out.tables), len(out.figures))
    report = Report(report_path, out.tables, out.figures, out.frames, out.sentences, out.notes)
    if use_wandb:
        log_to_wandb(report, out.out_dir)
    return report


def _header_lines(runs_dir: Path, command: str | None) -> list[str]:
    """Title, date, command and how to read the numbers."""
    return [
        "# sphere_bench report: S2CNN vs CNN with rotation augmentation",
        "",
        f"Generated {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')} by "
        f"`{command or 'python -m sphere_bench.report'}` from `{runs_dir}`. Metrics in percent "
        "(records store fractions): classification accuracy, segmentation mIoU over the ten "
        "non-background classes (the paper's number). NR = unrotated, R = Haar-random rotations; "
        "'train NR/R' is the training set, the NR and R test sets are the columns. Mean ± std "
        "over seeds (std only with ≥ 2 seeds). Paper values: Gerken et al., ICML 2022, read off "
        "the figures (`paper_reference.csv`).",
        "",
    ]


def _answer_section(out: _Outputs, agg: pd.DataFrame, paper: pd.DataFrame) -> list[str]:
    """The answer sentences per setting and the per-model answer table (``tables/answer.*``)."""
    md = ["## Answer", ""]
    if agg.empty:
        md += ["No complete run yet: nothing to answer.", ""]
    for setting in settings(agg):
        part = select(agg, setting)
        lines = answer_sentences(part)
        comparison = paper_comparison(part, paper)
        if comparison:
            lines.append(comparison)
        out.sentences[slug(setting)] = lines
        md += [f"**{setting_title(setting)}**", ""] + [f"- {s}" for s in lines] + [""]
    answer = answer_frame(agg)
    if answer.empty:
        return md
    out.tables["answer"] = write_csv(answer, out.tables_dir / "answer.csv")
    text = answer_markdown(answer)
    out.tables["answer_md"] = out.tables_dir / "answer.md"
    atomic_write_text(out.tables["answer_md"], text)
    out.frames["answer"] = answer
    return md + [
        "Per model its best rotated-test metric over N, with costs at that N "
        f"([CSV]({out.rel(out.tables['answer'])})):",
        "",
        text,
    ]


def _explanations_section(path: Path | str | None) -> list[str]:
    """``## Differences from the paper, explained``: the text of ``path`` (markdown), which says
    why a point misses the paper's value (recipe, model stand-in, data) with the measurements
    that show it; nothing without ``path``."""
    if path is None:
        return []
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"--explanations {path}: no such file; pass a markdown file that explains the "
            "differences from the paper, or leave the option out"
        )
    text = path.read_text().strip()
    return ["## Differences from the paper, explained", "", f"(From `{path}`.)", "", text, ""]


def _setting_section(
    out: _Outputs,
    part: pd.DataFrame,
    setting: tuple[str, str, int],
    paper: pd.DataFrame,
    colors: Mapping[Any, Any],
) -> list[str]:
    """One setting's table (``tables/<slug>.*``), the paper's points beside ours, and its
    figures: metric vs N, metric vs parameters, equivariance error."""
    name = slug(setting)
    md = [f"## {setting_title(setting)}", ""]
    headers, rows = setting_table(part)
    text = markdown_table(headers, rows)
    out.tables[name] = write_csv(part, out.tables_dir / f"{name}.csv")
    out.tables[f"{name}_md"] = out.tables_dir / f"{name}.md"
    atomic_write_text(out.tables[f"{name}_md"], f"# {setting_title(setting)}\n\n{text}")
    out.frames[name] = part
    md += [text, f"[CSV with means, stds and all metrics]({out.rel(out.tables[name])})", ""]
    points = paper_points_table(part, paper)
    if points is not None:
        md += [
            "Against the paper at the same model, training and test rotation and N:",
            "",
            markdown_table(*points),
        ]
    figures_dir = out.figures_dir
    path, note = figure_metric_vs_n(
        part, paper, setting, figures_dir / f"report_metric_vs_n_{name}.png", colors
    )
    out.figures[f"metric_vs_n_{name}"] = path
    md += [f"![metric vs N]({out.rel(path)})", "", note, ""]
    path = figure_metric_vs_params(
        part, paper, setting, figures_dir / f"report_metric_vs_params_{name}.png", colors
    )
    out.figures[f"metric_vs_params_{name}"] = path
    md += [f"![metric vs parameters]({out.rel(path)})", ""]
    eq_path = figure_equivariance(part, setting, figures_dir / f"report_equivariance_{name}.png")
    if eq_path is None:
        return md + ["No equivariance measurements in these records.", ""]
    out.figures[f"equivariance_{name}"] = eq_path
    return md + [f"![equivariance error]({out.rel(eq_path)})", ""]


def _latency_section(out: _Outputs, frame: pd.DataFrame) -> list[str]:
    """Latency against parameters of every complete run."""
    md = ["## Latency", ""]
    path = (
        figure_latency(frame, out.figures_dir / "report_latency_vs_params.png")
        if not frame.empty
        else None
    )
    if path is None:
        return md + ["No latency measurements in these records (no `evaluation.latency`).", ""]
    out.figures["latency_vs_params"] = path
    return md + [f"![latency vs parameters]({out.rel(path)})", ""]


def _samples_section(out: _Outputs, runs: Runs, runs_dir: Path, samples: bool) -> list[str]:
    """Sample predictions of the complete runs whose checkpoints are found."""
    md = ["## Sample predictions", ""]
    if not samples:
        return md + ["Sample predictions not requested (`--no-samples`).", ""]
    path, note = figure_samples(
        runs.complete, runs_dir, out.figures_dir / "report_sample_predictions.png"
    )
    if path is not None:
        out.figures["sample_predictions"] = path
        md += [f"![sample predictions]({out.rel(path)})", ""]
    out.notes.append(note)
    return md + [note, ""]


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
        prog="python -m sphere_bench.report",
        description="Tables, figures and report.md from the training records.",
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
    parser.add_argument(
        "--explanations",
        default=None,
        help="markdown file explaining where the numbers differ from the paper's (included)",
    )
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
        explanations=args.explanations,
    )
    print(report.markdown)
    return 0

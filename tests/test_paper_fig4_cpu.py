"""The Fig. 4 CPU preset (conf/experiment/paper_fig4_cpu.yaml) and the report's paper panel."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from test_report import make_record, write_records

import sphere_bench.train.run  # noqa: F401  (registers the config resolvers)
from sphere_bench import report as rp
from sphere_bench.report.text import paper_points_table

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "results" / "paper_reference.csv"


@pytest.fixture()
def hydra_conf() -> Iterator[None]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        yield
    GlobalHydra.instance().clear()


def _job(*overrides: str):
    cfg = compose("config", overrides=["experiment=paper_fig4_cpu", *overrides],
                  return_hydra_config=True)  # fmt: skip
    HydraConfig.instance().set_config(cfg)
    return cfg


def test_fig4_cpu_preset_is_the_papers_protocol(hydra_conf: None) -> None:
    cfg = _job()
    params = cfg.hydra.sweeper.params
    assert [m.strip() for m in params.model.split(",")] == ["s2cnn_cls_150k", "cnn_cls_114k"]
    assert sorted(int(n) for n in params["data.n_train"].split(",")) == [10000, 20000, 30000]
    assert cfg.trainer.accelerator == "cpu" and cfg.threads == 1
    assert cfg.hydra.launcher.n_jobs == 2
    for model, rotation in (("s2cnn_cls_150k", "none"), ("cnn_cls_114k", "random")):
        job = _job(f"model={model}")
        assert job.data.rotate_train == rotation
        assert job.model.bandwidth == job.data.bandwidth == 30
        assert (job.data.grid, job.data.interpolation, job.data.intensity) == (
            "paper", "paper", "minmax255"
        )  # fmt: skip
        assert job.data.n_test == 10000 and list(job.data.rotate_test) == ["none", "random"]
        assert job.data.n_val > 0 and job.callbacks.early_stopping.patience == 10
        assert job.lit.lr == pytest.approx(1e-3) and job.lit.optimizer is None  # Adam
        assert job.data.batch_size == 32 and job.trainer.max_epochs == 100


def test_report_sets_our_points_beside_the_papers(tmp_path: Path) -> None:
    cls = dict(task="classification", bandwidth=30)
    records = [
        make_record("s2cnn_cls_150k", "none", 10_000, 0, 0.95, 0.90, params=154_550, **cls),
        make_record("s2cnn_cls_150k", "none", 20_000, 0, 0.97, 0.965, params=154_550, **cls),
        make_record("cnn_cls_114k", "random", 10_000, 0, 0.80, 0.81, params=115_720, **cls),
        make_record("cnn_cls_114k", "random", 640, 0, 0.20, 0.17, params=115_720, **cls),
    ]
    agg = rp.aggregate(rp.runs_frame(records))
    headers, rows = paper_points_table(agg, rp.load_paper(PAPER))
    assert headers[-1] == "ours − paper (points)"
    table = {(r[1], r[3], r[4]): (r[5], r[6], r[7]) for r in rows}
    # Paper Fig. 4 (R test): S2CNN 91.8 / 96.0 at 10k / 20k, CNN 114k 85.2 at 10k; no NR values,
    # no value at N = 640.
    assert table == {
        ("s2cnn_cls_150k", "R", "10k"): ("90.0", "91.8 ± 0.5", "-1.8"),
        ("s2cnn_cls_150k", "R", "20k"): ("96.5", "96.0 ± 0.5", "+0.5"),
        ("cnn_cls_114k", "R", "10k"): ("81.0", "85.2 ± 0.5", "-4.2"),
    }
    assert all(r[0] == "Fig. 4" for r in rows)
    report = rp.build_report(write_records(tmp_path / "runs", records), tmp_path / "out", PAPER,
                             samples=False)  # fmt: skip
    text = report.markdown.read_text()
    assert "Against the paper at the same model" in text
    assert "| Fig. 4 | cnn_cls_114k | R | R | 10k | 81.0 | 85.2 ± 0.5 | -4.2 |" in text
    assert paper_points_table(agg[agg["n_train"] == 640], rp.load_paper(PAPER)) is None


def test_report_includes_the_explanations_of_the_misses(tmp_path: Path) -> None:
    cls = dict(task="classification", bandwidth=30)
    records = [make_record("cnn_cls_114k", "random", 10_000, 0, 0.50, 0.759, params=115_720, **cls)]
    runs = write_records(tmp_path / "runs", records)
    note = tmp_path / "explanations.md"
    note.write_text("The 114k CNN misses by 9.3 points: our stand-in overfits (train 94.7 %).\n")
    report = rp.build_report(runs, tmp_path / "out", PAPER, samples=False, explanations=note)
    text = report.markdown.read_text()
    section = text.index("## Differences from the paper, explained")
    assert text.index("## Answer") < section < text.index("## Setup")
    assert "our stand-in overfits (train 94.7 %)" in text[section:]
    plain = rp.build_report(runs, tmp_path / "out2", PAPER, samples=False).markdown.read_text()
    assert "Differences from the paper" not in plain
    with pytest.raises(FileNotFoundError, match="missing.md: no such file"):
        rp.build_report(runs, tmp_path / "out3", PAPER, samples=False,
                        explanations=tmp_path / "missing.md")  # fmt: skip

"""Tests of the report (:mod:`sphere_bench.report`) on synthetic records.

Synthetic records follow the schema of :mod:`sphere_bench.train.record` (metrics as fractions),
some with and some without the optional ``evaluation`` key. One test builds real (untrained)
checkpoints of the quick preset's small models to exercise the sample-prediction figure.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from sphere_bench import report as rp

REPO_ROOT = Path(__file__).resolve().parents[1]
PAPER = REPO_ROOT / "results" / "paper_reference.csv"


def make_record(
    model: str,
    rotate_train: str,
    n_train: int,
    seed: int,
    nr: float | None,
    r: float | None,
    *,
    params: int = 20_000,
    task: str = "segmentation",
    dataset: str = "mnist",
    n_items: int = 1,
    bandwidth: int = 16,
    evaluation: bool = True,
    status: str = "complete",
    train_seconds: float = 10.0,
    latency_ms: float = 2.0,
    eq_haar: float = 0.5,
    sweep: str = "synthetic",
) -> dict[str, Any]:
    """A record as :func:`sphere_bench.train.record.build_record` writes it."""
    metric = "acc" if task == "classification" else "miou"
    test = {}
    for name, value in (("nr", nr), ("r", r)):
        if value is not None:
            test[name] = {metric: value, "pixel_acc": 0.9, "loss": 1.0}
            if task == "segmentation":
                test[name]["miou_all"] = value + 0.05
    record: dict[str, Any] = {
        "schema": 1,
        "status": status,
        "error": None,
        "config_hash": f"{model}-{rotate_train}-{n_train}-{seed}",
        "sweep_name": sweep,
        "run_name": f"{model}-n{n_train}-{rotate_train}-s{seed}",
        "seed": seed,
        "model": {"name": model, "target": f"x.{model}", "parameters": params},
        "data": {
            "name": "mnist_seg", "task": task, "dataset": dataset, "grid": "soft",
            "bandwidth": bandwidth, "n_train": n_train, "n_val": 16, "n_test": 16,
            "rotate_train": rotate_train, "rotate_test": ["none", "random"], "n_items": n_items,
        },  # fmt: skip
        "monitor": f"val/{metric}",
        "val_best": nr,
        "test": test if status == "complete" else {},
        "epochs_run": 2,
        "timing": {"train_seconds": train_seconds, "total_seconds": train_seconds + 1,
                   "mean_epoch_seconds": train_seconds / 2},  # fmt: skip
        "checkpoint": {"best": "/nonexistent/best.ckpt", "last": "/nonexistent/last.ckpt"},
        "env": {"device": "cpu (test)", "threads": 2, "torch": "2.x"},
        "config": {"trainer": {"max_epochs": 2}},
    }
    if status == "failed":
        record["error"] = {"type": "RuntimeError", "message": "CUDA out of memory\nmore",
                           "traceback": "..."}  # fmt: skip
    if evaluation:
        record["evaluation"] = {
            "latency": [
                {"batch_size": b, "mode": "forward", "median_ms": latency_ms * b,
                 "p10_ms": latency_ms * b * 0.9, "p90_ms": latency_ms * b * 1.2,
                 "images_per_s": 1000 / latency_ms, "repeats": 10, "peak_memory_mb": 100.0,
                 "baseline_memory_mb": 90.0, "memory_kind": "cpu_peak_rss"}
                for b in (1, 32)
            ],  # fmt: skip
            "equivariance": {"grid_rel_error": eq_haar / 10, "grid_changed_fraction": 0.01,
                             "haar_rel_error": eq_haar, "haar_changed_fraction": 0.1,
                             "n_samples": 4},  # fmt: skip
            "device": {"device": "cpu", "device_name": "cpu (eval)", "torch": "2.x", "threads": 2},
        }
    return record


def write_records(root: Path, records: list[dict[str, Any]], sweep: str = "synthetic") -> Path:
    folder = root / sweep
    folder.mkdir(parents=True, exist_ok=True)
    for i, record in enumerate(records):
        (folder / f"{i:04d}.json").write_text(json.dumps(record))
    return root


def synthetic(s2_r: float = 0.78, cnn_r_r: float = 0.45) -> list[dict[str, Any]]:
    """S2CNN (NR) vs CNN (NR and R), N = 100 / 200, three seeds of the CNN NR at N = 100."""
    s2 = dict(params=204_073, train_seconds=40.0, latency_ms=8.0, eq_haar=0.01)
    cnn = dict(params=20_643, train_seconds=5.0, latency_ms=1.0, eq_haar=0.9)
    records = [
        make_record("s2cnn_seg_small", "none", 100, 0, 0.75, s2_r - 0.02, **s2),
        make_record("s2cnn_seg_small", "none", 200, 0, 0.80, s2_r, **s2),
        # three seeds: R test 10/20/30 % -> 20.0 ± 10.0; NR test 60/70/80 % -> 70.0 ± 10.0
        make_record("cnn_seg_small", "none", 100, 0, 0.60, 0.10, **cnn),
        make_record("cnn_seg_small", "none", 100, 1, 0.70, 0.20, **cnn),
        make_record("cnn_seg_small", "none", 100, 2, 0.80, 0.30, **cnn, evaluation=False),
        make_record("cnn_seg_small", "none", 200, 0, 0.85, 0.12, **cnn),
        make_record("cnn_seg_small", "random", 100, 0, 0.40, cnn_r_r - 0.10, **cnn),
        make_record("cnn_seg_small", "random", 200, 0, 0.50, cnn_r_r, **cnn),
        make_record("cnn_seg_small", "random", 200, 1, 0.50, 0.0, status="failed", **cnn),
    ]
    return records


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_records(tmp_path_factory.mktemp("synthetic") / "runs", synthetic())
    (root / "synthetic" / "broken.json").write_text("{not json")
    return root


@pytest.fixture(scope="module")
def built(runs_dir: Path) -> rp.Report:
    """The report of :func:`synthetic` (built once: figures cost seconds on a busy CPU)."""
    return rp.build_report(runs_dir, runs_dir.parent / "out", PAPER)


def _row(agg: pd.DataFrame, model: str, rotate: str, n: int) -> pd.Series:
    rows = agg[(agg["model"] == model) & (agg["rotate_train"] == rotate) & (agg["n_train"] == n)]
    assert len(rows) == 1
    return rows.iloc[0]


def test_load_and_aggregate(runs_dir: Path) -> None:
    runs = rp.load_runs(runs_dir)
    assert len(runs.complete) == 8 and len(runs.failed) == 1
    assert [p.name for p, _ in runs.unreadable] == ["broken.json"]
    agg = rp.aggregate(rp.runs_frame(runs.complete))
    row = _row(agg, "cnn_seg_small", "none", 100)
    assert row["seeds"] == 3 and row["seed_list"] == "0,1,2"
    assert row["test_r_mean"] == pytest.approx(20.0)
    assert row["test_r_std"] == pytest.approx(10.0)
    assert row["test_nr_mean"] == pytest.approx(70.0)
    assert row["drop_mean"] == pytest.approx(50.0)
    assert row["lat_b1_ms_mean"] == pytest.approx(1.0)  # the record without evaluation is skipped
    single = _row(agg, "s2cnn_seg_small", "none", 200)
    assert single["seeds"] == 1 and pd.isna(single["test_r_std"])
    assert single["test_r_mean"] == pytest.approx(78.0)
    assert single["family"] == "s2cnn" and single["parameters"] == 204_073
    assert len(agg) == 6  # the failed run is not aggregated


def test_sweep_filter(tmp_path: Path) -> None:
    root = write_records(tmp_path / "runs", synthetic()[:2], "a")
    write_records(root, synthetic()[2:4], "b")
    assert len(rp.load_runs(root).complete) == 4
    assert {r["model"]["name"] for r in rp.load_runs(root, ["a"]).complete} == {"s2cnn_seg_small"}


def test_tables_and_report(built: rp.Report) -> None:
    out = built.markdown.parent
    table = (out / "tables" / "segmentation_mnist_k1.md").read_text()
    assert "| cnn_seg_small | 20.6k | NR | 100 | 16 | 3 | 70.0 ± 10.0 | 20.0 ± 10.0 |" in table
    csv = pd.read_csv(out / "tables" / "segmentation_mnist_k1.csv")
    row = csv[(csv["model"] == "cnn_seg_small") & (csv["rotate_train"] == "none")
              & (csv["n_train"] == 100)].iloc[0]  # fmt: skip
    assert row["test_r_mean"] == pytest.approx(20.0) and row["test_r_std"] == pytest.approx(10.0)
    answer = pd.read_csv(out / "tables" / "answer.csv")
    best = answer.iloc[0]
    assert best["model"] == "s2cnn_seg_small" and best["best_test_r"] == pytest.approx(78.0)
    assert best["at_n_train"] == 200
    text = built.markdown.read_text()
    for needed in ("## Answer", "## Setup", "70.0 ± 10.0", "tables/segmentation_mnist_k1.csv",
                   "figures/report_metric_vs_n_segmentation_mnist_k1.png", "cpu (test)",
                   "100, 200", "Sample predictions skipped"):  # fmt: skip
        assert needed in text, needed
    # failed and unreadable runs are listed with their error
    assert "RuntimeError" in text and "CUDA out of memory" in text and "more" not in text.split(
        "CUDA out of memory"
    )[1].split("\n")[0]
    assert "broken.json" in text
    assert not list(out.rglob("*.tmp*"))  # atomic writes leave no temporaries


def test_figures_written(built: rp.Report) -> None:
    report = built
    names = set(report.figures)
    slug = "segmentation_mnist_k1"
    assert {f"metric_vs_n_{slug}", f"metric_vs_params_{slug}", f"equivariance_{slug}",
            "latency_vs_params"} <= names  # fmt: skip
    for path in report.figures.values():
        assert path.suffix == ".png" and path.stat().st_size > 1000
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_missing_evaluation_and_checkpoints(tmp_path: Path) -> None:
    records = [make_record("cnn_seg_small", "none", 100, 0, 0.6, 0.1, evaluation=False),
               make_record("s2cnn_seg_small", "none", 100, 0, 0.7, 0.7, evaluation=False)]
    runs = write_records(tmp_path / "runs", records)
    out = tmp_path / "out"
    assert rp.main(["--runs", str(runs), "--out", str(out), "--paper", str(PAPER)]) == 0
    text = (out / "report.md").read_text()
    assert "No latency measurements" in text and "No equivariance measurements" in text
    assert not (out / "figures" / "report_latency_vs_params.png").exists()
    assert "| – | – |" in (out / "tables" / "segmentation_mnist_k1.md").read_text()
    assert "Sample predictions skipped" in text and "checkpoint" in text


def test_paper_matching() -> None:
    paper = rp.load_paper(PAPER)
    seg1 = ("segmentation", "mnist", 1)
    rows = rp.match_paper(paper, seg1, "s2cnn_seg_204k", "none", "r", "miou")
    assert set(rows["figure"]) == {"fig5_right"}
    assert rows["value"].head(2).tolist() == [75.2, 77.3]
    assert rp.match_paper(paper, seg1, "s2cnn_seg_204k", "none", "nr", "miou")["value"].iloc[0] == (
        74.5
    )
    assert rp.match_paper(paper, seg1, "cnn_seg_218k", "random", "r", "miou").empty  # Fig. 2: n/a
    assert rp.match_paper(paper, seg1, "cnn_seg_small", "none", "r", "miou").empty
    four = rp.match_paper(paper, ("segmentation", "mnist", 4), "cnn_seg_1m", "random", "r", "miou")
    assert set(four["figure"]) == {"fig7"} and four["value"].iloc[0] == 35.9
    fashion = ("segmentation", "fashion_mnist", 1)
    assert rp.match_paper(paper, fashion, "s2cnn_seg_204k", "none", "r", "miou")["value"].iloc[
        -1
    ] == pytest.approx(74.1)
    cls = ("classification", "mnist", 1)
    assert len(rp.match_paper(paper, cls, "cnn_cls_2m5", "random", "r", "acc")) == 10
    assert rp.match_paper(paper, cls, "cnn_cls_2m5", "random", "nr", "acc").empty
    assert rp.params_from_name("cnn_seg_5m5") == 5.5e6
    assert rp.params_from_name("s2cnn_seg_204k") == 204e3


def test_paper_overlay_or_reference_panel(tmp_path: Path) -> None:
    paper = rp.load_paper(PAPER)
    seg1 = ("segmentation", "mnist", 1)
    matching = [make_record("s2cnn_seg_204k", "none", n, 0, 0.75, 0.76, bandwidth=50)
                for n in (10_000, 20_000)]  # fmt: skip
    agg = rp.aggregate(rp.runs_frame(matching))
    colors = rp.series_colors(rp.series_keys(agg))
    _, note = rp.figure_metric_vs_n(agg, paper, seg1, tmp_path / "a.png", colors)
    assert "dashed" in note and "s2cnn_seg_204k (train NR, R test)" in note
    assert "s2cnn_seg_204k (train NR, NR test)" in note
    assert "Against the paper" in rp.paper_comparison(agg, paper)
    # 75 vs 75.2 and 74.5 at N = 10k; 75 vs 77.3 and 76.5 at 20k (NR 75 %, R 76 %)
    assert "4 points" in rp.paper_comparison(agg, paper)
    small = rp.aggregate(rp.runs_frame(synthetic()))
    _, note = rp.figure_metric_vs_n(small, paper, seg1, tmp_path / "b.png", colors)
    assert "separate reference row" in note
    _, note = rp.figure_metric_vs_n(
        small.assign(dataset="nowhere"), paper, ("segmentation", "nowhere", 1), tmp_path / "c.png",
        colors,
    )  # fmt: skip
    assert note == "The paper has no values for this setting."
    assert rp.paper_comparison(small, paper) is None


def test_answer_sentences_follow_the_data() -> None:
    agg = rp.aggregate(rp.runs_frame(synthetic(s2_r=0.78, cnn_r_r=0.45)))
    text = " ".join(rp.answer_sentences(agg))
    assert "the best model is **s2cnn_seg_small**" in text
    assert "beats the best CNN **cnn_seg_small** (train R" in text and "by 33.0 points" in text
    assert "the CNN has 9.9× fewer parameters than the S2CNN" in text
    assert "cnn_seg_small 85.0 → 12.0 % (−73.0 points" in text  # NR -> R drop at N = 200
    assert "s2cnn_seg_small 80.0 → 78.0 % (−2.0 points, keeps 98 %" in text
    assert "cnn_seg_small (train R) gains 10.0 points from N = 100 to 200" in text
    assert "no CNN reaches that" in text
    assert "latency at batch 1 8.00 vs 1.00 ms (8×)" in text
    assert "training time 40.0 vs 5.00 s (8×)" in text

    swapped = rp.aggregate(rp.runs_frame(synthetic(s2_r=0.30, cnn_r_r=0.90)))
    text = " ".join(rp.answer_sentences(swapped))
    assert "the best model is **cnn_seg_small** (train R" in text
    assert "stays below the best CNN" in text and "by 60.0 points" in text
    assert "the CNNs reach that from N = 100 on (cnn_seg_small, train R: 80.0 %)" in text


def test_answer_noise_note() -> None:
    records = [make_record("s2cnn_seg_small", "none", 100, s, 0.5, v)
               for s, v in enumerate((0.50, 0.60))]  # fmt: skip
    records += [make_record("cnn_seg_small", "random", 100, s, 0.5, v)
                for s, v in enumerate((0.52, 0.56))]  # fmt: skip
    text = " ".join(rp.answer_sentences(rp.aggregate(rp.runs_frame(records))))
    assert "within the seed spread" in text


def test_classification(tmp_path: Path) -> None:
    records = [
        make_record("cnn_cls_small", "random", n, 0, 0.9, acc, task="classification",
                    n_items=1, params=30_000)
        for n, acc in ((100, 0.5), (200, 0.6))
    ] + [make_record("s2cnn_cls_small", "none", 100, 0, 0.9, 0.88, task="classification",
                     params=60_000)]  # fmt: skip
    report = rp.build_report(write_records(tmp_path / "runs", records), tmp_path / "out", PAPER,
                             samples=False)  # fmt: skip
    assert set(report.sentences) == {"classification_mnist_k1"}
    table = (tmp_path / "out" / "tables" / "classification_mnist_k1.md").read_text()
    assert "R test accuracy %" in table and "pred. changed (Haar) %" in table
    assert "metric_vs_n_classification_mnist_k1" in report.figures


def test_empty_runs(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    report = rp.build_report(tmp_path / "runs", tmp_path / "out", PAPER, samples=False)
    assert "No complete run yet" in report.markdown.read_text()


def test_wandb_logging(built: rp.Report, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables as wandb.Table and figures as wandb.Image, job_type report, offline by default."""
    calls: dict[str, Any] = {"log": []}

    class Run:
        summary: dict[str, Any] = {}

        def log(self, data: dict[str, Any]) -> None:
            calls["log"].append(data)

        def finish(self) -> None:
            calls["finished"] = True

    def init(**kwargs: Any) -> Run:
        calls["init"] = kwargs
        return Run()

    fake = types.SimpleNamespace(
        init=init,
        Table=lambda dataframe: ("table", len(dataframe)),
        Image=lambda path: ("image", path),
    )
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    report = built
    out = built.markdown.parent
    rp.log_to_wandb(report, out)
    assert calls["init"]["job_type"] == "report" and calls["init"]["mode"] == "offline"
    assert calls["init"]["dir"].startswith(str(out))
    logged = {k: v for d in calls["log"] for k, v in d.items()}
    assert logged["table/answer"][0] == "table"
    assert {f"figure/{name}" for name in report.figures} <= set(logged)
    assert calls["finished"]


def test_sample_predictions_from_checkpoints(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Untrained nets of the quick preset saved as Lightning-style checkpoints → the figure."""
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from sphere_bench.train.run import CONF_DIR

    monkeypatch.setenv("SPHERE_BENCH_CACHE", str(tmp_path / "cache"))
    records = []
    for i, (model, rotate) in enumerate((("s2cnn_seg_small", "none"), ("cnn_seg_small", "random"))):
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
            cfg = compose("config", overrides=[
                "experiment=smoke_seg", "logger=none", f"model={model}",
                f"data.rotate_train={rotate}", "data.n_test=4", f"data.root={data_root}",
                f"data.cache_dir={tmp_path / 'cache'}",
            ])  # fmt: skip
        config = OmegaConf.to_container(cfg, resolve=True)
        torch.manual_seed(i)
        net = instantiate(config["model"])
        ckpt = tmp_path / f"{model}.ckpt"
        torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}}, ckpt)
        record = make_record(model, rotate, 128, 0, 0.5, 0.4)
        record["config"] = config
        record["checkpoint"] = {"best": str(ckpt), "last": None}
        records.append(record)
    loaded = rp.load_net(records[0], Path(records[0]["checkpoint"]["best"]))
    assert not loaded.training
    path, note = rp.figure_samples(records, tmp_path, tmp_path / "samples.png")
    assert path is not None and path.stat().st_size > 1000, note
    assert "Rotated test sample #0" in note
    records[1]["checkpoint"] = {"best": str(tmp_path / "gone.ckpt")}
    path, note = rp.figure_samples(records, tmp_path, tmp_path / "none.png")
    assert path is None and "skipped" in note


def test_one_segmentation_palette_for_every_mask_figure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The training runs' prediction images draw label k in MASK_COLORS[k], as the previews and
    the report's sample predictions do (one palette, classes 0…10)."""
    import numpy as np
    import torch
    from matplotlib.axes import Axes
    from matplotlib.colors import Normalize

    from sphere_bench.data.preview import MASK_COLORS, mask_cmap
    from sphere_bench.train.callbacks import PredictionImages

    labels = np.arange(len(MASK_COLORS))
    assert len(MASK_COLORS) == 11
    preview_rgb = mask_cmap()(Normalize(-0.5, 10.5)(labels))[:, :3]
    np.testing.assert_allclose(preview_rgb, MASK_COLORS)
    drawn = []
    imshow = Axes.imshow

    def capture(self: Axes, *args: Any, **kwargs: Any) -> Any:
        image = imshow(self, *args, **kwargs)
        drawn.append(image)
        return image

    monkeypatch.setattr(Axes, "imshow", capture)
    mask = torch.arange(11).repeat(3, 1)  # (3, 11): every label
    x = torch.zeros(1, 1, 3, 11)
    PredictionImages._plot(x, mask[None], mask[None], "segmentation", tmp_path / "p.png", "t")
    assert (tmp_path / "p.png").is_file()
    masks = drawn[1:]  # input, target, prediction
    assert len(masks) == 2
    for image in masks:
        np.testing.assert_allclose(image.to_rgba(labels)[:, :3], MASK_COLORS)

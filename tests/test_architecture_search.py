"""The paper's architecture search (``conf/hparams_search/``, ``sphere_bench/train/search.py``):
budget fitting, the classification search's drawn strides and heads, real Optuna sweeps and the
search report."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from test_reliability import _cli, _run_cli
from test_train import TINY, compose_cfg

from sphere_bench.models import count_parameters
from sphere_bench.models.cnn_zoo import ClassificationCNN, encoder_sizes
from sphere_bench.report import search as search_report
from sphere_bench.train.search import (
    BudgetError,
    apply_search,
    config_parameters,
    fit_to_budget,
    parse_strides,
    shrink_kernels,
)


# ------------------------------------------------------------------------------------------------
# budget fitting and the drawn shape
# ------------------------------------------------------------------------------------------------
def test_fit_to_budget_scales_widths_to_the_parameter_count() -> None:
    model = OmegaConf.to_container(compose_cfg("model=cnn_seg_small").model)
    for budget in (10_000, 50_000):
        cfg, count = fit_to_budget(model, [1, 2, 3, 4], [3, 5, 3, 3], budget, 0.05)
        assert abs(count - budget) <= 0.05 * budget
        assert count == config_parameters(cfg)
        widths = cfg["features"]
        assert widths == sorted(widths) and cfg["kernel_sizes"] == [3, 5, 3, 3]
    with pytest.raises(BudgetError, match="one entry per layer"):
        fit_to_budget(model, [1, 2], [3, 3], 10_000)


def test_shrink_kernels_fits_each_kernel_to_the_map_it_meets() -> None:
    # 60 → (7, s2) 27 → (7, s2) 11 → (7, s2) 3 → a 7-kernel meets 3 px: 3 → 1 px: 1.
    assert shrink_kernels(30, [7, 7, 7, 7, 7], [2, 2, 2, 1, 1]) == [7, 7, 7, 3, 1]
    # an even map gets the largest odd kernel below it: 60 → (9, s3) 18 → (5, s4) 4 → 3
    assert shrink_kernels(30, [9, 5, 7], [3, 4, 1]) == [9, 5, 3]
    assert shrink_kernels(30, [5, 3, 3, 3, 3], [1, 2, 1, 2, 1]) == [5, 3, 3, 3, 3]  # fits: kept
    with pytest.raises(BudgetError, match="one entry per layer"):
        shrink_kernels(30, [3, 3], [1])
    # every drawn shape of the classification search builds once shrunk
    for strides in itertools.product((1, 2), repeat=5):
        for kernels in ((7, 7, 7, 7, 7), (3, 7, 5, 7, 3)):
            fitted = shrink_kernels(30, kernels, strides)
            sizes = encoder_sizes(30, fitted, strides)  # raises if a map collapses
            assert all(k <= h for k, (h, _) in zip(fitted, sizes[:-1], strict=True))


def test_parse_strides_reads_lists_and_digit_strings() -> None:
    assert parse_strides("12121") == parse_strides(12121) == parse_strides([1, 2, 1, 2, 1])
    assert parse_strides("21111") == [2, 1, 1, 1, 1]
    for bad in ("12a21", "10121", [1, 0], ""):
        with pytest.raises(BudgetError, match="search.strides"):
            parse_strides(bad)


def test_flatten_head_counts_and_shapes() -> None:
    common = dict(bandwidth=16, features=[4, 6], kernel_sizes=[3, 3], strides=[1, 2])
    mean = ClassificationCNN(**common)
    flat = ClassificationCNN(**common, head="flatten")
    height, width = flat.sizes[-1]  # 32 → 30 → 14
    assert (height, width) == (14, 14)
    assert count_parameters(flat) - count_parameters(mean) == 6 * (14 * 14 - 1) * 10
    x = torch.randn(3, 1, 32, 32)
    assert flat(x).shape == mean(x).shape == (3, 10)
    with pytest.raises(ValueError, match="head must be one of"):
        ClassificationCNN(**common, head="max")


def test_apply_search_sets_the_drawn_strides_head_and_shrunk_kernels() -> None:
    cfg = compose_cfg(
        "hparams_search=cnn_cls_random", "data=mnist_cls", "data.bandwidth=30",
        "search.strides=22211", "search.head=flatten", "search.k4=7", "search.k5=7",
    )  # fmt: skip
    count = apply_search(cfg)
    assert count is not None and abs(count - 114_000) <= 0.05 * 114_000
    model = cfg.model
    assert list(model.strides) == [2, 2, 2, 1, 1] and model.head == "flatten"
    # 60 → (5, s2) 28 → (3, s2) 13 → (3, s2) 6: the 7-kernels shrink to 5, then to 1
    assert list(model.kernel_sizes) == [5, 3, 3, 5, 1]
    net = ClassificationCNN(**{k: v for k, v in model.items() if k != "_target_"})
    assert count_parameters(net) == count


# ------------------------------------------------------------------------------------------------
# real sweeps
# ------------------------------------------------------------------------------------------------
def test_random_architecture_search_meets_the_budget(
    tmp_path: Path, data_root: Path, cache_dir: Path
) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    cmd = _cli(
        tmp_path, data_root, cache_dir, "hparams_search=cnn_seg_random",
        "hydra.sweeper.n_trials=2", "trainer.max_epochs=1", "search.param_budget=12000",
    )  # fmt: skip
    output = _run_cli(tmp_path, cmd, 0)
    assert "Sampler: RandomSampler" in output
    records = [json.loads(p.read_text())
               for p in (tmp_path / "results" / "search_cnn_seg").glob("*.json")]  # fmt: skip
    assert len(records) == 2 and {r["status"] for r in records} == {"complete"}
    for record in records:
        assert abs(record["model"]["parameters"] - 12000) <= 1200
        assert record["config"]["model"]["features"] != [8, 12, 16, 24]  # scaled to the budget
    best = OmegaConf.load(tmp_path / "multirun" / "optimization_results.yaml")
    assert best.best_value == max(r["val_best"] for r in records)


def test_classification_search_trains_ranks_and_resumes(
    tmp_path: Path, data_root: Path, cache_dir: Path
) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    cmd = [
        sys.executable, "-m", "sphere_bench.train", "hparams_search=cnn_cls_random",
        "data=mnist_cls", "data.bandwidth=30", "trainer=cpu", "logger=none", "threads=1", *TINY,
        "trainer.max_epochs=1", "hydra.sweeper.n_trials=3", "callbacks.evaluation=null",
        f"data.root={data_root}", f"data.cache_dir={cache_dir}",
        f"results_dir={tmp_path / 'results'}", f"hydra.sweep.dir={tmp_path / 'multirun'}",
    ]  # fmt: skip
    output = _run_cli(tmp_path, cmd, 0)
    assert output.count("architecture search: features") == 3
    folder = tmp_path / "results" / "search_cnn_cls"
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    assert len(records) == 3 and {r["status"] for r in records} == {"complete"}
    for record in records:
        model = record["config"]["model"]
        assert record["model"]["name"] == f"cnn_cls_114k-trial-{record['config_hash'][:8]}"
        assert abs(record["model"]["parameters"] - 114_000) <= 0.05 * 114_000
        assert 1 <= model["strides"].count(2) <= 3 and model["head"] in ("mean", "flatten")
        assert model["kernel_sizes"] == shrink_kernels(30, model["kernel_sizes"], model["strides"])
    best = OmegaConf.load(tmp_path / "multirun" / "optimization_results.yaml")
    assert best.best_value == max(r["val_best"] for r in records)

    page_path = tmp_path / "search.md"
    assert search_report.main(
        ["--runs", str(tmp_path / "results"), "--sweep", "search_cnn_cls", "--out", str(page_path)]
    ) == 0  # fmt: skip
    page = page_path.read_text()
    pick = max(records, key=lambda r: r["val_best"])
    assert f"**Pick:** `{pick['config_hash']}`" in page
    assert page.index(pick["config_hash"]) < min(
        page.index(r["config_hash"]) for r in records if r is not pick
    )

    # the same seed draws the same shapes: a rerun skips the three finished trials
    output = _run_cli(tmp_path, cmd, 0)
    assert output.count("skipping finished run") == 3
    assert len(list(folder.glob("*.json"))) == 3


def test_search_page_ranks_on_validation_not_on_test() -> None:
    def record(hash_: str, val: float, test_r: float, name: str = "") -> dict:
        return {
            "config_hash": hash_, "status": "complete", "monitor": "val/acc", "val_best": val,
            "test": {"r": {"acc": test_r}, "nr": {"acc": test_r}}, "epochs_run": 3,
            "timing": {"best_epoch": 1, "train_seconds": 120.0},
            "model": {"name": name or f"cnn_cls_114k-trial-{hash_}", "parameters": 114_000},
            "data": {"name": "mnist_cls", "n_train": 100, "bandwidth": 30,
                     "rotate_train": "random"},
            "config": {"model": {"features": [1], "kernel_sizes": [3], "strides": [1]},
                       "search": {"param_budget": 114000, "budget_tolerance": 0.05}},
        }  # fmt: skip

    trials = [record("aaa", 0.60, 0.90), record("bbb", 0.80, 0.70), record("ccc", 0.70, 0.95)]
    baseline = record("base", 0.50, 0.65, name="cnn_cls_114k")
    other = record("other", 0.50, 0.65, name="cnn_cls_500k")  # another model: not a baseline
    page = search_report.search_page(trials, "s", [baseline, other])
    assert "of `cnn_cls_114k`'s family" in page and "`other`" not in page
    assert "**Pick:** `bbb`: acc 80.00 % on validation, 70.00 % on the R test set" in page
    assert page.index("| 1 | bbb") < page.index("| 2 | ccc") < page.index("| 3 | aaa")
    assert "baseline `base`'s: +5.00 points" in page and "not finished" not in page
    assert "3 complete trials of 20 planned" in search_report.search_page(trials, "s", planned=20)
    with pytest.raises(ValueError, match="no complete trial"):
        search_report.search_page([], "s")

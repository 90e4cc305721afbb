"""The experiment presets of ``conf/experiment/``: they compose, the paper recipes name
the paper's models, bandwidths and N values, and the quick preset's models fit its data.

Fast (no training): configs are composed with ``hydra.compose``; the only models built are the
quick-preset model files, to check the parameter counts their comments state.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

import sphere_bench.train.run  # noqa: F401  (registers the config resolvers, e.g. sb_wandb_offline)
from sphere_bench.models import count_parameters

CONF = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
PAPER_N = [10000, 20000, 30000, 40000, 50000, 60000, 80000, 100000, 120000, 240000]
PAPER_SEG_MODELS = ["s2cnn_seg_204k", "cnn_seg_218k", "cnn_seg_1m", "cnn_seg_5m5"]
PAPER_CLS_MODELS = ["s2cnn_cls_150k", "cnn_cls_114k", "cnn_cls_500k", "cnn_cls_2m5"]
#: preset → (data config, bandwidth, swept models, rotation of the S2CNN, rotation of the CNNs)
PAPER_PRESETS: dict[str, tuple[str, int, list[str], str, str]] = {
    "paper_fig2_main": ("mnist_seg", 50, PAPER_SEG_MODELS, "none", "random"),
    "paper_fig5_nr": ("mnist_seg", 50, PAPER_SEG_MODELS, "none", "none"),
    "paper_fig7_four": ("mnist_seg4", 50, PAPER_SEG_MODELS, "none", "random"),
    "paper_fig9_fashion": ("fashion_seg", 50, PAPER_SEG_MODELS, "none", "random"),
    "paper_fig4_cls": ("mnist_cls", 30, PAPER_CLS_MODELS, "none", "random"),
}
QUICK_PRESETS = ["quick", "quick_cls"]
#: quick-preset model files → the exact parameter count their comment states
QUICK_MODELS = {
    "s2cnn_seg_quick": 78_454,
    "cnn_seg_quick_218k": 218_144,
    "cnn_seg_quick_180k": 179_411,
    "cnn_cls_quick_115k": 115_720,
}


@pytest.fixture(autouse=True)
def _hydra() -> Iterator[None]:
    """A fresh Hydra context on ``conf/`` for every test."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        yield
    GlobalHydra.instance().clear()


def _compose(*overrides: str) -> DictConfig:
    """The job config for ``overrides``, resolved as in a job (``${hydra:...}`` included)."""
    cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def _sweep(cfg: DictConfig, key: str) -> list[str]:
    """The comma-separated values of ``hydra.sweeper.params[key]``."""
    return [v.strip() for v in str(cfg.hydra.sweeper.params[key]).split(",")]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes(name: str) -> None:
    cfg = _compose(f"experiment={name}")
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    resolved = OmegaConf.to_container(job, resolve=True)  # the job's config, as run.py sees it
    assert isinstance(resolved, dict)
    assert resolved["data"]["rotate_train"] in ("none", "random")
    assert cfg.sweep_name


def test_presets_exist() -> None:
    assert set(PAPER_PRESETS) | set(QUICK_PRESETS) <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", sorted(PAPER_PRESETS))
def test_paper_preset(name: str) -> None:
    data, bandwidth, models, rot_s2cnn, rot_cnn = PAPER_PRESETS[name]
    cfg = _compose(f"experiment={name}")
    assert cfg.hydra.runtime.choices.data == data
    assert _sweep(cfg, "model") == models
    assert [int(n) for n in _sweep(cfg, "data.n_train")] == PAPER_N
    assert cfg.data.bandwidth == bandwidth
    assert cfg.lit.lr == pytest.approx(1e-3)
    assert cfg.data.batch_size == 32
    assert cfg.trainer.max_epochs == 100
    assert list(cfg.data.rotate_test) == ["none", "random"]
    for model in models:
        job = _compose(f"experiment={name}", f"model={model}")
        assert job.model.bandwidth == job.data.bandwidth == bandwidth, model
        expected = rot_s2cnn if model.startswith("s2cnn") else rot_cnn
        assert job.data.rotate_train == expected, model


@pytest.mark.parametrize("name", QUICK_PRESETS)
def test_quick_preset_bandwidths_agree(name: str) -> None:
    cfg = _compose(f"experiment={name}")
    assert cfg.trainer.accelerator == "cpu"
    assert cfg.threads == 1 and cfg.hydra.launcher.n_jobs == 2
    for model in _sweep(cfg, "model"):
        job = _compose(f"experiment={name}", f"model={model}")
        assert job.model.bandwidth == job.data.bandwidth == 16, model
        if "bandlimits" in job.model:
            assert max(job.model.bandlimits) < job.model.bandwidth, model


def test_quick_cls_rotation_lr_and_n_per_model() -> None:
    """S2CNN on NR at lr 5e-3; the CNNs on R at lr 1e-3 with three times the S2CNN's N."""
    assert _sweep(_compose("experiment=quick_cls"), "n_level") == ["large", "medium", "small"]
    for model, rotation, lr, n_train in [
        ("s2cnn_cls_small", "none", 5e-3, [9000, 3000, 1000]),
        ("cnn_cls_quick_115k", "random", 1e-3, [27000, 9000, 3000]),
        ("cnn_cls_small", "random", 1e-3, [27000, 9000, 3000]),
        ("cnn_cls_114k", "random", 1e-3, [9000, 3000, 1000]),  # not listed: the default row
    ]:
        jobs = [
            _compose("experiment=quick_cls", f"model={model}", f"n_level={level}")
            for level in ("large", "medium", "small")
        ]
        assert [job.data.n_train for job in jobs] == n_train, model
        assert {(job.data.rotate_train, job.lit.lr) for job in jobs} == {(rotation, lr)}, model


def test_every_recipe_names_an_experiment_and_a_model() -> None:
    """``conf/recipe/<experiment>/<model>.yaml`` is optional in the defaults list: a misspelt
    folder or file would be ignored without a word."""
    recipes = sorted((CONF / "recipe").glob("*/*.yaml"))
    assert recipes
    models = {p.stem for p in (CONF / "model").glob("*.yaml")}
    for path in recipes:
        assert path.parent.name in EXPERIMENTS and path.stem in models, path
        assert path.read_text().startswith("# @package _global_\n"), path


def test_the_command_line_wins_over_the_recipe() -> None:
    """The recipe comes after the experiment (it wins over the experiment's defaults); command-line
    overrides win over both; ``~recipe`` leaves the experiment's defaults."""
    job = ("experiment=quick_cls", "model=s2cnn_cls_small", "n_level=small")
    cfg = _compose(*job)
    assert cfg.hydra.runtime.choices.recipe == "quick_cls/s2cnn_cls_small"
    assert (cfg.lit.lr, cfg.data.rotate_train, cfg.data.n_train) == (5e-3, "none", 1000)
    cfg = _compose(*job, "lit.lr=2e-3", "data.rotate_train=random", "data.n_train=500")
    assert (cfg.lit.lr, cfg.data.rotate_train, cfg.data.n_train) == (2e-3, "random", 500)
    cfg = _compose(*job, "~recipe")
    assert (cfg.lit.lr, cfg.data.rotate_train, cfg.data.n_train) == (1e-3, "random", 1000)
    # No experiment: no recipe, the root config's values.
    assert _compose("model=s2cnn_cls_small", "data=mnist_cls").lit.lr == pytest.approx(1e-3)


def test_a_bad_n_level_names_the_value_and_the_choices() -> None:
    cfg = _compose("experiment=quick_cls", "model=cnn_cls_small", "n_level=huge")
    message = r"data\.n_train: 'huge' is not one of 'small', 'medium', 'large'"
    with pytest.raises(InterpolationResolutionError, match=message):
        OmegaConf.to_container(cfg.data, resolve=True)


def test_quick_seg_lr_per_model() -> None:
    assert _compose("experiment=quick").lit.lr == pytest.approx(5e-3)  # the S2CNN by default
    assert _compose("experiment=quick", "model=cnn_seg_quick_180k").lit.lr == pytest.approx(1e-3)


@pytest.mark.parametrize("name", sorted(QUICK_MODELS))
def test_quick_model_parameter_count(name: str) -> None:
    path = CONF / "model" / f"{name}.yaml"
    net = instantiate(OmegaConf.load(path))
    count = count_parameters(net)
    assert count == QUICK_MODELS[name]
    stated = {
        int(s.replace(",", "")) for s in re.findall(r"\b\d{1,3}(?:,\d{3})+\b", path.read_text())
    }
    assert count in stated, f"{name}: the comment does not state {count:,} parameters"

"""The quick_equivariance preset: its jobs compose with the intended models, N, lr and options."""

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

import sphere_bench.train.run  # noqa: F401  (registers the config resolvers)
from sphere_bench.models import count_parameters

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "quick_equivariance.sh"


@pytest.fixture(autouse=True)
def _hydra() -> Iterator[None]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        yield
    GlobalHydra.instance().clear()


def _job(*overrides: str) -> DictConfig:
    cfg = compose("config", overrides=["experiment=quick_equivariance", *overrides],
                  return_hydra_config=True)  # fmt: skip
    HydraConfig.instance().set_config(cfg)
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return OmegaConf.create(OmegaConf.to_container(job, resolve=True))


def _script_jobs() -> list[list[str]]:
    """Every job of the script's multiruns, as override lists (comma lists expanded)."""
    jobs = []
    for line in SCRIPT.read_text().splitlines():
        if not line.startswith("train "):
            continue
        combos: list[list[str]] = [[]]
        for token in line.split()[1:]:
            if "=" not in token or token.startswith('"$@"'):
                continue
            key, values = token.split("=", 1)
            combos = [c + [f"{key}={v}"] for c in combos for v in values.split(",")]
        jobs.extend(combos)
    return jobs


def test_preset_jobs_compose_with_their_settings() -> None:
    jobs = _script_jobs()
    assert len(jobs) == 2 + 1 + 2 + 4 + 8 + 16
    assert sorted({o for job in jobs for o in job if o.startswith("seed=")}) == [
        f"seed={s}" for s in range(8)
    ]
    # Seeds change nothing else: compose each job once without its seed.
    distinct = {tuple(o for o in job if not o.startswith("seed=")) for job in jobs}
    jobs = [list(job) for job in sorted(distinct)]
    assert len(jobs) == 19
    soft = set()
    for overrides in jobs:
        job = _job(*overrides)
        model = next(o.split("=")[1] for o in overrides if o.startswith("model="))
        assert job.model.bandwidth == job.data.bandwidth == 16
        assert job.sweep_name == "quick_equivariance" and job.threads == 1
        s2cnn = model.startswith("s2cnn")
        assert job.data.n_train == (1000 if s2cnn else 3000)
        assert job.lit.lr == pytest.approx(5e-3 if s2cnn else 1e-3)
        assert job.callbacks.early_stopping.patience >= job.trainer.max_epochs  # no early stop
        weight = job.lit.get("equivariance_weight") or 0.0
        if model == "bl_cnn_cls_quick_115k":
            soft.add((job.data.rotate_train, weight, job.trainer.max_epochs))
        else:
            assert weight == 0.0 and job.trainer.max_epochs == 6
    # Soft equivariance on NR and R: λ at 6 epochs, and λ = 0 at 6 and at 18 epochs (equal
    # cost: a penalty step runs the network on 3 batches).
    assert soft == {
        (rot, weight, epochs)
        for rot in ("none", "random")
        for weight, epochs in ((0.0, 6), (0.0, 18), (0.1, 6), (1.0, 6), (10.0, 6), (100.0, 6))
    }


def test_anti_aliased_s2cnn_config_has_the_plain_models_parameters() -> None:
    plain = instantiate(OmegaConf.load(REPO / "conf" / "model" / "s2cnn_cls_small.yaml"))
    smooth = instantiate(_job("model=s2cnn_cls_small_aa").model)
    count = count_parameters(smooth)
    assert count == count_parameters(plain) == 154_550
    assert re.search(r"154,550", (REPO / "conf/model/s2cnn_cls_small_aa.yaml").read_text())
    assert smooth.features[1].factor == 1.5

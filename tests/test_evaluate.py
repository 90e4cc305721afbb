"""Evaluator pieces: equivariance error and latency measurement."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT
from hydra.utils import instantiate
from omegaconf import OmegaConf

from sphere_bench.data.planar_source import load_planar_split
from sphere_bench.data.spherical_dataset import SplitSpec, generate_split, render_samples
from sphere_bench.evaluate.equivariance import equivariance_errors
from sphere_bench.evaluate.latency import measure_latency


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return instantiate(OmegaConf.load(REPO_ROOT / "conf" / "model" / f"{name}.yaml"))


@pytest.fixture(scope="module")
def samples(data_root: Path):
    source = load_planar_split("mnist", "test", data_root, None)
    out = {}
    for task in ("segmentation", "classification"):
        spec = SplitSpec("mnist", task, "test", 4, resolution=16, rotate="random")
        data = generate_split(spec, source, progress=False)
        ids = torch.arange(4)

        def rerender(extra: torch.Tensor, spec=spec, data=data, ids=ids) -> torch.Tensor:
            return render_samples(spec, source, ids, extra.float() @ data.rotations)[0]

        out[task] = (data.inputs.float().unsqueeze(1), lambda r, f=rerender: f(r).float()[:, None])
    return out


def test_rerendering_with_identity_reproduces_the_stored_samples(data_root: Path) -> None:
    source = load_planar_split("mnist", "test", data_root, None)
    spec = SplitSpec("mnist", "segmentation", "test", 6, resolution=12, rotate="random", n_items=4)
    data = generate_split(spec, source, progress=False)
    x, y = render_samples(spec, source, torch.arange(6), data.rotations)
    assert torch.equal(x, data.inputs) and torch.equal(y, data.targets)


@pytest.mark.parametrize("task", ["segmentation", "classification"])
def test_s2cnn_is_equivariant_and_cnn_is_not(samples, task: str) -> None:
    x, rerender = samples[task]
    short = "seg" if task == "segmentation" else "cls"
    gen = torch.Generator().manual_seed(0)
    s2cnn = equivariance_errors(_model(f"s2cnn_{short}_small"), x, task, rerender, generator=gen)
    cnn = equivariance_errors(_model(f"cnn_{short}_small"), x, task, rerender, generator=gen)
    # Half-turns map every SOFT grid onto itself: exact up to float32 rounding for the S2CNN.
    assert s2cnn["grid_rel_error"] < 1e-5 and s2cnn["grid_changed_fraction"] == 0.0
    assert cnn["grid_rel_error"] > 0.1
    # Haar rotations: approximate for the S2CNN (grid nonlinearities), far worse for the CNN.
    assert s2cnn["haar_rel_error"] < 0.15
    assert cnn["haar_rel_error"] > 3 * s2cnn["haar_rel_error"]


def test_latency_record_fields_and_state_restored() -> None:
    model = _model("cnn_cls_small")
    model.eval()
    forward = measure_latency(model, (1, 32, 32), batch_size=4, repeats=3, warmup=1)
    assert forward.mode == "forward" and forward.repeats == 3
    assert 0 < forward.p10_ms <= forward.median_ms <= forward.p90_ms
    assert forward.images_per_s == pytest.approx(4 / (forward.median_ms / 1e3))
    train = measure_latency(model, (1, 32, 32), batch_size=4, mode="forward_backward", repeats=3)
    assert not model.training  # restored
    assert train.memory_kind in ("cpu_peak_rss", "unavailable")
    if train.memory_kind == "cpu_peak_rss":
        assert train.peak_memory_mb >= train.baseline_memory_mb > 0
    with pytest.raises(ValueError, match="mode"):
        measure_latency(model, (1, 32, 32), 1, mode="backward")

"""S2CNN zoo: configs instantiate alone, exact parameter counts, shapes, equivariance, errors."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch
from equivariance_check import assert_equivariant, equivariance_error
from omegaconf import OmegaConf

from sphere_bench.harmonic.rotations import haar_rotations
from sphere_bench.harmonic.s2_fft import s2_fft, s2_ifft
from sphere_bench.models import count_parameters
from sphere_bench.models.s2cnn_zoo import S2CNNClassifier, S2CNNSegmentation

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
EXPECTED = {
    "s2cnn_seg_204k": (204_073, 50, (11, 100, 100)),
    "s2cnn_seg_b20": (204_073, 20, (11, 40, 40)),
    "s2cnn_seg_small": (204_073, 16, (11, 32, 32)),
    "s2cnn_cls_150k": (154_550, 30, (10,)),
    "s2cnn_cls_small": (154_550, 16, (10,)),
}


def _load(name: str) -> torch.nn.Module:
    return hydra.utils.instantiate(OmegaConf.load(CONF / f"{name}.yaml"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_instantiates_with_exact_parameter_count(name) -> None:
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    assert cfg.bandwidth == EXPECTED[name][1]
    assert cfg.task == ("segmentation" if "seg" in name else "classification")
    model = _load(name)
    assert isinstance(model, torch.nn.Module)
    assert count_parameters(model) == EXPECTED[name][0]


@pytest.mark.parametrize("name", ["s2cnn_seg_small", "s2cnn_cls_small", "s2cnn_cls_150k"])
def test_forward_shapes_and_backward(name) -> None:
    model = _load(name)
    b = model.bandwidth
    x = torch.randn(2, 1, 2 * b, 2 * b)
    y = model(x)
    assert y.shape == (2, *EXPECTED[name][2]) and torch.isfinite(y).all()
    y.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def _smooth_input(n: int, b: int, degrees: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(n, 1, degrees, degrees, dtype=torch.complex128, generator=g)
    return s2_ifft(c, b)


@torch.no_grad()
def test_segmentation_equivariance() -> None:
    torch.manual_seed(0)
    model = _load("s2cnn_seg_small").double()
    b = model.bandwidth
    x = _smooth_input(2, b, b)
    grid = [(b, False), (0, True), (b, True)]  # α = π and Ry(π): grid-exact
    assert_equivariant(model, x, grid, tolerance=1e-12, measure="max")
    # Haar rotations: inputs rotated exactly (spectrally); ReLU on the grid breaks exactness.
    y = model(x)
    rotations = haar_rotations(2, torch.Generator().manual_seed(3))
    errors = [equivariance_error(model, x, r, y=y) for r in rotations]
    assert max(errors) < 0.2, errors
    # ... and the error is far below that of a rotation the network does not follow
    r = haar_rotations(1, torch.Generator().manual_seed(4))[0]
    assert equivariance_error(model, x, r, "s2", None, y=y) > 5 * max(errors)


@torch.no_grad()
def test_classifier_logits_are_invariant() -> None:
    torch.manual_seed(0)
    model = _load("s2cnn_cls_small").double()
    b = model.bandwidth
    x = _smooth_input(3, b, b)
    grid = [(b, False), (0, True), (b, True)]
    assert_equivariant(model, x, grid, "s2", None, tolerance=1e-12, measure="max")
    rotations = haar_rotations(3, torch.Generator().manual_seed(5))
    assert_equivariant(model, x, rotations, "s2", None, tolerance=0.02)
    # the features before integration do change under rotation (the invariance is not trivial)
    assert equivariance_error(model.features, x, rotations[-1], "s2", None, measure="max") > 0.1


def test_band_limited_input_spectrum_is_used_up_to_first_bandlimit() -> None:
    model = S2CNNSegmentation(8, [3, 3], [5, 5], [0.2, 0.2, 0.2]).double()
    x = _smooth_input(1, 8, 8)
    high = x - s2_ifft(s2_fft(x, 5), 8)  # degrees 5…7 only: removed by the first layer
    assert torch.allclose(model(x), model(x - high), atol=1e-12)


@pytest.mark.parametrize("kwargs,match", [
    ({"bandwidth": 1}, "bandwidth"),
    ({"bandwidth": 8, "channels": [3, 3], "bandlimits": [5]}, "bandlimits"),
    ({"bandwidth": 8, "channels": [3, 3], "bandlimits": [5, 5], "kernel_max_beta": [0.1]},
     "kernel_max_beta"),
    ({"bandwidth": 8, "channels": [3, 0], "bandlimits": [5, 5], "kernel_max_beta": [.1] * 3},
     "channels"),
    ({"bandwidth": 8, "channels": [3], "bandlimits": [5], "kernel_max_beta": [2.0, 0.1]},
     "kernel_max_beta"),
    ({"bandwidth": 8, "task": "classification"}, "task"),
])
def test_segmentation_validation_names_the_argument(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        S2CNNSegmentation(**kwargs)


def test_classifier_validation_and_input_check() -> None:
    with pytest.raises(ValueError, match="bandlimits"):
        S2CNNClassifier(16, channels=[4, 4], bandlimits=[6])
    with pytest.raises(ValueError, match="task"):
        S2CNNClassifier(16, task="segmentation")
    model = S2CNNClassifier(8, channels=[2], bandlimits=[4], kernel_max_beta=[0.125])
    with pytest.raises(ValueError, match=r"\[N, 1, 16, 16\]"):
        model(torch.zeros(1, 1, 20, 20))

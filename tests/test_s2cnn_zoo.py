"""S2CNN zoo: configs instantiate alone, exact parameter counts, shapes, equivariance, errors."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from sphere_bench.harmonic.rotations import haar_rotations
from sphere_bench.harmonic.s2_fft import s2_fft, s2_ifft
from sphere_bench.harmonic.signal_rotation import rotate_s2, rotate_s2_grid
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
    y = model(x)
    for shift, flip in [(b, False), (0, True), (b, True)]:  # α = π and Ry(π): grid-exact
        out = model(rotate_s2_grid(x, shift, flip))
        assert (out - rotate_s2_grid(y, shift, flip)).abs().max() < 1e-12 * y.abs().max()
    # Haar rotations: inputs rotated exactly (spectrally); ReLU on the grid breaks exactness.
    errors = []
    for r in haar_rotations(2, torch.Generator().manual_seed(3)):
        out = model(rotate_s2(x, r))
        ref = rotate_s2(y, r)
        errors.append(float((out - ref).norm() / ref.norm()))
    assert max(errors) < 0.2, errors
    # ... and the error is far below that of a rotation the network does not follow
    out = model(rotate_s2(x, haar_rotations(1, torch.Generator().manual_seed(4))[0]))
    assert float((out - y).norm() / y.norm()) > 5 * max(errors)


@torch.no_grad()
def test_classifier_logits_are_invariant() -> None:
    torch.manual_seed(0)
    model = _load("s2cnn_cls_small").double()
    b = model.bandwidth
    x = _smooth_input(3, b, b)
    logits = model(x)
    for shift, flip in [(b, False), (0, True), (b, True)]:
        out = model(rotate_s2_grid(x, shift, flip))
        assert (out - logits).abs().max() < 1e-12 * logits.abs().max()
    for r in haar_rotations(3, torch.Generator().manual_seed(5)):
        out = model(rotate_s2(x, r))
        assert float((out - logits).norm() / logits.norm()) < 0.02
    # the features before integration do change under rotation (the invariance is not trivial)
    feats = model.features(x)
    assert (model.features(rotate_s2(x, r)) - feats).abs().max() > 0.1 * feats.abs().max()


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

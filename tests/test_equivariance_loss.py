"""Soft-equivariance penalty: zero gradient for an exactly equivariant model, not for a CNN."""

from __future__ import annotations

import pytest
import torch

from sphere_bench.harmonic.rotations import haar_rotations
from sphere_bench.models.cnn_zoo import ClassificationCNN, SegmentationCNN
from sphere_bench.models.frame_averaging import FrameAveraged
from sphere_bench.train.equivariance_loss import equivariance_penalty
from sphere_bench.train.lit_module import SphericalLitModule

B = 8


def _cnn(task: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if task == "classification":
        return ClassificationCNN(B, [4, 4, 8], [3, 3, 3], [1, 2, 1], False, "valid", 10)
    return SegmentationCNN(B, [4, 6, 8], [3, 3, 3], [1, 2, 1], True, "valid", 11)


def _grad_norm(net: torch.nn.Module, x: torch.Tensor, task: str) -> tuple[float, float]:
    net.zero_grad()
    rotations = haar_rotations(x.shape[0], torch.Generator().manual_seed(1))
    penalty = equivariance_penalty(net, x, task, rotations)
    penalty.backward()
    grads = torch.cat([p.grad.reshape(-1) for p in net.parameters() if p.grad is not None])
    return float(penalty.detach()), float(grads.norm())


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_penalty_gradient_vanishes_for_an_equivariant_model_only(task: str) -> None:
    x = torch.rand(4, 1, 2 * B, 2 * B, generator=torch.Generator().manual_seed(0)) ** 4
    cnn_value, cnn_grad = _grad_norm(_cnn(task), x, task)
    fa_value, fa_grad = _grad_norm(FrameAveraged(_cnn(task)), x, task)
    assert cnn_value > 0 and cnn_grad > 0
    # Frame averaging is exact under spectral rotations of band-limited inputs: P ≈ 0, ∇P ≈ 0.
    assert fa_value < 1e-6 * cnn_value
    assert fa_grad < 1e-4 * cnn_grad


def test_penalty_checks_its_arguments() -> None:
    x = torch.rand(2, 1, 2 * B, 2 * B)
    with pytest.raises(ValueError, match="task must be"):
        equivariance_penalty(_cnn("classification"), x, "regression")
    with pytest.raises(ValueError, match=r"rotations must be \[N=2, 3, 3\]"):
        equivariance_penalty(_cnn("classification"), x, "classification", torch.eye(3))


def test_lit_module_adds_the_weighted_penalty() -> None:
    x = torch.rand(4, 1, 2 * B, 2 * B, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 10, (4,), generator=torch.Generator().manual_seed(0))
    losses = {}
    for weight in (0.0, 10.0):
        lit = SphericalLitModule(_cnn("classification"), "classification", 10,
                                 equivariance_weight=weight)  # fmt: skip
        lit.log = lambda *args, **kwargs: None  # no trainer attached
        torch.manual_seed(5)
        losses[weight] = float(lit.training_step((x, y), 0).detach())
    cross_entropy = losses[0.0]
    torch.manual_seed(5)
    penalty = float(equivariance_penalty(_cnn("classification"), x, "classification").detach())
    assert losses[10.0] == pytest.approx(cross_entropy + 10.0 * penalty, rel=1e-5)
    with pytest.raises(ValueError, match="equivariance_weight must be a number >= 0"):
        SphericalLitModule(_cnn("classification"), "classification", 10, equivariance_weight=-1)

"""BandLimited: the network sees only P_B x, so the soft-equivariance penalty has no shortcut."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from sphere_bench.harmonic.rotations import haar_rotations
from sphere_bench.harmonic.signal_rotation import rotate_s2
from sphere_bench.models import count_parameters
from sphere_bench.models.band_limited import BandLimited, band_limit
from sphere_bench.models.cnn_zoo import ClassificationCNN
from sphere_bench.train.equivariance_loss import equivariance_penalty

B = 8
REPO = Path(__file__).resolve().parents[1]


class ResidualReader(torch.nn.Module):
    """Logits that read the part of the input above the band limit (the shortcut a CNN can
    learn: zero on every band-limited input, so the penalty is zero, yet not invariant)."""

    bandwidth = B

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = (x - band_limit(x)).flatten(1)
        return residual[:, :10] * self.scale


def _inputs() -> torch.Tensor:
    return torch.rand(3, 1, 2 * B, 2 * B, generator=torch.Generator().manual_seed(0)) ** 4


def test_penalty_is_blind_to_a_net_that_reads_the_residual_and_the_wrapper_removes_it() -> None:
    x = _inputs()
    rotations = haar_rotations(3, torch.Generator().manual_seed(1))
    reader = ResidualReader()
    # The penalty compares P_B x with R P_B x: both band-limited, the reader outputs 0 on both.
    assert float(equivariance_penalty(reader, x, "classification", rotations).detach()) < 1e-10
    # ... while its logits change under rotation of the raw input (a grid shift of α by 1 pixel).
    raw, shifted = reader(x), reader(torch.roll(x, 1, dims=-1))
    assert (raw - shifted).norm() > 0.1 * raw.norm()
    # Wrapped, the reader sees P_B x only: zero on raw inputs as on band-limited ones.
    wrapped = BandLimited(reader)
    assert wrapped(x).abs().max() < 1e-4


def test_band_limited_net_cannot_tell_raw_from_projected_inputs() -> None:
    torch.manual_seed(0)
    net = BandLimited(ClassificationCNN(B, [4, 4, 8], [3, 3, 3], [1, 2, 1], False, "valid", 10))
    x = _inputs()
    projected = band_limit(x)
    assert (x - projected).norm() > 0.05 * x.norm()  # the inputs do differ
    assert torch.allclose(band_limit(projected), projected, atol=1e-4 * projected.abs().max())
    assert torch.allclose(net(x), net(projected), atol=1e-5, rtol=1e-4)
    # The penalty's rotated input is an input the wrapped net meets: P_B R P_B x = R P_B x.
    rotated = rotate_s2(x, haar_rotations(3, torch.Generator().manual_seed(2))).float()
    assert torch.allclose(band_limit(rotated), rotated, atol=1e-4 * rotated.abs().max())


def test_config_has_the_plain_cnns_parameters_and_checks_its_bandwidth() -> None:
    cfg = OmegaConf.load(REPO / "conf" / "model" / "bl_cnn_cls_quick_115k.yaml")
    cfg.net = OmegaConf.load(REPO / "conf" / "model" / "cnn_cls_quick_115k.yaml")
    del cfg["defaults"]
    model = instantiate(cfg)
    assert isinstance(model, BandLimited) and model.bandwidth == 16
    assert count_parameters(model) == 115_720
    assert model.task == "classification" and model.num_classes == 10
    with pytest.raises(ValueError, match="bandwidth=12 but the wrapped net is built for B=16"):
        BandLimited(model.net, bandwidth=12)
    with pytest.raises(ValueError, match=r"does not match bandwidth B=16 \(expected 32 x 32\)"):
        model(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="expected SOFT-grid signals"):
        band_limit(torch.zeros(2, 5, 6))

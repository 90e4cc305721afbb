"""Anti-aliased S2CNN nonlinearity: band-limited output, error falling with the oversampling."""

from __future__ import annotations

import pytest
import torch
from equivariance_check import equivariance_error

from sphere_bench.harmonic.rotations import euler_zyz_to_matrix
from sphere_bench.harmonic.s2_fft import s2_fft, s2_ifft
from sphere_bench.harmonic.so3_fft import so3_fft, so3_ifft
from sphere_bench.models.antialias import OversampledReLU, oversampled_bandwidth
from sphere_bench.models.s2cnn_zoo import S2CNNClassifier, S2CNNSegmentation

B = 8
ROTATION = euler_zyz_to_matrix(
    *(torch.tensor(a, dtype=torch.float64) for a in (3.216, 0.449, 0.906))
)


def _segmenter(factor: float, upsampling: str = "exact") -> S2CNNSegmentation:
    torch.manual_seed(0)
    return S2CNNSegmentation(
        B, channels=[4, 5, 4], bandlimits=[6, 4, 6], kernel_max_beta=[0.2, 0.25, 0.3, 0.25],
        oversampling=factor, upsampling=upsampling,
    ).eval()  # fmt: skip


def _input() -> torch.Tensor:
    x = torch.rand(
        2, 1, 2 * B, 2 * B, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    return s2_ifft(s2_fft(x**3))  # band-limited, so its spectral rotation is exact


def test_oversampled_relu_is_band_limited_and_converges_to_the_projected_relu() -> None:
    b = 5
    coeffs = so3_fft(torch.randn(2, 2 * b, 2 * b, 2 * b, dtype=torch.float64))
    x = so3_ifft(coeffs, b)  # band-limited
    assert torch.equal(OversampledReLU(b, 1.0)(x), torch.relu(x))
    # The reference: P_b ReLU(x) computed on a much finer grid.
    reference = so3_ifft(so3_fft(torch.relu(so3_ifft(coeffs, 8 * b)), b), b)
    errors = []
    for factor in (1.0, 2.0, 4.0):
        y = OversampledReLU(b, factor)(x)
        if factor > 1:
            assert torch.allclose(so3_ifft(so3_fft(y), b), y, atol=1e-12)  # band-limited
        errors.append(float((y - reference).norm() / reference.norm()))
    assert errors[0] > errors[1] > errors[2]
    # Left rotations commute with the oversampled ReLU up to its remaining aliasing.
    relu = OversampledReLU(b, 4.0)
    assert equivariance_error(relu, x, ROTATION, "so3", "so3", relative_to="output") < 0.02


@pytest.mark.parametrize("upsampling", ["exact", "paper"])
def test_s2cnn_equivariance_error_falls_as_the_oversampling_grows(upsampling: str) -> None:
    # "paper": the reference code's aliased up-sampling (sphere_bench.harmonic.paper_upsampling).
    x = _input()  # float64: rotated spectrally in float64, then run in float32
    errors = {}
    for factor in (1.0, 1.5, 2.0, 3.0):
        net = _segmenter(factor, upsampling)

        def run(signal: torch.Tensor, net: torch.nn.Module = net) -> torch.Tensor:
            return net(signal.float())

        with torch.no_grad():
            y = run(x)
        errors[factor] = equivariance_error(run, x, ROTATION, y=y, relative_to="output")
        # Grid half-turns stay exact at every factor.
        assert equivariance_error(run, x, (B, True), y=y) < 1e-5
    assert errors[1.0] > errors[1.5] > errors[2.0] > errors[3.0]
    assert errors[2.0] < 0.5 * errors[1.0]
    assert errors[3.0] < 0.2 * errors[1.0]


def test_oversampling_keeps_parameters_and_checks_its_factor() -> None:
    plain, smooth = _segmenter(1.0), _segmenter(2.0)
    assert plain.state_dict().keys() == smooth.state_dict().keys()
    assert all(
        torch.equal(plain.state_dict()[k], smooth.state_dict()[k]) for k in plain.state_dict()
    )
    classifier = S2CNNClassifier(B, channels=[4, 6], bandlimits=[5, 3], kernel_max_beta=[0.2, 0.2],
                                 oversampling=2.0)  # fmt: skip
    assert sum(isinstance(m, OversampledReLU) for m in classifier.modules()) == 2
    assert classifier(_input().float()).shape == (2, 10)
    assert oversampled_bandwidth(6, 1.5) == 9 and oversampled_bandwidth(7, 1.5) == 11
    with pytest.raises(ValueError, match="oversampling factor must be a number >= 1.*0.5"):
        _segmenter(0.5)
    with pytest.raises(ValueError, match=r"expects \[\.\.\., 12, 12, 12\]"):
        OversampledReLU(6, 2.0)(torch.zeros(1, 10, 10, 10))

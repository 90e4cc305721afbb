"""S2CNN layers: equivariance, the correlation formula, the SO3ToS2 reduction, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from equivariance_check import assert_equivariant
from torch import nn

from sphere_bench.harmonic.grids import soft_alphas, soft_betas
from sphere_bench.harmonic.kernel_grids import s2_near_identity_grid, so3_near_identity_grid
from sphere_bench.harmonic.rotations import euler_zyz_to_matrix, haar_rotations
from sphere_bench.harmonic.s2_fft import s2_fft, s2_half_to_full, s2_ifft
from sphere_bench.harmonic.signal_rotation import rotate_so3, rotate_so3_grid
from sphere_bench.harmonic.so3_fft import so3_fft, so3_half_to_full, so3_ifft
from sphere_bench.harmonic.wigner import wigner_D_padded
from sphere_bench.models import count_parameters
from sphere_bench.models.s2cnn_layers import (
    S2Convolution,
    SO3Convolution,
    SO3ToS2Convolution,
    so3_integrate,
)

ROT = haar_rotations(2, torch.Generator().manual_seed(7))


def _s2_signal(n, c, b, seed=0):
    g = torch.Generator().manual_seed(seed)
    return s2_ifft(torch.randn(n, c, b, b, dtype=torch.complex128, generator=g), b)


def _so3_signal(n, c, b, seed=0):
    g = torch.Generator().manual_seed(seed)
    return so3_ifft(torch.randn(n, c, b, b, 2 * b - 1, dtype=torch.complex128, generator=g), b)


def _layer(cls, c_in, c_out, b_in, b_out, dtype=torch.float64):
    torch.manual_seed(0)
    layer = cls(c_in, c_out, b_in, b_out).to(dtype)
    with torch.no_grad():
        layer.bias.normal_()
    return layer


CASES = [  # layer, b_in, b_out, input signal, input space, output space
    (S2Convolution, 8, 6, _s2_signal, "s2", "so3"),
    (SO3Convolution, 8, 6, _so3_signal, "so3", "so3"),
    (SO3Convolution, 4, 6, _so3_signal, "so3", "so3"),
    (SO3ToS2Convolution, 6, 8, _so3_signal, "so3", "s2"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0].__name__}-{c[1]}-{c[2]}")
def test_equivariance(case) -> None:
    cls, b_in, b_out, make, space_in, space_out = case
    # grid rotations (α by π/2, and the Ry(π) flip), float32: exact up to rounding
    layer = _layer(cls, 2, 3, b_in, b_out, torch.float32)
    x = make(2, 2, b_in).float()
    grid = [(b_in // 2, False), (0, True), (b_in // 2, True)]
    assert_equivariant(layer, x, grid, space_in, space_out, tolerance=2e-6, measure="max")
    # Haar rotations of band-limited inputs, float64, rotated spectrally
    layer, x = layer.double(), x.double()
    assert_equivariant(layer, x, ROT, space_in, space_out, tolerance=1e-11, measure="max")


def _eval_s2(coeffs_full: torch.Tensor, beta: float, alpha: float) -> torch.Tensor:
    """f(β, α) = Σ (2l+1) F^l_m conj(D^l_{m0}(α, β, 0)) from full coefficients [..., L, 2L−1]."""
    L = coeffs_full.shape[-2]
    D = wigner_D_padded(L, torch.tensor(alpha), torch.tensor(beta), torch.tensor(0.0))
    deg = (2 * torch.arange(L) + 1).to(torch.float64)
    return (deg[:, None] * coeffs_full * D[..., L - 1].conj()).sum((-1, -2)).real


def _eval_so3(coeffs_full: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """f(g) = Σ (2l+1) F^l_{mn} conj(D^l_{mn}(g)) from [..., L, 2L−1, 2L−1]."""
    from sphere_bench.harmonic.signal_rotation import wigner_D_for_matrix

    L = coeffs_full.shape[-3]
    D = wigner_D_for_matrix(rot, L)
    deg = (2 * torch.arange(L) + 1).to(torch.float64)
    return (deg[:, None, None] * coeffs_full * D.conj()).sum((-1, -2, -3)).real


def test_s2_convolution_is_the_correlation_on_kernel_points() -> None:
    """y_d(R) = 2 b_out Σ_{c,i} ψ_cdi f̃_c(R x_i) + bias_d at grid rotations R."""
    b_in, b_out = 6, 4
    layer = _layer(S2Convolution, 2, 3, b_in, b_out)
    x = _s2_signal(1, 2, b_in)
    y = layer(x)[0]
    coeffs = s2_half_to_full(s2_fft(x[0], b_out))  # band-limited projection, [c, L, 2L−1]
    j, k, p = 2, 5, 3
    R = euler_zyz_to_matrix(torch.tensor(soft_alphas(b_out)[k]), torch.tensor(soft_betas(b_out)[j]),
                            torch.tensor(soft_alphas(b_out)[p]))
    expected = layer.bias.view(3).clone()
    for i, (beta, alpha) in enumerate(layer.grid.points()):
        v = R @ torch.tensor([math.sin(beta) * math.cos(alpha), math.sin(beta) * math.sin(alpha),
                              math.cos(beta)], dtype=torch.float64)
        f = _eval_s2(coeffs, math.acos(float(v[2].clamp(-1, 1))), math.atan2(v[1], v[0]))
        expected = expected + 2 * b_out * layer.scaling * (f @ layer.kernel[:, :, i])
    assert torch.allclose(y[:, j, k, p], expected, atol=1e-12)


def test_so3_convolution_is_the_correlation_on_kernel_points() -> None:
    """y_d(R) = Σ_{c,i} ψ_cdi f̃_c(R g_i) + bias_d."""
    b_in, b_out = 4, 4
    grid = so3_near_identity_grid(n_alpha=3, n_beta=2, n_gamma=2)
    torch.manual_seed(1)
    layer = SO3Convolution(2, 2, b_in, b_out, grid).double()
    x = _so3_signal(1, 2, b_in)
    y = layer(x)[0]
    coeffs = so3_half_to_full(so3_fft(x[0]))
    j, k, p = 3, 1, 6
    R = euler_zyz_to_matrix(torch.tensor(soft_alphas(b_out)[k]), torch.tensor(soft_betas(b_out)[j]),
                            torch.tensor(soft_alphas(b_out)[p]))
    expected = torch.zeros(2, dtype=torch.float64)
    for i, (a, b, g) in enumerate(grid.points()):
        gi = euler_zyz_to_matrix(torch.tensor(a), torch.tensor(b), torch.tensor(g))
        expected = expected + layer.scaling * (_eval_so3(coeffs, R @ gi) @ layer.kernel[:, :, i])
    assert torch.allclose(y[:, j, k, p], expected, atol=1e-12)


def test_so3_to_s2_equals_real_part_of_summed_spectrum() -> None:
    """The head equals Re(S² synthesis of h_m = Σ_n z_mn) with all n, as in the reference."""
    b_in, b_out = 5, 6
    head = _layer(SO3ToS2Convolution, 2, 3, b_in, b_out)
    conv = SO3Convolution(2, 3, b_in, b_out, head.grid).double()
    with torch.no_grad():
        conv.kernel.copy_(head.kernel)
    assert conv.scaling == head.scaling
    L = min(b_in, b_out)
    x = _so3_signal(2, 2, b_in)
    F = so3_half_to_full(so3_fft(x, L))  # [N, c, l, m, k]
    K = conv.kernel_spectrum(L)  # [n, k, l, c, d]
    z = torch.einsum("bclmk,nklcd->bdlmn", F, K.conj())
    h = z.sum(-1)  # [N, d, l, m] with m = −(L−1) … L−1
    m = torch.arange(0, L)
    sign = (-1.0) ** m
    h_sym = 0.5 * (h[..., L - 1 :] + sign * h[..., : L].flip(-1).conj())
    expected = s2_ifft(h_sym, b_out) + head.bias
    assert torch.allclose(head(x), expected, atol=1e-12)


@pytest.mark.parametrize("cls,b_in,b_out,dims", [
    (S2Convolution, 3, 2, 2), (SO3Convolution, 2, 3, 3), (SO3Convolution, 3, 2, 3),
    (SO3ToS2Convolution, 2, 3, 3),
])
def test_gradcheck(cls, b_in, b_out, dims) -> None:
    torch.manual_seed(0)
    grid = (s2_near_identity_grid(n_alpha=3, n_beta=2) if cls is S2Convolution
            else so3_near_identity_grid(n_alpha=3, n_beta=2, n_gamma=2))
    layer = cls(2, 2, b_in, b_out, grid).double()
    x = torch.randn(1, 2, *([2 * b_in] * dims), dtype=torch.float64, requires_grad=True)

    def fn(inp, kernel, bias):
        return torch.func.functional_call(layer, {"kernel": kernel, "bias": bias}, (inp,))

    params = (layer.kernel.detach().clone().requires_grad_(True),
              layer.bias.detach().clone().normal_().requires_grad_(True))
    assert torch.autograd.gradcheck(fn, (x, *params))


@pytest.mark.parametrize("cls,dims", [(S2Convolution, 2), (SO3Convolution, 3),
                                      (SO3ToS2Convolution, 3)])
def test_degree_chunks_change_nothing_and_keep_exact_gradients(cls, dims) -> None:
    """Several degree chunks (their own gather/scatter backward) against one chunk: same
    output, and gradcheck passes through the chunked path."""
    torch.manual_seed(0)
    grid = (s2_near_identity_grid(n_alpha=3, n_beta=2) if cls is S2Convolution
            else so3_near_identity_grid(n_alpha=3, n_beta=2, n_gamma=2))
    layer = cls(2, 3, 3, 3, grid).double()
    nn.init.normal_(layer.bias)
    x = torch.randn(2, 2, *([6] * dims), dtype=torch.float64, requires_grad=True)
    layer._chunk_plans = {2: ((0, 3),)}
    whole = layer(x)
    layer._chunk_plans = {2: ((0, 1), (1, 2), (2, 3))}
    assert torch.allclose(layer(x), whole, atol=1e-12)

    def fn(inp, kernel, bias):
        return torch.func.functional_call(layer, {"kernel": kernel, "bias": bias}, (inp,))

    params = (layer.kernel.detach().clone().requires_grad_(True),
              layer.bias.detach().clone().requires_grad_(True))
    assert torch.autograd.gradcheck(fn, (x, *params))


def test_parameters_initialisation_and_scaling() -> None:
    torch.manual_seed(0)
    s2 = S2Convolution(1, 11, 50, 42)
    assert count_parameters(s2) == 275
    assert s2.scaling == pytest.approx(1 / math.sqrt(24 * 1 * 42**4 / 50**2))
    so3 = SO3Convolution(11, 12, 42, 35)
    assert count_parameters(so3) == 25_356
    assert so3.scaling == pytest.approx(1 / math.sqrt(192 * 11 * 35**3 / 42**3))
    head = SO3ToS2Convolution(11, 11, 42, 50)
    assert count_parameters(head) == 23_243
    assert head.bias.shape == (1, 11, 1, 1) and float(head.bias.detach().abs().max()) == 0.0
    k = so3.kernel.detach()
    assert k.abs().max() <= 1 and k.min() < -0.9 and k.max() > 0.9
    grid = so3_near_identity_grid()
    gammas = np.mod(grid.points()[:, 2], 2 * np.pi).round(9)
    assert len(np.unique(gammas[:8])) == 7  # the reference's duplicated γ point


def test_so3_integrate_is_invariant() -> None:
    x = _so3_signal(2, 3, 5)
    base = so3_integrate(x)
    assert torch.allclose(so3_integrate(rotate_so3(x, ROT[0])), base, atol=1e-12)
    assert torch.allclose(so3_integrate(rotate_so3_grid(x, 3, True)), base, atol=1e-12)


def test_bad_input_shape_names_the_layer() -> None:
    with pytest.raises(ValueError, match="SO3Convolution expects"):
        SO3Convolution(2, 3, 4, 4)(torch.zeros(1, 2, 6, 6, 6))
    with pytest.raises(ValueError, match="nfeature_in"):
        S2Convolution(0, 3, 4, 4)

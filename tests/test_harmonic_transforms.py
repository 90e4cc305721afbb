"""S² and SO(3) transforms: round trips, known functions, bandwidth changes, rotations, grads."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sphere_bench.harmonic.grids import soft_alphas, soft_betas
from sphere_bench.harmonic.rotations import haar_rotations
from sphere_bench.harmonic.s2_fft import (
    S2FFT,
    S2IFFT,
    s2_fft,
    s2_full_to_flat,
    s2_half_to_full,
    s2_ifft,
)
from sphere_bench.harmonic.signal_rotation import (
    grid_rotation_matrix,
    rotate_s2,
    rotate_s2_grid,
    rotate_so3,
    rotate_so3_grid,
)
from sphere_bench.harmonic.so3_fft import (
    SO3FFT,
    so3_fft,
    so3_full_to_flat,
    so3_half_to_full,
    so3_ifft,
    so3_integrate,
)
from sphere_bench.harmonic.wigner import wigner_D_padded


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def random_s2(shape, b, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(*shape, b, b, dtype=torch.complex128, generator=g)
    return s2_ifft(c, b).to(dtype)


def random_so3(shape, b, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(*shape, b, b, 2 * b - 1, dtype=torch.complex128, generator=g)
    return so3_ifft(c, b).to(dtype)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("b", [4, 11])
def test_round_trip(dtype, tol, b) -> None:
    x = random_s2((3, 2), b, dtype)
    assert _rel(s2_ifft(s2_fft(x), b), x) < tol
    y = random_so3((2, 2), b, dtype)
    assert _rel(so3_ifft(so3_fft(y), b), y) < tol
    c = s2_fft(x.double())
    assert _rel(s2_fft(s2_ifft(c, b)), c) < 1e-10
    assert S2IFFT(b)(S2FFT(b)(x)).dtype == dtype and SO3FFT(b)(y).dtype.is_complex


def test_white_noise_round_trip_is_a_projection() -> None:
    x = torch.randn(2, 16, 16, dtype=torch.float64)
    p = s2_ifft(s2_fft(x), 8)
    assert _rel(p, x) > 0.1  # 2B x 2B grid holds more than B^2 coefficients
    assert _rel(s2_ifft(s2_fft(p), 8), p) < 1e-12


def test_sampled_spherical_harmonic_gives_one_coefficient() -> None:
    sph_harm_y = pytest.importorskip("scipy.special").sph_harm_y
    b, l, m = 8, 5, 3
    beta, alpha = np.meshgrid(soft_betas(b), soft_alphas(b), indexing="ij")
    y = sph_harm_y(l, m, beta, alpha)  # Condon–Shortley, orthonormal
    coeffs = s2_fft(torch.from_numpy(y.real.copy()))
    expected = torch.zeros(b, b, dtype=torch.complex128)
    expected[l, m] = 0.5 / math.sqrt(4 * math.pi * (2 * l + 1))
    assert (coeffs - expected).abs().max() < 1e-12
    y0 = torch.from_numpy(sph_harm_y(l, 0, beta, alpha).real.copy())
    assert abs(s2_fft(y0)[l, 0] - 1 / math.sqrt(4 * math.pi * (2 * l + 1))) < 1e-12


def test_sampled_wigner_D_gives_one_coefficient() -> None:
    b, l, m, n = 6, 4, 2, -3
    betas, alphas = soft_betas(b), soft_alphas(b)
    a, bb, g = np.meshgrid(alphas, betas, alphas, indexing="ij")
    D = wigner_D_padded(b, torch.from_numpy(a), torch.from_numpy(bb), torch.from_numpy(g))
    f = D[..., l, m + b - 1, n + b - 1].conj().real.permute(1, 0, 2).contiguous()  # [β, α, γ]
    coeffs = so3_fft(f)
    expected = torch.zeros(b, b, 2 * b - 1, dtype=torch.complex128)
    expected[l, m, n + b - 1] = 1 / (2 * (2 * l + 1))
    assert (coeffs - expected).abs().max() < 1e-12


def test_bandwidth_change_is_exact_truncation_and_padding() -> None:
    x = random_so3((2,), 6)
    full = so3_fft(x)
    trunc = so3_fft(x, 4)
    assert (trunc - full[..., :4, :4, 6 - 1 - 3 : 6 + 3]).abs().max() < 1e-12
    up = so3_ifft(full, 9)  # zero-padded onto a finer grid
    assert up.shape[-1] == 18
    back = so3_fft(up)
    assert back[..., 6:, :, :].abs().max() < 1e-12
    assert (back[..., :6, :6, 3:14] - full).abs().max() < 1e-12
    s = random_s2((2,), 7)
    s_up = s2_ifft(s2_fft(s), 12)
    assert _rel(s2_ifft(s2_fft(s_up, 7), 7), s) < 1e-12


def test_layout_helpers_and_integral() -> None:
    x = random_so3((), 4)
    full = so3_half_to_full(so3_fft(x))
    assert full.shape == (4, 7, 7)
    assert so3_full_to_flat(full).shape == (4 * (4 * 16 - 1) // 3,)
    assert abs(so3_integrate(x) - full[0, 3, 3].real) < 1e-12
    s = s2_half_to_full(s2_fft(random_s2((), 5)))
    assert s2_full_to_flat(s).shape == (25,)
    m = torch.arange(-4, 5)
    sign = (-1.0) ** m
    assert (s.flip(-1) - sign * s.conj()).abs().max() < 1e-12


@pytest.mark.parametrize("shift,flip", [(1, False), (3, True), (0, True)])
def test_grid_rotations_equal_spectral_rotations(shift, flip) -> None:
    b = 6
    R = grid_rotation_matrix(b, shift, flip)
    x, y = random_s2((2,), b), random_so3((2,), b)
    assert _rel(rotate_s2(x, R), rotate_s2_grid(x, shift, flip)) < 1e-12
    assert _rel(rotate_so3(y, R), rotate_so3_grid(y, shift, flip)) < 1e-12


def test_spectral_rotation_composes_and_preserves_norm() -> None:
    rots = haar_rotations(2, torch.Generator().manual_seed(1))
    x = random_so3((), 5)
    a = rotate_so3(rotate_so3(x, rots[1]), rots[0])
    assert _rel(a, rotate_so3(x, rots[0] @ rots[1])) < 1e-12
    c, c_rot = so3_fft(x), so3_fft(rotate_so3(x, rots[0]))
    for l in range(5):  # per-degree energy is rotation invariant
        e1 = so3_half_to_full(c)[l].abs().pow(2).sum()
        e2 = so3_half_to_full(c_rot)[l].abs().pow(2).sum()
        assert abs(e1 - e2) < 1e-10 * (1 + e1)
    s = random_s2((3,), 5)
    batch = rotate_s2(s, rots[[0, 1, 0]])
    assert _rel(batch[1], rotate_s2(s[1], rots[1])) < 1e-12


def test_gradcheck() -> None:
    x = random_s2((1,), 3).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: torch.view_as_real(s2_fft(t, 2)), (x,))
    y = random_so3((1,), 2).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: torch.view_as_real(so3_fft(t)), (y,))
    c = torch.randn(1, 2, 2, 3, dtype=torch.complex128, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: so3_ifft(t, 3), (c,))
    c2 = torch.randn(1, 3, 3, dtype=torch.complex128, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: s2_ifft(t, 4), (c2,))


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match="SOFT grid"):
        s2_fft(torch.zeros(4, 6))
    with pytest.raises(ValueError, match="num_degrees"):
        so3_fft(torch.zeros(8, 8, 8), 5)

"""Exact SO(3) Fourier transforms (SOFT) on the SOFT grid, pure PyTorch.

Grid: ``x[..., j, k, p] = f(α_k, β_j, γ_p)``, shape ``[..., 2B, 2B, 2B]`` = ``[β, α, γ]``,
``β_j = π(2j+1)/(4B)``, ``α_k = γ_k = πk/B``; ``g = Rz(α) Ry(β) Rz(γ)``.

Normalisation (s2cnn / lie_learn 'quantum', centered, Condon–Shortley; :mod:`.wigner`):

    forward   F^l_{mn} = (1/8π²) ∫_{SO(3)} f(g) D^l_{mn}(g) dg
                       = Σ_j (w_j / 8B²) d^l_{mn}(β_j) Σ_{k,p} f_{jkp} e^{−i m α_k} e^{−i n γ_p}
    inverse   f(g) = Σ_{l<L} (2l+1) Σ_{|m|,|n|≤l} F^l_{mn} conj(D^l_{mn}(g))

(``w_j`` the SOFT weights, Σ w = 2; Haar measure of volume 8π²). Exact for signals band-limited
to ``l < B``. Left rotation ``(R f)(g) = f(R⁻¹ g)`` maps ``F^l → D^l(R) F^l`` (matrix product on
the index ``m``).

Spectral layout (public): complex ``[..., L, L, 2L−1]`` holding ``F^l_{mn}`` at
``[..., l, m, n + L − 1]`` for ``0 ≤ m ≤ l``, ``|n| ≤ l`` (zero elsewhere). Real signals satisfy
``F^l_{−m,−n} = (−1)^{m−n} conj(F^l_{mn})``; :func:`so3_half_to_full` rebuilds the full
``[..., L, 2L−1, 2L−1]`` and :func:`so3_full_to_flat` gives s2cnn's flat index
``l(4l²−1)/3 + (m+l)(2l+1) + (n+l)``.

Bandwidth change: ``L`` degrees are kept; ``L < B`` truncates, the inverse onto ``B' > L``
zero-pads — exact, no aliasing (s2cnn aliases when up-sampling).

Implementation: ``rfftn`` over (γ, α) keeping ``m ≥ 0`` (real-signal symmetry halves the work),
then for every pair ``(m, n)`` one matrix product ``[L × 2B] @ [2B × 2N]`` with the cached table
``d^l_{mn}(β_j)`` (``bmm``, complex data as real/imaginary column pairs). The inverse uses the
transposed table and ``irfftn``. Autograd-native; float32/float64; CPU/CUDA.
"""

from __future__ import annotations

import torch

from sphere_bench.data.grids import check_bandwidth
from sphere_bench.models.s2_fft import (
    _degree_factor,
    _ForwardTransform,
    _grid_bandwidth,
    _InverseTransform,
    quadrature_tensor,
)
from sphere_bench.models.wigner import so3_pair_table

__all__ = [
    "SO3FFT",
    "SO3IFFT",
    "so3_fft",
    "so3_ifft",
    "so3_analysis_pairs",
    "so3_synthesis_pairs",
    "so3_half_to_full",
    "so3_full_to_half",
    "so3_full_to_flat",
    "so3_integrate",
]

_index_cache: dict[tuple, torch.Tensor] = {}


def _n_index(bandwidth: int, num_degrees: int, device: torch.device, inverse: bool) -> torch.Tensor:
    """FFT positions of ``n = −(L−1) … L−1`` (forward) or, for the inverse, the source column in
    ``[n + L − 1]`` padded by one zero column (index ``2L−1``) for every FFT position."""
    key = (bandwidth, num_degrees, device, inverse)
    idx = _index_cache.get(key)
    if idx is None:
        L, size = num_degrees, 2 * bandwidth
        if not inverse:
            n = torch.arange(-(L - 1), L)
            idx = torch.remainder(n, size)
        else:
            pos = torch.arange(size)
            n = torch.where(pos < size // 2, pos, pos - size)
            idx = torch.where(n.abs() <= L - 1, n + L - 1, torch.full_like(n, 2 * L - 1))
        idx = idx.to(device)
        _index_cache[key] = idx
    return idx


def so3_analysis_pairs(x: torch.Tensor, num_degrees: int) -> torch.Tensor:
    """Forward SO(3) transform into the internal "pair-major" layout.

    Args:
        x: real ``[N, 2B, 2B, 2B]`` (``[batch, β, α, γ]``).
        num_degrees: ``L ≤ B``.

    Returns:
        complex ``[L(m), 2L−1(n), L(l), N]``, entry ``[m, n + L − 1, l, i] = F^l_{mn}`` of signal
        ``i`` (zero where ``l < max(m, |n|)``).
    """
    b = x.shape[-1] // 2
    n = x.shape[0]
    L = num_degrees
    w = quadrature_tensor(b, 1.0 / (8 * b * b), x.dtype, x.device)
    xf = torch.fft.rfftn(x * w[:, None, None], dim=(-1, -2))  # [N, j, b+1 (m), 2b (n)]
    xf = xf[:, :, :L].permute(2, 3, 1, 0)  # [m, n_fft, j, N]
    xf = xf.index_select(1, _n_index(b, L, x.device, inverse=False))  # [m, n, j, N], contiguous
    xr = torch.view_as_real(xf).reshape(L * (2 * L - 1), 2 * b, 2 * n)
    table = so3_pair_table(b, L, x.dtype, x.device)  # [(m n), l, j]
    out = torch.bmm(table, xr)  # [(m n), l, 2N]
    return torch.view_as_complex(out.view(L, 2 * L - 1, L, n, 2))


def so3_synthesis_pairs(coeffs: torch.Tensor, bandwidth: int) -> torch.Tensor:
    """Inverse SO(3) transform, pair-major ``[L, 2L−1, L, N]`` → real ``[N, 2B, 2B, 2B]``.

    Entries with ``l < max(m, |n|)`` are ignored; degrees ``≥ L`` are zero (``L ≤ B``).
    """
    L, size_n, _, n = coeffs.shape
    b = bandwidth
    real = torch.empty((), dtype=coeffs.dtype).real.dtype
    table = so3_pair_table(b, L, real, coeffs.device)  # [(m n), l, j]
    c = coeffs * _degree_factor(L, real, coeffs.device)[None, None, :, None]
    cr = torch.view_as_real(c.contiguous()).reshape(L * size_n, L, 2 * n)
    y = torch.bmm(table.transpose(1, 2), cr)  # [(m n), j, 2N]
    y = torch.view_as_complex(y.view(L, size_n, 2 * b, n, 2))  # [m, n, j, N]
    y = torch.nn.functional.pad(y.permute(3, 2, 0, 1), (0, 1))  # [N, j, m, 2L] (zero column)
    y = y.index_select(-1, _n_index(b, L, coeffs.device, inverse=True))  # [N, j, m, 2b]
    # irfftn zero-pads the halved α axis from L to B + 1 entries itself (s given)
    return torch.fft.irfftn(y, s=(2 * b, 2 * b), dim=(-1, -2), norm="forward")


def so3_fft(x: torch.Tensor, num_degrees: int | None = None) -> torch.Tensor:
    """Forward transform ``[..., 2B, 2B, 2B]`` (real) → ``[..., L, L, 2L−1]`` (see module doc)."""
    b = _grid_bandwidth(x, 3)
    L = b if num_degrees is None else int(num_degrees)
    if not 1 <= L <= b:
        raise ValueError(f"num_degrees must be in [1, {b}] for a B={b} grid, got {num_degrees}")
    lead = x.shape[:-3]
    out = so3_analysis_pairs(x.reshape(-1, 2 * b, 2 * b, 2 * b), L)  # [m, n, l, N]
    return out.permute(3, 2, 0, 1).reshape(*lead, L, L, 2 * L - 1)


def so3_ifft(coeffs: torch.Tensor, bandwidth: int | None = None) -> torch.Tensor:
    """Inverse transform ``[..., L, L, 2L−1]`` → real ``[..., 2B, 2B, 2B]`` with ``B ≥ L``."""
    L = coeffs.shape[-3]
    if coeffs.shape[-2:] != (L, 2 * L - 1):
        raise ValueError(f"expected coefficients [..., L, L, 2L-1], got {tuple(coeffs.shape)}")
    b = L if bandwidth is None else int(bandwidth)
    check_bandwidth(b)
    if b < L:
        raise ValueError(f"bandwidth {b} < number of degrees {L}; truncate the spectrum first")
    lead = coeffs.shape[:-3]
    c = coeffs.reshape(-1, L, L, 2 * L - 1).permute(2, 3, 1, 0)  # [m, n, l, N]
    return so3_synthesis_pairs(c, b).reshape(*lead, 2 * b, 2 * b, 2 * b)


def so3_half_to_full(coeffs: torch.Tensor) -> torch.Tensor:
    """``[..., L, L, 2L−1]`` (m ≥ 0) → ``[..., L, 2L−1, 2L−1]`` (``[l, m+L−1, n+L−1]``)."""
    L = coeffs.shape[-3]
    idx = torch.arange(-(L - 1), L, device=coeffs.device)
    m_pos = torch.arange(1, L, device=coeffs.device)  # m = 1 … L-1
    sign = 1 - 2 * ((m_pos[:, None] - idx[None, :]) % 2)  # (-1)^(m - n)
    # F_{-m,-n} = (-1)^(m-n) conj(F_{m,n}): rows m>0, reversed in m and n.
    neg = coeffs[..., :, 1:, :].conj() * sign.to(coeffs.real.dtype)
    neg = neg.flip(-1).flip(-2)  # rows m = -(L-1) … -1, columns n = -(L-1) … L-1
    return torch.cat([neg, coeffs], dim=-2)


def so3_full_to_half(coeffs: torch.Tensor) -> torch.Tensor:
    """``[..., L, 2L−1, 2L−1]`` → ``[..., L, L, 2L−1]`` (keeps ``m ≥ 0``)."""
    L = coeffs.shape[-3]
    return coeffs[..., L - 1 :, :]


def so3_full_to_flat(coeffs: torch.Tensor) -> torch.Tensor:
    """``[..., L, 2L−1, 2L−1]`` → s2cnn's flat ``[..., L(4L²−1)/3]``."""
    L = coeffs.shape[-3]
    parts = [coeffs[..., l, L - 1 - l : L + l, L - 1 - l : L + l].flatten(-2) for l in range(L)]
    return torch.cat(parts, dim=-1)


def so3_integrate(x: torch.Tensor) -> torch.Tensor:
    """Normalised Haar integral ``(1/8π²) ∫ f(g) dg`` of ``[..., 2B, 2B, 2B]`` signals → ``[...]``.

    ``= Σ_j (w_j / 8B²) Σ_{k,p} x[..., j, k, p] = F^0_{00}``: exact for band-limited signals and
    invariant under rotations (s2cnn's ``so3_integrate``).
    """
    b = _grid_bandwidth(x, 3)
    w = quadrature_tensor(b, 1.0 / (8 * b * b), x.dtype, x.device)
    return x.sum(dim=(-1, -2)) @ w


class SO3FFT(_ForwardTransform):
    """Forward SO(3) transform as a module: ``[..., 2B, 2B, 2B]`` → ``[..., L, L, 2L−1]``."""

    grid_dims = 3
    transform = staticmethod(so3_fft)


class SO3IFFT(_InverseTransform):
    """Inverse SO(3) transform as a module: ``[..., L, L, 2L−1]`` → ``[..., 2B, 2B, 2B]``."""

    transform = staticmethod(so3_ifft)

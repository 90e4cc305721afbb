"""Exact spherical harmonic transforms on the SOFT grid, pure PyTorch.

Grid: ``x[..., j, k] = f(β_j, α_k)``, shape ``[..., 2B, 2B]``, ``β_j = π(2j+1)/(4B)``,
``α_k = πk/B`` (:mod:`sphere_bench.harmonic.grids`).

Normalisation (s2cnn / lie_learn, 'quantum', centered, Condon–Shortley; :mod:`.wigner`):

    forward   F^l_m = (1/4π) ∫_{S²} f(x) D^l_{m0}(α, β, 0) dx
                    = Σ_j (w_j / 4B) d^l_{m0}(β_j) Σ_k f(β_j, α_k) e^{−i m α_k}
    inverse   f(β, α) = Σ_{l<L} (2l+1) Σ_{|m|≤l} F^l_m e^{i m α} d^l_{m0}(β)
                      = Σ_l Σ_m sqrt(4π(2l+1)) F^l_m Y_lm(β, α)

with ``w_j`` the SOFT weights (Σ w = 2). So ``F^l_m = <Y_lm, f> / sqrt(4π(2l+1))``; both directions
are exact for signals band-limited to ``l < B`` (the quadrature integrates polynomials of degree
< 2B in cos β exactly).

Spectral layout (public): a complex tensor ``[..., L, L]`` holding ``F^l_m`` at ``[..., l, m]``
for ``0 ≤ m ≤ l`` (zero for ``m > l``). Signals are real, so ``F^l_{−m} = (−1)^m conj(F^l_m)``;
:func:`s2_half_to_full` rebuilds ``[..., L, 2L−1]`` (index ``m + L − 1``) and
:func:`s2_full_to_flat` gives s2cnn's flat layout (index ``l² + m + l``).

Bandwidth change: ``L`` degrees are kept. ``L < B`` truncates; the inverse onto a grid of
bandwidth ``B' > L`` zero-pads — no aliasing in either direction.

Implementation: a real FFT over α (``rfft``), then for every ``m`` one matrix product
``[L × 2B] @ [2B × 2N]`` against the cached table ``d^l_{m0}(β_j)`` (batched with ``bmm``; the
complex data enter as real/imaginary column pairs). Autograd-native, float32/float64, CPU/CUDA.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from sphere_bench.harmonic.grids import check_bandwidth, soft_quadrature_weights
from sphere_bench.harmonic.wigner import s2_pair_table

__all__ = [
    "S2FFT",
    "S2IFFT",
    "s2_fft",
    "s2_ifft",
    "synthesis_bandwidth",
    "s2_analysis_pairs",
    "s2_synthesis_pairs",
    "s2_half_to_full",
    "s2_full_to_half",
    "s2_full_to_flat",
]


@functools.lru_cache(maxsize=64)
def _weights_np(bandwidth: int, scale: float) -> np.ndarray:
    return soft_quadrature_weights(bandwidth) * scale


_weight_cache: dict[tuple, torch.Tensor] = {}


def quadrature_tensor(
    bandwidth: int, scale: float, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """SOFT weights ``w_j · scale`` as a cached tensor ``[2B]``."""
    key = (bandwidth, scale, dtype, device)
    t = _weight_cache.get(key)
    if t is None:
        t = torch.from_numpy(_weights_np(bandwidth, scale)).to(dtype=dtype, device=device)
        _weight_cache[key] = t
    return t


def _degree_factor(num_degrees: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return (2 * torch.arange(num_degrees, device=device) + 1).to(dtype)


def _grid_bandwidth(x: torch.Tensor, dims: int) -> int:
    size = x.shape[-1]
    if x.dim() < dims or any(s != size for s in x.shape[-dims:]) or size % 2:
        raise ValueError(
            f"expected a signal [..., {', '.join(['2B'] * dims)}] on the SOFT grid, "
            f"got shape {tuple(x.shape)}"
        )
    return size // 2


def s2_analysis_pairs(x: torch.Tensor, num_degrees: int) -> torch.Tensor:
    """Forward S² transform into the internal "pair-major" layout.

    Args:
        x: real ``[N, 2B, 2B]`` (``[batch, β, α]``).
        num_degrees: ``L ≤ B``.

    Returns:
        complex ``[L(m), L(l), N]`` with ``[m, l, i] = F^l_m`` of signal ``i`` (zero if ``m > l``).
    """
    b = x.shape[-1] // 2
    n = x.shape[0]
    L = num_degrees
    w = quadrature_tensor(b, 1.0 / (4 * b), x.dtype, x.device)
    xf = torch.fft.rfft(x * w[:, None], dim=-1)[..., :L]  # [N, j, m]
    xp = torch.view_as_real(xf.permute(2, 1, 0).contiguous()).reshape(L, 2 * b, 2 * n)
    table = s2_pair_table(b, L, x.dtype, x.device)  # [m, l, j]
    out = torch.bmm(table, xp)  # [m, l, 2N]
    return torch.view_as_complex(out.view(L, L, n, 2))


def s2_synthesis_pairs(coeffs: torch.Tensor, bandwidth: int) -> torch.Tensor:
    """Inverse S² transform from the pair-major layout ``[L(m), L(l), N]`` to real ``[N, 2B, 2B]``.

    Only ``0 ≤ m ≤ l`` entries are read; degrees ``l ≥ L`` are zero (``L ≤ B``).
    """
    L, _, n = coeffs.shape
    b = bandwidth
    real = torch.empty((), dtype=coeffs.dtype).real.dtype
    table = s2_pair_table(b, L, real, coeffs.device)  # [m, l, j]
    c = coeffs * _degree_factor(L, real, coeffs.device)[None, :, None]
    cr = torch.view_as_real(c.contiguous()).reshape(L, L, 2 * n)
    y = torch.bmm(table.transpose(1, 2), cr)  # [m, j, 2N]
    y = torch.view_as_complex(y.view(L, 2 * b, n, 2)).permute(2, 1, 0)  # [N, j, m]
    return torch.fft.irfft(y, n=2 * b, dim=-1, norm="forward")


def s2_fft(x: torch.Tensor, num_degrees: int | None = None) -> torch.Tensor:
    """Forward transform ``[..., 2B, 2B]`` (real) → ``[..., L, L]`` (complex, ``[l, m]``, m ≥ 0).

    ``num_degrees`` defaults to ``B`` and must not exceed it (higher degrees are not resolved by
    the grid and would be zero for band-limited signals).
    """
    b = _grid_bandwidth(x, 2)
    L = b if num_degrees is None else int(num_degrees)
    if not 1 <= L <= b:
        raise ValueError(f"num_degrees must be in [1, {b}] for a B={b} grid, got {num_degrees}")
    lead = x.shape[:-2]
    out = s2_analysis_pairs(x.reshape(-1, 2 * b, 2 * b), L)  # [m, l, N]
    return out.permute(2, 1, 0).reshape(*lead, L, L)


def synthesis_bandwidth(num_degrees: int, bandwidth: int | None) -> int:
    """The output bandwidth of an inverse transform of ``num_degrees`` degrees: ``bandwidth``
    (``num_degrees`` when None). Raises ``ValueError`` for an invalid bandwidth or one below
    ``num_degrees`` (the spectrum would have to be truncated first)."""
    b = num_degrees if bandwidth is None else int(bandwidth)
    check_bandwidth(b)
    if b < num_degrees:
        raise ValueError(
            f"bandwidth {b} < number of degrees {num_degrees}; truncate the spectrum first"
        )
    return b


def s2_ifft(coeffs: torch.Tensor, bandwidth: int | None = None) -> torch.Tensor:
    """Inverse transform ``[..., L, L]`` (``[l, m]``, m ≥ 0) → real ``[..., 2B, 2B]``, ``B ≥ L``.

    ``bandwidth`` defaults to ``L``; a larger one zero-pads the spectrum (exact up-sampling).
    """
    L = coeffs.shape[-1]
    if coeffs.shape[-2] != L:
        raise ValueError(f"expected coefficients [..., L, L], got {tuple(coeffs.shape)}")
    b = synthesis_bandwidth(L, bandwidth)
    lead = coeffs.shape[:-2]
    c = coeffs.reshape(-1, L, L).permute(2, 1, 0)  # [m, l, N]
    return s2_synthesis_pairs(c, b).reshape(*lead, 2 * b, 2 * b)


def s2_half_to_full(coeffs: torch.Tensor) -> torch.Tensor:
    """``[..., L, L]`` (m ≥ 0) → ``[..., L, 2L−1]`` (index ``m + L − 1``) using reality."""
    L = coeffs.shape[-1]
    m = torch.arange(1, L, device=coeffs.device)
    sign = (1 - 2 * (m % 2)).to(coeffs.real.dtype)
    neg = (coeffs[..., 1:].conj() * sign).flip(-1)  # m = -(L-1) … -1
    return torch.cat([neg, coeffs], dim=-1)


def s2_full_to_half(coeffs: torch.Tensor) -> torch.Tensor:
    """``[..., L, 2L−1]`` → ``[..., L, L]`` (keeps ``m ≥ 0``)."""
    L = coeffs.shape[-2]
    return coeffs[..., L - 1 :]


def s2_full_to_flat(coeffs: torch.Tensor) -> torch.Tensor:
    """``[..., L, 2L−1]`` → s2cnn's flat ``[..., L²]`` with index ``l² + m + l``."""
    L = coeffs.shape[-2]
    parts = [coeffs[..., l, L - 1 - l : L + l] for l in range(L)]
    return torch.cat(parts, dim=-1)


class _ForwardTransform(nn.Module):
    """A forward transform ``transform(x, num_degrees)`` of grid signals as a module.

    Subclasses set ``transform`` and ``grid_dims`` (2 on S², 3 on SO(3)).
    """

    grid_dims: int

    @staticmethod
    def transform(x: torch.Tensor, num_degrees: int) -> torch.Tensor:
        raise NotImplementedError

    def __init__(self, bandwidth: int, num_degrees: int | None = None) -> None:
        super().__init__()
        check_bandwidth(bandwidth)
        self.bandwidth = bandwidth
        self.num_degrees = bandwidth if num_degrees is None else num_degrees
        if not 1 <= self.num_degrees <= bandwidth:
            raise ValueError(f"num_degrees must be in [1, {bandwidth}], got {num_degrees}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != 2 * self.bandwidth:
            dims = ", ".join([str(2 * self.bandwidth)] * self.grid_dims)
            raise ValueError(f"expected [..., {dims}], got {tuple(x.shape)}")
        return self.transform(x, self.num_degrees)

    def extra_repr(self) -> str:
        return f"bandwidth={self.bandwidth}, num_degrees={self.num_degrees}"


class _InverseTransform(nn.Module):
    """An inverse transform ``transform(coeffs, bandwidth)`` onto the bandwidth-B grid."""

    @staticmethod
    def transform(coeffs: torch.Tensor, bandwidth: int) -> torch.Tensor:
        raise NotImplementedError

    def __init__(self, bandwidth: int) -> None:
        super().__init__()
        check_bandwidth(bandwidth)
        self.bandwidth = bandwidth

    def forward(self, coeffs: torch.Tensor) -> torch.Tensor:
        return self.transform(coeffs, self.bandwidth)

    def extra_repr(self) -> str:
        return f"bandwidth={self.bandwidth}"


class S2FFT(_ForwardTransform):
    """Forward S² transform as a module: ``[..., 2B, 2B]`` → ``[..., L, L]`` (see module doc).

    Args:
        bandwidth: grid bandwidth ``B`` of the input.
        num_degrees: ``L ≤ B`` degrees to keep (default ``B``).
    """

    grid_dims = 2
    transform = staticmethod(s2_fft)


class S2IFFT(_InverseTransform):
    """Inverse S² transform as a module: ``[..., L, L]`` → ``[..., 2B, 2B]`` (``B ≥ L``)."""

    transform = staticmethod(s2_ifft)

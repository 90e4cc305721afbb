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

from sphere_bench.harmonic.s2_fft import (
    _degree_factor,
    _ForwardTransform,
    _grid_bandwidth,
    _InverseTransform,
    quadrature_tensor,
    synthesis_bandwidth,
)
from sphere_bench.harmonic.wigner import (
    so3_analysis_table,
    so3_pair_table,
    so3_synthesis_table,
)

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
    b = synthesis_bandwidth(L, bandwidth)
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


# ---------------------------------------------------------------------------------------------
# Spatial-major engine of the S2CNN layers: DFTs as GEMMs, degree-chunked Wigner contractions
# ---------------------------------------------------------------------------------------------
#
# Layout. An SO(3) grid signal is held in memory as ``[α, γ, P, β]`` ("spatial-major",
# ``P = N·C`` batch × channels, the β samples innermost) and exposed as the permuted view
# ``[N, C, β, α, γ]`` (:func:`so3_spatial_major` / :func:`so3_from_spatial_major`). Pointwise
# modules (ReLU, bias) keep that memory layout, so consecutive layers hand grids to each other
# without a copy, and every step below is a GEMM on plain or batch-strided views:
#
# Analysis of ``x[α, γ, P, β]`` (real), bandwidth ``B``, ``L`` degrees:
#   1. α → m (``0 ≤ m < L``): one GEMM ``Wα[(m, r), α] @ x[α, (γ P β)]`` with the real matrix of
#      ``e^{−imα_k}`` (``r`` = real / imaginary part): ``[m, r, γ, P, β]``;
#   2. γ → n (``|n| < L``): for every ``m`` one GEMM with the real 2×2-block matrix of
#      ``e^{−inγ_p}`` acting on ``(r, γ)``: ``[m, n, r, P, β]`` (batched over ``m``);
#   3. β → l: for every pair ``(m, n)`` the product ``z[(m, n), (r, P), j] @ T[(m, n), j, l]``
#      with ``T = d^l_{mn}(β_j) w_j / 8B²``: one batched GEMM over all pairs (its zero blocks
#      ``l < max(m, |n|)`` included; the layers chunk the degrees of their kernel products).
# Synthesis runs the steps backwards from ``[(m, n), (r, Q), l]``: one batched GEMM with the
# table ``(2l+1) d^l_{mn}(β_j)``, then ``e^{+inγ}`` per ``m``, then the real part of the α sum,
# ``f = Σ_m w_m Re(h_m e^{imα})`` (``w_0 = 1``, ``w_{m>0} = 2``, as ``irfft``).
# A DFT as a GEMM costs ``2·2B`` real FLOPs per output instead of an FFT's ``O(log B)``, but it
# computes only the ``L ≤ B`` needed frequencies, needs no transposes and runs at GEMM speed;
# on one CPU core it beats the strided FFTs and layout copies it replaces (``make bench``).

_dft_cache: dict[tuple, tuple[torch.Tensor, ...]] = {}


def _dft_mats(
    bandwidth: int, num_degrees: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Real DFT matrices ``(Wα, Wγ, Wγ⁻¹, Wα⁻¹)`` of the engine (see the comment above). Cached.

    * ``Wα  [2L, 2B]``: rows ``(m, r)``: ``cos(mα_k)``, ``−sin(mα_k)``;
    * ``Wγ  [2(2L−1), 2·2B]``: rows ``(n, r')``, columns ``(r, γ_p)``, ``e^{−inγ}`` on complex data;
    * ``Wγ⁻¹ [2·2B, 2(2L−1)]``: rows ``(r', γ_p)``, columns ``(n, r)``, ``e^{+inγ}``;
    * ``Wα⁻¹ [2B, 2L]``: columns ``(m, r)``: ``w_m cos(mα_k)``, ``−w_m sin(mα_k)`` (``w_0 = 1``
      and no imaginary part for ``m = 0``, ``w_m = 2`` otherwise).
    """
    key = (bandwidth, num_degrees, dtype, device)
    mats = _dft_cache.get(key)
    if mats is None:
        L, size = num_degrees, 2 * bandwidth
        ang = torch.arange(size, dtype=torch.float64) * (torch.pi / bandwidth)
        m = torch.arange(L, dtype=torch.float64)
        ma = m[:, None] * ang[None, :]  # [m, α]
        wa = torch.stack([torch.cos(ma), -torch.sin(ma)], dim=1).reshape(2 * L, size)
        n = torch.arange(-(L - 1), L, dtype=torch.float64)
        c, s = torch.cos(n[:, None] * ang), torch.sin(n[:, None] * ang)  # [n, γ]
        # forward: re' = Σ c R + s I, im' = Σ −s R + c I
        wg = torch.stack([torch.stack([c, s], 1), torch.stack([-s, c], 1)], 1)  # [n, r', r, γ]
        wg = wg.reshape(2 * (2 * L - 1), 2 * size)
        # inverse: re' = Σ c R − s I, im' = Σ s R + c I; rows (r', γ), columns (n, r)
        wgi = torch.stack([torch.stack([c.T, -s.T], -1), torch.stack([s.T, c.T], -1)], 0)
        wgi = wgi.reshape(2 * size, 2 * (2 * L - 1))  # [r', γ, n, r]
        weight = torch.where(m == 0, 1.0, 2.0)
        ca, sa = torch.cos(ma).T * weight, -torch.sin(ma).T * weight  # [α, m]
        sa[:, 0] = 0.0
        wai = torch.stack([ca, sa], dim=-1).reshape(size, 2 * L)
        mats = tuple(t.to(dtype=dtype, device=device).contiguous() for t in (wa, wg, wgi, wai))
        _dft_cache[key] = mats
    return mats


def so3_spatial_major(x: torch.Tensor) -> torch.Tensor:
    """``[N, C, β, α, γ]`` → ``[α, γ, N·C, β]`` memory (a free view when ``x`` came from
    :func:`so3_from_spatial_major` or a pointwise op on it, else one copy)."""
    n, c, b1, b2, b3 = x.shape
    return x.permute(3, 4, 0, 1, 2).contiguous().view(b2, b3, n * c, b1)


def so3_from_spatial_major(y: torch.Tensor, n: int, c: int) -> torch.Tensor:
    """``[α, γ, N·C, β]`` → the view ``[N, C, β, α, γ]`` (no copy)."""
    a, g, _, b = y.shape
    return y.view(a, g, n, c, b).permute(2, 3, 4, 0, 1)


def so3_analysis_spatial(x: torch.Tensor, num_degrees: int) -> torch.Tensor:
    """Forward SO(3) transform of a spatial-major signal.

    Args:
        x: real ``[2B(α), 2B(γ), P, 2B(β)]`` contiguous.
        num_degrees: ``L ≤ B``.

    Returns:
        real ``[L(2L−1), 2P, L]``: ``F^l_{mn}`` at ``[(m, n + L − 1), (r, p), l]`` (``r = 0``
        real, ``1`` imaginary part) for ``0 ≤ m < L`` (zero for ``l < max(m, |n|)``); the
        normalisation of :func:`so3_fft`.
    """
    size, p = x.shape[0], x.shape[2]
    b, L = size // 2, num_degrees
    wa, wg, _, _ = _dft_mats(b, L, x.dtype, x.device)
    y = (wa @ x.view(size, -1)).view(L, 2 * size, p * size)  # [m, (r γ), (P β)]
    z = torch.matmul(wg, y).view(L * (2 * L - 1), 2 * p, size)  # [(m n), (r P), β]
    return torch.bmm(z, so3_analysis_table(b, L, x.dtype, x.device))


def so3_synthesis_spatial(coeffs: torch.Tensor, bandwidth: int) -> torch.Tensor:
    """Inverse SO(3) transform onto the bandwidth-``B`` grid, spatial-major output.

    Args:
        coeffs: real ``[L, 2L−1, 2, Q, L]``: ``z^l_{mn}`` at ``[m, n + L − 1, r, q, l]``
            (``r = 0`` real, ``1`` imaginary part; ``0 ≤ m < L``; entries with
            ``l < max(m, |n|)`` are ignored).
        bandwidth: output ``B ≥ L``.

    Returns:
        real ``[2B(α), 2B(γ), Q, 2B(β)]`` (the normalisation of :func:`so3_ifft`).
    """
    L, q = coeffs.shape[0], coeffs.shape[3]
    size = 2 * bandwidth
    table = so3_synthesis_table(bandwidth, L, coeffs.dtype, coeffs.device)  # [(m n), l, j]
    g = torch.bmm(coeffs.view(L * (2 * L - 1), 2 * q, L), table)  # [(m n), (r Q), β]
    _, _, wgi, wai = _dft_mats(bandwidth, L, coeffs.dtype, coeffs.device)
    h = torch.matmul(wgi, g.view(L, 2 * (2 * L - 1), q * size))  # [m, (r' γ), (Q β)]
    return (wai @ h.view(2 * L, -1)).view(size, size, q, size)

"""Wigner-d and Wigner-D functions, and the cached d-tables of the SOFT grid.

Conventions (those of lie_learn/s2cnn: ``normalization='quantum'``, ``order='centered'``,
``condon_shortley='cs'``; the standard ones of quantum mechanics, Sakurai / Varshalovich):

* ``d^l_{mn}(β) = <l m| exp(-i β J_y) |l n>``, real, ``l ≥ 0``, ``|m|, |n| ≤ l``.
* ``D^l_{mn}(α, β, γ) = exp(-i m α) d^l_{mn}(β) exp(-i n γ)`` for the ZYZ Euler angles of
  :mod:`sphere_bench.harmonic.rotations` (``R = Rz(α) Ry(β) Rz(γ)``). ``D^l`` is a unitary
  representation, ``D^l(R1 R2) = D^l(R1) D^l(R2)``, and for ``(R f)(x) = f(R⁻¹x)`` the spherical
  harmonics transform as ``Y_lm(R⁻¹ x) = Σ_{m'} Y_{lm'}(x) D^l_{m'm}(R)``.
* ``Y_lm(β, α) = sqrt((2l+1)/(4π)) · conj(D^l_{m0}(α, β, 0))`` (Condon–Shortley phase included).
* Array layout "centered": index ``m + l`` (or ``m + L − 1`` in arrays padded to a common ``L``).

Method (Fourier / Δ-matrix method, e.g. Trapani & Navaza 2006, Risbo 1996): with
``Δ^l = d^l(π/2)``,

    d^l_{mn}(β) = Re[ i^{n−m} Σ_{k=−l}^{l} Δ^l_{km} Δ^l_{kn} e^{i k β} ],

which follows from ``exp(-iβJ_y) = W Δ^T exp(iβJ_z) Δ W†`` with ``W = exp(-iπ/2 J_z)``. ``Δ^l`` is
obtained from an eigendecomposition of the tridiagonal ``J_y`` (eigenvalues rounded to the exact
integers ``−l … l``), which is backward stable; the error is ~1e-15·l in float64. The k-sum is
folded with ``Δ^l_{−k,m} Δ^l_{−k,n} = (−1)^{m+n} Δ^l_{km} Δ^l_{kn}`` into a cosine sum (``m+n``
even) or a sine sum (``m+n`` odd), evaluated for all β at once by matrix products.

SOFT tables: ``d^l_{mn}(β_j)`` for ``l < B``, ``0 ≤ m ≤ l``, ``|n| ≤ l`` on ``β_j = π(2j+1)/(4B)``
(the ``m < 0`` half follows from ``d^l_{−m,−n} = (−1)^{m−n} d^l_{mn}``) are computed once per ``B``
in float64, cached on disk under ``$SPHERE_BENCH_CACHE`` (default ``<repo>/data/cache/wigner``) and
in memory per (bandwidth, degree count, dtype, device).
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path

import numpy as np
import torch

from sphere_bench.harmonic.grids import check_bandwidth, soft_betas
from sphere_bench.io import load_tensors, save_tensors

__all__ = [
    "wigner_d_half_pi",
    "wigner_d",
    "wigner_d_padded",
    "wigner_D_padded",
    "soft_wigner_d_compact",
    "compact_offsets",
    "so3_pair_table",
    "s2_pair_table",
    "cache_dir",
    "so3_analysis_table",
    "so3_synthesis_table",
    "kernel_chunk_table",
    "plan_degree_chunks",
]

_CACHE_VERSION = 1


@functools.lru_cache(maxsize=512)
def wigner_d_half_pi(l: int) -> np.ndarray:
    """``Δ^l = d^l(π/2)`` as a float64 array ``[2l+1, 2l+1]``, indices ``(m + l, n + l)``.

    Computed as ``U diag(exp(-i k π/2)) U†`` from the eigendecomposition ``J_y = U diag(k) U†``
    of the spin-l angular-momentum matrix ``J_y`` (``<m+1|J_y|m> = −(i/2) sqrt((l−m)(l+m+1))``).
    """
    if l < 0:
        raise ValueError(f"degree l must be >= 0, got {l}")
    if l == 0:
        return np.ones((1, 1))
    m = np.arange(-l, l)
    c = np.sqrt((l - m) * (l + m + 1.0))
    jy = np.zeros((2 * l + 1, 2 * l + 1), dtype=np.complex128)
    idx = np.arange(2 * l)
    jy[idx + 1, idx] = -0.5j * c
    jy[idx, idx + 1] = 0.5j * c
    evals, vecs = np.linalg.eigh(jy)
    k = np.round(evals)
    delta = (vecs * np.exp(-0.5j * np.pi * k)) @ vecs.conj().T
    return np.ascontiguousarray(delta.real)


def wigner_d(l: int, betas: np.ndarray, m_values: np.ndarray | None = None) -> np.ndarray:
    """Wigner small-d ``d^l_{mn}(β)`` for one degree and many angles (float64).

    Args:
        l: degree ``≥ 0``.
        betas: angles, shape ``[nβ]`` (any real values).
        m_values: row orders ``m`` to return (default all ``−l … l``).

    Returns:
        ``[len(m_values), 2l+1, nβ]``: entry ``[i, n + l, j] = d^l_{m_i n}(β_j)``.
    """
    betas = np.atleast_1d(np.asarray(betas, dtype=np.float64))
    if m_values is None:
        m_values = np.arange(-l, l + 1)
    m_values = np.asarray(m_values)
    delta = wigner_d_half_pi(l)
    kk = np.arange(0, l + 1)
    dk = delta[l:, :]  # rows k = 0 … l
    a = dk[:, m_values + l][:, :, None] * dk[:, None, :]  # [k, m, n]
    a = a.reshape(l + 1, -1)
    weight = np.where(kk == 0, 1.0, 2.0)
    cos_t = np.cos(np.outer(betas, kk)) * weight  # [nβ, k]
    sin_t = np.sin(np.outer(betas, kk)) * weight
    csum = (cos_t @ a).reshape(len(betas), len(m_values), 2 * l + 1)
    ssum = (sin_t @ a).reshape(len(betas), len(m_values), 2 * l + 1)
    n = np.arange(-l, l + 1)
    diff = n[None, :] - m_values[:, None]  # n - m
    even = (diff % 2) == 0
    sign_even = np.where((diff // 2) % 2 == 0, 1.0, -1.0)  # (-1)^((n-m)/2)
    sign_odd = np.where(((diff + 1) // 2) % 2 == 0, 1.0, -1.0)  # (-1)^((n-m+1)/2)
    out = np.where(even[None], sign_even[None] * csum, sign_odd[None] * ssum)
    return np.ascontiguousarray(out.transpose(1, 2, 0))


def wigner_d_padded(num_degrees: int, betas: np.ndarray) -> np.ndarray:
    """``d^l_{mn}(β_j)`` for all ``l < L``, zero-padded to ``[L, 2L−1, 2L−1, nβ]`` (float64).

    Index ``[l, m + L − 1, n + L − 1, j]``; entries with ``|m| > l`` or ``|n| > l`` are zero.
    """
    size = 2 * num_degrees - 1
    betas = np.atleast_1d(np.asarray(betas, dtype=np.float64))
    out = np.zeros((num_degrees, size, size, len(betas)))
    for l in range(num_degrees):
        s = slice(num_degrees - 1 - l, num_degrees + l)
        out[l, s, s] = wigner_d(l, betas)
    return out


def wigner_D_padded(
    num_degrees: int, alpha: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor
) -> torch.Tensor:
    """Wigner-D matrices ``D^l_{mn}(α, β, γ)`` for all ``l < L`` (complex128).

    Args:
        num_degrees: ``L``.
        alpha, beta, gamma: ZYZ Euler angles, tensors of one common shape ``S``.

    Returns:
        ``[*S, L, 2L−1, 2L−1]`` with ``[..., l, m + L − 1, n + L − 1] = D^l_{mn}``; zero where
        ``|m| > l`` or ``|n| > l``.
    """
    alpha, beta, gamma = torch.broadcast_tensors(
        torch.as_tensor(alpha), torch.as_tensor(beta), torch.as_tensor(gamma)
    )
    shape = alpha.shape
    b = beta.detach().reshape(-1).to(torch.float64).cpu().numpy()
    d = torch.from_numpy(wigner_d_padded(num_degrees, b))  # [L, M, N, nβ]
    d = d.permute(3, 0, 1, 2).reshape(*shape, *d.shape[:3])
    m = torch.arange(-(num_degrees - 1), num_degrees, dtype=torch.float64)
    a = alpha.to(torch.float64).cpu()[..., None, None, None]
    g = gamma.to(torch.float64).cpu()[..., None, None, None]
    phase = torch.exp(-1j * (m[:, None] * a + m[None, :] * g))
    return d.to(torch.complex128) * phase


# ---------------------------------------------------------------------------------------------
# SOFT-grid tables (cached)
# ---------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Disk cache folder: ``$SPHERE_BENCH_CACHE/wigner`` or ``<repo>/data/cache/wigner``."""
    root = os.environ.get("SPHERE_BENCH_CACHE")
    if root:
        return Path(root) / "wigner"
    return Path(__file__).resolve().parents[2] / "data" / "cache" / "wigner"


def compact_offsets(num_degrees: int) -> np.ndarray:
    """Start of degree ``l`` in the compact half layout: ``Σ_{l'<l} (l'+1)(2l'+1)``; ``[L+1]``."""
    l = np.arange(num_degrees)
    return np.concatenate([[0], np.cumsum((l + 1) * (2 * l + 1))])


def _compute_soft_compact(bandwidth: int) -> np.ndarray:
    betas = soft_betas(bandwidth)
    offsets = compact_offsets(bandwidth)
    out = np.empty((offsets[-1], len(betas)))
    for l in range(bandwidth):
        block = wigner_d(l, betas, np.arange(0, l + 1))  # [l+1, 2l+1, nβ]
        out[offsets[l] : offsets[l + 1]] = block.reshape(-1, len(betas))
    return out


_compact_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def soft_wigner_d_compact(bandwidth: int) -> np.ndarray:
    """``d^l_{mn}(β_j)`` on the SOFT grid, half layout, float64, shape ``[P, 2B]``.

    Kept in memory for the most recent bandwidth only (reloading from the disk cache takes
    ~20 ms at B = 50): the float32 tables built from it
    are cached themselves, and a multi-bandwidth network would otherwise hold every float64
    array (~150 MB for the 204k S2CNN) for its lifetime.

    Row ``compact_offsets(B)[l] + m (2l+1) + (n + l)`` holds ``d^l_{mn}(β_j)`` for ``l < B``,
    ``0 ≤ m ≤ l``, ``|n| ≤ l``; ``P = Σ_{l<B} (l+1)(2l+1)``. Loaded from the disk cache when
    present and intact, otherwise computed and stored through :mod:`sphere_bench.io`
    (atomic write, size + CRC-32 sidecar verified on every load; a corrupt entry is rebuilt).
    """
    check_bandwidth(bandwidth)
    path = cache_dir() / f"soft_d_half_b{bandwidth}_v{_CACHE_VERSION}.pt"
    shape = (int(compact_offsets(bandwidth)[-1]), 2 * bandwidth)
    with _compact_lock:
        # load_tensors verifies size, CRC-32 and layout; a bad entry is a warning and a miss
        cached = load_tensors(path)
        if cached is not None and tuple(cached.get("d", torch.empty(0)).shape) == shape:
            return cached["d"].numpy().copy()
        arr = _compute_soft_compact(bandwidth)
        # a failed write (read-only folder, full disk) is a warning; the table stays in memory
        save_tensors(path, {"d": torch.from_numpy(arr)}, {"bandwidth": bandwidth})
        return arr


_table_cache: dict[tuple, torch.Tensor] = {}


def _cached(key: tuple, build) -> torch.Tensor:
    table = _table_cache.get(key)
    if table is None:
        table = build()
        _table_cache[key] = table
    return table


def _pair_index(num_degrees: int, bandwidth: int) -> np.ndarray:
    """Rows of the compact table for ``[m, n + L − 1, l]``; invalid entries → the zero row."""
    L = num_degrees
    offsets = compact_offsets(bandwidth)
    zero_row = offsets[-1]
    m = np.arange(L)[:, None, None]
    n = np.arange(-(L - 1), L)[None, :, None]
    l = np.arange(L)[None, None, :]
    valid = (m <= l) & (np.abs(n) <= l)
    idx = offsets[l] + m * (2 * l + 1) + n + l
    return np.where(valid, idx, zero_row)


def _check_degrees(bandwidth: int, num_degrees: int) -> None:
    if not 1 <= num_degrees <= bandwidth:
        raise ValueError(f"need 1 <= num_degrees <= bandwidth, got {num_degrees}, {bandwidth}")


def _compact_with_zero_row(bandwidth: int) -> np.ndarray:
    """The compact table plus one trailing zero row: the index used for ``l < max(|m|, |n|)``."""
    compact = soft_wigner_d_compact(bandwidth)
    return np.concatenate([compact, np.zeros((1, compact.shape[1]))])


def so3_pair_table(
    bandwidth: int, num_degrees: int, dtype: torch.dtype, device: torch.device | str
) -> torch.Tensor:
    """SO(3) table ``T[(m, n), l, j] = d^l_{mn}(β_j)``, shape ``[L(2L−1), L, 2B]``.

    ``m = 0 … L−1`` (major), ``n = −(L−1) … L−1``; zero where ``l < max(m, |n|)``. Cached per
    (B, L, dtype, device). Requires ``L ≤ B``.
    """
    _check_degrees(bandwidth, num_degrees)
    device = torch.device(device)
    key = ("so3", bandwidth, num_degrees, dtype, device)

    def build() -> torch.Tensor:
        ext = _compact_with_zero_row(bandwidth)
        idx = _pair_index(num_degrees, bandwidth).reshape(-1)
        table = torch.from_numpy(ext[idx]).reshape(
            num_degrees * (2 * num_degrees - 1), num_degrees, 2 * bandwidth
        )
        return table.to(dtype=dtype, device=device).contiguous()

    return _cached(key, build)


def s2_pair_table(
    bandwidth: int, num_degrees: int, dtype: torch.dtype, device: torch.device | str
) -> torch.Tensor:
    """S² table ``T[m, l, j] = d^l_{m0}(β_j)``, shape ``[L, L, 2B]``, zero where ``l < m``."""
    _check_degrees(bandwidth, num_degrees)
    device = torch.device(device)
    key = ("s2", bandwidth, num_degrees, dtype, device)

    def build() -> torch.Tensor:
        ext = _compact_with_zero_row(bandwidth)
        L = num_degrees
        offsets = compact_offsets(bandwidth)
        m = np.arange(L)[:, None]
        l = np.arange(L)[None, :]
        idx = np.where(m <= l, offsets[l] + m * (2 * l + 1) + l, offsets[-1])
        table = torch.from_numpy(ext[idx.reshape(-1)]).reshape(L, L, 2 * bandwidth)
        return table.to(dtype=dtype, device=device).contiguous()

    return _cached(key, build)


def kernel_d_table(
    num_degrees: int, betas: tuple[float, ...], dtype: torch.dtype, device: torch.device | str
) -> torch.Tensor:
    """``d^l_{nk}(β_b)`` at kernel-grid angles, ``[(n, k), l, nb]``, ``n, k = −(L−1) … L−1``.

    Cached per (L, betas, dtype, device); zero where ``l < max(|n|, |k|)``.
    """
    device = torch.device(device)
    key = ("kernel", num_degrees, tuple(float(b) for b in betas), dtype, device)

    def build() -> torch.Tensor:
        d = wigner_d_padded(num_degrees, np.asarray(betas))  # [l, n, k, b]
        size = 2 * num_degrees - 1
        t = torch.from_numpy(d).permute(1, 2, 0, 3).reshape(size * size, num_degrees, len(betas))
        return t.to(dtype=dtype, device=device).contiguous()

    return _cached(key, build)


def clear_memory_cache() -> None:
    """Drop the in-memory tables (all devices) and the float64 compact arrays."""
    _table_cache.clear()
    soft_wigner_d_compact.cache_clear()


# ---------------------------------------------------------------------------------------------
# Degree-chunked tables of the spatial-major engine (:mod:`.so3_fft`)
# ---------------------------------------------------------------------------------------------


def _pair_table_np(
    bandwidth: int, num_degrees: int, np_dtype, l_last: bool, scale: np.ndarray
) -> np.ndarray:
    """``d^l_{mn}(β_j)`` for ``0 ≤ m < L``, ``|n| < L`` as ``[L(2L−1), 2B, L]`` (``l_last``) or
    ``[L(2L−1), L, 2B]``, times ``scale`` (broadcast against ``[valid rows, 2B]``), zero where
    ``l < max(m, |n|)``; only the non-zero rows pass through float64 (low peak memory)."""
    L, size = num_degrees, 2 * bandwidth
    idx = _pair_index(L, bandwidth).reshape(L * (2 * L - 1), L)  # [(m n), l]
    valid = idx < compact_offsets(bandwidth)[-1]
    pair, deg = np.nonzero(valid)
    values = soft_wigner_d_compact(bandwidth)[idx[pair, deg]] * scale(deg)  # [valid, 2B]
    if l_last:
        out = np.zeros((L * (2 * L - 1), size, L), dtype=np_dtype)
        out[pair, :, deg] = values
    else:
        out = np.zeros((L * (2 * L - 1), L, size), dtype=np_dtype)
        out[pair, deg, :] = values
    return out


def _np_dtype(dtype: torch.dtype):
    return np.float64 if dtype == torch.float64 else np.float32


def so3_analysis_table(
    bandwidth: int, num_degrees: int, dtype: torch.dtype, device: torch.device | str
) -> torch.Tensor:
    """Analysis table ``T[(m, n + L − 1), j, l] = d^l_{mn}(β_j) · w_j / (8B²)``, quadrature
    weights folded in; shape ``[L(2L−1), 2B, L]``, ``0 ≤ m < L``, ``|n| < L``, zero where
    ``l < max(m, |n|)``. Built from the compact float64 table. Cached.
    """
    from sphere_bench.harmonic.grids import soft_quadrature_weights

    _check_degrees(bandwidth, num_degrees)
    device = torch.device(device)
    key = ("so3_an", bandwidth, num_degrees, dtype, device)

    def build() -> torch.Tensor:
        w = soft_quadrature_weights(bandwidth) / (8 * bandwidth**2)
        t = _pair_table_np(bandwidth, num_degrees, _np_dtype(dtype), True, lambda deg: w)
        return torch.from_numpy(t).to(dtype=dtype, device=device)

    return _cached(key, build)


def so3_synthesis_table(
    bandwidth: int, num_degrees: int, dtype: torch.dtype, device: torch.device | str
) -> torch.Tensor:
    """Synthesis table ``T[(m, n + L − 1), l, j] = (2l+1) d^l_{mn}(β_j)``, ``[L(2L−1), L, 2B]``.

    ``0 ≤ m < L``, ``|n| < L``; zero where ``l < max(m, |n|)``. Cached.
    """
    _check_degrees(bandwidth, num_degrees)
    device = torch.device(device)
    key = ("so3_syn", bandwidth, num_degrees, dtype, device)

    def build() -> torch.Tensor:
        t = _pair_table_np(bandwidth, num_degrees, _np_dtype(dtype), False,
                           lambda deg: (2.0 * deg + 1)[:, None])
        return torch.from_numpy(t).to(dtype=dtype, device=device)

    return _cached(key, build)


def kernel_chunk_table(
    num_degrees: int, betas: tuple[float, ...], lo: int, hi: int, dtype: torch.dtype,
    device: torch.device | str,
) -> torch.Tensor:
    """``d^l_{nk}(β_b)`` at kernel-grid angles for ``lo ≤ l < hi`` and ``|n|, |k| < hi``.

    Shape ``[(2hi−1)², hi − lo, nb]`` with rows ``(n + hi − 1, k + hi − 1)``. Cached.
    """
    device = torch.device(device)
    key = ("kernel_chunk", num_degrees, tuple(float(b) for b in betas), lo, hi, dtype, device)

    def build() -> torch.Tensor:
        d = wigner_d_padded(hi, np.asarray(betas))[lo:hi]  # [l, n, k, b], |n|, |k| < hi
        t = torch.from_numpy(d).permute(1, 2, 0, 3).reshape((2 * hi - 1) ** 2, hi - lo, -1)
        return t.to(dtype=dtype, device=device).contiguous()

    return _cached(key, build)


def plan_degree_chunks(
    num_degrees: int, cost, overhead: float, max_chunks: int = 6
) -> tuple[tuple[int, int], ...]:
    """Split the degrees ``0 … L−1`` into at most ``max_chunks`` consecutive chunks ``[lo, hi)``
    of least total cost.

    ``cost(lo, hi)`` is the (FLOP) cost of treating the chunk as one padded block — every
    degree of it padded to the chunk's largest orders ``hi − 1`` — and ``overhead`` the fixed
    cost of one more chunk (kernel launches, copies). Exact dynamic programme over chunk ends
    and counts. With blocks growing like ``(l+1)(2l+1)²``, 6 chunks cost within ~1.25× of the
    unpadded per-degree blocks for ``L ≤ 50`` (one chunk: ~3.8×), while the number of batched
    kernels per layer stays a small constant. Returns the chunks in increasing order.
    """
    L = int(num_degrees)
    if L < 1:
        raise ValueError(f"num_degrees must be >= 1, got {num_degrees}")
    if max_chunks < 1:
        raise ValueError(f"max_chunks must be >= 1, got {max_chunks}")
    inf = float("inf")
    kmax = min(max_chunks, L)
    best = [[inf] * (kmax + 1) for _ in range(L + 1)]
    prev = [[0] * (kmax + 1) for _ in range(L + 1)]
    best[0][0] = 0.0
    for hi in range(1, L + 1):
        for lo in range(hi):
            c = cost(lo, hi) + overhead
            for k in range(1, kmax + 1):
                if best[lo][k - 1] + c < best[hi][k]:
                    best[hi][k], prev[hi][k] = best[lo][k - 1] + c, lo
    k = min(range(1, kmax + 1), key=lambda j: best[L][j])
    chunks = []
    hi = L
    while hi > 0:
        lo = prev[hi][k]
        chunks.append((lo, hi))
        hi, k = lo, k - 1
    return tuple(reversed(chunks))

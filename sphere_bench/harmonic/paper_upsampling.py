"""The reference s2cnn's aliased up-sampling, for ``model.upsampling=paper``.

When an s2cnn SO(3) layer raises the bandwidth (``b_in < b_out``: ``SO3Convolution``, ``SO3ToS2``),
its forward SO(3) transform (``so3_rfft`` in ``s2cnn/soft/so3_fft.py`` of ``jonkhler/s2cnn`` and
the fork ``Schuh93/sem_seg_s2cnn``) returns ``b_out`` degrees, not ``b_in``: for every
``l < b_out`` it evaluates

    F^l_{mn} = Σ_j (w_j / 8 b_in²) d^l_{mn}(β_j) Σ_{k,p} f_{jkp} e^{−i m α_k} e^{−i n γ_p},
    |m|, |n| ≤ min(l, b_in − 1),

by quadrature on the coarse ``b_in`` SOFT grid (``β_j``, weights ``w_j`` of
:func:`sphere_bench.harmonic.grids.soft_quadrature_weights`). For ``l < b_in`` this is the exact
transform; for ``b_in ≤ l < b_out`` the quadrature is not exact (the grid resolves only degrees
< b_in), so those coefficients are aliases of the lower degrees, not zero. The layer then
multiplies them with the kernel's spectrum up to degree ``b_out − 1`` and synthesises on the
``b_out`` grid. sphere_bench's default (``upsampling=exact``) keeps ``min(b_in, b_out)`` degrees,
i.e. zero-pads. The S² transform of the reference cannot up-sample (it asserts
``b_out ≤ b_in``), so :class:`~sphere_bench.models.s2cnn_layers.S2Convolution` has no paper mode
of its own.

Output layout: the pair-major ``[L(m), 2L−1(n), L(l), N]`` of
:func:`so3_analysis_aliased`, the layout the layers' own analysis produces, so a layer swaps one
transform for the other unchanged.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from sphere_bench.harmonic.grids import soft_betas, soft_quadrature_weights
from sphere_bench.harmonic.wigner import wigner_d

__all__ = [
    "UPSAMPLING_MODES",
    "check_upsampling",
    "so3_analysis_aliased",
]

UPSAMPLING_MODES = ("exact", "paper")

_lock = threading.Lock()
_tables: dict[tuple, torch.Tensor] = {}


def check_upsampling(value: str) -> str:
    """Return ``value`` if it is an up-sampling mode, else raise ``ValueError`` naming the key."""
    if value not in UPSAMPLING_MODES:
        raise ValueError(
            f"unknown model.upsampling {value!r}; allowed values: {', '.join(UPSAMPLING_MODES)}"
        )
    return value


def _aliased_table(bandwidth: int, num_degrees: int, dtype: torch.dtype, device) -> torch.Tensor:
    """``T[(m, n), l, j] = (w_j / 8B²) d^l_{mn}(β_j)`` for ``0 ≤ m ≤ M``, ``|n| ≤ M``, ``l < L``.

    ``M = min(B, L) − 1``; zero where ``l < max(m, |n|)``. Shape ``[(M+1)(2M+1), L, 2B]``.
    """
    key = (bandwidth, num_degrees, dtype, torch.device(device))
    with _lock:
        table = _tables.get(key)
    if table is not None:
        return table
    b, L = bandwidth, num_degrees
    M = min(b, L) - 1
    betas = soft_betas(b)
    weights = soft_quadrature_weights(b) / (8 * b * b)
    out = np.zeros((M + 1, 2 * M + 1, L, 2 * b))
    for l in range(L):
        mm = min(l, M)
        d = wigner_d(l, betas, np.arange(0, mm + 1))  # [m, n + l, j]
        out[: mm + 1, M - mm : M + mm + 1, l] = d[:, l - mm : l + mm + 1] * weights
    table = torch.from_numpy(out.reshape((M + 1) * (2 * M + 1), L, 2 * b))
    table = table.to(dtype=dtype, device=device).contiguous()
    with _lock:
        _tables[key] = table
    return table


def so3_analysis_aliased(x: torch.Tensor, num_degrees: int) -> torch.Tensor:
    """Forward SO(3) transform with the reference's aliased higher degrees (module docstring).

    Args:
        x: real ``[N, 2B, 2B, 2B]`` (``[batch, β, α, γ]``) on the SOFT grid of bandwidth ``B``.
        num_degrees: ``L ≥ 1``; for ``L ≤ B`` the result equals the exact transform, for
            ``L > B`` degrees ``B ≤ l < L`` hold the coarse-grid quadrature of orders
            ``|m|, |n| < B``.

    Returns:
        complex ``[L(m), 2L−1(n), L(l), N]`` with ``[m, n + L − 1, l, i] = F^l_{mn}`` of signal
        ``i`` (zero where ``l < max(m, |n|)`` or ``max(m, |n|) ≥ B``), like
        :func:`sphere_bench.harmonic.so3_fft.so3_analysis_pairs`.
    """
    if x.dim() != 4 or not (x.shape[1] == x.shape[2] == x.shape[3]) or x.shape[1] % 2:
        raise ValueError(f"expected [N, 2B, 2B, 2B], got {tuple(x.shape)}")
    if num_degrees < 1:
        raise ValueError(f"num_degrees must be >= 1, got {num_degrees}")
    n, b, L = x.shape[0], x.shape[1] // 2, int(num_degrees)
    M = min(b, L) - 1
    xf = torch.fft.fftn(x, dim=(-2, -1))  # [N, j, m mod 2B, n mod 2B]
    orders = torch.arange(-M, M + 1, device=x.device).remainder(2 * b)
    xf = xf[:, :, : M + 1][:, :, :, orders]  # [N, j, m = 0 … M, n = −M … M]
    xr = torch.view_as_real(xf.permute(2, 3, 1, 0).contiguous())  # [m, n, j, N, 2]
    xr = xr.reshape((M + 1) * (2 * M + 1), 2 * b, 2 * n)
    table = _aliased_table(b, L, x.dtype, x.device)  # [(m n), l, j]
    spec = torch.view_as_complex(torch.bmm(table, xr).view(M + 1, 2 * M + 1, L, n, 2))
    out = spec.new_zeros(L, 2 * L - 1, L, n)
    out[: M + 1, L - 1 - M : L + M] = spec
    return out

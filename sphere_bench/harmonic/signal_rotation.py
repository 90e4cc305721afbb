"""Rotating S² and SO(3) grid signals: exactly on the grid, or spectrally with Wigner-D.

Convention (:mod:`sphere_bench.harmonic.rotations`): ``(R f)(x) = f(R⁻¹ x)`` on S² and
``(R f)(g) = f(R⁻¹ g)`` on SO(3) (left action), ``R = Rz(α) Ry(β) Rz(γ)``. Signals live on the SOFT
grid, ``[..., 2B, 2B]`` = ``[β, α]`` or ``[..., 2B, 2B, 2B]`` = ``[β, α, γ]``.

* Grid-preserving rotations ``R = Rz(π s / B) · Ry(π)^flip`` permute grid points, so
  :func:`rotate_s2_grid` / :func:`rotate_so3_grid` are exact for every signal:
  ``Rz(α_s)`` rolls the α axis by ``s``; ``Ry(π)`` maps ``(α, β) ↦ (π−α, π−β)`` on S² and
  ``(α, β, γ) ↦ (π−α, π−β, γ−π)`` on SO(3) (the β axis reverses).
* Arbitrary rotations of band-limited signals: :func:`rotate_s2` / :func:`rotate_so3` transform,
  apply ``F^l → D^l(R) F^l`` and transform back. Exact (to rounding) when the signal is
  band-limited to ``l < B``; otherwise the result is the rotation of its band-limited projection.

Used by the tests of every layer and model, and by the evaluator.
"""

from __future__ import annotations

import torch

from sphere_bench.harmonic.rotations import euler_zyz_to_matrix, matrix_to_euler_zyz
from sphere_bench.harmonic.s2_fft import s2_fft, s2_full_to_half, s2_half_to_full, s2_ifft
from sphere_bench.harmonic.so3_fft import so3_fft, so3_full_to_half, so3_half_to_full, so3_ifft
from sphere_bench.harmonic.wigner import wigner_D_padded

__all__ = [
    "grid_rotation_matrix",
    "rotate_s2_grid",
    "rotate_so3_grid",
    "rotate_s2",
    "rotate_so3",
    "wigner_D_for_matrix",
]


def grid_rotation_matrix(bandwidth: int, shift: int = 0, flip: bool = False) -> torch.Tensor:
    """The matrix ``Rz(π·shift/B) · Ry(π)^flip`` (float64 ``[3, 3]``) of a grid rotation."""
    alpha = torch.tensor(torch.pi * shift / bandwidth, dtype=torch.float64)
    beta = torch.tensor(torch.pi if flip else 0.0, dtype=torch.float64)
    return euler_zyz_to_matrix(alpha, beta, torch.zeros((), dtype=torch.float64))


def _alpha_reflect_index(size: int, device: torch.device) -> torch.Tensor:
    # α_k ↦ π − α_k, i.e. k ↦ (B − k) mod 2B
    return torch.remainder(size // 2 - torch.arange(size, device=device), size)


def rotate_s2_grid(x: torch.Tensor, shift: int = 0, flip: bool = False) -> torch.Tensor:
    """Exact rotation of S² grid signals ``[..., 2B, 2B]`` by ``Rz(π·shift/B) · Ry(π)^flip``."""
    size = x.shape[-1]
    if flip:
        x = x.flip(-2).index_select(-1, _alpha_reflect_index(size, x.device))
    return torch.roll(x, shifts=shift, dims=-1) if shift % size else x


def rotate_so3_grid(x: torch.Tensor, shift: int = 0, flip: bool = False) -> torch.Tensor:
    """Exact left rotation of SO(3) grid signals ``[..., 2B, 2B, 2B]`` (see module doc)."""
    size = x.shape[-1]
    if flip:
        x = x.flip(-3).index_select(-2, _alpha_reflect_index(size, x.device))
        x = torch.roll(x, shifts=size // 2, dims=-1)
    return torch.roll(x, shifts=shift, dims=-2) if shift % size else x


def wigner_D_for_matrix(rotation: torch.Tensor, num_degrees: int) -> torch.Tensor:
    """``D^l(R)`` for ``l < L``: ``[*S, L, 2L−1, 2L−1]`` complex128 for rotations ``[*S, 3, 3]``."""
    alpha, beta, gamma = matrix_to_euler_zyz(rotation.to(torch.float64).cpu())
    return wigner_D_padded(num_degrees, alpha, beta, gamma)


def _apply_D(full: torch.Tensor, rotation: torch.Tensor, lead_dims: int) -> torch.Tensor:
    """``F^l → D^l(R) F^l`` on the m index (dim −2 of ``[..., L, 2L−1(m)(, 2L−1)]``)."""
    L = full.shape[lead_dims]
    D = wigner_D_for_matrix(rotation, L).to(device=full.device, dtype=full.dtype)
    if rotation.dim() == 3:  # one rotation per leading batch item
        D = D.reshape(D.shape[0], *([1] * (lead_dims - 1)), *D.shape[1:])
    return torch.matmul(D, full)


def rotate_s2(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Rotate band-limited S² signals ``[..., 2B, 2B]`` by ``R`` spectrally.

    ``rotation`` is ``[3, 3]`` (all signals) or ``[N, 3, 3]`` (one per item of the leading dim).
    """
    b = x.shape[-1] // 2
    wide = x.to(torch.float64)
    coeffs = s2_half_to_full(s2_fft(wide))  # [..., L, 2L-1]
    lead = coeffs.dim() - 2
    rotated = _apply_D(coeffs.unsqueeze(-1), rotation, lead).squeeze(-1)
    return s2_ifft(s2_full_to_half(rotated), b).to(x.dtype)


def rotate_so3(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Rotate band-limited SO(3) signals ``[..., 2B, 2B, 2B]`` by ``R`` (left action) spectrally."""
    b = x.shape[-1] // 2
    wide = x.to(torch.float64)
    coeffs = so3_half_to_full(so3_fft(wide))  # [..., L, 2L-1, 2L-1]
    lead = coeffs.dim() - 3
    rotated = _apply_D(coeffs, rotation, lead)
    return so3_ifft(so3_full_to_half(rotated), b).to(x.dtype)

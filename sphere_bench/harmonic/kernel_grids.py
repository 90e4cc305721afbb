"""Near-identity kernel grids of the S2CNN layers (s2cnn's ``s2_grid`` / ``so3_grid``, spec §3.1).

* S² grid: ``β ∈ {1, …, n_β}·max_β/n_β`` × ``n_α`` values ``α_a = 2πa/n_α`` (endpoint excluded);
  default 3 × 8 = 24 points, ordered β-major: point ``i = b·n_α + a``.
* SO(3) grid: the same (β, α) times ``n_γ`` "pre-γ" values ``linspace(−max_γ, max_γ, n_γ)``
  (endpoint included) with ``γ = preγ − α``; default 3 × 8 × 8 = 192 points ordered
  ``i = (b·n_α + a)·n_γ + p``. With ``max_γ = 2π`` the pre-γ values ±2π coincide modulo 2π, so
  one γ per (β, α) is duplicated — the reference's quirk, kept so parameter counts match.

``max_beta`` is given in radians here; the model configs give it in units of π.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["S2KernelGrid", "SO3KernelGrid", "s2_near_identity_grid", "so3_near_identity_grid"]


@dataclass(frozen=True)
class S2KernelGrid:
    """A product grid ``betas × alphas`` on S² (alphas uniform: ``2πa/n_alpha``)."""

    betas: tuple[float, ...]
    n_alpha: int

    @property
    def size(self) -> int:
        return len(self.betas) * self.n_alpha

    def alphas(self) -> np.ndarray:
        return 2 * np.pi * np.arange(self.n_alpha) / self.n_alpha

    def points(self) -> np.ndarray:
        """``[size, 2]`` of ``(β, α)`` in parameter order."""
        b, a = np.meshgrid(np.asarray(self.betas), self.alphas(), indexing="ij")
        return np.stack([b.ravel(), a.ravel()], axis=1)


@dataclass(frozen=True)
class SO3KernelGrid:
    """A product grid ``betas × alphas × pre_gammas`` on SO(3) with ``γ = preγ − α``."""

    betas: tuple[float, ...]
    n_alpha: int
    pre_gammas: tuple[float, ...]

    @property
    def size(self) -> int:
        return len(self.betas) * self.n_alpha * len(self.pre_gammas)

    def alphas(self) -> np.ndarray:
        return 2 * np.pi * np.arange(self.n_alpha) / self.n_alpha

    def points(self) -> np.ndarray:
        """``[size, 3]`` of ZYZ angles ``(α, β, γ)`` in parameter order."""
        b, a, p = np.meshgrid(
            np.asarray(self.betas), self.alphas(), np.asarray(self.pre_gammas), indexing="ij"
        )
        return np.stack([a.ravel(), b.ravel(), (p - a).ravel()], axis=1)


def _betas(max_beta: float, n_beta: int) -> tuple[float, ...]:
    if not (0 < max_beta <= math.pi):
        raise ValueError(f"kernel max_beta must be in (0, π] radians, got {max_beta}")
    if n_beta < 1:
        raise ValueError(f"n_beta must be >= 1, got {n_beta}")
    return tuple(float(v) for v in np.arange(1, n_beta + 1) * max_beta / n_beta)


def s2_near_identity_grid(
    max_beta: float = math.pi / 8, n_alpha: int = 8, n_beta: int = 3
) -> S2KernelGrid:
    """s2cnn's ``s2_near_identity_grid``: ``n_beta × n_alpha`` points (default 24)."""
    if n_alpha < 1:
        raise ValueError(f"n_alpha must be >= 1, got {n_alpha}")
    return S2KernelGrid(_betas(max_beta, n_beta), n_alpha)


def so3_near_identity_grid(
    max_beta: float = math.pi / 8,
    max_gamma: float = 2 * math.pi,
    n_alpha: int = 8,
    n_beta: int = 3,
    n_gamma: int | None = None,
) -> SO3KernelGrid:
    """s2cnn's ``so3_near_identity_grid``: ``n_beta × n_alpha × n_gamma`` points (default 192)."""
    if n_alpha < 1:
        raise ValueError(f"n_alpha must be >= 1, got {n_alpha}")
    n_gamma = n_alpha if n_gamma is None else n_gamma
    pre = np.linspace(-max_gamma, max_gamma, n_gamma, endpoint=True)
    return SO3KernelGrid(_betas(max_beta, n_beta), n_alpha, tuple(float(v) for v in pre))

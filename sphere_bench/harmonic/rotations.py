"""Rotations of R³: Haar-random sampling and ZYZ Euler angles.

Conventions (one for the whole project):

* A rotation is a 3×3 orthogonal matrix ``R`` with det +1 acting on column vectors, ``x ↦ R x``.
* **ZYZ Euler angles** ``(alpha, beta, gamma)``: ``R = Rz(alpha) · Ry(beta) · Rz(gamma)``, with
  ``alpha, gamma ∈ [0, 2π)`` and ``beta ∈ [0, π]``. This is the parameterisation of the SOFT
  SO(3) grid ``[beta, alpha, gamma]`` and of the Wigner-D functions of s2cnn/lie_learn. The S²
  point of Euler angles ``(alpha, beta, ·)`` is ``R e_z = (sin β cos α, sin β sin α, cos β)``.
* **Rotating a signal**: ``(R f)(x) = f(R⁻¹ x)``, so a feature at ``x₀`` moves to ``R x₀``.
  Projection (:mod:`sphere_bench.data.projection`) follows this convention: a digit that sits at
  the south pole when unrotated sits at ``R · (0, 0, −1)`` when projected with rotation ``R``.
"""

from __future__ import annotations

import torch


def rotation_z(angle: torch.Tensor) -> torch.Tensor:
    """Rotations about the z axis by ``angle`` (any shape ``S``), returned as ``[*S, 3, 3]``."""
    c, s = torch.cos(angle), torch.sin(angle)
    zero, one = torch.zeros_like(angle), torch.ones_like(angle)
    rows = [torch.stack([c, -s, zero], -1), torch.stack([s, c, zero], -1)]
    rows.append(torch.stack([zero, zero, one], -1))
    return torch.stack(rows, -2)


def rotation_y(angle: torch.Tensor) -> torch.Tensor:
    """Rotations about the y axis by ``angle`` (any shape ``S``), returned as ``[*S, 3, 3]``."""
    c, s = torch.cos(angle), torch.sin(angle)
    zero, one = torch.zeros_like(angle), torch.ones_like(angle)
    rows = [torch.stack([c, zero, s], -1), torch.stack([zero, one, zero], -1)]
    rows.append(torch.stack([-s, zero, c], -1))
    return torch.stack(rows, -2)


def euler_zyz_to_matrix(
    alpha: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor
) -> torch.Tensor:
    """``Rz(alpha) Ry(beta) Rz(gamma)`` for broadcastable angle tensors, shape ``[*S, 3, 3]``."""
    alpha, beta, gamma = torch.broadcast_tensors(
        torch.as_tensor(alpha), torch.as_tensor(beta), torch.as_tensor(gamma)
    )
    return rotation_z(alpha) @ rotation_y(beta) @ rotation_z(gamma)


def matrix_to_euler_zyz(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of :func:`euler_zyz_to_matrix` for ``[*S, 3, 3]`` rotation matrices.

    Returns ``(alpha, beta, gamma)`` with ``alpha, gamma ∈ [0, 2π)`` and ``beta ∈ [0, π]``. At the
    gimbal-lock points ``beta ∈ {0, π}`` only ``alpha ± gamma`` is determined; there ``gamma = 0``.
    """
    two_pi = 2 * torch.pi
    beta = torch.arccos(matrix[..., 2, 2].clamp(-1.0, 1.0))
    sin_beta = torch.sin(beta)
    regular = sin_beta > 1e-6
    alpha_reg = torch.atan2(matrix[..., 1, 2], matrix[..., 0, 2])
    gamma_reg = torch.atan2(matrix[..., 2, 1], -matrix[..., 2, 0])
    # Gimbal lock: R = Rz(alpha ± gamma) up to the sign flip of Ry(pi); put everything in alpha.
    sign = torch.where(matrix[..., 2, 2] > 0, 1.0, -1.0).to(matrix.dtype)
    alpha_lock = torch.atan2(matrix[..., 1, 0], matrix[..., 0, 0] * sign) * sign
    alpha = torch.where(regular, alpha_reg, alpha_lock)
    gamma = torch.where(regular, gamma_reg, torch.zeros_like(gamma_reg))
    return torch.remainder(alpha, two_pi), beta, torch.remainder(gamma, two_pi)


def haar_rotations(
    n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """``n`` independent Haar-uniform rotation matrices, shape ``[n, 3, 3]``.

    A unit quaternion with i.i.d. Gaussian components normalised to length one is uniform on S³,
    and the double cover S³ → SO(3) pushes this forward to the Haar measure (Shoemake, "Uniform
    random rotations", Graphics Gems III, 1992). The same ``generator`` state gives the same
    rotations on every machine (they are drawn on the CPU in float64).
    """
    if n < 0:
        raise ValueError(f"number of rotations must be >= 0, got {n}")
    q = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    q = q / q.norm(dim=1, keepdim=True)
    w, x, y, z = q.unbind(1)
    matrix = torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        dim=1,
    ).reshape(n, 3, 3)
    return matrix.to(dtype)

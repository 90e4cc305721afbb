"""Projection of planar images onto the sphere (the paper's spherical-MNIST construction).

Geometry (``docs/paper_protocol.md`` §1.2; s2cnn ``examples/mnist/gendata.py``): the unit
sphere is lifted so that it touches the plane ``z = 0`` with its south pole, and every sphere
point ``x`` is mapped to the plane along the ray from the projection origin ``(0, 0, 2 + ε)``
(just above the north pole, ``ε = 1e-3``) through the lifted point. For ``x = (x, y, z)`` this
gives the plane point

    q = (x, y) · (2 + ε) / (1 + ε − z),          |q| ≈ 2·cot(β/2),

so the south pole lands on the plane's origin. The plane window ``[−1.5, 1.5]²`` holds the
image: plane axis ``q_x`` drives the image **row**, ``q_y`` the image **column**. Points whose plane
coordinates fall outside the image read 0. For a 28×28 digit the image corners reach
colatitude β ≈ 86.6° and the digit lies within about 56° of the south pole.

Rotation: with rotation ``R`` the projected spherical image is ``f_R(x) = f(R⁻¹ x)`` (see
:mod:`sphere_bench.harmonic.rotations`), i.e. everything the unrotated image shows at ``x₀``
appears at
``R x₀``. (The paper rotates its grid by ``M`` instead, which is the same with ``R = M⁻¹``.)

Interpolation:

* ``"bilinear"`` (default): proper bilinear interpolation with pixel ``i`` centred at plane
  coordinate ``−1.5 + 3(i + ½)/W``, zero outside the image (``torch.nn.functional.grid_sample``).
* ``"paper"``: the paper's sampler (``sample_bilinear`` of ``examples/mnist_sem_seg/gendata.py``
  in the fork ``Schuh93/sem_seg_s2cnn``): continuous pixel coordinate ``r = (q + 1.5)/3 · W``
  with pixel ``i`` at ``r = i``, ``ix = trunc(r)``, neighbours ``ix − 1`` and ``ix + 1`` with
  weights ``ix + 1 − r`` and ``r − ix + 1`` (a 2-pixel-wide tent whose weights sum to 2, so values
  are smoothed and scaled by 4 before the min–max rescale). It follows the paper's arithmetic
  operation by operation in float64 (grid points from numpy's ``sin``/``cos``, the projection,
  the tent, then :func:`minmax_uint8_paper`), so the uint8 spheres and masks are byte-identical
  to the paper's. That matters on the meridians ``α ∈ {0, π/2, π, 3π/2}`` of the 2B-point
  longitude grid, where a plane coordinate lands exactly on an integer pixel coordinate: the
  tent is discontinuous there and the side a point falls on is decided by the last bit of the
  paper's rounding (up to 192 grey levels apart); any other order of operations moves some of
  those points to the other side.

**North-pole artefact of the paper grid.** The paper's Driscoll–Healy grid (``grid="paper"``)
contains the north pole: its whole ``β = 0`` row is the single point ``(0, 0, 1)``, which the
projection origin just above it maps to the plane origin ``q = 0``, the *image centre* (row and
column 14 of a 28×28 image). So that row reads the centre of the digit instead of nothing, and
for a digit with ink at its centre, NR segmentation spheres carry a stray foreground label along
the ``β = 0`` row. The paper's own data has it, so the paper mode keeps it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sphere_bench.harmonic.grids import SphereGrid

NORTH_POLE_EPSILON = 1e-3
PLANE_HALF_WIDTH = 1.5
INTERPOLATIONS = ("bilinear", "paper")


def plane_coordinates(points: torch.Tensor) -> torch.Tensor:
    """Plane point ``q = (q_x, q_y)`` of every sphere point, shape ``[..., 2]`` for ``[..., 3]``."""
    scale = (2.0 + NORTH_POLE_EPSILON) / (1.0 + NORTH_POLE_EPSILON - points[..., 2:3])
    return points[..., :2] * scale


def window_coordinates(grid: SphereGrid, rotations: torch.Tensor | None) -> torch.Tensor:
    """Where each (rotated) grid point reads the image, in ``grid_sample`` coordinates.

    Returns ``[N, P, 2]`` (``[1, P, 2]`` without rotations) holding ``(q_y, q_x) / 1.5``: the image
    window ``[−1.5, 1.5]²`` becomes ``[−1, 1]²``, the first entry indexes columns and the second
    rows, as :func:`torch.nn.functional.grid_sample` expects. The point read for grid point ``x``
    under rotation ``R`` is ``R⁻¹ x``.

    Product grids (soft, paper) use that ``x = (sin β_j cos α_k, sin β_j sin α_k, cos β_j)``: every
    component of ``R⁻¹x = Rᵀx`` is ``sin β_j · A(α_k) + cos β_j · C``, one fused multiply-add per
    point instead of a 3×3 product (about 2× faster at B = 50).
    """
    if rotations is None:
        rotations = torch.eye(3).unsqueeze(0)
    dtype, device = rotations.dtype, rotations.device
    n = rotations.shape[0]
    # Rows 0 and 1 of the result are scaled so that the window maps to [-1, 1].
    gain = (2.0 + NORTH_POLE_EPSILON) / PLANE_HALF_WIDTH
    angles = grid.product_angles()
    if angles is None:
        points = grid.points(dtype).to(device)
        rotated = torch.matmul(points.unsqueeze(0), rotations)  # [N, P, 3] = R^T x
        inv_denominator = (1.0 + NORTH_POLE_EPSILON - rotated[..., 2]).reciprocal_()
        coords = rotated[..., [1, 0]] * (gain * inv_denominator).unsqueeze(-1)
        return coords
    betas, alphas = (torch.from_numpy(a).to(device=device, dtype=dtype) for a in angles)
    sin_b, cos_b = torch.sin(betas), torch.cos(betas)
    # x'_i = sin b_j * (R_0i cos a_k + R_1i sin a_k) + cos b_j * R_2i, for i = x, y, z.
    a_part = rotations[:, 0, :, None] * torch.cos(alphas) + rotations[:, 1, :, None] * torch.sin(
        alphas
    )  # [N, 3, K]
    c_part = rotations[:, 2, :, None] * cos_b  # [N, 3, J]
    denominator = torch.addcmul(
        (1.0 + NORTH_POLE_EPSILON) - c_part[:, 2, :, None],
        sin_b[None, :, None],
        a_part[:, 2, None, :],
        value=-1.0,
    )  # [N, J, K]
    inv_denominator = denominator.reciprocal_().mul_(gain)
    coords = torch.empty(n, len(betas), len(alphas), 2, dtype=dtype, device=device)
    for out_axis, component in ((0, 1), (1, 0)):  # (col <- y', row <- x')
        torch.addcmul(
            c_part[:, component, :, None],
            sin_b[None, :, None],
            a_part[:, component, None, :],
            out=coords[..., out_axis],
        )
    coords.mul_(inv_denominator.unsqueeze(-1))
    return coords.reshape(n, -1, 2)


def _sample_bilinear(planes: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``planes [N, K, H, W]`` at ``coords [N or 1, P, 2]`` → ``[N, K, P]``."""
    # align_corners=False maps -1/+1 to the outer pixel edges: pixel i is centred at
    # -1 + (2i + 1)/W, i.e. plane coordinate -1.5 + 3(i + 1/2)/W.
    grid = coords.to(planes.dtype).unsqueeze(1).expand(planes.shape[0], -1, -1, -1)
    out = F.grid_sample(planes, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[:, :, 0, :]


def paper_grid_xyz(grid: SphereGrid) -> np.ndarray:
    """Cartesian grid points as the paper computes them, float64 ``[3, P]`` (``x, y, z`` rows).

    Product grids (soft, paper) follow ``get_projection_grid`` of the paper's ``gendata.py``
    (fork ``Schuh93/sem_seg_s2cnn``, ``examples/mnist_sem_seg``): ``np.meshgrid(beta, alpha,
    indexing="ij")``, then ``x = sin β · cos α``, ``y = sin β · sin α``, ``z = cos β`` with numpy's
    ``sin``/``cos``, so every coordinate carries the paper's rounding. HEALPix uses
    :meth:`SphereGrid.points_numpy`.
    """
    angles = grid.product_angles()
    if angles is None:
        return np.ascontiguousarray(grid.points_numpy().T)
    theta, phi = np.meshgrid(*angles, indexing="ij")
    x = np.sin(theta) * np.cos(phi)
    y = np.sin(theta) * np.sin(phi)
    return np.stack([x, y, np.cos(theta)]).reshape(3, -1)


def paper_pixel_coordinates(
    grid: SphereGrid, rotations: torch.Tensor | None, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Continuous pixel coordinates the paper's sampler reads, in the paper's float64 arithmetic.

    Follows ``rotate_grid`` and ``project_sphere_on_xy_plane`` of the paper's ``gendata.py``
    operation by operation (each step a separate, correctly rounded float64 operation, no fused
    multiply-add), so that points landing exactly on a pixel coordinate (the meridians
    ``α ∈ {0, π/2, π, 3π/2}``, where the ±1-neighbour tent is discontinuous) round as the paper's:

    * rotation ``R`` (sphere_bench convention ``f_R(x) = f(R⁻¹ x)``; the paper rotates its grid by
      ``M = R⁻¹ = Rᵀ``): ``x'_i = (M_i0 x + M_i1 y) + M_i2 z``, the summation order of numpy's
      ``einsum("ij,jab->iab")`` that the paper uses;
    * ``z₁ = z' + 1``, ``t = −z₁ / (z₁ − (2 + ε))``, ``q = t · x' + x'`` (for x and y);
    * ``r = (q + 1.5) / 3 · size`` (rows from ``q_x``, columns from ``q_y``).

    Args:
        grid: the sphere grid (``P`` points).
        rotations: ``[N, 3, 3]`` rotations (used in float64: pass float64 matrices to match the
            paper's rotated data bit for bit), or ``None``.
        height, width: image size in pixels.

    Returns:
        ``(r_row, r_col, keep)``, each ``[N or 1, P]``: float64 pixel coordinates (pixel ``i`` at
        ``r = i``) and the paper's hemisphere mask ``z' ≤ 1`` (always true up to rounding of
        rotated points; the paper multiplies its samples by it).
    """
    xyz = torch.from_numpy(paper_grid_xyz(grid))
    if rotations is None:
        x, y, z = (c.unsqueeze(0) for c in xyz)
    else:
        rot = rotations.to(dtype=torch.float64, device=torch.device("cpu"))
        # M = R^T: M_ij = R_ji; (M_i0 x + M_i1 y) + M_i2 z, left to right like numpy's einsum.
        x, y, z = (
            rot[:, 0, i, None] * xyz[0] + rot[:, 1, i, None] * xyz[1] + rot[:, 2, i, None] * xyz[2]
            for i in range(3)
        )
    keep = z <= 1
    z1 = z + 1
    t = -z1 / (z1 - (2 + NORTH_POLE_EPSILON))
    # The paper's window is [xmin, -xmin] with xmin = -1.5: r = (q - xmin) / (2 |xmin|) * size.
    r_row = (t * x + x + PLANE_HALF_WIDTH) / (2 * PLANE_HALF_WIDTH) * height
    r_col = (t * y + y + PLANE_HALF_WIDTH) / (2 * PLANE_HALF_WIDTH) * width
    return r_row, r_col, keep


def _sample_paper(
    planes: torch.Tensor, grid: SphereGrid, rotations: torch.Tensor | None
) -> torch.Tensor:
    """The paper's ±1-neighbour tent sampler in its float64 arithmetic → ``[N, K, P]`` float64.

    ``sample_bilinear`` of the paper's ``gendata.py``: ``ix = trunc(r_row)``, ``iy = trunc(r_col)``,
    the four samples ``s(ix ± 1, iy ± 1)`` (0 outside the image), then
    ``fx1 = (ix+1 − r_row)·s(ix−1, iy−1) + (r_row − ix+1)·s(ix+1, iy−1)``, ``fx2`` likewise at
    ``iy+1``, and ``(iy+1 − r_col)·fx1 + (r_col − iy+1)·fx2``, times the hemisphere mask.
    """
    n, k, h, w = planes.shape
    r_row, r_col, keep = (
        a.to(planes.device) for a in paper_pixel_coordinates(grid, rotations, h, w)
    )
    rows, cols = r_row.to(torch.int64), r_col.to(torch.int64)  # truncation toward zero
    flat = planes.to(torch.float64).reshape(n, k, h * w)
    p = r_row.shape[-1]

    def at(row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        inside = (row >= 0) & (row < h) & (col >= 0) & (col < w)
        index = torch.where(inside, row * w + col, torch.zeros_like(row)).expand(n, p)
        values = torch.gather(flat, 2, index.unsqueeze(1).expand(n, k, p))
        return values * inside.unsqueeze(1)

    row0, row1, col0, col1 = rows - 1, rows + 1, cols - 1, cols + 1
    w_row0, w_row1 = (row1 - r_row).unsqueeze(1), (r_row - row0).unsqueeze(1)
    fx1 = w_row0 * at(row0, col0) + w_row1 * at(row1, col0)
    fx2 = w_row0 * at(row0, col1) + w_row1 * at(row1, col1)
    out = (col1 - r_col).unsqueeze(1) * fx1 + (r_col - col0).unsqueeze(1) * fx2
    return out * keep.unsqueeze(1)


def project_planes(
    planes: torch.Tensor,
    grid: SphereGrid,
    rotations: torch.Tensor | None = None,
    interpolation: str = "bilinear",
) -> torch.Tensor:
    """Sample planar images at the plane points of (rotated) sphere points.

    Args:
        planes: ``[N, K, H, W]`` float images (``K`` layers projected with the same geometry), on
            the CPU or a GPU.
        grid: the sphere grid (:func:`sphere_bench.harmonic.grids.make_grid`).
        rotations: ``[N, 3, 3]`` rotation per image, or ``None`` for the unrotated projection.
        interpolation: ``"bilinear"`` or ``"paper"`` (module docstring).

    Returns:
        ``[N, K, P]`` values of the spherical images ``f_R(x) = f(R⁻¹ x)`` at the grid points,
        in the grid's flattened signal order.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"unknown interpolation {interpolation!r}; allowed values for data.interpolation: "
            f"{', '.join(INTERPOLATIONS)}"
        )
    if planes.ndim != 4:
        raise ValueError(f"planes must be [N, K, H, W], got shape {tuple(planes.shape)}")
    if rotations is not None and rotations.shape != (planes.shape[0], 3, 3):
        raise ValueError(
            f"rotations must be [N, 3, 3] with N={planes.shape[0]}, got {tuple(rotations.shape)}"
        )
    if interpolation == "paper":
        return _sample_paper(planes, grid, rotations)
    if rotations is not None:
        rotations = rotations.to(device=planes.device, dtype=torch.float32)
    coords = window_coordinates(grid, rotations).to(planes.device)
    return _sample_bilinear(planes, coords)


def minmax_uint8_paper(values: torch.Tensor) -> torch.Tensor:
    """The paper's per-image min–max rescale and uint8 cast, in its float64 arithmetic.

    ``project_2d_on_sphere`` of the paper's ``gendata.py``: ``((x − min) / (max − min)) · 255``
    in float64, truncated to ``uint8`` (this order of operations rounds differently from
    :func:`minmax_uint8` and moves some pixels by one grey level). A constant image, where the
    paper divides 0 by 0, maps to all zeros.

    Args:
        values: ``[N, ...]``; each image ``values[i]`` is rescaled on its own.
    """
    flat = values.to(torch.float64).reshape(values.shape[0], -1)
    lo, hi = torch.aminmax(flat, dim=1, keepdim=True)
    span = hi - lo
    span = torch.where(span > 0, span, torch.ones_like(span))
    return ((flat - lo) / span * 255).to(torch.uint8).reshape(values.shape)


def minmax_uint8(values: torch.Tensor) -> torch.Tensor:
    """Per-image min–max rescale to [0, 255] and truncation to ``uint8`` (the paper's intensities).

    Args:
        values: ``[N, ...]``; each image ``values[i]`` is rescaled on its own. A constant image
            maps to all zeros.
    """
    flat = values.reshape(values.shape[0], -1)
    lo, hi = torch.aminmax(flat, dim=1, keepdim=True)
    span = hi - lo
    scale = 255.0 / torch.where(span > 0, span, torch.ones_like(span))
    # (x - lo) >= 0 exactly and (hi - lo) * 255 / (hi - lo) rounds to at most 255 + ulp, so the
    # cast truncates into [0, 255] without a clamp.
    return (flat - lo).mul_(scale).to(torch.uint8).reshape(values.shape)

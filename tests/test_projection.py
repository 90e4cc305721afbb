"""Projection geometry and interpolation (sphere_bench.data.projection)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from sphere_bench.data.planar_source import load_planar_split
from sphere_bench.data.projection import (
    PLANE_HALF_WIDTH,
    minmax_uint8,
    plane_coordinates,
    project_planes,
    window_coordinates,
)
from sphere_bench.harmonic.grids import make_grid, soft_quadrature_weights
from sphere_bench.harmonic.rotations import (
    euler_zyz_to_matrix,
    haar_rotations,
    rotation_y,
    rotation_z,
)


def _plane_points(bandwidth: int) -> tuple[torch.Tensor, torch.Tensor]:
    q = plane_coordinates(make_grid("soft", bandwidth).points(torch.float64))
    return q[:, 0], q[:, 1]


def test_stereographic_radius_is_two_cot_half_beta() -> None:
    grid = make_grid("soft", 12)
    beta, _ = grid.angles_numpy()
    q = plane_coordinates(grid.points(torch.float64))
    radius = q.norm(dim=1)
    expected = 2.001 * torch.sin(torch.tensor(beta)) / (1.001 - torch.cos(torch.tensor(beta)))
    assert torch.allclose(radius, expected, rtol=1e-12)
    # South pole region lands near the plane origin, the equator at radius ~2.
    assert radius[-1] < 0.2 and radius.reshape(24, 24)[11].mean() > 1.8


def test_fast_window_coordinates_match_generic_path() -> None:
    grid = make_grid("soft", 10)
    rotations = haar_rotations(7, generator=torch.Generator().manual_seed(0))
    fast = window_coordinates(grid, rotations)
    rotated = grid.points(torch.float64).unsqueeze(0) @ rotations  # R^T x as rows
    q = plane_coordinates(rotated) / PLANE_HALF_WIDTH
    assert torch.allclose(fast, q.flip(-1), atol=1e-9)


def test_bilinear_reproduces_linear_images_with_pixel_centres() -> None:
    # f(row, col) = row: bilinear interpolation is exact, pixel i centred at (i + 1/2).
    h = w = 28
    planes = torch.arange(h, dtype=torch.float64)[:, None].expand(h, w)[None, None].clone()
    out = project_planes(planes, make_grid("soft", 20), interpolation="bilinear")[0, 0]
    qx, qy = _plane_points(20)
    r_row = (qx + 1.5) / 3.0 * h
    r_col = (qy + 1.5) / 3.0 * w
    interior = (r_row > 0.5) & (r_row < h - 0.5) & (r_col > 0.5) & (r_col < w - 0.5)
    assert interior.sum() > 100
    assert torch.allclose(out[interior], r_row[interior] - 0.5, atol=1e-5)
    outside = (r_row < -1) | (r_row > h + 1) | (r_col < -1) | (r_col > w + 1)
    assert torch.all(out[outside] == 0)


def test_paper_tent_is_twice_wide_and_scales_by_four() -> None:
    # The paper's sampler (neighbours ix-1, ix+1; weights sum to 2 per axis) returns 4 r for
    # f(row, col) = row, with pixel i at r = i (spec §1.2).
    h = w = 28
    planes = torch.arange(h, dtype=torch.float64)[:, None].expand(h, w)[None, None].clone()
    out = project_planes(planes, make_grid("soft", 20), interpolation="paper")[0, 0]
    qx, qy = _plane_points(20)
    r_row = (qx + 1.5) / 3.0 * h
    r_col = (qy + 1.5) / 3.0 * w
    interior = (r_row >= 1) & (r_row < h - 1) & (r_col >= 1) & (r_col < w - 1)
    assert interior.sum() > 100
    assert torch.allclose(out[interior], 4 * r_row[interior], atol=1e-4)
    ones = torch.ones(1, 1, h, w, dtype=torch.float64)
    const = project_planes(ones, make_grid("soft", 20), interpolation="paper")[0, 0]
    assert torch.allclose(const[interior], torch.full_like(const[interior], 4.0))


def test_alpha_shift_rotation_is_an_exact_roll() -> None:
    b, shift = 16, 5
    planes = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    grid = make_grid("soft", b)
    base = project_planes(planes, grid)[:, 0].reshape(3, 2 * b, 2 * b)
    angle = torch.tensor(2 * math.pi * shift / (2 * b))
    rot = rotation_z(angle).expand(3, 3, 3).float()
    rotated = project_planes(planes, grid, rot)[:, 0].reshape(3, 2 * b, 2 * b)
    assert torch.allclose(rotated, torch.roll(base, shift, dims=2), atol=1e-4)


def test_y_flip_rotation_maps_grid_onto_itself() -> None:
    # Ry(pi): beta -> pi - beta, alpha -> pi - alpha, i.e. j -> 2B-1-j, k -> (B - k) mod 2B.
    b = 12
    planes = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    grid = make_grid("soft", b)
    base = project_planes(planes, grid)[:, 0].reshape(2, 2 * b, 2 * b)
    rot = rotation_y(torch.tensor(math.pi)).expand(2, 3, 3).float()
    rotated = project_planes(planes, grid, rot)[:, 0].reshape(2, 2 * b, 2 * b)
    k = (b - torch.arange(2 * b)) % (2 * b)
    expected = base.flip(1)[:, :, k]
    assert torch.allclose(rotated, expected, atol=1e-4)


def test_haar_rotated_projection_matches_rotated_analytic_image() -> None:
    # A smooth Gaussian blob: bilinear error is tiny, so the projected image with rotation R must
    # equal the analytic image evaluated at R^-1 x (the convention (R f)(x) = f(R^-1 x)).
    h = 56
    centre, sigma = 20.0, 5.0
    rows = torch.arange(h, dtype=torch.float64) + 0.5
    squared = (rows[:, None] - centre) ** 2 + (rows[None, :] - 30.0) ** 2
    blob = torch.exp(-squared / (2 * sigma**2))
    grid = make_grid("soft", 24)
    rotations = haar_rotations(4, generator=torch.Generator().manual_seed(5))
    out = project_planes(blob.expand(4, 1, h, h).clone(), grid, rotations)[:, 0]
    q = plane_coordinates(grid.points(torch.float64).unsqueeze(0) @ rotations)  # R^-1 x
    r_row, r_col = (q[..., 0] + 1.5) / 3 * h, (q[..., 1] + 1.5) / 3 * h
    analytic = torch.exp(-((r_row - centre) ** 2 + (r_col - 30.0) ** 2) / (2 * sigma**2))
    # Bilinear error bound per axis: h^2/8 * max|g''| = 1/(8 sigma^2) with h = 1 pixel.
    assert (out - analytic).abs().max() < 2 / (8 * sigma**2)
    assert out.max() > 0.5  # the blob is really there


def _centroid(values: torch.Tensor, bandwidth: int) -> torch.Tensor:
    grid = make_grid("soft", bandwidth)
    weights = torch.tensor(soft_quadrature_weights(bandwidth)).repeat_interleave(2 * bandwidth)
    points = grid.points(torch.float64)
    c = ((values.double() * weights)[..., None] * points).sum(-2)
    return c / c.norm(dim=-1, keepdim=True)


def test_digit_centre_at_south_pole_and_follows_rotation(data_root: Path) -> None:
    b = 30
    digits = load_planar_split("mnist", "test", data_root, None).images[:16]
    planes = digits[:, None].float()
    grid = make_grid("soft", b)
    cell = math.pi / (2 * b)
    base = project_planes(planes, grid)[:, 0]
    c0 = _centroid(base, b)
    south = torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64)
    angle_to_south = torch.arccos((c0 @ south).clamp(-1, 1))
    assert angle_to_south.max() < 3 * cell, angle_to_south
    rotations = haar_rotations(16, generator=torch.Generator().manual_seed(7))
    rotated = project_planes(planes, grid, rotations)[:, 0]
    c_r = _centroid(rotated, b)
    moved = torch.einsum("nij,nj->ni", rotations, c0)
    assert torch.arccos((c_r * moved).sum(-1).clamp(-1, 1)).max() < cell
    to_rotated_south = torch.arccos((c_r * (rotations @ south)).sum(-1).clamp(-1, 1))
    assert to_rotated_south.max() < 3 * cell


def test_minmax_uint8_per_image() -> None:
    values = torch.tensor([[0.0, 1.0, 2.0, 4.0], [3.0, 3.0, 3.0, 3.0], [-2.0, 0.0, 2.0, 2.0]])
    out = minmax_uint8(values)
    assert out.dtype == torch.uint8
    assert out.tolist() == [[0, 63, 127, 255], [0, 0, 0, 0], [0, 127, 255, 255]]


def test_bad_interpolation_and_rotation_shapes() -> None:
    grid = make_grid("soft", 4)
    with pytest.raises(ValueError, match="data.interpolation"):
        project_planes(torch.zeros(1, 1, 28, 28), grid, interpolation="cubic")
    with pytest.raises(ValueError, match="rotations"):
        project_planes(torch.zeros(2, 1, 28, 28), grid, torch.eye(3)[None])
    euler = euler_zyz_to_matrix(torch.tensor(0.1), torch.tensor(0.2), torch.tensor(0.3))
    assert euler.shape == (3, 3)

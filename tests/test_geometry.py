"""Grids, quadrature and rotations: exact properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sphere_bench.harmonic.grids import (
    make_grid,
    paper_betas,
    soft_alphas,
    soft_betas,
    soft_quadrature_weights,
)
from sphere_bench.harmonic.rotations import (
    euler_zyz_to_matrix,
    haar_rotations,
    matrix_to_euler_zyz,
    rotation_y,
    rotation_z,
)


@pytest.mark.parametrize("bandwidth", [2, 3, 8, 30, 50])
def test_quadrature_integrates_polynomials_in_cos_beta_exactly(bandwidth: int) -> None:
    w = soft_quadrature_weights(bandwidth)
    x = np.cos(soft_betas(bandwidth))
    for degree in range(2 * bandwidth):
        exact = (1 - (-1) ** (degree + 1)) / (degree + 1)  # ∫_{-1}^{1} x^d dx
        assert abs((w * x**degree).sum() - exact) < 1e-12, degree
    assert abs(w.sum() - 2.0) < 1e-13


def test_quadrature_integrates_spherical_area() -> None:
    b = 16
    w = soft_quadrature_weights(b)
    beta, alpha = np.meshgrid(soft_betas(b), soft_alphas(b), indexing="ij")
    area = (np.pi / b) * (w[:, None] * np.ones_like(beta)).sum()
    assert abs(area - 4 * np.pi) < 1e-12
    # ∫ z² dΩ = 4π/3
    assert abs((np.pi / b) * (w[:, None] * np.cos(beta) ** 2).sum() - 4 * np.pi / 3) < 1e-12
    # ∫ x dΩ = 0 (alpha sum of cos vanishes exactly)
    assert abs((np.pi / b) * (w[:, None] * np.sin(beta) * np.cos(alpha)).sum()) < 1e-12


def test_grid_shapes_and_points() -> None:
    soft = make_grid("soft", 5)
    assert soft.shape == (10, 10)
    pts = soft.points_numpy()
    assert pts.shape == (100, 3)
    np.testing.assert_allclose(np.linalg.norm(pts, axis=1), 1.0, atol=1e-12)
    # Row-major [beta, alpha]: the first 10 points share beta_0.
    np.testing.assert_allclose(pts[:10, 2], np.cos(np.pi / 20))
    beta, alpha = soft.angles_numpy()
    np.testing.assert_allclose(beta.reshape(10, 10)[:, 0], soft_betas(5), atol=1e-12)
    np.testing.assert_allclose(alpha.reshape(10, 10)[0], soft_alphas(5), atol=1e-12)
    # The paper grid includes the north pole and sits half a pixel off the SOFT grid.
    assert paper_betas(5)[0] == 0.0
    np.testing.assert_allclose(soft_betas(5) - paper_betas(5), np.pi / 20)
    hp = make_grid("healpix", 4)
    assert hp.shape == (192,) and hp.points().shape == (192, 3)


@pytest.mark.parametrize(
    ("name", "resolution", "key"),
    [("soft", 1, "bandwidth"), ("paper", 0, "bandwidth"), ("soft", 2.5, "bandwidth"),
     ("healpix", 3, "nside"), ("cube", 8, "data.grid")],
)  # fmt: skip
def test_bad_grid_arguments_name_the_key(name: str, resolution: object, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        make_grid(name, resolution)  # type: ignore[arg-type]


def test_haar_rotations_are_rotations_and_seeded() -> None:
    r = haar_rotations(2000, generator=torch.Generator().manual_seed(1))
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(r @ r.transpose(1, 2), eye.expand_as(r), atol=1e-12)
    assert torch.allclose(torch.linalg.det(r), torch.ones(2000, dtype=torch.float64), atol=1e-12)
    again = haar_rotations(2000, generator=torch.Generator().manual_seed(1))
    other = haar_rotations(2000, generator=torch.Generator().manual_seed(2))
    assert torch.equal(r, again) and not torch.allclose(r, other)


def test_haar_rotations_moments() -> None:
    # For the Haar measure on SO(3): E[R] = 0, E[tr R] = 0, E[(tr R)^2] = 1, and R e_z is uniform.
    r = haar_rotations(40_000, generator=torch.Generator().manual_seed(0))
    trace = r.diagonal(dim1=1, dim2=2).sum(-1)
    assert r.mean(0).abs().max() < 0.02
    assert abs(trace.mean()) < 0.03 and abs((trace**2).mean() - 1) < 0.05
    z = r[:, 2, 2]  # cos of the angle between R e_z and e_z: uniform on [-1, 1]
    hist = torch.histc(z, bins=10, min=-1, max=1) / len(z)
    assert (hist - 0.1).abs().max() < 0.01


def test_euler_round_trip_including_gimbal_lock() -> None:
    gen = torch.Generator().manual_seed(3)
    alpha = torch.rand(500, generator=gen, dtype=torch.float64) * 2 * math.pi
    beta = torch.rand(500, generator=gen, dtype=torch.float64) * math.pi
    gamma = torch.rand(500, generator=gen, dtype=torch.float64) * 2 * math.pi
    beta[:3] = torch.tensor([0.0, math.pi, math.pi / 2], dtype=torch.float64)
    matrix = euler_zyz_to_matrix(alpha, beta, gamma)
    back = euler_zyz_to_matrix(*matrix_to_euler_zyz(matrix))
    assert torch.allclose(matrix, back, atol=1e-9)
    a, b, g = matrix_to_euler_zyz(matrix[3:])
    assert torch.allclose(b, beta[3:], atol=1e-9)
    # Composition convention: R = Rz(a) Ry(b) Rz(g); R e_z has colatitude b and longitude a.
    one = euler_zyz_to_matrix(torch.tensor(0.3), torch.tensor(1.1), torch.tensor(2.0))
    expected = rotation_z(torch.tensor(0.3)) @ rotation_y(torch.tensor(1.1))
    expected = expected @ rotation_z(torch.tensor(2.0))
    assert torch.allclose(one, expected)
    ez = one @ torch.tensor([0.0, 0.0, 1.0])
    s, c = math.sin(1.1), math.cos(1.1)
    assert torch.allclose(ez, torch.tensor([s * math.cos(0.3), s * math.sin(0.3), c]), atol=1e-6)

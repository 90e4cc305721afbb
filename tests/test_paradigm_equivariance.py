"""The cross-grid equivariance error: analyses, spectral rotation, half-turns, floors.

* Every grid's analysis (SOFT quadrature, torch-harmonics RealSHT, healpy map2alm) gives the same
  coefficients of a band-limited function, and rotating them (healpy ``rotate_alm``) matches the
  analysis of the rotated function: exact (1e-12) on SOFT / equiangular / Legendre–Gauss, to the
  iterated map2alm's accuracy on HEALPix.
* The identity scores 0 on band-limited inputs, a non-equivariant model does not.
* The grid half-turns: the HEALPix graph CNN commutes with all three; the DISCO CNN (anisotropic
  filters) only with ``Rz(π)``.
"""

from __future__ import annotations

import pytest
import torch

from sphere_bench.evaluate.equivariance import (
    _spectral_relative,
    grid_equivariance_errors,
    grid_half_turns,
    rotate_coefficients,
    spherical_coefficients,
)
from sphere_bench.harmonic.grids import make_grid
from sphere_bench.harmonic.rotations import haar_rotations

GRIDS = [("soft", 8), ("legendre-gauss", 12), ("equiangular", 17), ("healpix", 8),
         ("healpix_nested", 8)]  # fmt: skip
E1 = torch.tensor([0.3, -0.5, 0.8], dtype=torch.float64)
E2 = torch.tensor([0.9, 0.1, -0.2], dtype=torch.float64)


def _field(points: torch.Tensor) -> torch.Tensor:
    """A band-limited (degree ≤ 3) test function of unit vectors ``[..., 3]``."""
    return (points @ E1) ** 2 * (points @ E2) + points @ E2 + 0.5 * (points @ E1)


def _rendered(grid, rotations: torch.Tensor | None) -> torch.Tensor:
    """``[b, 1, *grid]`` samples of ``f(R⁻¹ x)`` (``None``: one unrotated copy)."""
    points = torch.from_numpy(grid.points_numpy())
    if rotations is None:
        return _field(points).reshape(1, 1, *grid.shape)
    rotated = torch.einsum("pi,bij->bpj", points, rotations.to(torch.float64))  # R^T x
    return _field(rotated).reshape(len(rotations), 1, *grid.shape)


@pytest.mark.parametrize(("name", "resolution"), GRIDS)
def test_analyses_agree_and_spectral_rotation_is_exact(name: str, resolution: int) -> None:
    grid = make_grid(name, resolution)
    reference = spherical_coefficients(_rendered(make_grid("soft", 8), None)[0, 0], make_grid(
        "soft", 8), 6)  # fmt: skip
    coeffs = spherical_coefficients(_rendered(grid, None)[0, 0], grid, 6)
    tol = 1e-12 if "healpix" not in name else 1e-6
    assert _spectral_relative(coeffs, reference) < tol
    rotations = haar_rotations(3, generator=torch.Generator().manual_seed(1)).double()
    expected = rotate_coefficients(coeffs.expand(3, 6, 6).clone(), rotations)
    measured = spherical_coefficients(_rendered(grid, rotations)[:, 0], grid, 6)
    assert _spectral_relative(measured, expected) < tol
    # the inverse rotation is wrong: the check can fail
    wrong = rotate_coefficients(coeffs.expand(3, 6, 6).clone(), rotations.transpose(1, 2))
    assert _spectral_relative(measured, wrong) > 0.1


def test_identity_scores_zero_and_a_non_equivariant_model_does_not() -> None:
    grid = make_grid("legendre-gauss", 12)
    inputs = _rendered(grid, torch.eye(3).expand(2, 3, 3)).float()

    def rerender(rotations: torch.Tensor) -> torch.Tensor:
        return _rendered(grid, rotations).float()

    gen = torch.Generator().manual_seed(0)
    identity = grid_equivariance_errors(
        torch.nn.Identity(), inputs, "segmentation", grid, rerender, 2, gen, lmax=6
    )
    assert identity["spectral_rel_error"] < 1e-6 and identity["spectral_floor"] < 1e-6
    assert identity["grid_rel_error"] == 0.0 and identity["spectral_lmax"] == 6

    class Masked(torch.nn.Module):  # multiplies by a fixed field: not equivariant
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            lat = torch.linspace(0, 1, x.shape[-2])[:, None]
            return x * (1 + lat)

    masked = grid_equivariance_errors(Masked(), inputs, "segmentation", grid, rerender, 2, gen, 6)
    assert masked["spectral_rel_error"] > 0.05 and masked["grid_rel_error"] > 0.05


def test_half_turns_healpix_graph_all_disco_only_about_z() -> None:
    from sphere_bench.models.disco_cnn import DiscoSegmenter
    from sphere_bench.models.healpix_gcnn import HealpixGCNNSegmenter

    torch.manual_seed(0)
    for name, res in GRIDS:
        turns = grid_half_turns(make_grid(name, res))
        assert [n for n, _ in turns] == ["rz_pi", "ry_pi", "rz_ry_pi"], name
    grid = make_grid("healpix_nested", 8)
    x = torch.randn(2, 1, *grid.shape)
    graph = grid_equivariance_errors(HealpixGCNNSegmenter(8, (4, 6, 8), 3), x, "segmentation", grid)
    assert graph["grid_rel_error"] < 1e-5
    grid = make_grid("legendre-gauss", 16)
    disco = DiscoSegmenter("legendre-gauss", 16, (4, 6, 8)).eval()
    x = torch.randn(2, 1, *grid.shape)
    (_, rz), (_, ry), _ = grid_half_turns(grid)
    with torch.no_grad():
        out = disco(x).flatten(2)
        moved = torch.empty_like(x.flatten(2))
        moved[..., rz] = x.flatten(2)
        expected = torch.empty_like(out)
        expected[..., rz] = out
        torch.testing.assert_close(disco(moved.reshape(x.shape)).flatten(2), expected, atol=1e-5,
                                   rtol=1e-5)  # fmt: skip
    errors = grid_equivariance_errors(disco, x, "segmentation", grid)
    assert errors["grid_rel_error"] > 0.01  # Ry(π) turns the anisotropic filters around

"""Sampling grids on the sphere S² and the rotation group SO(3).

Conventions (used everywhere in sphere_bench):

* A point on S² has colatitude ``beta`` in [0, π] (0 = north pole) and longitude ``alpha`` in
  [0, 2π); its Cartesian coordinates are ``x = sin β cos α, y = sin β sin α, z = cos β``.
* **SOFT grid** of bandwidth ``B`` (Kostelec & Rockmore, "FFTs on the rotation group", 2008; the
  grid of s2cnn): ``beta_j = π(2j+1)/(4B)`` and ``alpha_k = πk/B`` for ``j, k = 0 … 2B−1``.
  S² signals are arrays ``[..., beta, alpha]`` of shape ``[..., 2B, 2B]``; SO(3) signals are
  ``[..., beta, alpha, gamma]`` of shape ``[..., 2B, 2B, 2B]`` with ``gamma_k = alpha_k``.
  The grid contains neither pole.
* **Paper grid** (``grid="paper"``): the Driscoll–Healy grid of lie_learn that the paper sampled
  its data on, ``beta_j = πj/(2B)`` (north pole included), same ``alpha``. Its data sit half a
  pixel off the SOFT grid the network assumes; it is offered only to reproduce that quirk. Its
  ``β = 0`` row is the north pole itself, which the paper's projection maps onto the image
  centre (see :mod:`sphere_bench.data.projection`, "North-pole artefact").
* **HEALPix** (``grid="healpix"``, via healpy, RING ordering): ``12·nside²`` pixel centres; signals
  are ``[..., npix]``. ``grid="healpix_nested"`` is the same points in NESTED order (healpy
  ``pix2vec(nest=True)``), the order of the HEALPix graph CNNs: a map ``m_ring`` on ``healpix``
  and ``m_nest`` on ``healpix_nested`` hold the same values, ``m_nest[p] = m_ring[nest2ring(p)]``.
* **torch-harmonics quadrature grids** (the DISCO CNNs' grids, resolution ``nlat``): signals
  ``[..., nlat, nlon]`` indexed ``[theta, phi]`` from the north pole south, ``phi_k = 2πk/nlon``.
  ``grid="equiangular"``: Clenshaw–Curtis colatitudes ``theta_j = πj/(nlat−1)`` (poles included),
  ``nlon = 2(nlat−1)``; ``grid="legendre-gauss"``: Gauss–Legendre nodes in ``cos θ`` (no poles),
  ``nlon = 2·nlat``. Colatitudes come from ``torch_harmonics.quadrature.precompute_latitudes``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

GRID_NAMES = ("soft", "paper", "healpix", "healpix_nested", "equiangular", "legendre-gauss")
TORCH_HARMONICS_GRIDS = ("equiangular", "legendre-gauss")
HEALPIX_GRIDS = ("healpix", "healpix_nested")
#: The config key (``data.<key>``, ``model.<key>``) that sets the resolution of each grid.
RESOLUTION_KEY: dict[str, str] = {
    "soft": "bandwidth", "paper": "bandwidth", "healpix": "nside", "healpix_nested": "nside",
    "equiangular": "nlat", "legendre-gauss": "nlat",
}  # fmt: skip


def torch_harmonics_shape(grid: str, nlat: int) -> tuple[int, int]:
    """``(nlat, nlon)`` of a torch-harmonics grid: ``nlon = 2(nlat−1)`` (equiangular), ``2·nlat``
    (LG).

    Raises ``ValueError`` for an unknown grid or ``nlat`` below 3 (equiangular) / 2 (LG).
    """
    if grid not in TORCH_HARMONICS_GRIDS:
        raise ValueError(f"grid must be one of {list(TORCH_HARMONICS_GRIDS)}, got {grid!r}")
    minimum = 3 if grid == "equiangular" else 2
    if isinstance(nlat, bool) or not isinstance(nlat, int | np.integer) or nlat < minimum:
        raise ValueError(f"nlat must be an integer >= {minimum} on the {grid} grid, got {nlat!r}")
    return (int(nlat), 2 * (int(nlat) - 1) if grid == "equiangular" else 2 * int(nlat))


def torch_harmonics_levels(grid: str, nlat: int, n_levels: int) -> list[int]:
    """``nlat`` of ``n_levels`` grids, each half the resolution of the one before.

    Equiangular: ``nlat → (nlat−1)/2 + 1`` (every other colatitude, poles kept); Legendre–Gauss:
    ``nlat → nlat/2``. ``nlon`` halves with it (:func:`torch_harmonics_shape`).

    Raises:
        ValueError: if a level cannot be halved exactly; names the smallest ``nlat`` that works.
    """
    torch_harmonics_shape(grid, nlat)
    levels = [int(nlat)]
    for _ in range(n_levels - 1):
        n = levels[-1]
        ok = (n - 1) % 2 == 0 and n >= 5 if grid == "equiangular" else n % 2 == 0 and n >= 4
        if not ok:
            good = 2 ** (n_levels - 1) + 1 if grid == "equiangular" else 2**n_levels
            raise ValueError(
                f"nlat={nlat} on the {grid} grid cannot be halved {n_levels - 1} times "
                f"(level nlat={n}); use e.g. nlat={good} × a power of two"
                + (" (minus the pole row: 2^k·m + 1)" if grid == "equiangular" else "")
            )
        levels.append((n - 1) // 2 + 1 if grid == "equiangular" else n // 2)
    return levels


def grid_resolution(name: str, bandwidth: int, nside: int, nlat: int) -> int:
    """The resolution key of grid ``name``: ``nside`` (HEALPix), ``nlat`` (torch-harmonics), else
    B."""
    if name in HEALPIX_GRIDS:
        return nside
    return nlat if name in TORCH_HARMONICS_GRIDS else bandwidth


def torch_harmonics_colatitudes(grid: str, nlat: int) -> np.ndarray:
    """Colatitudes (float64, north to south) of a torch-harmonics grid, from torch-harmonics."""
    from torch_harmonics.quadrature import precompute_latitudes

    torch_harmonics_shape(grid, nlat)
    return precompute_latitudes(int(nlat), grid=grid)[0].numpy().astype(np.float64)


def soft_betas(bandwidth: int) -> np.ndarray:
    """Colatitudes ``beta_j = π(2j+1)/(4B)``, ``j = 0 … 2B−1`` of the SOFT grid (float64)."""
    check_bandwidth(bandwidth)
    return np.pi * (2 * np.arange(2 * bandwidth) + 1) / (4 * bandwidth)


def paper_betas(bandwidth: int) -> np.ndarray:
    """Colatitudes ``beta_j = πj/(2B)`` of lie_learn's Driscoll–Healy grid used by the paper."""
    check_bandwidth(bandwidth)
    return np.pi * np.arange(2 * bandwidth) / (2 * bandwidth)


def soft_alphas(bandwidth: int) -> np.ndarray:
    """Longitudes (and SO(3) ``gamma`` angles) ``alpha_k = πk/B``, ``k = 0 … 2B−1`` (float64)."""
    check_bandwidth(bandwidth)
    return np.pi * np.arange(2 * bandwidth) / bandwidth


def soft_quadrature_weights(bandwidth: int) -> np.ndarray:
    """Quadrature weights ``w_j`` in ``beta`` of the SOFT grid, float64, shape ``[2B]``.

    ``Σ_j w_j f(beta_j) = ∫_0^π f(β) sin β dβ`` exactly for every ``f(β) = g(cos β)`` with ``g`` a
    polynomial of degree < 2B, in particular for products ``d^l_{mn}(β) d^{l'}_{mn}(β)`` with
    ``l, l' < B`` (Driscoll & Healy 1994; Kostelec & Rockmore 2008, eq. 2.13):

        w_j = (2/B) · sin(β_j) · Σ_{k=0}^{B−1} sin((2k+1) β_j) / (2k+1).

    The weights sum to 2 (= ∫ sin β dβ). An integral over S² on the grid is therefore
    ``(π/B) Σ_{j,k} w_j f(beta_j, alpha_k)``; over SO(3) it is ``(π/B)² Σ w_j f(beta_j, alpha_k,
    gamma_l)`` (the Haar measure with total volume 8π²).
    """
    betas = soft_betas(bandwidth)
    k = np.arange(bandwidth)[:, None]
    series = (np.sin((2 * k + 1) * betas[None, :]) / (2 * k + 1)).sum(axis=0)
    return (2.0 / bandwidth) * np.sin(betas) * series


def check_bandwidth(bandwidth: int) -> None:
    """Raise ``ValueError`` unless ``bandwidth`` is an integer ≥ 2."""
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, int | np.integer):
        raise ValueError(f"bandwidth must be an integer >= 2, got {bandwidth!r}")
    if bandwidth < 2:
        raise ValueError(f"bandwidth must be an integer >= 2, got {bandwidth}")


def angles_to_xyz(beta: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Unit vectors ``(sin β cos α, sin β sin α, cos β)`` stacked on a trailing axis of size 3."""
    return np.stack(
        [np.sin(beta) * np.cos(alpha), np.sin(beta) * np.sin(alpha), np.cos(beta)], axis=-1
    )


@dataclass(frozen=True)
class SphereGrid:
    """A set of sample points on S² and the array shape signals on it take.

    Attributes:
        name: ``"soft"``, ``"paper"`` or ``"healpix"``.
        resolution: bandwidth ``B`` (soft, paper) or ``nside`` (healpix).
        shape: spatial shape of a signal: ``(2B, 2B)`` as ``[beta, alpha]``, or ``(12·nside²,)``.
    """

    name: str
    resolution: int
    shape: tuple[int, ...]

    @property
    def num_points(self) -> int:
        return math.prod(self.shape)

    def points(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Cartesian sample points, shape ``[num_points, 3]``, flattened in signal order."""
        return torch.from_numpy(self.points_numpy()).to(dtype)

    def points_numpy(self) -> np.ndarray:
        """Like :meth:`points`, as a float64 numpy array."""
        if self.name in HEALPIX_GRIDS:
            import healpy

            nest = self.name == "healpix_nested"
            x, y, z = healpy.pix2vec(self.resolution, np.arange(self.num_points), nest=nest)
            return np.stack([x, y, z], axis=-1)
        betas, alphas = self.product_angles()
        beta, alpha = np.meshgrid(betas, alphas, indexing="ij")
        return angles_to_xyz(beta, alpha).reshape(-1, 3)

    def product_angles(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(betas, alphas)`` of a product grid (soft, paper, torch-harmonics); ``None`` for
        healpix."""
        if self.name in HEALPIX_GRIDS:
            return None
        if self.name in TORCH_HARMONICS_GRIDS:
            nlat, nlon = self.shape
            return torch_harmonics_colatitudes(self.name, nlat), 2 * np.pi * np.arange(nlon) / nlon
        b = self.resolution
        return (soft_betas(b) if self.name == "soft" else paper_betas(b)), soft_alphas(b)

    def angles_numpy(self) -> tuple[np.ndarray, np.ndarray]:
        """Colatitude and longitude of every point (float64, flattened in signal order)."""
        xyz = self.points_numpy()
        beta = np.arccos(np.clip(xyz[:, 2], -1.0, 1.0))
        alpha = np.mod(np.arctan2(xyz[:, 1], xyz[:, 0]), 2 * np.pi)
        return beta, alpha


def make_grid(name: str, resolution: int) -> SphereGrid:
    """Build a :class:`SphereGrid`.

    Args:
        name: one of ``soft`` (the network grid), ``paper`` (lie_learn's Driscoll–Healy grid, half
            a pixel off in beta), ``healpix`` (RING), ``healpix_nested``, ``equiangular`` or
            ``legendre-gauss`` (torch-harmonics grids).
        resolution: bandwidth ``B ≥ 2`` for soft/paper; ``nside`` (a power of two) for healpix;
            ``nlat`` for the torch-harmonics grids.
    """
    if name in TORCH_HARMONICS_GRIDS:
        return SphereGrid(name, int(resolution), torch_harmonics_shape(name, resolution))
    if name in ("soft", "paper"):
        check_bandwidth(resolution)
        return SphereGrid(name, int(resolution), (2 * int(resolution), 2 * int(resolution)))
    if name in HEALPIX_GRIDS:
        nside = int(resolution)
        if nside < 1 or nside & (nside - 1):
            raise ValueError(
                f"healpix nside must be a power of two >= 1, got {resolution!r} "
                "(set data.nside, e.g. 16 or 32)"
            )
        return SphereGrid(name, nside, (12 * nside * nside,))
    raise ValueError(
        f"unknown grid {name!r}; allowed values for data.grid: {', '.join(GRID_NAMES)}"
    )

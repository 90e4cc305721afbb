"""How far a model is from rotation equivariance (segmentation) or invariance (classification).

For inputs ``x`` (spherical images on the SOFT grid, ``[b, 1, 2B, 2B]``) and rotations ``R``:

* **Grid rotations**: the three half-turns ``Rz(π)``, ``Ry(π)`` and ``Rz(π) Ry(π)`` map the SOFT
  grid of *every* bandwidth onto itself (on S² and on SO(3)), so ``R x`` is exact for any signal
  (:func:`sphere_bench.harmonic.signal_rotation.rotate_s2_grid`) and an S2CNN, whose hidden layers
  live on grids of other bandwidths, must be equivariant to them to float precision. (A shift
  by ``π s/B`` with ``s ≠ B`` would not be a grid rotation of the hidden layers.) Segmentation
  error: ``‖f(R x) − R f(x)‖ / ‖f(x)‖`` on the output logits; classification:
  ``‖f(R x) − f(x)‖ / ‖f(x)‖``.
* **Haar rotations**: ``R x`` comes from re-projecting the planar items with the composed rotation
  (:func:`sphere_bench.data.spherical_dataset.render_samples`), so the input is an exact sample
  of the rotated image, not a resampled one. Segmentation outputs are compared after projecting
  both onto band limit ``B`` (``P_B``), where rotation is exact in the spectral domain:
  ``‖P_B f(R x) − R P_B f(x)‖ / ‖P_B f(x)‖``
  (:func:`sphere_bench.harmonic.signal_rotation.rotate_s2`).

Also reported: the fraction of changed predictions (argmax per sample, or per pixel after the same
band-limiting). An exactly equivariant model scores 0 on grid rotations up to float rounding; the
S2CNN is only approximately equivariant under Haar rotations because of its grid nonlinearities
(docs/paper_protocol.md §8), and a CNN is far from both.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from sphere_bench.harmonic.s2_fft import s2_fft, s2_ifft
from sphere_bench.harmonic.signal_rotation import rotate_s2, rotate_s2_grid
from sphere_bench.schema import SEGMENTATION, check_task

Rerender = Callable[[torch.Tensor], torch.Tensor]


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _band_limit(y: torch.Tensor) -> torch.Tensor:
    """``P_B``: the projection of ``[..., 2B, 2B]`` grid signals onto degrees ``l < B``."""
    return s2_ifft(s2_fft(y))


@torch.no_grad()
def equivariance_errors(
    model: nn.Module,
    inputs: torch.Tensor,
    task: str,
    rerender: Rerender | None = None,
    n_haar: int = 2,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Equivariance (segmentation) or invariance (classification) errors of ``model``.

    Args:
        model: maps ``[b, 1, 2B, 2B]`` to logits ``[b, C]`` or ``[b, C, 2B, 2B]``.
        inputs: ``[b, 1, 2B, 2B]`` float inputs on the SOFT grid (the model's device).
        task: ``classification`` or ``segmentation``.
        rerender: maps extra rotations ``[b, 3, 3]`` to exactly rotated inputs ``[b, 1, 2B, 2B]``
            (see the module docstring); ``None`` skips the Haar-rotation errors.
        n_haar: number of Haar rotation draws (one rotation per sample each).
        generator: seeds the Haar rotations.

    Returns:
        ``grid_rel_error``, ``grid_changed_fraction`` and, with ``rerender``, ``haar_rel_error``,
        ``haar_changed_fraction`` (means over the draws).
    """
    from sphere_bench.harmonic.rotations import haar_rotations

    check_task(task)
    was_training = model.training
    model.eval()
    two_b = inputs.shape[-1]
    segmentation = task == SEGMENTATION
    reference = model(inputs)
    out: dict[str, list[float]] = {"grid_rel_error": [], "grid_changed_fraction": []}
    for shift, flip in ((two_b // 2, False), (0, True), (two_b // 2, True)):
        rotated = model(rotate_s2_grid(inputs, shift, flip))
        expected = rotate_s2_grid(reference, shift, flip) if segmentation else reference
        out["grid_rel_error"].append(_relative(rotated, expected))
        out["grid_changed_fraction"].append(
            float((rotated.argmax(1) != expected.argmax(1)).float().mean())
        )
    if rerender is not None:
        out["haar_rel_error"], out["haar_changed_fraction"] = [], []
        for _ in range(n_haar):
            rotations = haar_rotations(inputs.shape[0], generator=generator)
            rotated = model(rerender(rotations).to(inputs.device, inputs.dtype))
            if segmentation:  # rotate_s2 band-limits as it rotates: R P_B f(x)
                rotated = _band_limit(rotated)
                expected = rotate_s2(reference, rotations.to(inputs.device))
            else:
                expected = reference
            out["haar_rel_error"].append(_relative(rotated, expected))
            out["haar_changed_fraction"].append(
                float((rotated.argmax(1) != expected.argmax(1)).float().mean())
            )
    model.train(was_training)
    return {key: sum(values) / len(values) for key, values in out.items() if values}


# ------------------------------------------------------------------------------------------------
# every grid: spectral comparison and the grid's exact half-turns
# ------------------------------------------------------------------------------------------------
SPECTRAL_NOTE = {
    "soft": "exact quadrature (SOFT weights) for degrees < B",
    "equiangular": "torch-harmonics RealSHT (Clenshaw-Curtis), exact for degrees < (nlat+1)/2",
    "legendre-gauss": "torch-harmonics RealSHT (Gauss-Legendre), exact for degrees < nlat",
    "healpix": "healpy map2alm with 3 Jacobi iterations (HEALPix has no exact SHT)",
    "healpix_nested": "healpy map2alm (3 iterations) after the explicit NESTED->RING reorder",
}


def exact_degree_limit(grid) -> int | None:
    """Largest ``L`` for which the grid's analysis is exact on degrees ``< L`` (HEALPix: ``2·nside``
    by convention, where healpy's iterated ``map2alm`` is accurate; paper grid: ``None``)."""
    if grid.name == "soft":
        return grid.resolution
    if grid.name == "legendre-gauss":
        return grid.shape[0]
    if grid.name == "equiangular":
        return (grid.shape[0] + 1) // 2
    if grid.name in ("healpix", "healpix_nested"):
        return 2 * grid.resolution
    return None


def spherical_coefficients(y: torch.Tensor, grid, lmax: int) -> torch.Tensor:
    """Orthonormal complex SH coefficients ``a_lm`` (``l < lmax``, ``0 ≤ m ≤ l``) of real signals.

    Args:
        y: ``[..., *grid.shape]`` real signals.
        grid: a :class:`sphere_bench.harmonic.grids.SphereGrid` (soft, equiangular, legendre-gauss,
            healpix, healpix_nested).
        lmax: band limit ``L``.

    Returns:
        complex128 ``[..., L, L]`` indexed ``[l, m]`` (zero for ``m > l``), in the convention of
        healpy and torch-harmonics (orthonormal ``Y_lm`` with the Condon–Shortley phase; real
        signals, so ``a_{l,−m} = (−1)^m conj(a_lm)`` is implied). How each grid is analysed:
        :data:`SPECTRAL_NOTE`.

    Raises:
        ValueError: on the paper grid (no quadrature) or an unknown grid.
    """
    lead = y.shape[: y.dim() - len(grid.shape)]
    y = y.detach().to("cpu", torch.float64)
    if grid.name in ("healpix", "healpix_nested"):
        import healpy
        import numpy as np

        from sphere_bench.models.healpix_gcnn import nested_to_ring

        nside = grid.resolution
        maps = y.reshape(-1, grid.shape[0])
        if grid.name == "healpix_nested":
            maps = nested_to_ring(maps, nside)
        out = torch.zeros(maps.shape[0], lmax, lmax, dtype=torch.complex128)
        ls, ms = healpy.Alm.getlm(lmax - 1)
        for i, m in enumerate(maps.numpy()):
            alm = healpy.map2alm(np.ascontiguousarray(m), lmax=lmax - 1, iter=3)
            out[i, torch.from_numpy(ls), torch.from_numpy(ms)] = torch.from_numpy(alm)
        return out.reshape(*lead, lmax, lmax)
    if grid.name in ("equiangular", "legendre-gauss"):
        from torch_harmonics import RealSHT

        nlat, nlon = grid.shape
        sht = RealSHT(nlat, nlon, lmax=lmax, mmax=lmax, grid=grid.name).double()
        return sht(y)
    if grid.name == "soft":
        from torch_harmonics.legendre import legpoly

        from sphere_bench.harmonic.grids import soft_betas, soft_quadrature_weights

        b = grid.resolution
        cos_beta = torch.from_numpy(__import__("numpy").cos(soft_betas(b)))
        weights = torch.from_numpy(soft_quadrature_weights(b))  # sum 2: ∫ sin β dβ
        pct = legpoly(lmax, lmax, cos_beta, norm="ortho", csphase=True)  # [m, l, j]
        fourier = 2 * torch.pi * torch.fft.rfft(y, dim=-1, norm="forward")[..., :lmax]
        return torch.einsum("...jm,mlj,j->...lm", fourier, pct.to(torch.complex128), weights + 0j)
    raise ValueError(
        f"no spherical analysis for grid {grid.name!r}: use soft, equiangular, legendre-gauss or "
        "healpix(_nested) for the spectral equivariance error"
    )


def rotate_coefficients(coeffs: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Coefficients of ``(R f)(x) = f(R⁻¹ x)`` from those of ``f`` (healpy's ``rotate_alm``).

    Args:
        coeffs: ``[b, ..., L, L]`` from :func:`spherical_coefficients`.
        rotations: ``[b, 3, 3]``, one rotation per leading index.
    """
    import healpy
    import numpy as np

    from sphere_bench.harmonic.rotations import matrix_to_euler_zyz

    lmax = coeffs.shape[-1]
    ls, ms = (torch.from_numpy(a) for a in healpy.Alm.getlm(lmax - 1))
    out = torch.empty_like(coeffs)
    alpha, beta, gamma = matrix_to_euler_zyz(rotations.to(torch.float64))
    for i in range(coeffs.shape[0]):
        packed = coeffs[i][..., ls, ms].reshape(-1, len(ls)).numpy().copy()
        for row in packed:
            # healpy: psi about z, then theta about the fixed y, then phi about the fixed z, i.e.
            # the active R = Rz(phi) Ry(theta) Rz(psi) = Rz(α)Ry(β)Rz(γ) (checked in the tests).
            healpy.rotate_alm(row, float(gamma[i]), float(beta[i]), float(alpha[i]))
        rotated = torch.zeros_like(coeffs[i])
        rotated[..., ls, ms] = torch.from_numpy(np.asarray(packed)).reshape(
            *coeffs.shape[1:-2], len(ls)
        )
        out[i] = rotated
    return out


def _power(coeffs: torch.Tensor) -> torch.Tensor:
    """``‖P_L f‖²`` per leading index from the ``m ≥ 0`` half (``m > 0`` counted twice)."""
    weight = torch.full(coeffs.shape[-1:], 2.0, dtype=torch.float64)
    weight[0] = 1.0
    return ((coeffs.abs() ** 2) * weight).sum((-2, -1))


def _spectral_relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(_power(a - b).sum().sqrt() / _power(b).sum().sqrt().clamp_min(1e-30))


def grid_half_turns(grid) -> list[tuple[str, torch.Tensor]]:
    """The half-turns ``Rz(π)``, ``Ry(π)``, ``Rz(π)Ry(π)`` that permute the grid's points exactly.

    Returns ``(name, perm)`` pairs with ``perm[i]`` the point that grid point ``i`` moves to;
    rotations that are not exact symmetries of the grid (beyond 1e-9 rad) are left out.
    """
    import numpy as np

    points = grid.points_numpy()
    turns = {
        "rz_pi": np.diag([-1.0, -1.0, 1.0]),
        "ry_pi": np.diag([-1.0, 1.0, -1.0]),
        "rz_ry_pi": np.diag([1.0, -1.0, -1.0]),
    }
    out = []
    for name, matrix in turns.items():
        moved = points @ matrix.T
        if grid.name in ("healpix", "healpix_nested"):
            import healpy

            perm = healpy.vec2pix(grid.resolution, *moved.T, nest=grid.name == "healpix_nested")
        else:  # product grid [beta, alpha]: index arithmetic (pole rows have no unique alpha)
            nlat, nlon = grid.shape
            j, k = np.divmod(np.arange(nlat * nlon), nlon)
            if name != "rz_pi":
                j, k = nlat - 1 - j, (nlon // 2 - k) % nlon
            if name != "ry_pi":
                k = (k + nlon // 2) % nlon
            perm = j * nlon + k
        if np.abs(points[perm] - moved).max() < 1e-9 and len(set(perm.tolist())) == len(perm):
            out.append((name, torch.from_numpy(np.asarray(perm, dtype=np.int64))))
    return out


@torch.no_grad()
def grid_equivariance_errors(
    model: nn.Module,
    inputs: torch.Tensor,
    task: str,
    grid,
    rerender: Rerender | None = None,
    n_haar: int = 2,
    generator: torch.Generator | None = None,
    lmax: int | None = None,
) -> dict[str, float]:
    """Equivariance errors on any grid, comparable across grids (and so across paradigms).

    * ``grid_rel_error`` (and ``grid_changed_fraction``): the exact half-turns of
      :func:`grid_half_turns`, as in :func:`equivariance_errors`.
    * ``spectral_rel_error`` (segmentation): ``‖a(f(R x)) − D(R) a(f(x))‖ / ‖a(f(x))‖`` over the
      degrees ``l < L`` — the L² distance on the sphere between the band-limited output of the
      rotated input and the rotated band-limited output; ``a`` is the grid's own analysis
      (:func:`spherical_coefficients`) and ``R x`` re-rendered exactly from the planar items
      (the same Haar rotations for every grid, from ``generator``). Classification:
      ``haar_rel_error`` = ``‖f(Rx) − f(x)‖ / ‖f(x)‖`` and ``haar_changed_fraction``.
    * ``spectral_floor``: the same comparison applied to an exactly equivariant model, the
      identity on the inputs (segmentation) or their per-degree power spectrum (an exactly
      invariant feature, classification): what the sampling and analysis of the grid contribute
      for inputs like these. It is a reference, not a hard bound: a model whose output is smoother
      (more band-limited) than its input aliases less and can score below it.

    ``lmax``: the common band limit ``L`` (clamped to :func:`exact_degree_limit`; recorded as
    ``spectral_lmax``).
    """
    from sphere_bench.harmonic.rotations import haar_rotations

    check_task(task)
    was_training = model.training
    model.eval()
    segmentation = task == SEGMENTATION
    flat = inputs.shape[: inputs.dim() - len(grid.shape)]
    reference = model(inputs)
    out: dict[str, list[float]] = {"grid_rel_error": [], "grid_changed_fraction": []}

    def permute(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        moved = torch.empty_like(x.reshape(*shape[: x.dim() - len(grid.shape)], -1))
        moved[..., perm.to(x.device)] = x.reshape(moved.shape)
        return moved.reshape(shape)

    for _, perm in grid_half_turns(grid):
        rotated = model(permute(inputs, perm))
        expected = permute(reference, perm) if segmentation else reference
        out["grid_rel_error"].append(_relative(rotated, expected))
        out["grid_changed_fraction"].append(
            float((rotated.argmax(1) != expected.argmax(1)).float().mean())
        )
    limit = exact_degree_limit(grid)
    result: dict[str, float] = {}
    if rerender is not None and limit is not None:
        lmax = min(int(lmax or limit), limit)
        result["spectral_lmax"] = float(lmax)
        a_in = spherical_coefficients(inputs, grid, lmax)
        a_ref = spherical_coefficients(reference, grid, lmax) if segmentation else None
        key = "spectral_rel_error" if segmentation else "haar_rel_error"
        out[key], out["spectral_floor"] = [], []
        if not segmentation:
            out["haar_changed_fraction"] = []
        for _ in range(n_haar):
            rotations = haar_rotations(flat[0], generator=generator)
            x_rot = rerender(rotations).to(inputs.device, inputs.dtype)
            a_in_rot = spherical_coefficients(x_rot, grid, lmax)
            if segmentation:
                out[key].append(
                    _spectral_relative(
                        spherical_coefficients(model(x_rot), grid, lmax),
                        rotate_coefficients(a_ref, rotations),
                    )
                )
                out["spectral_floor"].append(
                    _spectral_relative(a_in_rot, rotate_coefficients(a_in, rotations))
                )
            else:
                rotated = model(x_rot)
                out[key].append(_relative(rotated, reference))
                out["haar_changed_fraction"].append(
                    float((rotated.argmax(1) != reference.argmax(1)).float().mean())
                )
                spectrum = _power_per_degree(a_in)
                out["spectral_floor"].append(_relative(_power_per_degree(a_in_rot), spectrum))
    model.train(was_training)
    result.update({key: sum(v) / len(v) for key, v in out.items() if v})
    return result


def _power_per_degree(coeffs: torch.Tensor) -> torch.Tensor:
    weight = torch.full(coeffs.shape[-1:], 2.0, dtype=torch.float64)
    weight[0] = 1.0
    return ((coeffs.abs() ** 2) * weight).sum(-1).sqrt()  # [..., L]

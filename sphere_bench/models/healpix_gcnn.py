"""HEALPix graph CNNs in the DeepSphere manner (Chebyshev filters of the pixel-graph Laplacian).

Reference: Perraudin, Defferrard, Kacprzak & Sgier, "DeepSphere: Efficient spherical
convolutional neural network with HEALPix sampling for cosmological applications", Astronomy and
Computing 27 (2019); Defferrard et al., "DeepSphere: a graph-based spherical CNN", ICLR 2020.
Chebyshev filters: Defferrard, Bresson & Vandergheynst, NeurIPS 2016, eq. (4)–(5).

Conventions
-----------
* **Ordering.** Every signal a model here takes or returns is in HEALPix **NESTED** order,
  ``[batch, channels, 12·nside²]`` (the data grid ``healpix_nested`` of
  :mod:`sphere_bench.harmonic.grids`). NESTED is what makes pooling a reshape: the four children of
  pixel ``p`` at ``nside`` are pixels ``4p … 4p+3`` at ``2·nside``. A RING-ordered map is
  converted explicitly with :func:`ring_to_nested` (``x_nest = x_ring[..., nest2ring]``, healpy's
  ``nest2ring`` table) and back with :func:`nested_to_ring`.
* **Graph** (built from healpy, :func:`healpix_graph`): nodes are the pixel centres
  (``healpy.pix2vec(nest=True)``), edges join each pixel to its 7 or 8 neighbours
  (``healpy.get_all_neighbours(nest=True)``; ``-1`` entries are missing neighbours), weighted by a
  Gaussian kernel of the Euclidean distance, ``w_ij = exp(−‖x_i − x_j‖² / ρ²)`` with ``ρ`` the mean
  neighbour distance (DeepSphere's kernel with its width set from the grid).
* **Laplacian.** The symmetric normalised Laplacian ``L = I − D^{−1/2} W D^{−1/2}`` has its
  spectrum in ``[0, 2]``; the Chebyshev recursion runs on ``L̃ = L − I = −D^{−1/2} W D^{−1/2}``
  (the rescaling ``2L/λ_max − I`` with the bound ``λ_max = 2``), applied as a gather over the
  neighbour table (no sparse matrices): ``(L̃x)_i = −Σ_j c_ij x_j``, ``c_ij = w_ij/√(d_i d_j)``.
* **Symmetries.** The graph depends only on pixel geometry, so any rotation that permutes the
  HEALPix pixels (e.g. ``Rz(π/2)`` about the polar axis) commutes with every layer up to float
  rounding; pooling along the NESTED hierarchy commutes with them too (the symmetry maps parents
  to parents). Arbitrary rotations are only approximately respected (isotropic filters on an
  irregular graph).

healpy is imported lazily (inside :func:`healpix_graph` and the ordering helpers), so importing
this module stays light.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "ChebConv",
    "HealpixGCNNClassifier",
    "HealpixGCNNSegmenter",
    "apply_laplacian",
    "laplacian_matrix",
    "healpix_graph",
    "nested_to_ring",
    "ring_to_nested",
]


def _check_nside(nside: Any) -> int:
    if isinstance(nside, bool) or not isinstance(nside, int | np.integer):
        raise ValueError(f"nside must be a power of two >= 1, got {nside!r}")
    if nside < 1 or nside & (nside - 1):
        raise ValueError(f"nside must be a power of two >= 1, got {nside!r} (e.g. 8 or 16)")
    return int(nside)


def _check_map(x: torch.Tensor, nside: int) -> None:
    npix = 12 * _check_nside(nside) ** 2
    if x.shape[-1] != npix:
        raise ValueError(f"expected [..., {npix}] for nside={nside}, got {tuple(x.shape)}")


@lru_cache(maxsize=16)
def _ordering_tables(nside: int) -> tuple[torch.Tensor, torch.Tensor]:
    import healpy

    npix = 12 * nside * nside
    n2r = torch.from_numpy(np.asarray(healpy.nest2ring(nside, np.arange(npix)), dtype=np.int64))
    r2n = torch.from_numpy(np.asarray(healpy.ring2nest(nside, np.arange(npix)), dtype=np.int64))
    return n2r, r2n


def ring_to_nested(x: torch.Tensor, nside: int) -> torch.Tensor:
    """RING ``[..., 12·nside²]`` → NESTED: ``x_nest[..., p] = x_ring[..., nest2ring(p)]``."""
    _check_map(x, nside)
    return x.index_select(-1, _ordering_tables(nside)[0].to(x.device))


def nested_to_ring(x: torch.Tensor, nside: int) -> torch.Tensor:
    """NESTED ``[..., 12·nside²]`` → RING: ``x_ring[..., p] = x_nest[..., ring2nest(p)]``."""
    _check_map(x, nside)
    return x.index_select(-1, _ordering_tables(nside)[1].to(x.device))


@lru_cache(maxsize=16)
def healpix_graph(nside: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Neighbour table and coefficients of ``L̃`` for the NESTED HEALPix graph (cached).

    Returns:
        ``neighbours [npix, 8]`` (int64; a missing neighbour points at the pixel itself with
        coefficient 0) and ``coefficients [npix, 8]`` (float64, ``c_ij = w_ij / √(d_i d_j)``), so
        that ``(L̃x)_i = −Σ_k coefficients[i, k] · x[neighbours[i, k]]``.

    Raises:
        ValueError: if ``nside`` is not a power of two.
    """
    import healpy

    nside = _check_nside(nside)
    npix = 12 * nside**2
    pix = np.arange(npix)
    xyz = np.stack(healpy.pix2vec(nside, pix, nest=True), axis=-1)  # [npix, 3]
    nbr = np.asarray(healpy.get_all_neighbours(nside, pix, nest=True)).T  # [npix, 8]
    missing = nbr < 0
    nbr = np.where(missing, pix[:, None], nbr)
    dist2 = ((xyz[:, None, :] - xyz[nbr]) ** 2).sum(-1)
    rho2 = np.sqrt(dist2[~missing]).mean() ** 2
    weight = np.where(missing, 0.0, np.exp(-dist2 / rho2))
    degree = weight.sum(1)
    coef = weight / np.sqrt(degree[:, None] * degree[nbr])
    return torch.from_numpy(nbr.astype(np.int64)), torch.from_numpy(coef)


def laplacian_matrix(nside: int) -> torch.Tensor:
    """``L̃`` of :func:`healpix_graph` as a sparse CSR float32 matrix ``[npix, npix]`` (NESTED)."""
    nbr, coef = healpix_graph(nside)
    npix = nbr.shape[0]
    rows = torch.arange(npix).repeat_interleave(nbr.shape[1])
    coo = torch.sparse_coo_tensor(
        torch.stack([rows, nbr.reshape(-1)]),
        -coef.reshape(-1).float(),
        (npix, npix),
        check_invariants=True,
    ).coalesce()  # merges nothing (neighbours are distinct); drops no entry
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return coo.to_sparse_csr()


def apply_laplacian(x: torch.Tensor, laplacian: torch.Tensor) -> torch.Tensor:
    """``L̃ x`` for pixel-major ``x [npix, ...]`` (NESTED), ``L̃`` CSR (:func:`laplacian_matrix`).

    Pixel-major signals (``[npix, batch, channels]``, the layout inside the models) make this one
    sparse × dense product with no transposes.
    """
    return torch.sparse.mm(laplacian, x.reshape(x.shape[0], -1)).reshape(x.shape)


class ChebConv(nn.Module):
    """Chebyshev graph convolution ``y = Σ_{k<K} T_k(L̃) x Θ_k + b`` (Defferrard et al. 2016).

    ``[B, C_in, npix] → [B, C_out, npix]`` (:meth:`forward`), or pixel-major
    ``[npix, B, C_in] → [npix, B, C_out]`` (:meth:`forward_pixel_major`, used inside the models);
    parameters ``K·C_in·C_out + C_out``. ``K = 1`` is a pointwise (1×1) layer; ``K`` is the
    filter's reach in graph hops plus one.
    """

    def __init__(self, c_in: int, c_out: int, order: int, nside: int) -> None:
        super().__init__()
        if order < 1:
            raise ValueError(f"Chebyshev order K must be >= 1, got {order}")
        self.order, self.nside = int(order), _check_nside(nside)
        if self.order > 1:  # CSR parts as plain buffers (a sparse buffer cannot be deep-copied)
            lap = laplacian_matrix(self.nside)
            self.register_buffer("lap_crow", lap.crow_indices(), persistent=False)
            self.register_buffer("lap_col", lap.col_indices(), persistent=False)
            self.register_buffer("lap_values", lap.values(), persistent=False)
        self.weight = nn.Parameter(torch.empty(self.order, c_in, c_out))
        self.bias = nn.Parameter(torch.zeros(c_out))
        nn.init.normal_(self.weight, std=(2.0 / (c_in * self.order)) ** 0.5)

    def _laplacian(self, dtype: torch.dtype) -> torch.Tensor:
        npix = 12 * self.nside**2
        return torch.sparse_csr_tensor(
            self.lap_crow,
            self.lap_col,
            self.lap_values.to(dtype),
            (npix, npix),
            check_invariants=False,  # valid by construction (laplacian_matrix)
        )

    def forward_pixel_major(self, x: torch.Tensor) -> torch.Tensor:
        """``[npix, B, C_in] → [npix, B, C_out]``."""
        c_in = x.shape[-1]
        out = torch.addmm(self.bias, x.reshape(-1, c_in), self.weight[0])
        if self.order > 1:
            lap = self._laplacian(x.dtype)
            previous, current = x, apply_laplacian(x, lap)
            out = out + current.reshape(-1, c_in) @ self.weight[1]
            for k in range(2, self.order):
                previous, current = current, 2 * apply_laplacian(current, lap) - previous
                out = out + current.reshape(-1, c_in) @ self.weight[k]
        return out.reshape(*x.shape[:-1], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, npix] → [B, C_out, npix]``."""
        return self.forward_pixel_major(x.permute(2, 0, 1).contiguous()).permute(1, 2, 0)


def pool_nested(x: torch.Tensor) -> torch.Tensor:
    """Max over the 4 children of each parent: ``[..., 12n²] → [..., 12(n/2)²]`` (NESTED)."""
    return x.reshape(*x.shape[:-1], x.shape[-1] // 4, 4).amax(-1)


def unpool_nested(x: torch.Tensor) -> torch.Tensor:
    """Copy each parent to its 4 children: ``[..., 12n²] → [..., 12(2n)²]`` (NESTED)."""
    return x.repeat_interleave(4, dim=-1)


def _pool_pm(x: torch.Tensor) -> torch.Tensor:
    """:func:`pool_nested` on pixel-major ``[npix, ...]``."""
    return x.reshape(x.shape[0] // 4, 4, *x.shape[1:]).amax(1)


def _unpool_pm(x: torch.Tensor) -> torch.Tensor:
    """:func:`unpool_nested` on pixel-major ``[npix, ...]``."""
    return x.repeat_interleave(4, dim=0)


class _Block(nn.Module):
    """ChebConv → BatchNorm (statistics over pixels and batch) → ReLU, pixel-major."""

    def __init__(self, c_in: int, c_out: int, order: int, nside: int) -> None:
        super().__init__()
        self.conv = ChebConv(c_in, c_out, order, nside)
        self.norm = nn.BatchNorm1d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv.forward_pixel_major(x)
        return torch.relu(self.norm(y.reshape(-1, y.shape[-1])).reshape(y.shape))


def _levels(nside: int, n_stages: int) -> list[int]:
    nside = _check_nside(nside)
    if nside >> (n_stages - 1) < 1:
        raise ValueError(
            f"nside={nside} is too small for {n_stages} resolution levels (each pooling halves "
            f"nside); use nside >= {2 ** (n_stages - 1)} or fewer channels entries"
        )
    return [nside >> i for i in range(n_stages)]


def _int_list(name: str, value: Any) -> list[int]:
    items = list(value) if not isinstance(value, int | str) else None
    if not items or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in items):
        raise ValueError(f"{name} must be a non-empty list of positive integers, got {value!r}")
    return [int(v) for v in items]


class _HealpixBase(nn.Module):
    """Shared by the classifier and the segmenter: the NESTED levels, the encoder stages, the
    input check and the pixel-major layout."""

    grid = "healpix_nested"

    def _encoder(
        self, nside: int, in_channels: int, channels: list[int], order: int
    ) -> nn.ModuleList:
        """Stage ``i``: a Chebyshev block ``widths[i] → channels[i]`` at ``nside / 2^i``."""
        self.nside = _check_nside(nside)
        self.levels = _levels(self.nside, len(channels))
        widths = [int(in_channels), *channels]
        return nn.ModuleList(
            _Block(widths[i], widths[i + 1], order, self.levels[i]) for i in range(len(channels))
        )

    @property
    def resolution(self) -> int:
        return self.nside

    def _pixel_major(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, npix]`` (NESTED) → pixel-major ``[npix, B, C]``; ValueError on another shape."""
        npix = 12 * self.nside**2
        if x.dim() != 3 or x.shape[-1] != npix:
            raise ValueError(
                f"expected NESTED HEALPix input [B, C, {npix}] (nside={self.nside}), got "
                f"{list(x.shape)}; use data.grid=healpix_nested data.nside={self.nside}"
            )
        return x.permute(2, 0, 1).contiguous()


class HealpixGCNNClassifier(_HealpixBase):
    """DeepSphere-style classifier: ``[B, C_in, 12·nside²]`` (NESTED) → logits ``[B, classes]``.

    Stage ``i`` (one per ``channels`` entry) is a Chebyshev block at ``nside / 2^i`` followed by
    NESTED max pooling (except after the last); then the mean over pixels (the equal-area
    integral, rotation invariant) and a linear layer. Parameters:
    ``Σ_i (K·c_{i−1}·c_i + 3c_i) + c_last·classes + classes``.
    """

    task = "classification"

    def __init__(
        self,
        nside: int = 16,
        channels: Sequence[int] = (16, 32, 64),
        order: int = 5,
        num_classes: int = 10,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        channels = _int_list("channels", channels)
        self.blocks = self._encoder(nside, in_channels, channels, order)
        self.head = nn.Linear(channels[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._pixel_major(x)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i < len(self.blocks) - 1:
                x = _pool_pm(x)
        return self.head(x.mean(0))


class HealpixGCNNSegmenter(_HealpixBase):
    """DeepSphere-style encoder–decoder (U-Net): ``[B, C_in, 12·nside²] → [B, classes, 12·nside²]``.

    Encoder: ``channels[i]`` Chebyshev block at ``nside / 2^i``, max-pooled to the next level.
    Decoder, from the coarsest level up: NESTED unpooling (copy to the 4 children), concatenation
    with the encoder features of that level, a Chebyshev block to ``channels[i]``; finally a
    Chebyshev layer to ``num_classes`` logits. All signals NESTED.
    """

    task = "segmentation"

    def __init__(
        self,
        nside: int = 16,
        channels: Sequence[int] = (16, 32, 64),
        order: int = 5,
        num_classes: int = 11,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        channels = _int_list("channels", channels)
        if len(channels) < 2:
            raise ValueError(
                f"channels needs >= 2 entries (levels) for an encoder-decoder, got {channels}"
            )
        self.encoder = self._encoder(nside, in_channels, channels, order)
        self.decoder = nn.ModuleList(
            _Block(channels[i + 1] + channels[i], channels[i], order, self.levels[i])
            for i in reversed(range(len(channels) - 1))
        )
        self.head = ChebConv(channels[0], num_classes, order, self.nside)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._pixel_major(x)
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x)
            if i < len(self.encoder) - 1:
                skips.append(x)
                x = _pool_pm(x)
        for block in self.decoder:
            x = block(torch.cat([_unpool_pm(x), skips.pop()], dim=-1))
        return self.head.forward_pixel_major(x).permute(1, 2, 0)

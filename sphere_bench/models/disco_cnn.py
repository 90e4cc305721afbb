"""DISCO spherical CNNs: local convolutions with continuous kernels, from torch-harmonics.

Reference: Ocampo, Price & McEwen, "Scalable and equivariant spherical CNNs by discrete-continuous
(DISCO) convolutions", ICLR 2023; the layers are torch-harmonics' (NVIDIA/torch-harmonics)
``DiscreteContinuousConvS2`` (a convolution that maps an ``in_shape`` grid to an ``out_shape``
grid, used here to keep or halve the resolution) and ``DiscreteContinuousConvTransposeS2``
(its transpose, used to double it), and ``QuadratureS2`` for the invariant global pooling.

Conventions
-----------
* Signals are ``[B, C, nlat, nlon]`` on a torch-harmonics quadrature grid (``grid``):
  ``equiangular`` (Clenshaw–Curtis colatitudes ``θ_j = πj/(nlat−1)``, poles included,
  ``nlon = 2(nlat−1)``) or ``legendre-gauss`` (Gauss–Legendre nodes in ``cos θ``,
  ``nlon = 2·nlat``); rows run from the north pole (``θ = 0``) south, longitudes
  ``φ_k = 2πk/nlon`` (:func:`sphere_bench.harmonic.grids.torch_harmonics_shape`, the data grids of
  the
  same names). Level ``i`` of a network has ``nlat_i`` from halving the grid ``i`` times
  (:func:`sphere_bench.harmonic.grids.torch_harmonics_levels`), so ``nlon`` halves exactly and
  torch-harmonics' longitude shift (its "p-shift") stays exact.
* Filters: ``kernel_shape`` of torch-harmonics' piecewise-linear basis (``[5, 4]`` = a centre and
  two rings of 4 azimuthal nodes, 9 weights per channel pair, like a 3×3 planar filter), filter
  radius torch-harmonics' default (``compute_theta_cutoff``: the largest colatitude spacing of the
  coarser grid), passed explicitly.
* Symmetries: every layer commutes with longitude shifts by whole steps of its coarser grid
  (exactly, up to float rounding); arbitrary rotations are respected up to discretisation.

torch_harmonics is imported lazily in the constructors.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from sphere_bench.harmonic.grids import torch_harmonics_levels, torch_harmonics_shape

__all__ = ["DiscoClassifier", "DiscoSegmenter"]

DISCO_GRIDS = ("equiangular", "legendre-gauss")


def _int_list(name: str, value: Any, length: int | None = None) -> list[int]:
    items = list(value) if not isinstance(value, int | str) else None
    if not items or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in items):
        raise ValueError(f"{name} must be a non-empty list of positive integers, got {value!r}")
    if length is not None and len(items) != length:
        raise ValueError(f"{name} must have {length} entries, got {items!r}")
    return [int(v) for v in items]


def _theta_cutoff(nlat: int, grid: str) -> float:
    """torch-harmonics' default filter radius (its v0.9.3 "default changed" warning silenced)."""
    from torch_harmonics.quadrature import compute_theta_cutoff

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return compute_theta_cutoff(nlat, grid=grid)


def _conv(c_in: int, c_out: int, shape_in, shape_out, kernel_shape, grid: str) -> nn.Module:
    from torch_harmonics import DiscreteContinuousConvS2

    return DiscreteContinuousConvS2(
        c_in, c_out, in_shape=tuple(shape_in), out_shape=tuple(shape_out),
        kernel_shape=tuple(kernel_shape), basis_type="piecewise linear",
        grid_in=grid, grid_out=grid, bias=True,
        theta_cutoff=_theta_cutoff(shape_out[0], grid),
    )  # fmt: skip


def _conv_t(c_in: int, c_out: int, shape_in, shape_out, kernel_shape, grid: str) -> nn.Module:
    from torch_harmonics import DiscreteContinuousConvTransposeS2

    return DiscreteContinuousConvTransposeS2(
        c_in, c_out, in_shape=tuple(shape_in), out_shape=tuple(shape_out),
        kernel_shape=tuple(kernel_shape), basis_type="piecewise linear",
        grid_in=grid, grid_out=grid, bias=True,
        theta_cutoff=_theta_cutoff(shape_in[0], grid),
    )  # fmt: skip


def _block(conv: nn.Module, c_out: int) -> nn.Sequential:
    return nn.Sequential(conv, nn.BatchNorm2d(c_out), nn.ReLU())


class _DiscoBase(nn.Module):
    grid: str

    def _setup(self, grid: str, nlat: int, channels: Any, kernel_shape: Any) -> list[int]:
        if grid not in DISCO_GRIDS:
            raise ValueError(f"grid must be one of {list(DISCO_GRIDS)}, got {grid!r}")
        channels = _int_list("channels", channels)
        self.kernel_shape = _int_list("kernel_shape", kernel_shape, 2)
        self.grid, self.nlat = grid, int(nlat)
        self.nlats = torch_harmonics_levels(grid, self.nlat, len(channels))
        self.shapes = [torch_harmonics_shape(grid, n) for n in self.nlats]
        return channels

    @property
    def resolution(self) -> int:
        return self.nlat

    def _encoder(self, in_channels: int, channels: list[int], grid: str) -> nn.ModuleList:
        """Stage 0 a DISCO block at the input grid, stage ``i ≥ 1`` from level ``i−1`` to ``i``."""
        widths = [int(in_channels), *channels]
        s, k = self.shapes, self.kernel_shape
        return nn.ModuleList(
            _block(_conv(widths[i], widths[i + 1], s[max(i - 1, 0)], s[i], k, grid), widths[i + 1])
            for i in range(len(channels))
        )

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[-2:]) != self.shapes[0]:
            raise ValueError(
                f"expected [B, C, {self.shapes[0][0]}, {self.shapes[0][1]}] on the {self.grid} "
                f"grid with nlat={self.nlat}, got {list(x.shape)}; use data.grid={self.grid} "
                f"data.nlat={self.nlat}"
            )


class DiscoClassifier(_DiscoBase):
    """DISCO classifier ``[B, C_in, nlat, nlon] → [B, classes]``.

    Stage 0 is a DISCO block at the input grid, stage ``i ≥ 1`` a DISCO block from level ``i−1`` to
    level ``i`` (half the resolution); block = DISCO conv → BatchNorm2d → ReLU. Then the
    normalised quadrature integral over the sphere (``QuadratureS2``, rotation invariant) and a
    linear layer. Parameters: ``Σ_i (k·c_{i−1}·c_i + 3c_i) + c_last·classes + classes`` with ``k``
    the basis size of ``kernel_shape``.
    """

    task = "classification"

    def __init__(
        self,
        grid: str = "legendre-gauss",
        nlat: int = 24,
        channels: Sequence[int] = (16, 32, 64),
        kernel_shape: Sequence[int] = (5, 4),
        num_classes: int = 10,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        from torch_harmonics import QuadratureS2

        channels = self._setup(grid, nlat, channels, kernel_shape)
        self.blocks = self._encoder(in_channels, channels, grid)
        self.integral = QuadratureS2(self.shapes[-1], grid=grid, normalize=True)
        self.head = nn.Linear(channels[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        for block in self.blocks:
            x = block(x)
        return self.head(self.integral(x))


class DiscoSegmenter(_DiscoBase):
    """DISCO encoder–decoder (U-Net) ``[B, C_in, nlat, nlon] → [B, classes, nlat, nlon]``.

    Encoder as :class:`DiscoClassifier` (level ``i`` has ``channels[i]``). Decoder, from the
    coarsest level up: a transposed DISCO block (``DiscreteContinuousConvTransposeS2``, level
    ``i+1 → i``, ``channels[i+1] → channels[i]``), concatenation with the encoder features of level
    ``i``, a DISCO block ``2·channels[i] → channels[i]``; finally a pointwise (1×1) layer to the
    logits.
    """

    task = "segmentation"

    def __init__(
        self,
        grid: str = "legendre-gauss",
        nlat: int = 24,
        channels: Sequence[int] = (16, 32, 64),
        kernel_shape: Sequence[int] = (5, 4),
        num_classes: int = 11,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        channels = self._setup(grid, nlat, channels, kernel_shape)
        if len(channels) < 2:
            raise ValueError(f"channels needs >= 2 entries (levels), got {channels}")
        s, k = self.shapes, self.kernel_shape
        self.encoder = self._encoder(in_channels, channels, grid)
        self.up = nn.ModuleList(
            _block(_conv_t(channels[i + 1], channels[i], s[i + 1], s[i], k, grid), channels[i])
            for i in reversed(range(len(channels) - 1))
        )
        self.fuse = nn.ModuleList(
            _block(_conv(2 * channels[i], channels[i], s[i], s[i], k, grid), channels[i])
            for i in reversed(range(len(channels) - 1))
        )
        self.head = nn.Conv2d(channels[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        skips.pop()
        for up, fuse in zip(self.up, self.fuse, strict=True):
            x = fuse(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)

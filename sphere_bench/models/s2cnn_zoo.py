"""The S2CNN zoo: segmentation (paper §3.1, "204k") and classification (upstream, "150k").

Both take S² images ``[N, in_channels, 2B, 2B]`` on the SOFT grid (``[β, α]``) and are defined
entirely by constructor lists, so new S2CNNs need only a config (``conf/model/s2cnn_*.yaml``).
``kernel_max_beta`` values are in units of π (as on the paper's command line); each layer uses a
near-identity grid with 3 β rings × 8 α values (S²: 24 points; SO(3): × 8 pre-γ = 192 points).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from sphere_bench.harmonic.grids import check_bandwidth
from sphere_bench.harmonic.kernel_grids import s2_near_identity_grid, so3_near_identity_grid
from sphere_bench.models.antialias import OversampledReLU, oversampled_bandwidth
from sphere_bench.models.s2cnn_layers import (
    S2Convolution,
    SO3Convolution,
    SO3ToS2Convolution,
    so3_integrate,
)

__all__ = ["S2CNNSegmentation", "S2CNNClassifier"]


def _int_list(name: str, values: Sequence[int], min_len: int = 1) -> list[int]:
    try:
        out = [int(v) for v in values]
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a list of integers, got {values!r}") from err
    if len(out) < min_len or any(v != w for v, w in zip(out, values, strict=True)):
        raise ValueError(f"{name} must be a list of >= {min_len} integers, got {values!r}")
    return out


def _check(name: str, values: Sequence[int], low: int) -> list[int]:
    out = _int_list(name, values)
    bad = [v for v in out if v < low]
    if bad:
        raise ValueError(f"every entry of {name} must be >= {low}, got {list(values)!r}")
    return out


def _max_betas(name: str, values: Sequence[float], count: int) -> list[float]:
    out = [float(v) for v in values]
    if len(out) != count:
        raise ValueError(f"{name} needs {count} entries (one per layer), got {len(out)}: {out}")
    if any(not (0 < v <= 1) for v in out):
        raise ValueError(f"{name} entries are in units of π and must be in (0, 1], got {out}")
    return out


def _check_task(task: str | None, expected: str) -> None:
    if task is not None and task != expected:
        raise ValueError(f"task must be {expected!r} for this model, got {task!r}")


def _check_input(x: torch.Tensor, in_channels: int, bandwidth: int, name: str) -> None:
    size = 2 * bandwidth
    if x.dim() != 4 or x.shape[1:] != (in_channels, size, size):
        raise ValueError(
            f"{name} expects input [N, {in_channels}, {size}, {size}] (bandwidth={bandwidth}), "
            f"got {tuple(x.shape)}"
        )


def _check_layout(
    bandwidth: int,
    channels: Sequence[int],
    bandlimits: Sequence[int],
    kernel_max_beta: Sequence[float],
    num_classes: int,
    in_channels: int,
    n_betas: int,
) -> tuple[list[int], list[int], list[float]]:
    """Validated ``(channels, bandlimits, kernel max betas)``; errors name the bad argument."""
    check_bandwidth(bandwidth)
    channels = _check("channels", channels, 1)
    bandlimits = _check("bandlimits", bandlimits, 2)
    if len(bandlimits) != len(channels):
        raise ValueError(
            f"bandlimits needs one entry per entry of channels ({len(channels)}), "
            f"got {len(bandlimits)}"
        )
    betas = _max_betas("kernel_max_beta", kernel_max_beta, n_betas)
    if num_classes < 1 or in_channels < 1:
        raise ValueError(
            f"num_classes and in_channels must be >= 1, got {num_classes}, {in_channels}"
        )
    return channels, bandlimits, betas


def _s2cnn_trunk(
    bandwidth: int,
    in_channels: int,
    channels: list[int],
    bandlimits: list[int],
    betas: list[float],
    upsampling: str,
    oversampling: float = 1.0,
) -> list[nn.Module]:
    """``S2Conv → ReLU → [SO3Conv → ReLU]*``: S² input of bandwidth ``bandwidth`` to SO(3).

    ``oversampling > 1`` applies each ReLU on the SO(3) grid of ``⌈oversampling · b⌉``
    (:class:`sphere_bench.models.antialias.OversampledReLU`); 1 is the paper's grid ReLU.
    """

    def relu(b: int) -> nn.Module:
        return nn.ReLU() if oversampling == 1 else OversampledReLU(b, oversampling)

    oversampled_bandwidth(bandwidth, oversampling)  # validates the factor
    layers: list[nn.Module] = [
        S2Convolution(in_channels, channels[0], bandwidth, bandlimits[0],
                      s2_near_identity_grid(betas[0] * math.pi), upsampling=upsampling),
        relu(bandlimits[0]),
    ]  # fmt: skip
    for i in range(len(channels) - 1):
        layers += [
            SO3Convolution(channels[i], channels[i + 1], bandlimits[i], bandlimits[i + 1],
                           so3_near_identity_grid(betas[i + 1] * math.pi), upsampling=upsampling),
            relu(bandlimits[i + 1]),
        ]  # fmt: skip
    return layers


class S2CNNSegmentation(nn.Module):
    """S2Conv → ReLU → [SO3Conv → ReLU] × (k−1) → SO3ToS2 (+bias), paper §3.1.

    Args:
        bandwidth: input bandwidth ``B``; input ``[N, in_channels, 2B, 2B]``, output
            ``[N, num_classes, 2B, 2B]`` on the same grid.
        channels: hidden channels ``[f_1 … f_k]`` (the paper's ``feature_numbers``).
        bandlimits: bandwidth of each hidden SO(3) map ``[b_1 … b_k]`` (``bandlimit_numbers``).
        kernel_max_beta: ``k + 1`` kernel-grid radii in units of π: entry 0 for the S² layer,
            entries 1…k−1 for the SO(3) layers, entry k for the SO3ToS2 head.
        num_classes: output channels (11 = background + 10 digits).
        in_channels: input channels.
        task: optional, must be ``"segmentation"`` (lets configs carry the key).
        upsampling: ``"exact"`` (default: a bandwidth increase zero-pads the spectrum) or
            ``"paper"`` (the reference's aliased evaluation of the degrees ``b_in ≤ l < b_out``
            in the up-sampling layers; :mod:`sphere_bench.harmonic.paper_upsampling`).
        oversampling: apply every ReLU on the SO(3) grid of ``⌈oversampling · b⌉`` (anti-aliased,
            :mod:`sphere_bench.models.antialias`); 1 (default) is the paper's grid ReLU. Same
            parameters either way.

    Attributes (what it needs of its data, :mod:`sphere_bench.train.checks`): ``task``
    (``segmentation``), ``grid`` (None: the soft or paper ``2B × 2B`` grid), ``bandwidth``.
    """

    task = "segmentation"
    grid = None

    def __init__(
        self,
        bandwidth: int,
        channels: Sequence[int] = (11, 12, 13, 14, 13, 12, 11),
        bandlimits: Sequence[int] = (42, 35, 27, 20, 27, 35, 42),
        kernel_max_beta: Sequence[float] = (
            0.1238, 0.1474, 0.1768, 0.2292, 0.3095, 0.2292, 0.1768, 0.1474,
        ),
        num_classes: int = 11,
        in_channels: int = 1,
        task: str | None = None,
        upsampling: str = "exact",
        oversampling: float = 1.0,
    ) -> None:
        super().__init__()
        _check_task(task, self.task)
        channels, bandlimits, betas = _check_layout(
            bandwidth, channels, bandlimits, kernel_max_beta, num_classes, in_channels,
            n_betas=len(channels) + 1,
        )
        self.bandwidth, self.in_channels, self.num_classes = bandwidth, in_channels, num_classes
        layers = _s2cnn_trunk(
            bandwidth, in_channels, channels, bandlimits, betas, upsampling, oversampling
        )
        layers.append(SO3ToS2Convolution(channels[-1], num_classes, bandlimits[-1], bandwidth,
                                         so3_near_identity_grid(betas[-1] * math.pi),
                                         upsampling=upsampling))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.in_channels, self.bandwidth, type(self).__name__)
        return self.layers(x)


class S2CNNClassifier(nn.Module):
    """S2Conv → ReLU → [SO3Conv → ReLU] × (k−1) → SO(3) integral → Linear (upstream s2cnn MNIST).

    Args:
        bandwidth: input bandwidth ``B``; input ``[N, in_channels, 2B, 2B]``, output
            ``[N, num_classes]`` logits (rotation invariant: the Haar integral removes the pose).
        channels: channels after each spherical layer, e.g. ``[20, 40]``.
        bandlimits: output bandwidth of each spherical layer, e.g. ``[10, 6]``.
        kernel_max_beta: one kernel-grid radius (units of π) per spherical layer.
        num_classes: number of logits.
        in_channels: input channels.
        task: optional, must be ``"classification"``.
        upsampling: ``"exact"`` or ``"paper"``, as for :class:`S2CNNSegmentation`.
        oversampling: as for :class:`S2CNNSegmentation`.

    Attributes: ``task`` (``classification``), ``grid`` (None), ``bandwidth``, as for
    :class:`S2CNNSegmentation`.
    """

    task = "classification"
    grid = None

    def __init__(
        self,
        bandwidth: int,
        channels: Sequence[int] = (20, 40),
        bandlimits: Sequence[int] = (10, 6),
        kernel_max_beta: Sequence[float] = (0.125, 0.125),
        num_classes: int = 10,
        in_channels: int = 1,
        task: str | None = None,
        upsampling: str = "exact",
        oversampling: float = 1.0,
    ) -> None:
        super().__init__()
        _check_task(task, self.task)
        channels, bandlimits, betas = _check_layout(
            bandwidth, channels, bandlimits, kernel_max_beta, num_classes, in_channels,
            n_betas=len(channels),
        )
        self.bandwidth, self.in_channels, self.num_classes = bandwidth, in_channels, num_classes
        layers = _s2cnn_trunk(
            bandwidth, in_channels, channels, bandlimits, betas, upsampling, oversampling
        )
        self.features = nn.Sequential(*layers)
        self.out_layer = nn.Linear(channels[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.in_channels, self.bandwidth, type(self).__name__)
        return self.out_layer(so3_integrate(self.features(x)))

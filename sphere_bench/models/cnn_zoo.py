"""Plain (non-equivariant) CNNs on the ``[beta, alpha]`` array of a spherical image.

Two families, both taking the S² signal as an ordinary 1-channel image of shape
``[N, 1, 2B, 2B]`` (axis ``-2`` = colatitude ``beta``, axis ``-1`` = longitude ``alpha``; see
:mod:`sphere_bench.harmonic.grids`):

* :class:`SegmentationCNN` — the paper's encoder–decoder ``ConvNet_sem_seg`` (Gerken et al., ICML
  2022; ``docs/paper_protocol.md`` §3.2), ``[N, 1, 2B, 2B] → [N, num_classes, 2B, 2B]`` logits.
* :class:`ClassificationCNN` — our classification family (the paper never released its 114k /
  0.5M / 2.5M CNNs): the same encoder followed by global average pooling (or, with
  ``head="flatten"``, flattening) and one linear layer, ``[N, 1, 2B, 2B] → [N, num_classes]``
  logits.

Padding modes (``padding=``)
----------------------------
``"valid"`` (default, the paper's): no padding anywhere; every convolution shrinks both axes.

``"circular_lon"`` (our addition, a cheap spherical prior the paper did not try): longitude is
periodic, so every encoder convolution (and its max-pool shortcut) first pads the longitude axis
circularly by ``k − 1`` columns (``(k−1)//2`` on the left, the rest on the right), and every decoder
transposed convolution is computed on the full width and *folded back* modulo the target width
(the exact adjoint of the circular convolution, bias added once after folding). The ``beta`` axis
keeps the paper's valid arithmetic (no padding in ``beta``), so heights — and therefore the
smallest usable bandwidth — are exactly those of ``"valid"``; widths become ``ceil(W / s)`` per
layer (constant at stride 1). Parameter counts are unchanged. Consequence: when the input width
``2B`` is divisible by the product ``S`` of all strides, rolling the input along longitude by a
multiple of ``S`` rolls a segmentation output by the same amount and leaves classification
logits unchanged (exactly, up to float round-off). Shifts that are not multiples of ``S`` are only
approximately equivariant (the subsampling grid moves). ``beta`` is not wrapped across the poles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

PADDING_MODES = ("valid", "circular_lon")
CLASSIFICATION_HEADS = ("mean", "flatten")

__all__ = [
    "CLASSIFICATION_HEADS",
    "PADDING_MODES",
    "ClassificationCNN",
    "SegmentationCNN",
    "encoder_sizes",
    "min_bandwidth",
]


# --------------------------------------------------------------------------------------------
# argument checks and size arithmetic
# --------------------------------------------------------------------------------------------
def _as_int_list(name: str, value: Any) -> list[int]:
    """Return ``value`` (list, tuple or OmegaConf ListConfig of positive ints) as ``list[int]``."""
    if isinstance(value, str | bytes | int):
        raise ValueError(f"{name} must be a list of positive integers, got {value!r}")
    try:
        items = list(value)
    except TypeError as err:
        raise ValueError(f"{name} must be a list of positive integers, got {value!r}") from err
    if not items:
        raise ValueError(f"{name} must be a non-empty list of positive integers, got []")
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or item < 1:
            raise ValueError(f"{name} must be a list of positive integers, got {items!r}")
    return [int(i) for i in items]


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_args(
    bandwidth: Any,
    features: Any,
    kernel_sizes: Any,
    strides: Any,
    use_skips: Any,
    padding: Any,
    num_classes: Any,
    in_channels: Any,
) -> tuple[int, list[int], list[int], list[int]]:
    """Validate constructor arguments; every error names the offending key and what is allowed."""
    bandwidth = _check_int("bandwidth", bandwidth, 1)
    features = _as_int_list("features", features)
    kernel_sizes = _as_int_list("kernel_sizes", kernel_sizes)
    strides = _as_int_list("strides", strides)
    if not len(features) == len(kernel_sizes) == len(strides):
        raise ValueError(
            "features, kernel_sizes and strides must have the same length (one entry per encoder "
            f"layer), got {len(features)}, {len(kernel_sizes)} and {len(strides)}"
        )
    if not isinstance(use_skips, bool):
        raise ValueError(f"use_skips must be true or false, got {use_skips!r}")
    if padding not in PADDING_MODES:
        raise ValueError(f"padding must be one of {list(PADDING_MODES)}, got {padding!r}")
    _check_int("num_classes", num_classes, 2)
    _check_int("in_channels", in_channels, 1)
    return bandwidth, features, kernel_sizes, strides


def min_bandwidth(kernel_sizes: Sequence[int], strides: Sequence[int]) -> int:
    """Smallest bandwidth ``B`` whose ``2B × 2B`` input keeps every encoder map at least 1 pixel.

    Valid convolutions map a size ``n`` to ``(n − k) // s + 1``; inverting from a 1-pixel
    bottleneck gives the smallest input ``m``; the bandwidth is ``ceil(m / 2)``.
    """
    size = 1
    for k, s in zip(reversed(list(kernel_sizes)), reversed(list(strides)), strict=True):
        size = (size - 1) * s + k
    return math.ceil(size / 2)


def encoder_sizes(
    bandwidth: int,
    kernel_sizes: Sequence[int],
    strides: Sequence[int],
    padding: str = "valid",
) -> list[tuple[int, int]]:
    """Spatial sizes ``(H, W)`` of the input and of each encoder layer's output.

    Parameters
    ----------
    bandwidth : int
        Input bandwidth ``B``; the input is ``2B × 2B``.
    kernel_sizes, strides : sequence of int
        One entry per encoder layer.
    padding : {"valid", "circular_lon"}
        ``H`` always follows valid arithmetic ``(H − k) // s + 1``; ``W`` does too for ``"valid"``
        and is ``ceil(W / s)`` for ``"circular_lon"``.

    Returns
    -------
    list of (int, int)
        ``len(kernel_sizes) + 1`` entries, the input first.

    Raises
    ------
    ValueError
        If a map collapses to ≤ 0 pixels; the message names the layer and the smallest bandwidth
        that works.
    """
    h = w = 2 * bandwidth
    sizes = [(h, w)]
    for i, (k, s) in enumerate(zip(kernel_sizes, strides, strict=True)):
        new_h = (h - k) // s + 1
        new_w = (w - k) // s + 1 if padding == "valid" else -(-w // s)
        if new_h < 1 or new_w < 1:
            raise ValueError(
                f"bandwidth={bandwidth} is too small for this architecture: the {2 * bandwidth}×"
                f"{2 * bandwidth} input collapses at encoder layer {i} (kernel {k}, stride {s}): "
                f"{h}×{w} → {max(new_h, 0)}×{max(new_w, 0)} pixels (valid convolutions shrink the "
                f"map). Use bandwidth >= {min_bandwidth(kernel_sizes, strides)} or smaller "
                "kernel_sizes/strides/fewer layers."
            )
        h, w = new_h, new_w
        sizes.append((h, w))
    return sizes


def _circular_pad_lon(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """Pad the last (longitude) axis circularly: ``left`` columns before, ``right`` after."""
    if left == 0 and right == 0:
        return x
    width = x.shape[-1]
    if left <= width and right <= width:
        return F.pad(x, (left, right, 0, 0), mode="circular")
    index = torch.arange(-left, width + right, device=x.device) % width
    return x.index_select(-1, index)


# --------------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------------
class EncoderLayer(nn.Module):
    """``Conv2d(k, s)`` (+ optional shortcut ``MaxPool2d(k, s) → 1×1 Conv2d``), then ReLU.

    Shapes: ``[N, C_in, H, W] → [N, C_out, (H − k)//s + 1, W']`` with ``W' = (W − k)//s + 1``
    (valid) or ``ceil(W / s)`` (circular_lon). The shortcut is added before the ReLU.
    """

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int, shortcut: bool, padding: str
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride)
        self.pool = nn.MaxPool2d(kernel, stride) if shortcut else None
        self.proj = nn.Conv2d(c_in, c_out, 1) if shortcut else None
        self.circular = padding == "circular_lon"
        self.pad = ((kernel - 1) // 2, kernel - 1 - (kernel - 1) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.circular:
            x = _circular_pad_lon(x, *self.pad)
        y = self.conv(x)
        if self.proj is not None:
            y = y + self.proj(self.pool(x))
        return F.relu(y)


class DecoderLayer(nn.Module):
    """``ConvTranspose2d(k, s)`` restoring exactly ``target_size`` (+ optional shortcut), ReLU.

    The shortcut is ``1×1 Conv2d → nearest Upsample(target_size)``, added before the ReLU.
    ``output_padding`` is computed so that ``(h − 1)·s + k + output_padding = H_target`` (it is
    always in ``[0, s)``). For ``circular_lon`` the width is computed on the full transposed width
    ``(w − 1)·s + k`` and folded modulo ``W_target`` (offset ``(k − 1)//2``, mirroring the encoder's
    left pad); the bias is added after folding.

    Shapes: ``[N, C_in, h, w] → [N, C_out, H_target, W_target]``.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        stride: int,
        in_size: tuple[int, int],
        target_size: tuple[int, int],
        shortcut: bool,
        activation: bool,
        padding: str,
    ) -> None:
        super().__init__()
        self.circular = padding == "circular_lon"
        self.kernel, self.stride = kernel, stride
        self.target_size = target_size
        op_h = target_size[0] - ((in_size[0] - 1) * stride + kernel)
        op_w = 0 if self.circular else target_size[1] - ((in_size[1] - 1) * stride + kernel)
        if not (0 <= op_h < stride and 0 <= op_w < stride):  # pragma: no cover - sizes are derived
            raise ValueError(
                f"cannot restore {target_size} from {in_size} with k={kernel}, s={stride}"
            )
        self.output_padding = (op_h, op_w)
        self.conv = nn.ConvTranspose2d(
            c_in, c_out, kernel, stride, output_padding=(op_h, op_w) if not self.circular else 0
        )
        self.proj = nn.Conv2d(c_in, c_out, 1) if shortcut else None
        self.upsample = nn.Upsample(size=target_size, mode="nearest") if shortcut else None
        self.activation = activation

    def _circular_transpose(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv_transpose2d(
            x, self.conv.weight, None, self.stride, output_padding=(self.output_padding[0], 0)
        )
        width = self.target_size[1]
        full = y.shape[-1]
        n_wrap = -(-full // width)
        y = F.pad(y, (0, n_wrap * width - full))
        y = y.unflatten(-1, (n_wrap, width)).sum(-2)
        y = torch.roll(y, -((self.kernel - 1) // 2), dims=-1)
        return y + self.conv.bias.view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._circular_transpose(x) if self.circular else self.conv(x)
        if self.proj is not None:
            y = y + self.upsample(self.proj(x))
        return F.relu(y) if self.activation else y


class _Encoder(nn.Module):
    """The paper's encoder: layer 0 is plain ``Conv2d + ReLU``; layers ``i ≥ 1`` get shortcuts."""

    def __init__(
        self,
        in_channels: int,
        features: list[int],
        kernel_sizes: list[int],
        strides: list[int],
        use_skips: bool,
        padding: str,
    ) -> None:
        super().__init__()
        channels = [in_channels, *features]
        self.layers = nn.ModuleList(
            EncoderLayer(
                channels[i],
                channels[i + 1],
                kernel_sizes[i],
                strides[i],
                shortcut=use_skips and i > 0,
                padding=padding,
            )
            for i in range(len(features))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class _SphericalCNN(nn.Module):
    """Shared argument handling and input check."""

    # What it needs of its data (sphere_bench.train.checks): the task, a 2B x 2B grid (soft or
    # paper: grid None) and the bandwidth.
    task: str  # "segmentation" or "classification"
    grid = None
    bandwidth: int
    in_channels: int
    sizes: list[tuple[int, int]]

    def _init_encoder(
        self,
        bandwidth: int,
        features: Sequence[int],
        kernel_sizes: Sequence[int],
        strides: Sequence[int],
        use_skips: bool,
        padding: str,
        num_classes: int,
        in_channels: int,
    ) -> tuple[list[int], list[int], list[int]]:
        """Validate the arguments, store them and build the shared encoder.

        Returns the validated ``(features, kernel_sizes, strides)``.
        """
        bandwidth, features, kernel_sizes, strides = _check_args(
            bandwidth, features, kernel_sizes, strides, use_skips, padding, num_classes, in_channels
        )
        self.bandwidth, self.in_channels, self.num_classes = bandwidth, in_channels, num_classes
        self.padding, self.use_skips = padding, use_skips
        self.sizes = encoder_sizes(bandwidth, kernel_sizes, strides, padding)
        self.encoder = _Encoder(in_channels, features, kernel_sizes, strides, use_skips, padding)
        return features, kernel_sizes, strides

    def _check_input(self, x: torch.Tensor) -> None:
        expected = (self.in_channels, 2 * self.bandwidth, 2 * self.bandwidth)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"{type(self).__name__} built for bandwidth={self.bandwidth} expects input "
                f"[N, {expected[0]}, {expected[1]}, {expected[2]}], got {list(x.shape)}"
            )


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------
class SegmentationCNN(_SphericalCNN):
    """The paper's segmentation encoder–decoder CNN (``ConvNet_sem_seg`` of the paper's code).

    Source: docs/paper_protocol.md §3.2.

    Encoder: ``Conv2d(in→f0, k0, s0), ReLU``, then for ``i ≥ 1``: ``Conv2d(f_{i−1}→f_i, k_i, s_i)``
    (+ shortcut ``MaxPool2d(k_i, s_i) → Conv2d 1×1 (f_{i−1}→f_i)``), ReLU. Decoder, the mirror: for
    ``i = L−1 … 1``: ``ConvTranspose2d(f_i→f_{i−1}, k_i, s_i)`` with ``output_padding`` restoring
    exactly the encoder size of level ``i−1`` (+ shortcut ``Conv2d 1×1 (f_i→f_{i−1}) → nearest
    Upsample(that size)``), ReLU; then ``ConvTranspose2d(f0→num_classes, k0, s0)`` back to
    ``2B × 2B`` with no activation and no shortcut. Shortcuts are per-layer residual branches (not
    U-Net skips); the first encoder and the last decoder layer never have one. No batchnorm, no
    padding (valid convolutions) in the paper's ``padding="valid"``; see the module docstring for
    ``"circular_lon"``.

    Parameter counts with ``use_skips`` (without): 218,144 (206,698) for features
    ``[13, 15, 22, 31, 141]``, kernels ``[5, 3, 9, 7, 3]``, strides ``[1, 1, 1, 1, 2]``; 1,042,013
    (992,162) and 5,519,335 (5,015,735) for the 1M and 5.5M configs.

    Parameters
    ----------
    bandwidth : int
        Input bandwidth ``B``; input ``[N, in_channels, 2B, 2B]``.
    features, kernel_sizes, strides : list of int
        One entry per encoder layer (the paper's ``--feature_numbers``, ``--kernel_sizes``,
        ``--strides``).
    use_skips : bool
        Per-layer shortcuts (the paper's ``--use_skips``; on for all three paper CNNs).
    padding : {"valid", "circular_lon"}
        ``"valid"`` is the paper's.
    num_classes : int
        Output channels (11: background + 10 digits).
    in_channels : int
        Input channels (1).

    Raises
    ------
    ValueError
        On a bad argument (naming the key and the allowed values) or when ``2B`` is too small for
        the valid convolutions (naming the layer and the smallest bandwidth that works).
    """

    task = "segmentation"

    def __init__(
        self,
        bandwidth: int,
        features: Sequence[int],
        kernel_sizes: Sequence[int],
        strides: Sequence[int],
        use_skips: bool = True,
        padding: str = "valid",
        num_classes: int = 11,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        features, kernel_sizes, strides = self._init_encoder(
            bandwidth, features, kernel_sizes, strides, use_skips, padding, num_classes, in_channels
        )
        n = len(features)
        decoder = []
        for i in range(n - 1, -1, -1):
            last = i == 0
            decoder.append(
                DecoderLayer(
                    features[i],
                    num_classes if last else features[i - 1],
                    kernel_sizes[i],
                    strides[i],
                    in_size=self.sizes[i + 1],
                    target_size=self.sizes[i],
                    shortcut=use_skips and not last,
                    activation=not last,
                    padding=padding,
                )
            )
        self.decoder = nn.ModuleList(decoder)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, in_channels, 2B, 2B]`` float → ``[N, num_classes, 2B, 2B]`` logits."""
        self._check_input(x)
        x = self.encoder(x)
        for layer in self.decoder:
            x = layer(x)
        return x


class ClassificationCNN(_SphericalCNN):
    """Plain classification CNN: the paper's encoder, global average pooling, one linear layer.

    The paper's 114k / 0.5M / 2.5M classification CNNs were never released, so this is our design
    (``conf/model/cnn_cls_*.yaml``): ``[Conv2d(k_i, s_i) (+ optional shortcut), ReLU] × L →
    head → Linear(· → num_classes)``, valid convolutions, no batchnorm, no dropout. The family used
    in the configs has widths ``c · [1, 1, 2, 2, 4]``, kernels ``[5, 3, 3, 3, 3]``, strides
    ``[1, 2, 1, 2, 1]`` (``60×60 → 56 → 27 → 25 → 12 → 10``, receptive field 23 px, then the global
    mean) with ``c = 29 / 61 / 136`` for 115,720 / 506,920 / 2,507,170 parameters
    (``135c² + 75c + 10``), and no shortcuts. The architecture search
    (``conf/hparams_search/cnn_cls_random.yaml``) also draws strides and the head.

    Heads: ``"mean"`` (default) averages the last map over both axes (global average pooling,
    ``Linear(f_{L−1} → num_classes)``); ``"flatten"`` flattens it (``Linear(f_{L−1}·H·W →
    num_classes)``), as the classic CNN of upstream s2cnn's ``examples/mnist/run_classic.py`` does
    (jonkhler/s2cnn). With ``padding="circular_lon"``, only the ``"mean"`` head keeps the logits
    invariant to longitude rolls.

    Parameters
    ----------
    bandwidth : int
        Input bandwidth ``B``; input ``[N, in_channels, 2B, 2B]``.
    features, kernel_sizes, strides : list of int
        One entry per convolution layer.
    use_skips : bool
        Same per-layer shortcuts as :class:`SegmentationCNN`'s encoder (off in our configs).
    padding : {"valid", "circular_lon"}
        With ``"circular_lon"`` the logits are invariant to longitude rolls by multiples of the
        stride product (see the module docstring).
    num_classes : int
        Number of classes (10 digits).
    in_channels : int
        Input channels (1).
    head : {"mean", "flatten"}
        How the last ``[N, f_{L−1}, H, W]`` map becomes the linear layer's input (see above).

    Raises
    ------
    ValueError
        For an unknown ``head`` (and every error of the shared encoder arguments).
    """

    task = "classification"

    def __init__(
        self,
        bandwidth: int,
        features: Sequence[int],
        kernel_sizes: Sequence[int],
        strides: Sequence[int],
        use_skips: bool = False,
        padding: str = "valid",
        num_classes: int = 10,
        in_channels: int = 1,
        head: str = "mean",
    ) -> None:
        super().__init__()
        if head not in CLASSIFICATION_HEADS:
            raise ValueError(f"head must be one of {list(CLASSIFICATION_HEADS)}, got {head!r}")
        features, kernel_sizes, strides = self._init_encoder(
            bandwidth, features, kernel_sizes, strides, use_skips, padding, num_classes, in_channels
        )
        self.head_type = head
        height, width = self.sizes[-1]
        pixels = height * width if head == "flatten" else 1
        self.head = nn.Linear(features[-1] * pixels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, in_channels, 2B, 2B]`` float → ``[N, num_classes]`` logits."""
        self._check_input(x)
        x = self.encoder(x)
        x = x.flatten(1) if self.head_type == "flatten" else x.mean(dim=(-2, -1))
        return self.head(x)

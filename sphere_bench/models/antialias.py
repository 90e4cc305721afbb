"""Anti-aliased pointwise nonlinearity for SO(3) feature maps: the ReLU on an oversampled grid.

An S2CNN's hidden maps are band-limited SO(3) signals (degrees ``l < b``) sampled on the SOFT
grid of bandwidth ``b``. The ReLU of such a signal is *not* band-limited; applied to the ``2b``³
samples and read back by the next layer's SO(3) FFT as if it were, its spectrum above ``b``
aliases into the kept degrees, differently for every rotation that does not map the grid onto
itself — the source of the S2CNN's equivariance error under generic rotations (Cohen et al.,
"Spherical CNNs", ICLR 2018, §5 report it; the paper's Fig. 8 measures it).

:class:`OversampledReLU` (``factor = s``) instead evaluates the band-limited signal on the SOFT
grid of bandwidth ``⌈s·b⌉`` (an exact inverse transform of its coefficients), applies the ReLU
there, projects back onto degrees ``l < b`` by the forward transform on that finer grid, and
samples the result on the original grid:

    ReLU_s(x) = S_b P_b ReLU(S_{sb} F_b x)        (F: SO(3) FFT, S: synthesis, P: truncation)

The projection is computed with the quadrature of the ``⌈s·b⌉`` grid, exact for band limit
``< 2⌈s·b⌉ − b`` of the ReLU output; the remaining aliasing comes from the ReLU's spectrum above
that limit, which decays as the factor grows, so the equivariance error falls with ``s`` towards
that of an exactly equivariant layer (tested; measured in ``results/antialias.md``). The output is
band-limited (``l < b``), so the next layer's transform is exact. This is the standard
oversampling remedy for pointwise nonlinearities of spectral networks (e.g. Kondor et al.'s
Clebsch–Gordan nets avoid it altogether; Cobb et al., "Efficient Generalized Spherical CNNs",
ICLR 2021, evaluate nonlinearities at a higher bandwidth). ``factor = 1`` is the plain ReLU.

Cost per call: one inverse transform and one forward transform at bandwidth ``⌈s·b⌉`` plus one
pair at ``b``; memory ``≈ s³`` times the feature map (``results/antialias.md``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sphere_bench.harmonic.so3_fft import so3_fft, so3_ifft

__all__ = ["OversampledReLU", "oversampled_bandwidth"]


def oversampled_bandwidth(bandwidth: int, factor: float) -> int:
    """``⌈factor · bandwidth⌉`` (the bandwidth the ReLU is applied at); ``ValueError`` if < 1."""
    if isinstance(factor, bool) or not isinstance(factor, int | float) or not factor >= 1:
        raise ValueError(
            f"oversampling factor must be a number >= 1 (1 = plain ReLU), got {factor!r}"
        )
    return math.ceil(factor * bandwidth - 1e-9)


class OversampledReLU(nn.Module):
    """ReLU of band-limited SO(3) maps ``[..., 2b, 2b, 2b]`` on the grid of ``⌈factor·b⌉``.

    Args:
        bandwidth: ``b`` of the input and output maps.
        factor: oversampling factor ``≥ 1``; 1 is the plain ReLU on the ``b`` grid.

    Shapes: input and output ``[N, C, 2b, 2b, 2b]`` (any leading dims), same dtype/device.

    Raises:
        ValueError: a factor below 1, or an input whose grid is not ``2b × 2b × 2b``.
    """

    def __init__(self, bandwidth: int, factor: float = 2.0) -> None:
        super().__init__()
        self.high = oversampled_bandwidth(bandwidth, factor)
        self.bandwidth, self.factor = int(bandwidth), float(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = 2 * self.bandwidth
        if x.dim() < 3 or tuple(x.shape[-3:]) != (size, size, size):
            raise ValueError(
                f"OversampledReLU(bandwidth={self.bandwidth}) expects [..., {size}, {size}, "
                f"{size}] SO(3) maps, got {tuple(x.shape)}"
            )
        if self.high == self.bandwidth:
            return torch.relu(x)
        fine = torch.relu(so3_ifft(so3_fft(x), self.high))
        return so3_ifft(so3_fft(fine, self.bandwidth), self.bandwidth)

    def extra_repr(self) -> str:
        return f"bandwidth={self.bandwidth}, factor={self.factor:g} (grid b={self.high})"

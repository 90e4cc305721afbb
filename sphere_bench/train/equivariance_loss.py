"""Soft-equivariance regulariser: a penalty on ``f(R x) − R f(x)`` under fresh Haar rotations.

For a batch ``x`` ``[N, 1, 2B, 2B]`` on the SOFT grid and one Haar-random rotation ``R_i`` per
sample (:func:`sphere_bench.harmonic.rotations.haar_rotations`, drawn from torch's global generator,
so a seeded run is reproducible):

    classification   P = mean_i ‖f(R_i x_i) − f(x_i)‖² / K                  (logit invariance)
    segmentation     P = mean_i ‖P_B f(R_i x_i) − R_i P_B f(x_i)‖² / (K·4B²)  (equivariance)

``K`` = number of logits (per pixel), so ``P`` is a mean squared logit difference. Both inputs
are band-limited: ``x_i`` enters as ``P_B x_i`` and ``R_i x_i`` as the spectral rotation
:func:`sphere_bench.harmonic.signal_rotation.rotate_s2` of ``x_i`` (= ``R_i P_B x_i``, exact), so
``P`` and its gradient vanish for an exactly equivariant model; segmentation outputs are compared
after the band-limiting ``P_B`` in which rotation is exact (as
:mod:`sphere_bench.evaluate.equivariance` does). This is the soft-equivariance / consistency
penalty of e.g. Kim et al., "Regularizing Towards Soft Equivariance Under Mixed Symmetries"
(ICML 2023) in its simplest form; the training loss becomes ``CE + λ P``
(``lit.equivariance_weight = λ``). Cost per training step: one more forward and backward pass on a
batch of twice the size, plus two S² transforms of the inputs (and of the outputs, segmentation):
the network runs on 3 batches per step instead of 1.

Train a model that sees only band-limited inputs, e.g. a CNN wrapped in
:class:`sphere_bench.models.band_limited.BandLimited` (``model=bl_<cnn>``). The cross-entropy
sees the raw rendered ``x`` while ``P`` sees ``P_B x`` and ``R P_B x``; a plain CNN tells the two
apart (at B = 16 a rendered MNIST digit is 20 % away from its projection, relative L2) and drives
``P`` to zero with constant logits on band-limited inputs while still classifying raw ones.
(Measured on the 115k CNN: README, "Soft-equivariance regulariser".) Wrapped, the network meets
the same inputs in the cross-entropy, in ``P`` and at test, and that shortcut is gone.
"""

from __future__ import annotations

import torch
from torch import nn

from sphere_bench.harmonic.rotations import haar_rotations
from sphere_bench.harmonic.s2_fft import s2_fft, s2_ifft
from sphere_bench.harmonic.signal_rotation import rotate_s2
from sphere_bench.schema import TASKS

__all__ = ["equivariance_penalty"]


def _band_limit(x: torch.Tensor) -> torch.Tensor:
    return s2_ifft(s2_fft(x.to(torch.float64))).to(x.dtype)


def equivariance_penalty(
    net: nn.Module,
    x: torch.Tensor,
    task: str,
    rotations: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The soft-equivariance penalty ``P`` of ``net`` on ``x`` (module docstring), differentiable.

    Args:
        net: ``[N, C, 2B, 2B] → [N, K]`` or ``[N, K, 2B, 2B]`` logits.
        x: ``[N, C, 2B, 2B]`` inputs on the SOFT grid.
        task: ``classification`` (invariance) or ``segmentation`` (equivariance).
        rotations: ``[N, 3, 3]`` rotations; default: fresh Haar rotations (``generator`` or torch's
            global generator).

    Returns:
        A scalar tensor (mean squared logit difference).

    Raises:
        ValueError: unknown task, or rotations of the wrong shape.
    """
    if task not in TASKS:
        raise ValueError(f"task must be classification or segmentation, got {task!r}")
    n = x.shape[0]
    if rotations is None:
        rotations = haar_rotations(n, generator=generator)
    if rotations.shape != (n, 3, 3):
        raise ValueError(f"rotations must be [N={n}, 3, 3], got {list(rotations.shape)}")
    rotations = rotations.to(x.device)
    with torch.no_grad():
        both = torch.cat([_band_limit(x), rotate_s2(x, rotations).to(x.dtype)])
    out = net(both)
    plain, rotated = out[:n], out[n:]
    if task == "segmentation":
        rotated = _band_limit(rotated)
        plain = rotate_s2(plain, rotations)
    return (rotated - plain).pow(2).mean()

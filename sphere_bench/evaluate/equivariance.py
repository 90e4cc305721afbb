"""How far a model is from rotation equivariance (segmentation) or invariance (classification).

For inputs ``x`` (spherical images on the SOFT grid, ``[b, 1, 2B, 2B]``) and rotations ``R``:

* **Grid rotations**: the three half-turns ``Rz(π)``, ``Ry(π)`` and ``Rz(π) Ry(π)`` map the SOFT
  grid of *every* bandwidth onto itself (on S² and on SO(3)), so ``R x`` is exact for any signal
  (:func:`sphere_bench.models.signal_rotation.rotate_s2_grid`) and an S2CNN, whose hidden layers
  live on grids of other bandwidths, must be equivariant to them to float precision. (A shift
  by ``π s/B`` with ``s ≠ B`` would not be a grid rotation of the hidden layers.) Segmentation
  error: ``‖f(R x) − R f(x)‖ / ‖f(x)‖`` on the output logits; classification:
  ``‖f(R x) − f(x)‖ / ‖f(x)‖``.
* **Haar rotations**: ``R x`` comes from re-projecting the planar items with the composed rotation
  (:func:`sphere_bench.data.spherical_dataset.render_samples`), so the input is an exact sample
  of the rotated image, not a resampled one. Segmentation outputs are compared after projecting
  both onto band limit ``B`` (``P_B``), where rotation is exact in the spectral domain:
  ``‖P_B f(R x) − R P_B f(x)‖ / ‖P_B f(x)‖``
  (:func:`sphere_bench.models.signal_rotation.rotate_s2`).

Also reported: the fraction of changed predictions (argmax per sample, or per pixel after the same
band-limiting). An exactly equivariant model scores 0 on grid rotations up to float rounding; the
S2CNN is only approximately equivariant under Haar rotations because of its grid nonlinearities
(paper_spec §8), and a CNN is far from both.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from sphere_bench.models.s2_fft import s2_fft, s2_ifft
from sphere_bench.models.signal_rotation import rotate_s2, rotate_s2_grid

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
    from sphere_bench.data.rotations import haar_rotations

    if task not in ("classification", "segmentation"):
        raise ValueError(f"task must be classification or segmentation, got {task!r}")
    was_training = model.training
    model.eval()
    two_b = inputs.shape[-1]
    segmentation = task == "segmentation"
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

"""One equivariance check for every test, as e3nn's ``e3nn.util.test.assert_equivariant``:
rotate the input, run the model, rotate the output, compare with a tolerance.

A *rotation* is either

* a grid rotation ``(shift, flip)``: ``Rz(π·shift/B) · Ry(π)^flip`` with ``B`` the input's
  bandwidth, exact on the SOFT grid for every signal (it permutes the grid points,
  :func:`sphere_bench.harmonic.signal_rotation.rotate_s2_grid`); the output, on its own
  bandwidth ``B'``, is rotated by the same angle, ``shift·B'/B`` steps; or
* a rotation matrix, ``[3, 3]`` for the whole batch or ``[N, 3, 3]`` one per batch item, applied
  spectrally (:func:`~sphere_bench.harmonic.signal_rotation.rotate_s2`), exact for band-limited
  signals.

A *space* says how a signal rotates: ``"s2"`` (``[..., 2B, 2B]``), ``"so3"``
(``[..., 2B, 2B, 2B]``) or ``None`` (invariant: classifier logits are compared unrotated).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from sphere_bench.harmonic.signal_rotation import (
    rotate_s2,
    rotate_s2_grid,
    rotate_so3,
    rotate_so3_grid,
)

Rotation = tuple[int, bool] | torch.Tensor
Model = Callable[[torch.Tensor], torch.Tensor]


def rotate(
    x: torch.Tensor, rotation: Rotation, space: str | None, shift_scale: float = 1.0
) -> torch.Tensor:
    """``x`` rotated as a signal of ``space``; a grid shift is multiplied by ``shift_scale``."""
    if space is None:
        return x
    if space not in ("s2", "so3"):
        raise ValueError(f"space must be 's2', 'so3' or None, got {space!r}")
    if isinstance(rotation, torch.Tensor):
        return (rotate_s2 if space == "s2" else rotate_so3)(x, rotation)
    shift, flip = rotation
    scaled = shift * shift_scale
    if scaled != int(scaled):
        raise ValueError(f"grid shift {shift} is not a whole number of output grid steps")
    return (rotate_s2_grid if space == "s2" else rotate_so3_grid)(x, int(scaled), flip)


@torch.no_grad()
def equivariance_error(
    f: Model,
    x: torch.Tensor,
    rotation: Rotation,
    space_in: str = "s2",
    space_out: str | None = "s2",
    *,
    y: torch.Tensor | None = None,
    measure: str = "l2",
    relative_to: str = "reference",
) -> float:
    """Relative difference between ``f(R x)`` (the *output*) and ``R f(x)`` (the *reference*).

    ``measure="l2"``: ``‖f(R x) − R f(x)‖ / ‖·‖``, ``"max"``: ``max|f(R x) − R f(x)| / max|·|``,
    the denominator being the reference (default) or, ``relative_to="output"``, ``f(R x)``.
    ``y``: ``f(x)`` when already computed.
    """
    y = f(x) if y is None else y
    out = f(rotate(x, rotation, space_in))
    ref = rotate(y, rotation, space_out, shift_scale=y.shape[-1] / x.shape[-1])
    base = {"reference": ref, "output": out}[relative_to]
    diff = out - ref
    if measure == "l2":
        return float(diff.norm() / base.norm())
    if measure == "max":
        return float(diff.abs().max() / base.abs().max())
    raise ValueError(f"measure must be 'l2' or 'max', got {measure!r}")


@torch.no_grad()
def assert_equivariant(
    f: Model,
    x: torch.Tensor,
    rotations: Iterable[Rotation],
    space_in: str = "s2",
    space_out: str | None = "s2",
    *,
    tolerance: float,
    measure: str = "l2",
    relative_to: str = "reference",
) -> list[float]:
    """Assert :func:`equivariance_error` ``< tolerance`` for every rotation; return the errors."""
    y = f(x)
    errors = []
    for rotation in rotations:
        error = equivariance_error(
            f, x, rotation, space_in, space_out, y=y, measure=measure, relative_to=relative_to
        )
        shown = tuple(rotation) if not isinstance(rotation, torch.Tensor) else "matrix"
        assert error < tolerance, f"equivariance error {error:.3g} >= {tolerance:g} ({shown})"
        errors.append(error)
    return errors

"""Models: exact S²/SO(3) harmonic transforms, S2CNN layers, the S2CNN zoo and the CNN zoo."""

from __future__ import annotations

from torch import nn


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of ``model`` (every one; all are trained in this zoo): the count the
    records, the parameter budgets and the papers' "150k / 204k" model names refer to."""
    return sum(p.numel() for p in model.parameters())

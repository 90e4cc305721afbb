"""Load weights of the reference s2cnn models into the matching sphere_bench S2CNNs.

Two reference layouts are supported:

* ``S2ConvNet_sem_seg`` (the paper's segmentation model, ``examples/mnist_sem_seg/models.py``
  of the fork ``Schuh93/sem_seg_s2cnn``, built with ``use_skips=False``) →
  :class:`~sphere_bench.models.s2cnn_zoo.S2CNNSegmentation`. Keys ``input_layer.*``
  (``S2Convolution``), ``hidden_layers.<i>.*`` (``SO3Convolution``), ``output_layer.*``
  (``SO3ToS2``).
* ``S2ConvNet_original`` (upstream ``jonkhler/s2cnn``, ``examples/mnist/run.py``; our
  ``s2cnn_cls_150k``) → :class:`~sphere_bench.models.s2cnn_zoo.S2CNNClassifier` with two
  spherical layers. Keys ``conv1.*``, ``conv2.*`` and ``out_layer.{weight,bias}``.

Every spherical layer of both codes holds ``kernel`` ``[C_in, C_out, |grid|]`` and ``bias``
(``[1, C_out, 1, 1, 1]`` on SO(3), ``[1, C_out, 1, 1]`` on S²), with the same fixed scaling
outside the parameters; they map one to one. The kernel points need no relabelling: both codes
order the near-identity grids β-major, then α, then pre-γ (point ``(b·n_α + a)·n_γ + p``; see
:mod:`sphere_bench.harmonic.kernel_grids`), and with identical weights the two networks compute
the same function: measured with the paper's code (``scripts/compare_reference_s2cnn.py``,
numbers in ``docs/reference_s2cnn.md``), every layer agrees to a relative difference below 1e-6
in float32 (``S2ConvNet_original``: 2.4e-7 and 3.8e-7 for its two layers, 2.5e-7 for the
logits), which a relabelled kernel grid would turn into an O(1) difference. Layers that raise
the bandwidth agree only with ``upsampling="paper"``
(:mod:`sphere_bench.harmonic.paper_upsampling`).

The bandwidths and kernel-grid radii are not stored in a state_dict: build the sphere_bench model
with the reference's constructor arguments (``conf/model/s2cnn_seg_204k.yaml`` and
``s2cnn_cls_150k.yaml`` are the paper's and upstream's), then load. A state_dict whose keys or
shapes do not fit raises :class:`ReferenceLayoutError` naming the offending keys and shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from sphere_bench.models.s2cnn_layers import S2Convolution, SO3Convolution, SO3ToS2Convolution
from sphere_bench.models.s2cnn_zoo import S2CNNClassifier, S2CNNSegmentation

__all__ = [
    "ReferenceLayoutError",
    "reference_key_map",
    "load_reference_state_dict",
    "load_reference_checkpoint",
]

_SPHERICAL = (S2Convolution, SO3Convolution, SO3ToS2Convolution)


class ReferenceLayoutError(ValueError):
    """A reference state_dict does not fit the sphere_bench model it is loaded into."""


def _spherical_layers(container: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in container.named_children() if isinstance(m, _SPHERICAL)]


def reference_key_map(model: nn.Module) -> dict[str, str]:
    """Reference state_dict key → sphere_bench state_dict key, for every parameter of ``model``.

    Args:
        model: an :class:`S2CNNSegmentation` (↔ ``S2ConvNet_sem_seg``) or an
            :class:`S2CNNClassifier` with two spherical layers (↔ ``S2ConvNet_original``).

    Raises:
        ReferenceLayoutError: for any other model.
    """
    pairs: list[tuple[str, str]] = []
    if isinstance(model, S2CNNSegmentation):
        layers = _spherical_layers(model.layers)
        names = ["input_layer"]
        names += [f"hidden_layers.{i}" for i in range(len(layers) - 2)]
        names.append("output_layer")
        for ref, (ours, _) in zip(names, layers, strict=True):
            pairs += [
                (f"{ref}.kernel", f"layers.{ours}.kernel"),
                (f"{ref}.bias", f"layers.{ours}.bias"),
            ]
    elif isinstance(model, S2CNNClassifier):
        layers = _spherical_layers(model.features)
        if len(layers) != 2:
            raise ReferenceLayoutError(
                f"S2ConvNet_original has exactly 2 spherical layers (conv1, conv2); this "
                f"S2CNNClassifier has {len(layers)} (channels of length 2 are needed)"
            )
        for ref, (ours, _) in zip(("conv1", "conv2"), layers, strict=True):
            pairs += [
                (f"{ref}.kernel", f"features.{ours}.kernel"),
                (f"{ref}.bias", f"features.{ours}.bias"),
            ]
        pairs += [("out_layer.weight", "out_layer.weight"), ("out_layer.bias", "out_layer.bias")]
    else:
        raise ReferenceLayoutError(
            f"no reference s2cnn layout for {type(model).__name__}; supported: S2CNNSegmentation "
            "(S2ConvNet_sem_seg) and S2CNNClassifier (S2ConvNet_original)"
        )
    return dict(pairs)


def _strip_wrappers(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Unwrap ``{"state_dict": ...}`` / ``{"model": ...}`` and a ``module.`` prefix."""
    for key in ("state_dict", "model_state_dict", "model"):
        inner = state_dict.get(key) if isinstance(state_dict, Mapping) else None
        if isinstance(inner, Mapping) and all(isinstance(k, str) for k in inner):
            state_dict = inner
            break
    out = dict(state_dict)
    if out and all(k.startswith("module.") for k in out):
        out = {k[len("module.") :]: v for k, v in out.items()}
    return out


def load_reference_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor]
) -> nn.Module:
    """Copy a reference s2cnn state_dict into ``model`` (in place) and return ``model``.

    Args:
        model: see :func:`reference_key_map`.
        state_dict: the reference model's ``state_dict()`` (a checkpoint dict holding it under
            ``"state_dict"``, ``"model_state_dict"`` or ``"model"``, and a ``module.`` prefix of
            ``nn.DataParallel``, are unwrapped).

    Raises:
        ReferenceLayoutError: keys missing or unexpected (e.g. ``skip_layers.*`` of a
            ``use_skips=True`` model, which has no sphere_bench counterpart), or a shape that
            differs (e.g. other channel numbers or kernel-grid sizes); nothing is copied then.
    """
    key_map = reference_key_map(model)
    reference = _strip_wrappers(state_dict)
    ours = model.state_dict()
    missing = sorted(set(key_map) - set(reference))
    unexpected = sorted(set(reference) - set(key_map))
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        hint = (
            " (SO3Shortcut layers of a use_skips=True model have no sphere_bench counterpart)"
            if any(k.startswith("skip_layers.") for k in unexpected)
            else ""
        )
        problems.append(f"unexpected keys {unexpected}{hint}")
    for ref_key, our_key in key_map.items():
        if ref_key in reference and tuple(reference[ref_key].shape) != tuple(ours[our_key].shape):
            problems.append(
                f"{ref_key} has shape {tuple(reference[ref_key].shape)}, but the model's "
                f"{our_key} is {tuple(ours[our_key].shape)}"
            )
    if problems:
        raise ReferenceLayoutError(
            f"the state_dict does not fit {type(model).__name__}: "
            + "; ".join(problems)
            + ". Build the model with the reference's channels, bandlimits and kernel grids "
            "(conf/model/s2cnn_seg_204k.yaml for S2ConvNet_sem_seg, s2cnn_cls_150k.yaml for "
            "S2ConvNet_original)."
        )
    params = dict(model.named_parameters())
    with torch.no_grad():
        for ref_key, our_key in key_map.items():
            target = params[our_key]
            target.copy_(reference[ref_key].to(dtype=target.dtype, device=target.device))
    return model


def load_reference_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """:func:`load_reference_state_dict` from a file written by ``torch.save`` (CPU mapped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no reference checkpoint at {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ReferenceLayoutError(
            f"{path} holds a {type(state).__name__}, not a state_dict; save the reference model "
            "with torch.save(model.state_dict(), path)"
        )
    return load_reference_state_dict(model, state)

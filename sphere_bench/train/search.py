"""Architecture search under a parameter budget (the paper's random search, and TPE).

Gerken et al. (ICML 2022, Sec. 5 and App. C) picked each CNN as the best on a hold-out set of 20
random architectures per parameter budget. ``conf/hparams_search/`` offers that as Hydra Optuna
sweeps (``hydra-optuna-sweeper``; random sampler = the paper's method, TPE = a modern one): each
trial draws a *shape* — a relative width and a kernel size per layer — and :func:`apply_search`
turns it into a model of the budget's size, scaling all widths by one factor found by bisection
(instantiating the candidate nets, which costs milliseconds), so every trial meets the budget by
construction instead of being rejected. The objective is the best validation value of the job
(``val/miou`` or ``val/acc`` on the held-out validation split), which ``main`` returns.

The ``search`` node of a config (only present in an ``hparams_search`` run)::

    search:
      param_budget: 20000       # target number of parameters
      budget_tolerance: 0.1     # accepted relative deviation from the budget
      width_ratios: [w1, ..., wL]   # relative widths, one per layer (sampled by the sweeper)
      kernel_sizes: [k1, ..., kL]   # kernel size per layer (sampled by the sweeper)
      strides: "12121"              # optional: stride per layer, a list or one digit per layer
                                    # (sampled; else the model's)
      head: mean                    # optional: the classification head (sampled; else the model's)
      shrink_kernels: false         # optional: see below

It applies to models whose config has ``features`` and ``kernel_sizes`` lists (the CNN zoo).
When strides are drawn, a drawn kernel can be larger than the map it meets (valid convolutions
shrink every map). With ``shrink_kernels: true`` such a kernel becomes the largest odd size that
fits that map (:func:`shrink_kernels`), so every drawn shape builds; the record shows the kernels
the net has. A shape that no width scaling brings to the budget is a failed trial (its job returns
no value and the sweep goes on).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from sphere_bench.models import count_parameters

log = logging.getLogger(__name__)


class BudgetError(ValueError):
    """No width scaling of the drawn shape meets the parameter budget (or the shape is invalid)."""


TRIAL_MARK = "-trial-"


def trial_model_name(model_name: str, hash_: str) -> str:
    """The model name a search trial's record carries: ``<model>-trial-<first 8 of its hash>``.

    A trial trains a drawn shape, not the named model config (``cnn_cls_114k-trial-1a2b3c4d``), so
    reports never pool trials with each other or with the named model as if they were seeds.
    """
    return f"{model_name}{TRIAL_MARK}{hash_[:8]}"


def base_model_name(model_name: str) -> str:
    """The model config name a trial's model name starts from (:func:`trial_model_name`)."""
    return model_name.split(TRIAL_MARK)[0]


def config_parameters(model_cfg: dict[str, Any]) -> int:
    """Parameters of the net ``model_cfg`` builds (``hydra.utils.instantiate``)."""
    return count_parameters(instantiate(model_cfg))


def widths_for(ratios: Sequence[float], scale: float) -> list[int]:
    """``max(1, round(scale * r))`` for each ratio."""
    return [max(1, round(scale * float(r))) for r in ratios]


def parse_strides(value: Any) -> list[int]:
    """``search.strides`` as a list of ints: a list, or a string (or int) of one digit per layer.

    ``"12121"`` and ``12121`` (how Hydra reads the unquoted override) give ``[1, 2, 1, 2, 1]``.

    Raises
    ------
    BudgetError
        When an entry is not a positive integer.
    """
    items = list(str(value)) if isinstance(value, str | int) else list(value)
    try:
        strides = [int(item) for item in items]
    except (TypeError, ValueError):
        strides = []
    if not strides or min(strides) < 1:
        raise BudgetError(
            f"search.strides must be a list of positive integers or one digit >= 1 per layer "
            f"(e.g. '12121'), got {value!r}"
        )
    return strides


def shrink_kernels(
    bandwidth: int, kernel_sizes: Sequence[int], strides: Sequence[int]
) -> list[int]:
    """Each kernel, in layer order, reduced to the largest odd size that fits the map it meets.

    The input is ``2B × 2B``; a valid convolution maps a height ``h`` to ``(h − k) // s + 1``
    (:func:`sphere_bench.models.cnn_zoo.encoder_sizes`; with ``circular_lon`` padding the width
    does not shrink, so the height is the binding size in both modes). A kernel ``k > h`` becomes
    ``h`` (``h − 1`` when ``h`` is even); a kernel that fits is kept. The result never collapses a
    map (``k ≤ h`` gives ``≥ 1`` pixel).

    Raises
    ------
    BudgetError
        When the lists differ in length.
    """
    if len(kernel_sizes) != len(strides):
        raise BudgetError(
            f"search.kernel_sizes ({len(kernel_sizes)}) and the strides ({len(strides)}) need one "
            "entry per layer"
        )
    height, kernels = 2 * int(bandwidth), []
    for kernel, stride in zip(kernel_sizes, strides, strict=True):
        fit = height if height % 2 else height - 1
        kernel = max(1, min(int(kernel), fit))
        kernels.append(kernel)
        height = (height - kernel) // int(stride) + 1
    return kernels


def fit_to_budget(
    model_cfg: dict[str, Any],
    width_ratios: Sequence[float],
    kernel_sizes: Sequence[int],
    param_budget: int,
    tolerance: float = 0.1,
    iterations: int = 40,
) -> tuple[dict[str, Any], int]:
    """The model config with ``kernel_sizes`` and ``features = widths_for(width_ratios, s)``, the
    scale ``s`` bisected so that the parameter count is closest to ``param_budget``.

    Returns the config and its parameter count. Raises :class:`BudgetError` when the closest
    count is off by more than ``tolerance`` (relative), or when the layer lists do not match the
    model's depth, or the model rejects the shape (e.g. kernels too large for the input).
    """
    depth = len(model_cfg.get("features") or [])
    if len(width_ratios) != depth or len(kernel_sizes) != depth:
        raise BudgetError(
            f"search.width_ratios ({len(width_ratios)}) and search.kernel_sizes "
            f"({len(kernel_sizes)}) need one entry per layer of the model ({depth} layers)"
        )
    if min(float(r) for r in width_ratios) <= 0:
        raise BudgetError(f"search.width_ratios must be > 0, got {list(width_ratios)}")

    def candidate(scale: float) -> tuple[dict[str, Any], int]:
        cfg = {**model_cfg, "features": widths_for(width_ratios, scale),
               "kernel_sizes": [int(k) for k in kernel_sizes]}  # fmt: skip
        try:
            return cfg, config_parameters(cfg)
        except Exception as err:  # noqa: BLE001 - the model rejects this shape
            message = f"the model rejects kernel sizes {list(kernel_sizes)}: {err}"
            raise BudgetError(message) from err

    lo, hi = 0.0, 1.0
    best = candidate(hi)
    while best[1] < param_budget:  # grow until the budget is bracketed
        lo, hi = hi, hi * 2
        best = candidate(hi)
        if hi > 1e6:
            break
    for _ in range(iterations):
        mid = (lo + hi) / 2
        cfg, count = candidate(mid)
        if abs(count - param_budget) < abs(best[1] - param_budget):
            best = (cfg, count)
        if count < param_budget:
            lo = mid
        else:
            hi = mid
    cfg, count = best
    if abs(count - param_budget) > tolerance * param_budget:
        raise BudgetError(
            f"no width scaling of ratios {list(width_ratios)} meets search.param_budget="
            f"{param_budget} within search.budget_tolerance={tolerance} (closest: {count:,} "
            "parameters); widen the tolerance or change the ratios"
        )
    return cfg, count


def apply_search(cfg: DictConfig) -> int | None:
    """If ``cfg`` has a ``search`` node, set ``cfg.model.features`` and ``cfg.model.kernel_sizes``
    to the budget-fitted architecture (in place, so the config hash and the record show it) and
    return its parameter count; else do nothing and return None."""
    search = cfg.get("search")
    if not search:
        return None
    model_cfg: dict[str, Any] = OmegaConf.to_container(cfg.model, resolve=True)  # type: ignore[assignment]
    drawn: dict[str, Any] = {}
    if search.get("strides") is not None:
        drawn["strides"] = parse_strides(search.strides)
    if search.get("head") is not None:
        drawn["head"] = str(search.head)
    kernels = [int(k) for k in search.kernel_sizes]
    if search.get("shrink_kernels", False):
        strides = drawn.get("strides", model_cfg.get("strides") or [])
        kernels = shrink_kernels(int(model_cfg["bandwidth"]), kernels, strides)
    fitted, count = fit_to_budget(
        {**model_cfg, **drawn},
        list(search.width_ratios),
        kernels,
        int(search.param_budget),
        float(search.get("budget_tolerance", 0.1)),
    )
    with open_dict(cfg):
        for key in ("features", "kernel_sizes", *drawn):
            cfg.model[key] = fitted[key]
    log.info(
        "architecture search: features %s, kernel sizes %s%s, %d parameters (budget %d)",
        fitted["features"], fitted["kernel_sizes"],
        "".join(f", {key} {value}" for key, value in drawn.items()),
        count, int(search.param_budget),
    )  # fmt: skip
    return count

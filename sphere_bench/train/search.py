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

It applies to models whose config has ``features`` and ``kernel_sizes`` lists (the CNN zoo).
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


def config_parameters(model_cfg: dict[str, Any]) -> int:
    """Parameters of the net ``model_cfg`` builds (``hydra.utils.instantiate``)."""
    return count_parameters(instantiate(model_cfg))


def widths_for(ratios: Sequence[float], scale: float) -> list[int]:
    """``max(1, round(scale * r))`` for each ratio."""
    return [max(1, round(scale * float(r))) for r in ratios]


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
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    fitted, count = fit_to_budget(
        model_cfg,  # type: ignore[arg-type]
        list(search.width_ratios),
        list(search.kernel_sizes),
        int(search.param_budget),
        float(search.get("budget_tolerance", 0.1)),
    )
    with open_dict(cfg):
        cfg.model.features = fitted["features"]
        cfg.model.kernel_sizes = fitted["kernel_sizes"]
    log.info(
        "architecture search: features %s, kernel sizes %s, %d parameters (budget %d)",
        fitted["features"], fitted["kernel_sizes"], count, int(search.param_budget),
    )  # fmt: skip
    return count

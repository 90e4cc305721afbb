"""The pieces of a training job built from its config, and the loggers' bookkeeping around it.

As lightning-hydra-template's ``instantiate_callbacks`` / ``instantiate_loggers`` /
``log_hyperparameters``: every callback and logger of ``conf/callbacks`` and ``conf/logger`` is
built by its ``_target_``, with the job's own values (monitor, checkpoint dir, run dir, run name)
filled in where the config leaves them null. The trainer gets the job's fixed machinery on top of
the configured callbacks: :class:`~sphere_bench.train.callbacks.FitStopMemory` (a resumed job ends
as the uninterrupted one) and :class:`~sphere_bench.train.checkpoints.VerifiedCheckpointIO`
(checkpoints written with a checksum and verified before every load).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback, EarlyStopping
from pytorch_lightning.loggers import Logger, WandbLogger

from sphere_bench.train.callbacks import FitStopMemory
from sphere_bench.train.checkpoints import VerifiedCheckpointIO

log = logging.getLogger(__name__)


def _fill(node: DictConfig, **values: Any) -> dict[str, Any]:
    """The ``values`` whose keys exist in ``node`` with a null value (to pass to instantiate)."""
    return {k: v for k, v in values.items() if k in node and node[k] is None}


def _is(node: DictConfig, cls: type) -> bool:
    try:
        return issubclass(get_class(node._target_), cls)
    except Exception:
        return False


def has_validation(cfg: DictConfig) -> bool:
    """Whether the job validates (``data.n_val`` not 0 and ``trainer.limit_val_batches`` not 0)."""
    return (cfg.data.get("n_val") is None or cfg.data.n_val > 0) and cfg.trainer.get(
        "limit_val_batches"
    ) != 0


def instantiate_callbacks(
    cfg: DictConfig | None, monitor: str | None, ckpt_dir: Path
) -> list[Callback]:
    """Callbacks of ``cfg`` with ``monitor``/``dirpath`` filled in where null.

    Without a monitor (no validation set) early stopping is left out.
    """
    callbacks: list[Callback] = []
    for name, node in (cfg or {}).items():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        if monitor is None and _is(node, EarlyStopping):
            log.info("no validation set: callback %s left out", name)
            continue
        callbacks.append(instantiate(node, **_fill(node, monitor=monitor, dirpath=str(ckpt_dir))))
    return callbacks


def instantiate_loggers(
    cfg: DictConfig | None, save_dir: Path, run_name: str, tags: list[str]
) -> list[Logger]:
    """Loggers of ``cfg``; null ``save_dir``/``name`` become the run dir / run name."""
    loggers: list[Logger] = []
    for node in (cfg or {}).values():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        extra = _fill(node, save_dir=str(save_dir), name=run_name)
        if _is(node, WandbLogger):
            extra["tags"] = list(dict.fromkeys([*(node.get("tags") or []), *tags]))
        loggers.append(instantiate(node, **extra))
    return loggers


def instantiate_trainer(
    cfg: DictConfig, callbacks: list[Callback], loggers: list[Logger], run_dir: Path
) -> pl.Trainer:
    """``cfg.trainer`` with ``callbacks`` plus the job's machinery (module docstring), the
    ``loggers`` (none: logging off) and the run dir as default root where the config has none."""
    return instantiate(
        cfg.trainer,
        callbacks=[*callbacks, FitStopMemory()],
        logger=loggers or False,
        plugins=[VerifiedCheckpointIO()],
        **_fill(cfg.trainer, default_root_dir=str(run_dir)),
    )


def log_hyperparameters(loggers: list[Logger], params: Mapping[str, Any]) -> None:
    """``params`` (the resolved config and the job's identity) to every logger."""
    for logger in loggers:
        logger.log_hyperparams(dict(params))


def summarise_to_wandb(
    loggers: list[Logger],
    test_results: Mapping[str, Mapping[str, Any]],
    summary: Mapping[str, Any],
) -> None:
    """Final test metrics (``test_<set>/<metric>``) and ``summary`` into every W&B run summary."""
    out: dict[str, Any] = dict(summary)
    for name, metrics in test_results.items():
        prefix = "test" if name == "test" else f"test_{name}"
        out.update({f"{prefix}/{k}": v for k, v in metrics.items()})
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.summary.update(out)


def close_loggers(loggers: list[Logger], failed: bool) -> None:
    """Finish every logger (a W&B run with exit code 1 when ``failed``); a logger that cannot be
    closed is a warning, never an error that would hide the job's own outcome."""
    for logger in loggers:
        try:
            if isinstance(logger, WandbLogger):
                import wandb

                if wandb.run is not None:
                    wandb.finish(exit_code=1 if failed else 0)
            else:
                logger.finalize("failed" if failed else "success")
        except Exception as err:  # closing a logger must not hide the job's own outcome
            log.warning("could not close logger %s: %s", type(logger).__name__, err)


def callback_record_entries(trainer: pl.Trainer | None) -> dict[str, Any]:
    """Entries that callbacks contribute to the record via a ``record_entries()`` method.

    This is how configured callbacks (e.g. the evaluation step, ``conf/callbacks/default.yaml``)
    extend the record without the training code importing them.
    """
    entries: dict[str, Any] = {}
    for callback in getattr(trainer, "callbacks", None) or []:
        if callable(getattr(callback, "record_entries", None)):
            entries.update(callback.record_entries())
    return entries

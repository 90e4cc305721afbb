"""Train and test one model on one spherical dataset: ``python -m sphere_bench.train``.

Configs live in ``conf/`` (root ``conf/config.yaml``); see the README and ``--help``::

    python -m sphere_bench.train experiment=smoke_seg
    python -m sphere_bench.train -m model=cnn_seg_218k,cnn_seg_1m data.n_train=10000,20000
    python -m sphere_bench.train -m experiment=smoke_seg hydra/launcher=joblib \
        hydra.launcher.n_jobs=2

One job: seed → datamodule, net, LitModule → check the pairing → callbacks, loggers, trainer →
fit (resuming from ``last.ckpt`` of the same config if one exists) → test the best checkpoint →
write the result record (:mod:`sphere_bench.train.record`). A job whose record is already
``complete`` is skipped. A job that raises is recorded as ``failed``; in a multirun the sweep goes
on, in a single run the error propagates (non-zero exit).
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import Logger, WandbLogger

from sphere_bench.train import lifecycle
from sphere_bench.train.callbacks import EpochTimer, FitStopMemory
from sphere_bench.train.checkpoints import (
    CheckpointError,
    VerifiedCheckpointIO,
    move_aside,
    pick_resume_checkpoint,
    verify_checkpoint,
)
from sphere_bench.train.checks import check_values
from sphere_bench.train.lifecycle import (
    JobBusy,
    JobInterrupted,
    JobLock,
    die_with_main_process,
    stop_on_signals,
    write_outcome,
)
from sphere_bench.train.lit_module import SphericalLitModule
from sphere_bench.train.record import (
    STATUS_COMPLETE,
    STATUS_FAILED,
    build_record,
    config_hash,
    load_record,
    write_record,
)
from sphere_bench.train.search import apply_search

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
RECORD_NAME = "result.json"

# logger/wandb.yaml: offline unless WANDB_MODE=online.
OmegaConf.register_new_resolver(
    "sb_wandb_offline", lambda mode: str(mode).strip().lower() != "online", replace=True
)


# ------------------------------------------------------------------------------------------------
# checks
# ------------------------------------------------------------------------------------------------
def _models_for(task: str) -> list[str]:
    """Model config names in ``conf/model`` for ``task`` (by the ``_seg``/``_cls`` naming)."""
    tag = "_seg" if task == "segmentation" else "_cls"
    return sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml") if tag in p.stem)


RESOLUTION_KEY = {"healpix": "nside", "healpix_nested": "nside", "equiangular": "nlat",
                  "legendre-gauss": "nlat"}  # fmt: skip


def model_grid(model: Any) -> tuple[str | None, int | None]:
    """The grid a model needs and its resolution, from its config node or the built net.

    Models on a HEALPix or torch-harmonics grid declare ``grid`` (a class attribute or a config
    key: ``healpix_nested``, ``equiangular``, ``legendre-gauss``) and ``nside`` / ``nlat``; the
    other models (S2CNN, planar CNN) declare only ``bandwidth`` and run on the soft/paper grid,
    returned as ``(None, None)``.
    """
    get = model.get if isinstance(model, DictConfig) else lambda k: getattr(model, k, None)
    grid = get("grid")
    if grid is None and isinstance(model, DictConfig) and "_target_" in model:
        try:
            grid = getattr(get_class(model._target_), "grid", None)
        except Exception:  # an unimportable target: instantiate() reports it
            grid = None
    if not isinstance(grid, str) or grid not in RESOLUTION_KEY:
        return None, None
    resolution = get(RESOLUTION_KEY[grid])
    return grid, None if resolution is None else int(resolution)


def check_pairing(
    data_name: str,
    data_task: str,
    data_bandwidth: int | None,
    model_name: str,
    model_task: str | None,
    model_bandwidth: int | None,
    *,
    data_grid: str = "soft",
    data_resolution: int | None = None,
    model_grid: str | None = None,
    model_resolution: int | None = None,
) -> None:
    """One clear :class:`ValueError` if the model does not fit the data (task, grid, resolution).

    ``model_grid``/``model_resolution`` (see :func:`model_grid`) name the grid a HEALPix or DISCO
    model needs; without them the model needs the soft/paper grid at ``model_bandwidth``.
    """
    if model_task is not None and model_task != data_task:
        other_data = "mnist_seg" if model_task == "segmentation" else "mnist_cls"
        raise ValueError(
            f"model={model_name} is a {model_task} model but data={data_name} is {data_task} "
            f"data. Pick a {data_task} model ({', '.join(_models_for(data_task))}) or "
            f"{model_task} data (e.g. data={other_data})."
        )
    if model_grid is not None:
        key = RESOLUTION_KEY[model_grid]
        if data_grid != model_grid or (
            model_resolution is not None and data_resolution != model_resolution
        ):
            have = f"data.{key}={data_resolution}" if data_grid in RESOLUTION_KEY else (
                f"data.bandwidth={data_bandwidth}")  # fmt: skip
            raise ValueError(
                f"grid mismatch: model={model_name} needs data on the {model_grid} grid with "
                f"{key}={model_resolution}, but data={data_name} is on data.grid={data_grid} "
                f"({have}). Set data.grid={model_grid} data.{key}={model_resolution}."
            )
        return
    if model_bandwidth is not None and data_bandwidth is None:
        raise ValueError(
            f"data={data_name} is on data.grid={data_grid}, a grid without a bandwidth, but "
            f"model={model_name} expects 2B x 2B inputs with B={model_bandwidth}; use "
            "data.grid=soft or data.grid=paper."
        )
    if model_bandwidth is not None and int(model_bandwidth) != int(data_bandwidth):
        raise ValueError(
            f"bandwidth mismatch: data={data_name} has data.bandwidth={data_bandwidth} but "
            f"model={model_name} is built for model.bandwidth={model_bandwidth}. Set both to the "
            f"same value, e.g. data.bandwidth={model_bandwidth} "
            f"(or model.bandwidth={data_bandwidth})."
        )


def check_config(cfg: DictConfig, model_name: str, data_name: str) -> None:
    """:func:`check_pairing` from the config alone (before anything is built)."""
    model_task = cfg.model.get("task")
    if model_task is None:
        try:
            model_task = getattr(get_class(cfg.model._target_), "task", None)
        except Exception:  # an unimportable target: instantiate() reports it
            model_task = None
    data_grid = str(cfg.data.get("grid", "soft"))
    grid, resolution = model_grid(cfg.model)
    key = RESOLUTION_KEY.get(data_grid)
    check_pairing(
        data_name,
        cfg.data.task,
        None if key else cfg.data.get("bandwidth"),
        model_name,
        model_task if isinstance(model_task, str) else None,
        cfg.model.get("bandwidth"),
        data_grid=data_grid,
        data_resolution=int(cfg.data.get(key)) if key and cfg.data.get(key) is not None else None,
        model_grid=grid,
        model_resolution=resolution,
    )


# ------------------------------------------------------------------------------------------------
# builders
# ------------------------------------------------------------------------------------------------
def _fill(node: DictConfig, **values: Any) -> dict[str, Any]:
    """The ``values`` whose keys exist in ``node`` with a null value (to pass to instantiate)."""
    return {k: v for k, v in values.items() if k in node and node[k] is None}


def _is(node: DictConfig, cls: type) -> bool:
    try:
        return issubclass(get_class(node._target_), cls)
    except Exception:
        return False


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


# ------------------------------------------------------------------------------------------------
# one job
# ------------------------------------------------------------------------------------------------
@dataclass
class Job:
    """Everything one job builds (kept for the result record, also after a failure)."""

    cfg: DictConfig
    run_dir: Path
    model_name: str
    data_name: str
    config: dict[str, Any] = field(default_factory=dict)
    hash: str = ""
    run_name: str = ""
    net: torch.nn.Module | None = None
    datamodule: pl.LightningDataModule | None = None
    lit: SphericalLitModule | None = None
    trainer: pl.Trainer | None = None
    loggers: list[Logger] = field(default_factory=list)
    checkpoint: dict[str, Any] = field(default_factory=dict)
    val_best: float | None = None
    timing: dict[str, Any] | None = None

    @property
    def sweep_dir(self) -> Path:
        return Path(self.cfg.results_dir) / str(self.cfg.sweep_name)

    @property
    def record_path(self) -> Path:
        return self.sweep_dir / f"{self.hash}.json"

    @property
    def ckpt_dir(self) -> Path:
        return self.sweep_dir / self.hash / "checkpoints"

    def timer(self) -> EpochTimer | None:
        for cb in getattr(self.trainer, "callbacks", []) or []:
            if isinstance(cb, EpochTimer):
                return cb
        return None


def default_run_name(cfg: DictConfig, model_name: str, data_name: str) -> str:
    """``<model>-<data>-n<N>-<rotate_train>-s<seed>`` unless ``run_name`` is set."""
    if cfg.get("run_name"):
        return str(cfg.run_name)
    return f"{model_name}-{data_name}-n{cfg.data.n_train}-{cfg.data.rotate_train}-s{cfg.seed}"


def fit_and_test(job: Job) -> None:
    """Build everything, check the pairing, fit (or resume), test the best checkpoint."""
    cfg = job.cfg
    check_values(cfg)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    check_config(cfg, job.model_name, job.data_name)
    pl.seed_everything(cfg.seed, workers=True)

    log.info("data=%s: %s", job.data_name, cfg.data._target_)
    datamodule = job.datamodule = instantiate(cfg.data)
    log.info("model=%s: %s", job.model_name, cfg.model._target_)
    net = job.net = instantiate(cfg.model)
    grid, resolution = model_grid(net)
    check_pairing(
        job.data_name, datamodule.task, datamodule.bandwidth,
        job.model_name, getattr(net, "task", None), getattr(net, "bandwidth", None),
        data_grid=datamodule.grid.name, data_resolution=datamodule.grid.resolution,
        model_grid=grid, model_resolution=resolution,
    )  # fmt: skip
    lit = job.lit = SphericalLitModule(
        net=net,
        task=datamodule.task,
        num_classes=datamodule.num_classes,
        test_set_names=datamodule.test_set_names,
        **instantiate(cfg.lit, _convert_="all"),
    )
    has_val = (cfg.data.get("n_val") is None or cfg.data.n_val > 0) and cfg.trainer.get(
        "limit_val_batches"
    ) != 0
    monitor = lit.monitor if has_val else None

    callbacks = instantiate_callbacks(cfg.get("callbacks"), monitor, job.ckpt_dir)
    # Part of the job's machinery, not a choice: a resumed job must end as the uninterrupted one.
    callbacks.append(FitStopMemory())
    tags = [job.model_name, job.data_name, datamodule.task, f"rot_{cfg.data.rotate_train}"]
    job.loggers = instantiate_loggers(cfg.get("logger"), job.run_dir, job.run_name, tags)
    trainer = job.trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=job.loggers or False,
        # Checkpoints written beside their target with a checksum, verified before every load.
        plugins=[VerifiedCheckpointIO()],
        **_fill(cfg.trainer, default_root_dir=str(job.run_dir)),
    )
    for logger in job.loggers:
        logger.log_hyperparams(
            {**job.config, "config_hash": job.hash, "model_name": job.model_name,
             "data_name": job.data_name, "parameters": sum(p.numel() for p in net.parameters())}
        )  # fmt: skip

    if cfg.debug.get("fail"):
        raise RuntimeError("debug.fail=true: failure injected before fit (for testing sweeps)")

    resume = cfg.get("ckpt_path") or None
    last = job.ckpt_dir / "last.ckpt"
    if resume is not None:  # given by the user: verified, never moved
        reason = verify_checkpoint(resume)
        if reason is not None:
            raise CheckpointError(resume, reason, fix="pass an intact file as ckpt_path=")
    else:  # this job's own: the last intact one; damaged ones are moved aside with a warning
        picked = pick_resume_checkpoint(job.ckpt_dir)
        resume = None if picked is None else str(picked)
    if resume is not None:
        log.info("resuming from checkpoint %s", resume)
    job.checkpoint = {"dir": str(job.ckpt_dir), "resumed_from": resume}

    if cfg.get("train", True):
        trainer.fit(lit, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    timer = job.timer()
    # Now: testing a checkpoint restores the callback states saved with it.
    job.timing = None if timer is None else timer.summary()
    best = None
    for checkpoint_cb in trainer.checkpoint_callbacks:
        if isinstance(checkpoint_cb, ModelCheckpoint) and checkpoint_cb.monitor == monitor:
            best = checkpoint_cb.best_model_path or None
            if monitor is not None and checkpoint_cb.best_model_score is not None:
                job.val_best = float(checkpoint_cb.best_model_score)
            break
    job.checkpoint.update(best=best, last=str(last) if last.is_file() else None)
    if job.val_best is None and monitor is not None:  # e.g. fast_dev_run (no checkpoints)
        value = trainer.callback_metrics.get(f"{monitor}_best")
        job.val_best = None if value is None else float(value)
    if cfg.get("test", True):
        ckpt = best if (monitor is not None and best and not trainer.fast_dev_run) else None
        if ckpt is None and cfg.get("train", True) is False:
            ckpt = resume
        reason = None if ckpt is None else verify_checkpoint(ckpt)
        if reason is not None:
            moved = move_aside(ckpt, reason) if ckpt != cfg.get("ckpt_path") else ckpt
            raise CheckpointError(
                ckpt, f"{reason}; moved to {moved}",
                fix=f"its weights are lost: delete {job.ckpt_dir.parent} and rerun to train the "
                "job again",
            )  # fmt: skip
        log.info("testing %s", ckpt or "the current weights")
        trainer.test(lit, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
        _summarise_to_wandb(job)


def _summarise_to_wandb(job: Job) -> None:
    """Final test metrics and the best validation value into every W&B run summary."""
    summary: dict[str, Any] = {"config_hash": job.hash}
    for name, metrics in (job.lit.test_results if job.lit else {}).items():
        prefix = "test" if name == "test" else f"test_{name}"
        summary.update({f"{prefix}/{k}": v for k, v in metrics.items()})
    if job.lit is not None and job.val_best is not None:
        summary[f"{job.lit.monitor}_best"] = job.val_best
    for logger in job.loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.summary.update(summary)


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


def _close_loggers(job: Job, failed: bool) -> None:
    for logger in job.loggers:
        try:
            if isinstance(logger, WandbLogger):
                import wandb

                if wandb.run is not None:
                    wandb.finish(exit_code=1 if failed else 0)
            else:
                logger.finalize("failed" if failed else "success")
        except Exception as err:  # closing a logger must not hide the job's own outcome
            log.warning("could not close logger %s: %s", type(logger).__name__, err)


def _choices() -> dict[str, str]:
    if HydraConfig.initialized():
        return {k: str(v) for k, v in HydraConfig.get().runtime.choices.items() if v is not None}
    return {}


def _is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_job(
    cfg: DictConfig, run_dir: Path | str | None = None, choices: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Run one job and return its result record (also written to disk).

    Parameters
    ----------
    cfg : DictConfig
        The composed root config (``conf/config.yaml``).
    run_dir : path, optional
        The job's output dir; default: Hydra's ``runtime.output_dir``.
    choices : mapping, optional
        Config group choices (``model``, ``data``); default: Hydra's ``runtime.choices``, else
        names derived from the targets.

    Raises
    ------
    Exception
        Whatever the job raised, after its ``failed`` record is written — except in a Hydra
        multirun, where the failure is logged and the record returned, so the sweep goes on.
    """
    choices = dict(choices or _choices())
    if run_dir is None:
        if not HydraConfig.initialized():
            raise ValueError("run_job needs run_dir when called outside a Hydra app")
        run_dir = HydraConfig.get().runtime.output_dir
    job = Job(
        cfg=cfg,
        run_dir=Path(run_dir),
        model_name=choices.get("model", str(cfg.model.get("_target_", "model")).split(".")[-1]),
        data_name=choices.get("data", f"{cfg.data.get('dataset')}_{cfg.data.get('task')}"),
    )
    apply_search(cfg)  # an hparams_search trial: the budget-fitted architecture, before hashing
    job.config = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    job.hash = config_hash(job.config)
    job.run_name = default_run_name(cfg, job.model_name, job.data_name)
    job.run_dir.mkdir(parents=True, exist_ok=True)
    log.info("job %s (config hash %s), run dir %s", job.run_name, job.hash, job.run_dir)

    lock_path = job.sweep_dir / job.hash / "job.lock"
    try:
        with JobLock(lock_path), stop_on_signals(), die_with_main_process():
            return _run_locked(job)
    except JobBusy as err:
        log.warning("job %s (config hash %s) not started: %s", job.run_name, job.hash, err)
        write_outcome(job.run_dir, "busy", config_hash=job.hash, lock=str(lock_path))
        if not _is_multirun():
            raise
        return {"status": "busy", "config_hash": job.hash, "error": {"message": str(err)}}


def _where(job: Job) -> str:
    """Where a job stopped and what a rerun resumes from (for the interruption message)."""
    trainer = job.trainer
    if trainer is None:
        place = "before training (while building data and model)"
    else:
        stage = getattr(trainer.state, "stage", None)
        place = (
            f"at epoch {trainer.current_epoch}, step {trainer.global_step}"
            f" ({getattr(stage, 'value', stage) or 'idle'})"
        )
    last = job.ckpt_dir / "last.ckpt"
    if last.is_file():
        resume = f"rerun the same command to resume from {last}"
    else:
        resume = "no checkpoint yet: rerun the same command to start it again"
    return f"{place}; no record written; {resume}"


def _run_locked(job: Job) -> dict[str, Any]:
    """:func:`run_job` once the job's lock is held and signals raise :class:`JobInterrupted`."""
    cfg = job.cfg
    previous = load_record(job.record_path) if cfg.get("skip_finished", True) else None
    if previous is not None and previous.get("status") == STATUS_COMPLETE:
        log.info("skipping finished run %s (%s): record %s", job.hash, job.run_name,
                 job.record_path)  # fmt: skip
        write_record(previous, job.run_dir / RECORD_NAME)
        write_outcome(job.run_dir, "skipped", config_hash=job.hash, record=str(job.record_path))
        return previous

    start = time.perf_counter()
    error: Exception | None = None
    try:
        try:
            fit_and_test(job)
        except Exception as err:
            error = err
            if _is_multirun():  # the sweep goes on: keep the traceback in this job's log
                log.exception("job %s (config hash %s) failed: %s", job.run_name, job.hash, err)
            else:  # Hydra prints the traceback once when the error propagates
                log.error("job %s (config hash %s) failed: %s: %s", job.run_name, job.hash,
                          type(err).__name__, err)  # fmt: skip
        timer = job.timer()
        if job.timing is None and timer is not None:  # failed during fit
            job.timing = timer.summary()
        record = build_record(
            status=STATUS_FAILED if error is not None else STATUS_COMPLETE,
            config=job.config,
            hash_=job.hash,
            run_dir=job.run_dir,
            model_name=job.model_name,
            data_name=job.data_name,
            run_name=job.run_name,
            net=job.net,
            lit=job.lit,
            trainer=job.trainer,
            val_best=job.val_best,
            timing=job.timing,
            total_seconds=time.perf_counter() - start,
            checkpoint=job.checkpoint,
            error=error,
            extra=callback_record_entries(job.trainer),
        )
        write_record(record, job.run_dir / RECORD_NAME, job.record_path)
    except JobInterrupted as stop:
        stop.where = _where(job)
        log.error("job %s (config hash %s) %s", job.run_name, job.hash, stop)
        write_outcome(job.run_dir, "interrupted", config_hash=job.hash, message=str(stop))
        _close_loggers(job, failed=True)
        raise
    log.info("%s record: %s", record["status"], job.record_path)
    write_outcome(job.run_dir, record["status"], config_hash=job.hash, record=str(job.record_path))
    _close_loggers(job, failed=error is not None)
    if error is not None:
        del job
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # an OOM job must not starve the next one of a sweep
        if not _is_multirun():
            raise error
    return record


@hydra.main(version_base="1.3", config_path=os.fspath(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the best validation value (for Hydra sweepers)."""
    return run_job(cfg).get("val_best")


def cli() -> None:
    """``python -m sphere_bench.train``: :func:`main` with honest exit codes.

    Exit status: 0 when every job is complete or skipped (a failed job of a sweep too, unless
    ``strict=true``); 1 when a single job failed, or a job of a ``strict=true`` sweep failed or was
    busy; ``128 + signal`` (143 for SIGTERM, 130 for SIGINT) when a signal stopped the run, after
    a message saying where it stopped and that rerunning the same command resumes it.
    """
    os.environ[lifecycle.ENV_MAIN_PROCESS] = lifecycle.main_process_marker()
    lifecycle.exit_code = 0
    try:
        with stop_on_signals():
            main()
    except JobInterrupted as stop:
        print(
            f"sphere_bench.train: {stop}. Rerun the same command to resume: complete jobs are "
            "skipped, interrupted ones resume from their last.ckpt.",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(stop.exit_code)
    sys.exit(lifecycle.exit_code)

"""Train and test one model on one spherical dataset: ``python -m sphere_bench.train``.

Configs live in ``conf/`` (root ``conf/config.yaml``); see the README and ``--help``::

    python -m sphere_bench.train experiment=smoke_seg
    python -m sphere_bench.train -m model=cnn_seg_218k,cnn_seg_1m data.n_train=10000,20000
    python -m sphere_bench.train -m experiment=smoke_seg hydra/launcher=joblib \
        hydra.launcher.n_jobs=2

One job (:func:`train`, read top to bottom): check the config → seed → datamodule, net,
LitModule → check the pairing → callbacks, loggers, trainer → fit (resuming from ``last.ckpt`` of
the same config if one exists) → test the best checkpoint. Around it (:func:`run_job`): the job's
lock, signals and the result record (:mod:`sphere_bench.train.record`). A job whose record is
already ``complete`` is skipped. A job that raises is recorded as ``failed``; in a multirun the
sweep goes on, in a single run the error propagates (non-zero exit).

The helpers live beside it, one job each: :mod:`~sphere_bench.train.checks` (config values and
the model–data pairing), :mod:`~sphere_bench.train.builders` (callbacks, loggers, trainer from
the config), :mod:`~sphere_bench.train.checkpoints` (resume, best, test checkpoints),
:mod:`~sphere_bench.train.lifecycle` (the job's state, locks, signals, outcomes).
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sphere_bench.models import count_parameters
from sphere_bench.runtime import keep_freed_heap
from sphere_bench.train import lifecycle
from sphere_bench.train.builders import (
    callback_record_entries,
    close_loggers,
    has_validation,
    instantiate_callbacks,
    instantiate_loggers,
    instantiate_trainer,
    log_hyperparameters,
    summarise_to_wandb,
)
from sphere_bench.train.checkpoints import best_checkpoint, checkpoint_to_test, resume_checkpoint
from sphere_bench.train.checks import (
    CONF_DIR,
    check_config,
    check_pairing,
    check_values,
    data_offers,
    model_needs,
)
from sphere_bench.train.lifecycle import (
    Job,
    JobBusy,
    JobInterrupted,
    JobLock,
    default_run_name,
    die_with_main_process,
    stop_on_signals,
    where_stopped,
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
from sphere_bench.train.search import BudgetError, apply_search, trial_model_name

__all__ = ["CONF_DIR", "check_config", "cli", "lookup", "main", "run_job", "train"]

log = logging.getLogger(__name__)

RECORD_NAME = "result.json"

# logger/wandb.yaml: offline unless WANDB_MODE=online.
OmegaConf.register_new_resolver(
    "sb_wandb_offline", lambda mode: str(mode).strip().lower() != "online", replace=True
)


def lookup(key: Any, table: Mapping[str, Any], *, _node_: Any = None) -> Any:
    """Config resolver ``sb_lookup``: the value of ``key`` in the mapping ``table``.

    A value that depends on a swept key, written in one line, e.g. in
    ``conf/recipe/quick_cls/cnn_cls_small.yaml``::

        n_train: ${sb_lookup:${n_level},{small: 3000, medium: 9000, large: 27000}}

    Raises:
        KeyError: ``key`` is not in ``table``; the message names the config key being resolved,
            the bad value and the allowed ones.
    """
    try:
        return table[str(key)]
    except KeyError:
        where = _node_._get_full_key(None) if _node_ is not None else "sb_lookup"
        raise KeyError(
            f"{where}: {key!r} is not one of {', '.join(map(repr, table))}; set the key it is "
            f"looked up by to one of them"
        ) from None


OmegaConf.register_new_resolver("sb_lookup", lookup, replace=True)


def train(job: Job) -> None:
    """Build everything, check the pairing, fit (or resume), test the best checkpoint.

    What it builds is kept on ``job`` (for the record, also when it raises).
    """
    cfg = job.cfg
    check_values(cfg)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    keep_freed_heap(cfg.get("heap_keep_mb"))
    check_config(cfg, job.model_name, job.data_name)
    pl.seed_everything(cfg.seed, workers=True)

    log.info("data=%s: %s", job.data_name, cfg.data._target_)
    datamodule = job.datamodule = instantiate(cfg.data)
    log.info("model=%s: %s", job.model_name, cfg.model._target_)
    net = job.net = instantiate(cfg.model)
    check_pairing(model_needs(net), data_offers(datamodule), job.model_name, job.data_name)
    lit = job.lit = SphericalLitModule(
        net=net,
        task=datamodule.task,
        num_classes=datamodule.num_classes,
        test_set_names=datamodule.test_set_names,
        **instantiate(cfg.lit, _convert_="all"),
    )
    monitor = lit.monitor if has_validation(cfg) else None

    callbacks = instantiate_callbacks(cfg.get("callbacks"), monitor, job.ckpt_dir)
    tags = [job.model_name, job.data_name, datamodule.task, f"rot_{cfg.data.rotate_train}"]
    job.loggers = instantiate_loggers(cfg.get("logger"), job.run_dir, job.run_name, tags)
    trainer = job.trainer = instantiate_trainer(cfg, callbacks, job.loggers, job.run_dir)
    log_hyperparameters(job.loggers, {
        **job.config, "config_hash": job.hash, "model_name": job.model_name,
        "data_name": job.data_name, "parameters": count_parameters(net),
    })  # fmt: skip
    if cfg.debug.get("fail"):
        raise RuntimeError("debug.fail=true: failure injected before fit (for testing sweeps)")

    resume = resume_checkpoint(cfg.get("ckpt_path") or None, job.ckpt_dir)
    if resume is not None:
        log.info("resuming from checkpoint %s", resume)
    job.checkpoint = {"dir": str(job.ckpt_dir), "resumed_from": resume}
    trained = cfg.get("train", True) is not False
    if cfg.get("train", True):
        trainer.fit(lit, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    timer = job.timer()  # read now: testing a checkpoint restores the callback states saved with it
    job.timing = None if timer is None else timer.summary()
    best, job.val_best = best_checkpoint(trainer, monitor)
    last = job.ckpt_dir / "last.ckpt"
    job.checkpoint.update(best=best, last=str(last) if last.is_file() else None)

    if cfg.get("test", True):
        ckpt = checkpoint_to_test(
            best, resume, validated=monitor is not None and not trainer.fast_dev_run,
            trained=trained, user_path=cfg.get("ckpt_path"), job_dir=job.ckpt_dir.parent,
        )  # fmt: skip
        log.info("testing %s", ckpt or "the current weights")
        trainer.test(lit, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
        summary = {"config_hash": job.hash}
        if job.val_best is not None:
            summary[f"{lit.monitor}_best"] = job.val_best
        summarise_to_wandb(job.loggers, lit.test_results, summary)


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
    try:  # an hparams_search trial: the budget-fitted architecture, before hashing
        searched = apply_search(cfg)
    except BudgetError as err:
        if not _is_multirun():
            raise
        log.error("search trial not run (its shape misses the budget): %s", err)
        return {"status": STATUS_FAILED, "error": {"type": "BudgetError", "message": str(err)}}
    job.config = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    job.hash = config_hash(job.config)
    if searched is not None:  # a drawn architecture is not the named model: a name of its own
        job.model_name = trial_model_name(job.model_name, job.hash)
    job.run_name = default_run_name(cfg, job.model_name, job.data_name)
    job.run_dir.mkdir(parents=True, exist_ok=True)
    log.info("job %s (config hash %s), run dir %s", job.run_name, job.hash, job.run_dir)

    try:
        with JobLock(job.lock_path), stop_on_signals(), die_with_main_process():
            return _run_locked(job)
    except JobBusy as err:
        log.warning("job %s (config hash %s) not started: %s", job.run_name, job.hash, err)
        write_outcome(job.run_dir, "busy", config_hash=job.hash, lock=str(job.lock_path))
        if not _is_multirun():
            raise
        return {"status": "busy", "config_hash": job.hash, "error": {"message": str(err)}}


def _run_locked(job: Job) -> dict[str, Any]:
    """:func:`run_job` once the job's lock is held and signals raise :class:`JobInterrupted`:
    skip a complete job, else :func:`train` and write its record (also when it failed)."""
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
            train(job)
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
        stop.where = where_stopped(job)
        log.error("job %s (config hash %s) %s", job.run_name, job.hash, stop)
        write_outcome(job.run_dir, "interrupted", config_hash=job.hash, message=str(stop))
        close_loggers(job.loggers, failed=True)
        raise
    log.info("%s record: %s", record["status"], job.record_path)
    write_outcome(job.run_dir, record["status"], config_hash=job.hash, record=str(job.record_path))
    close_loggers(job.loggers, failed=error is not None)
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

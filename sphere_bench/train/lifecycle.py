"""How a job and a sweep start, stop and end: signals, worker lifetime, per-job locks, summaries.

* **Signals.** SIGTERM (what SLURM, Kubernetes and ``kill`` send) and SIGINT raise
  :class:`JobInterrupted` in the main thread. The job stops where it is, writes no record (its
  ``last.ckpt`` is the resume point), logs where it stopped and exits with ``128 + signal``
  (143 for SIGTERM), so schedulers see a failed step; a sweep stops as a whole with the same code.
  Lightning's own SIGTERM notifier still runs first (it calls the handler installed before fit).
* **Worker lifetime.** :func:`main_process_marker` tags the sweep's main process in the
  environment (host and pid); a job in another process of the same host (a joblib or
  submitit_local worker) watches that pid and stops itself (SIGTERM to itself) within a second
  of its death, so ``kill -9`` of a sweep leaves no orphan training on and writing records.
* **Per-job lock.** :class:`JobLock` holds an exclusive ``flock`` on
  ``<results_dir>/<sweep>/<hash>/job.lock`` for the whole job; a second process that wants the
  same job finds it busy and leaves it (``busy`` outcome). The kernel drops the lock when its
  holder dies, also on ``kill -9``.
* **The job's state.** :class:`Job` holds what one job has built so far (kept for its record, also
  after a failure) and where its files go; :func:`where_stopped` says, for the interruption
  message, where it stopped and what a rerun resumes from.
* **Sweep summary.** Every job writes ``outcome.json`` in its run dir (``complete``, ``skipped``,
  ``failed``, ``busy``, ``interrupted``); :class:`SweepSummary` (a Hydra callback,
  ``conf/hydra/default.yaml``) prints one line at the end of a multirun, and with ``strict=true``
  makes the command exit 1 when a job failed or was busy (for CI and schedulers).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig

from sphere_bench.io import atomic_write_text, pid_alive

if TYPE_CHECKING:
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.loggers import Logger

    from sphere_bench.train.callbacks import EpochTimer

log = logging.getLogger(__name__)

#: Environment variable naming the sweep's main process, ``<host>:<pid>``.
ENV_MAIN_PROCESS = "SPHERE_BENCH_MAIN_PROCESS"
OUTCOME_NAME = "outcome.json"
OUTCOMES = ("complete", "skipped", "failed", "busy", "interrupted")
WATCH_INTERVAL_S = 0.5
ORPHAN_GRACE_S = 30.0

#: Exit code the command line should use after the sweep (set by :class:`SweepSummary`).
exit_code = 0


class JobInterrupted(BaseException):  # noqa: N818 - like KeyboardInterrupt, not an error
    """A signal stopped the job (a :class:`BaseException`, so ``except Exception`` lets it pass).

    Parameters
    ----------
    signum : int
        The signal number (15 = SIGTERM, 2 = SIGINT).
    where : str
        Where it stopped (filled in by the training code), for the message.
    """

    def __init__(self, signum: int, where: str = "") -> None:
        super().__init__(signum, where)
        self.signum = int(signum)
        self.where = where

    def __reduce__(self) -> tuple[type, tuple[int, str]]:  # keeps `where` across processes
        return (type(self), (self.signum, self.where))

    @property
    def signal_name(self) -> str:
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"

    @property
    def exit_code(self) -> int:
        """``128 + signum``, the shell's convention for a process ended by a signal."""
        return 128 + self.signum

    def __str__(self) -> str:
        return f"stopped by {self.signal_name}" + (f" {self.where}" if self.where else "")


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise JobInterrupted(signum)


@contextlib.contextmanager
def stop_on_signals(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[None]:
    """Within the block, ``signals`` raise :class:`JobInterrupted` (main thread only; elsewhere a
    no-op, since Python delivers signals to the main thread). Previous handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in signals}
    for s in signals:
        signal.signal(s, _raise_interrupted)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


# ------------------------------------------------------------------------------ worker lifetime
def main_process_marker() -> str:
    """``<host>:<pid>`` of this process; the command line exports it as :data:`ENV_MAIN_PROCESS`."""
    return f"{socket.gethostname()}:{os.getpid()}"


def watched_main_pid(environ: dict[str, str] | None = None) -> int | None:
    """The sweep's main pid when this process is one of its workers on the same host, else None
    (the main process itself, a job on another host, or no sweep)."""
    value = (environ if environ is not None else os.environ).get(ENV_MAIN_PROCESS, "")
    host, _, pid = value.rpartition(":")
    if not pid.isdigit() or host != socket.gethostname() or int(pid) == os.getpid():
        return None
    return int(pid)


@contextlib.contextmanager
def die_with_main_process(interval_s: float = WATCH_INTERVAL_S) -> Iterator[int | None]:
    """In a worker of a sweep (see :func:`watched_main_pid`), send SIGTERM to this process when the
    sweep's main process dies, so the job stops (as for any SIGTERM) instead of training on as an
    orphan. Yields the watched pid (None: nothing to watch)."""
    pid = watched_main_pid()
    if pid is None:
        yield None
        return
    done, orphaned = threading.Event(), threading.Event()

    def watch() -> None:
        while not done.wait(interval_s):
            if not pid_alive(pid):
                log.error("the sweep's main process %d is gone: stopping this worker", pid)
                orphaned.set()
                os.kill(os.getpid(), signal.SIGTERM)  # the job stops as for any SIGTERM
                if not done.wait(ORPHAN_GRACE_S):  # stuck outside Python code: end it anyway
                    os._exit(128 + signal.SIGTERM)
                return

    thread = threading.Thread(target=watch, name="sphere-bench-main-watch", daemon=True)
    thread.start()
    try:
        yield pid
    finally:
        done.set()
        if orphaned.is_set():  # an idle worker of a dead pool would linger: end the process
            logging.shutdown()
            os._exit(128 + signal.SIGTERM)


# --------------------------------------------------------------------------------- per-job lock
class JobBusy(RuntimeError):
    """Another process holds the job's lock (the job is running there)."""


class JobLock:
    """Exclusive, non-blocking ``flock`` on ``path`` for the lifetime of the ``with`` block.

    The file holds ``host pid start-time`` of the holder (for the message of a second taker); it
    is left in place (unlinking a lock file races with a new taker). Raises :class:`JobBusy`
    naming the holder when the lock is taken.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def __enter__(self) -> JobLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            raise JobBusy(
                f"the job is already running (lock {self.path} held by {holder}); not starting it "
                "twice. Wait for it, or stop that process; a lock of a dead process is free."
            ) from None
        os.ftruncate(fd, 0)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        os.pwrite(fd, f"host {socket.gethostname()} pid {os.getpid()} since {stamp}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


# ------------------------------------------------------------------------------- the job's state
@dataclass
class Job:
    """Everything one job builds (kept for the result record, also after a failure).

    Its files: the record ``<results_dir>/<sweep_name>/<hash>.json``, the checkpoints in
    ``<results_dir>/<sweep_name>/<hash>/checkpoints`` (found again when the sweep is rerun).
    """

    cfg: DictConfig
    run_dir: Path
    model_name: str
    data_name: str
    config: dict[str, Any] = field(default_factory=dict)
    hash: str = ""
    run_name: str = ""
    net: torch.nn.Module | None = None
    datamodule: pl.LightningDataModule | None = None
    lit: pl.LightningModule | None = None
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

    @property
    def lock_path(self) -> Path:
        return self.sweep_dir / self.hash / "job.lock"

    def timer(self) -> EpochTimer | None:
        """The trainer's epoch timer, if it has one."""
        from sphere_bench.train.callbacks import EpochTimer

        for cb in getattr(self.trainer, "callbacks", []) or []:
            if isinstance(cb, EpochTimer):
                return cb
        return None


def default_run_name(cfg: DictConfig, model_name: str, data_name: str) -> str:
    """``<model>-<data>-n<N>-<rotate_train>-s<seed>`` unless ``run_name`` is set."""
    if cfg.get("run_name"):
        return str(cfg.run_name)
    return f"{model_name}-{data_name}-n{cfg.data.n_train}-{cfg.data.rotate_train}-s{cfg.seed}"


def where_stopped(job: Job) -> str:
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


# ------------------------------------------------------------------------------- sweep summary
def write_outcome(run_dir: Path | str, outcome: str, **details: Any) -> None:
    """``<run_dir>/outcome.json``: how this job ended (one of :data:`OUTCOMES`)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}; allowed: {', '.join(OUTCOMES)}")
    text = json.dumps({"outcome": outcome, "time": time.time(), **details}, default=str)
    atomic_write_text(Path(run_dir) / OUTCOME_NAME, text + "\n")


def read_outcomes(sweep_dir: Path | str, since: float = 0.0) -> list[dict[str, Any]]:
    """The ``outcome.json`` files under ``sweep_dir`` written at or after ``since`` (epoch s);
    an unreadable one is counted as ``unknown`` with a warning naming it."""
    outcomes = []
    for path in sorted(Path(sweep_dir).rglob(OUTCOME_NAME)):
        try:
            item = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(item, dict) or item.get("outcome") not in OUTCOMES:
                raise ValueError(f"no valid 'outcome' (one of {', '.join(OUTCOMES)})")
        except (OSError, ValueError) as err:
            log.warning("unreadable job outcome %s: %s", path, err)
            item = {"outcome": "unknown", "time": path.stat().st_mtime}
        if float(item.get("time") or 0.0) >= since:
            outcomes.append({**item, "path": str(path)})
    return outcomes


def summary_line(name: str, outcomes: list[dict[str, Any]]) -> str:
    """``sweep <name>: <n> jobs: a complete, b skipped, c failed[, d busy, e interrupted]``."""
    counts = Counter(o["outcome"] for o in outcomes)
    parts = [f"{counts.get(k, 0)} {k}" for k in ("complete", "skipped", "failed")]
    parts += [f"{counts[k]} {k}" for k in ("busy", "interrupted", "unknown") if counts.get(k)]
    return f"sweep {name}: {len(outcomes)} jobs: " + ", ".join(parts)


class SweepSummary(HydraCallback):
    """Hydra callback: one summary line at the end of every multirun; with ``strict=true`` in the
    job config, :data:`exit_code` becomes 1 when a job failed, was busy or is unaccounted for."""

    def __init__(self) -> None:
        self._start = 0.0

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._start = time.time() - 1.0

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global exit_code
        outcomes = read_outcomes(config.hydra.sweep.dir, since=self._start)
        line = summary_line(str(config.get("sweep_name", "?")), outcomes)
        bad = [o for o in outcomes if o["outcome"] not in ("complete", "skipped")]
        strict = bool(config.get("strict", False))
        if bad:
            line += f" (see {', '.join(str(o.get('record') or o['path']) for o in bad)})"
        if strict and bad:
            exit_code = 1
            line += "; strict=true: exit status 1"
        (log.warning if bad else log.info)(line)
        print(line, flush=True)

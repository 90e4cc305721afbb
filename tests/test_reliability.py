"""Reliability: resume fidelity, signals, damaged checkpoints, atomic writes, safe reports, input
checks, verified read-back, sweep summaries, worker lifetime and per-job locks.

Every test reproduces one kind of fault with a tiny real job (``tests/test_train.py``'s helpers)
or a hand-made file, and checks the documented behaviour.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import pytorch_lightning as pl
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import Callback
from test_train import TINY, compose_cfg, job

from sphere_bench.train.lifecycle import JobBusy, JobInterrupted, JobLock
from sphere_bench.train.record import config_hash, load_record


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Data cache in tmp (also for subprocesses, through the environment)."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPHERE_BENCH_CACHE", str(path))
        mp.setenv("OMP_NUM_THREADS", "1")
        yield path


# Early stopping that fires deterministically after epoch 1: the first epoch always "improves"
# from -inf, no later one can improve by min_delta=2 (metrics are in [0, 1]), patience 1.
EARLY_STOP = (
    "trainer.max_epochs=5", "callbacks.early_stopping.patience=1",
    "callbacks.early_stopping.min_delta=2", "seed=5",
)  # fmt: skip


def test_early_stopped_job_rerun_after_lost_record_ends_as_uninterrupted(
    tmp_path: Path, data_root: Path, cache_dir: Path
) -> None:
    first = job(tmp_path, data_root, cache_dir, *EARLY_STOP)
    assert first["status"] == "complete", first["error"]
    assert first["epochs_run"] == 2  # stopped early: epochs 0 and 1 of 5
    record_path = tmp_path / "results" / "smoke_seg" / f"{first['config_hash']}.json"
    record_path.unlink()  # what a kill during testing leaves: checkpoints, no record
    again = job(tmp_path, data_root, cache_dir, *EARLY_STOP, name="again")
    assert again["status"] == "complete", again["error"]
    assert again["checkpoint"]["resumed_from"] is not None
    assert again["epochs_run"] == first["epochs_run"]
    assert again["timing"]["epoch_seconds"] == first["timing"]["epoch_seconds"]
    assert again["test"] == first["test"] and again["val_best"] == first["val_best"]
    assert load_record(record_path)["test"] == first["test"]


# ------------------------------------------------------------------------------------------------
# signals, sweep summaries, strict mode, worker lifetime, per-job locks (subprocess: the real CLI)
# ------------------------------------------------------------------------------------------------
def _cli(tmp: Path, data_root: Path, cache: Path, *overrides: str, multirun: bool = True) -> list:
    return [
        sys.executable, "-m", "sphere_bench.train", *(["-m"] if multirun else []),
        "experiment=smoke_seg", "logger=csv", "~callbacks.rich_progress_bar", "threads=1", *TINY,
        f"data.root={data_root}", f"data.cache_dir={cache}", f"results_dir={tmp / 'results'}",
        f"hydra.sweep.dir={tmp / 'multirun'}", f"hydra.run.dir={tmp / 'run'}", *overrides,
    ]  # fmt: skip


def _run_cli(tmp: Path, cmd: list, expect_rc: int) -> str:
    proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == expect_rc, output[-4000:]
    return output


def _wait_for(predicate: Callable[[], bool], proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else "see the log file"
            raise AssertionError(f"exited early ({proc.returncode}): {out[-3000:]}")
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def _checkpoints(tmp: Path) -> list[Path]:
    return sorted((tmp / "results" / "smoke_seg").glob("*/checkpoints/last.ckpt"))


def test_sigterm_stops_a_sweep_non_zero_with_a_message_and_a_rerun_resumes(
    tmp_path: Path, data_root: Path, cache_dir: Path
) -> None:
    cmd = _cli(tmp_path, data_root, cache_dir, "seed=1,2", "trainer.max_epochs=4")
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    _wait_for(lambda: len(_checkpoints(tmp_path)) == 2, proc)  # job 1 is training
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, output[-4000:]
    assert "stopped by SIGTERM at epoch" in output and "rerun the same command" in output.lower()
    assert len(list((tmp_path / "results" / "smoke_seg").glob("*.json"))) == 1  # job 0 only
    outcome = json.loads((tmp_path / "multirun" / "1" / "outcome.json").read_text())
    assert outcome["outcome"] == "interrupted"

    output = _run_cli(tmp_path, cmd, 0)
    assert "resuming from checkpoint" in output
    assert "sweep smoke_seg: 2 jobs: 1 complete, 1 skipped, 0 failed" in output
    folder = tmp_path / "results" / "smoke_seg"
    records = [json.loads(p.read_text()) for p in folder.glob("*.json")]
    assert sorted(r["epochs_run"] for r in records) == [4, 4]
    assert sum(r["checkpoint"]["resumed_from"] is not None for r in records) == 1


class SigtermAtEpoch(Callback):
    """Sends SIGTERM to this process at the end of training epoch ``epoch`` (a scheduler's stop)."""

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_stops_a_single_job_with_where_and_exit_code(
    tmp_path: Path, data_root: Path, cache_dir: Path
) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(JobInterrupted) as info:
        job(
            tmp_path, data_root, cache_dir, "trainer.max_epochs=20",
            "+callbacks.sigterm._target_=test_reliability.SigtermAtEpoch",
        )  # fmt: skip
    assert signal.getsignal(signal.SIGTERM) is before  # the job's handler is gone again
    stop = info.value
    assert stop.exit_code == 143 and stop.signal_name == "SIGTERM"
    assert "at epoch 1" in str(stop) and "resume from" in str(stop) and "last.ckpt" in str(stop)
    assert not (tmp_path / "run" / "result.json").exists()
    assert not list((tmp_path / "results" / "smoke_seg").glob("*.json"))
    outcome = json.loads((tmp_path / "run" / "outcome.json").read_text())
    assert outcome["outcome"] == "interrupted"


def test_sweep_summary_line_and_strict_mode(
    tmp_path: Path, data_root: Path, cache_dir: Path
) -> None:
    cmd = _cli(
        tmp_path, data_root, cache_dir, "debug.fail=false,true", "trainer.max_epochs=1",
        "strict=true",
    )  # fmt: skip
    output = _run_cli(tmp_path, cmd, 1)
    assert "sweep smoke_seg: 2 jobs: 1 complete, 0 skipped, 1 failed" in output
    assert "strict=true: exit status 1" in output


def _descendants(pid: int) -> set[int]:
    """Pids of every live descendant of ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the workers")
def test_killing_a_joblib_sweep_kills_its_workers(
    tmp_path: Path, data_root: Path, cache_dir: Path
) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    cmd = _cli(
        tmp_path, data_root, cache_dir, "seed=1,2", "trainer.max_epochs=200",
        "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
    )  # fmt: skip
    with (tmp_path / "log.txt").open("w") as log:  # not a pipe: orphans would hold it open
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    _wait_for(lambda: len(_checkpoints(tmp_path)) == 2, proc)  # both workers are training
    workers = _descendants(proc.pid)
    assert workers
    proc.kill()  # kill -9: the main process cannot clean up
    proc.wait(timeout=60)
    end = time.monotonic() + 30
    while any(_alive(p) for p in workers) and time.monotonic() < end:
        time.sleep(0.2)
    assert not [p for p in workers if _alive(p)], "workers outlived the killed sweep"
    assert not list((tmp_path / "results" / "smoke_seg").glob("*.json"))  # nothing written after


def test_one_job_never_runs_twice_at_once(
    tmp_path: Path, data_root: Path, cache_dir: Path
) -> None:
    overrides = ("trainer.max_epochs=1", "seed=7")
    cfg = compose_cfg(
        "experiment=smoke_seg", "logger=none", "~callbacks.rich_progress_bar", *TINY,
        f"data.root={data_root}", f"data.cache_dir={cache_dir}",
        f"results_dir={tmp_path / 'results'}", *overrides,
    )  # fmt: skip
    hash_ = config_hash(OmegaConf.to_container(cfg, resolve=True))
    lock = tmp_path / "results" / "smoke_seg" / hash_ / "job.lock"
    with JobLock(lock), pytest.raises(JobBusy, match=r"already running .*job\.lock held by host"):
        job(tmp_path, data_root, cache_dir, *overrides)  # the same job, while another holds it
    assert not (tmp_path / "run" / "result.json").exists()
    assert json.loads((tmp_path / "run" / "outcome.json").read_text())["outcome"] == "busy"
    record = job(tmp_path, data_root, cache_dir, *overrides)  # free again
    assert record["status"] == "complete" and record["config_hash"] == hash_

"""Reliability: resume fidelity, signals, damaged checkpoints, atomic writes, safe reports, input
checks, verified read-back, sweep summaries, worker lifetime and per-job locks.

Every test reproduces one kind of fault with a tiny real job (``tests/test_train.py``'s helpers)
or a hand-made file, and checks the documented behaviour.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import Callback
from test_train import TINY, compose_cfg, job

from sphere_bench import io as cache
from sphere_bench.data.planar_source import SourceFileError, load_planar_split
from sphere_bench.data.spherical_dataset import SplitSpec, load_or_generate
from sphere_bench.io import remove_stale_temp_files
from sphere_bench.models import count_parameters
from sphere_bench.report.records import (
    UntrustedTargetError,
    load_paper,
    load_runs,
    runs_frame,
    safe_instantiate,
)
from sphere_bench.report.samples import load_net
from sphere_bench.train.checkpoints import (
    CheckpointError,
    VerifiedCheckpointIO,
    save_verified,
    verify_checkpoint,
)
from sphere_bench.train.checks import ConfigValueError, check_values
from sphere_bench.train.lifecycle import JobBusy, JobInterrupted, JobLock
from sphere_bench.train.record import config_hash, load_record

REPO_ROOT = Path(__file__).resolve().parents[1]


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
    # Neither job may finish before the kill, however late the second worker starts on a busy
    # machine: no early stopping, and more epochs than the test can last.
    cmd = _cli(
        tmp_path, data_root, cache_dir, "seed=1,2", "trainer.max_epochs=100000",
        "callbacks.early_stopping=null", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
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


# ------------------------------------------------------------------------------------------------
# checkpoints: verified before use, damaged ones moved aside, written beside the target
# ------------------------------------------------------------------------------------------------
def test_damaged_checkpoints_are_reported_moved_aside_and_replaced(
    tmp_path: Path, data_root: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    overrides = ("trainer.max_epochs=2", "seed=11")
    first = job(tmp_path, data_root, cache_dir, *overrides)
    hash_dir = tmp_path / "results" / "smoke_seg" / first["config_hash"]
    last, best = hash_dir / "checkpoints" / "last.ckpt", Path(first["checkpoint"]["best"])
    record_path = hash_dir.with_suffix(".json")

    # Flipped bytes in last.ckpt (they used to load silently): reported, moved, best used.
    record_path.unlink()
    data = bytearray(last.read_bytes())
    data[len(data) // 2] ^= 0xFF
    last.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        again = job(tmp_path, data_root, cache_dir, *overrides, name="again")
    assert again["status"] == "complete", again["error"]
    assert again["checkpoint"]["resumed_from"] == str(best)
    assert f"checkpoint {last} is damaged (CRC-32" in caplog.text
    assert len([p for p in (hash_dir / "damaged").glob("last.ckpt.*") if p.suffix != ".json"]) == 1

    # Every checkpoint damaged (empty, truncated): the job starts again and ends as the first run.
    record_path.unlink()
    for path in (hash_dir / "checkpoints").glob("*.ckpt"):
        path.write_bytes(path.read_bytes()[:1000])
    last.write_bytes(b"")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        fresh = job(tmp_path, data_root, cache_dir, *overrides, name="fresh")
    assert fresh["status"] == "complete", fresh["error"]
    assert fresh["checkpoint"]["resumed_from"] is None
    assert "is damaged (the file is empty (0 bytes))" in caplog.text
    assert "no intact checkpoint left" in caplog.text
    assert fresh["test"] == first["test"] and fresh["epochs_run"] == first["epochs_run"]


def test_explicit_damaged_checkpoint_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "given.ckpt"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match=r"given\.ckpt is damaged: unreadable by torch\.load"):
        VerifiedCheckpointIO().load_checkpoint(path)


def test_checkpoint_writes_stay_beside_the_target(
    tmp_path: Path, data_root: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No usable system temp dir: a checkpoint staged there (Lightning's default) fails the job.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no_system_tmp"))
    record = job(tmp_path, data_root, cache_dir, "trainer.max_epochs=1", "seed=12")
    assert record["status"] == "complete", record["error"]
    assert verify_checkpoint(record["checkpoint"]["last"]) is None
    assert Path(record["checkpoint"]["last"] + ".json").is_file()

    # A write that dies half-way leaves the previous file and no temporary file.
    target = tmp_path / "ckpt" / "last.ckpt"
    save_verified({"state_dict": {"w": torch.ones(3)}}, target)
    before = target.read_bytes()
    with pytest.raises(KeyboardInterrupt):
        save_verified({"state_dict": {}, "bad": _ExplodingPickle()}, target)
    assert target.read_bytes() == before and verify_checkpoint(target) is None
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt", "last.ckpt.json"]


class _ExplodingPickle:
    def __reduce__(self) -> tuple:
        raise KeyboardInterrupt  # a kill in the middle of torch.save


def test_temp_files_of_killed_writers_are_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname().split(".")[0].replace("-", "_")
    orphan = tmp_path / f".last.ckpt.{host}-{dead.pid}.abc123.tmp"
    live = tmp_path / f".last.ckpt.{host}-{os.getpid()}.def456.tmp"
    old_style, fresh_style = tmp_path / ".x.pt.q1w2e3r4.tmp", tmp_path / ".y.pt.a1s2d3f4.tmp"
    for path in (orphan, live, old_style, fresh_style):
        path.write_bytes(b"0" * 100)
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(old_style, (two_days_ago, two_days_ago))
    removed = remove_stale_temp_files(tmp_path)
    assert sorted(removed) == sorted([orphan, old_style])
    assert live.exists() and fresh_style.exists()


# ------------------------------------------------------------------------------------------------
# reports never run code named in records; readers survive wrong-shaped files
# ------------------------------------------------------------------------------------------------
def test_report_never_instantiates_targets_outside_the_allowlist(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = {"_target_": "pathlib.Path.touch", "self": str(marker)}
    for config in (evil, {"_target_": "os.system", "command": f"touch {marker}"}):
        with pytest.raises(UntrustedTargetError, match="not a sphere_bench model class"):
            safe_instantiate(config, "model")
    nested = {"_target_": "sphere_bench.models.cnn_zoo.SegmentationCNN", "act": evil}
    with pytest.raises(UntrustedTargetError):
        safe_instantiate(nested, "model")
    with pytest.raises(UntrustedTargetError, match="is not a class"):  # a function
        safe_instantiate({"_target_": "sphere_bench.models.s2cnn_layers.so3_integrate"}, "model")
    assert not marker.exists()
    cfg = OmegaConf.to_container(compose_cfg("model=cnn_seg_small").model)
    net = safe_instantiate(cfg, "model")
    assert count_parameters(net) == 20643

    # Through the report: a record whose model config names another callable is refused.
    record = json.loads(next((REPO_ROOT / "results" / "records").rglob("*.json")).read_text())
    record["config"]["model"] = evil
    with pytest.raises(UntrustedTargetError):
        load_net(record, tmp_path / "unused.ckpt")
    assert not marker.exists()


def test_readers_survive_wrong_shaped_files_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runs = tmp_path / "runs" / "s"
    runs.mkdir(parents=True)
    good = next((REPO_ROOT / "results" / "records").rglob("*.json"))
    shutil.copy(good, runs / "good.json")
    (runs / "list.json").write_text("[1, 2]")
    (runs / "test_list.json").write_text(json.dumps({"status": "complete", "model": {"name": "m"},
                                                     "data": {}, "test": [0.5]}))  # fmt: skip
    (runs / "metrics_str.json").write_text(json.dumps(
        {**json.loads(good.read_text()), "test": {"nr": "high"}}))  # fmt: skip
    with caplog.at_level(logging.WARNING):
        loaded = load_runs(tmp_path / "runs")
        frame = runs_frame(loaded.complete)
    assert len(loaded.complete) == 1 and len(frame) == 1
    assert sorted(p.name for p, _ in loaded.unreadable) == [
        "list.json", "metrics_str.json", "test_list.json"
    ]
    for name in ("list.json", "metrics_str.json", "test_list.json"):
        assert name in caplog.text

    # The paper's reference values: a CSV without the expected columns.
    (tmp_path / "paper.csv").write_text("a,b\n1,2\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert load_paper(tmp_path / "paper.csv").empty
    assert "paper.csv is unreadable" in caplog.text

    # The training side: a wrong-shaped record is not taken for a finished job.
    for text in ("[1, 2]", json.dumps({"status": "complete", "test": [1]})):
        (runs / "r.json").write_text(text)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert load_record(runs / "r.json") is None
        assert "r.json" in caplog.text

    # The dataset cache: right type (a dict of tensors), wrong content.
    entry = tmp_path / "cache" / "e.pt"
    assert cache.save_tensors(entry, {"inputs": torch.zeros(4, 8, 8)}, meta={})
    torch.save({"inputs": torch.zeros(2, 8, 8)}, entry)  # another writer's file, checksum redone
    side = json.loads(cache.sidecar(entry).read_text())
    side.update(size=entry.stat().st_size, crc32=cache._crc32(entry))
    cache.sidecar(entry).write_text(json.dumps(side))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert cache.load_tensors(entry) is None
    assert "e.pt is invalid: wrong content" in caplog.text


# ------------------------------------------------------------------------------------------------
# bad input is refused before any work, with the key, the range and the fix
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_epochs=0", r"trainer\.max_epochs=0: allowed an integer >= 1.*fix: e\.g\."),
        ("trainer.limit_train_batches=0", r"trainer\.limit_train_batches=0: allowed a count"),
        ("data.n_test=20000", r"data\.n_test=20000: allowed 1 to 10,000 .*fix: data\.n_test=10000"),
        ("data.n_val=7000", r"data\.n_val=7000: allowed null, or 0 to 6,000"),
        ("lit.lr=-1", r"lit\.lr=-1: allowed a number > 0"),
        ("heap_keep_mb=4096", r"heap_keep_mb=4096: allowed null or an integer in \[0, 2047\]"),
    ],
)
def test_bad_values_are_refused_before_work(
    tmp_path: Path, data_root: Path, cache_dir: Path, override: str, message: str
) -> None:
    with pytest.raises(ConfigValueError, match=message):
        job(tmp_path, data_root, cache_dir, override)
    record = load_record(tmp_path / "run" / "result.json")
    assert record["status"] == "failed" and record["model"]["parameters"] is None  # nothing built


def test_every_preset_passes_the_value_checks() -> None:
    for path in sorted((REPO_ROOT / "conf" / "experiment").glob("*.yaml")):
        check_values(compose_cfg(f"experiment={path.stem}"))
    check_values(compose_cfg())


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_source_gz_names_the_file_and_the_fix(
    data_root: Path, tmp_path: Path, damage: str
) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(data_root / "MNIST" / "raw" / name, raw)
    bad = raw / "t10k-images-idx3-ubyte.gz"
    blob = bytearray(bad.read_bytes())
    if damage == "truncate":
        blob = blob[: len(blob) // 2]
    else:
        blob[len(blob) // 2] ^= 0xFF
    bad.write_bytes(bytes(blob))
    with pytest.raises(SourceFileError, match=r"t10k-images-idx3-ubyte\.gz is damaged.*Fix: "):
        load_planar_split("mnist", "test", tmp_path, None)


def test_full_cache_disk_degrades_to_memory_with_a_warning(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def no_space(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache.torch, "save", no_space)
    spec = SplitSpec("mnist", "segmentation", "test", 4, resolution=8)
    with caplog.at_level(logging.WARNING):
        data = load_or_generate(spec, data_root, tmp_path / "cache", None, progress=False)
    assert data.inputs.shape == (4, 16, 16)
    assert "No space left on device" in caplog.text and "data.cache_dir" in caplog.text
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]  # no partial files


# ------------------------------------------------------------------------------------------------
# a real distributed engine (submitit, the executor behind SLURM, run locally)
# ------------------------------------------------------------------------------------------------
def test_submitit_local_sweep_records_failures_and_reruns(
    tmp_path: Path, data_root: Path, cache_dir: Path
) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cmd = _cli(
        tmp_path, data_root, cache_dir, "debug.fail=false,true", "trainer.max_epochs=1",
        "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
        "hydra.launcher.cpus_per_task=1", "strict=true",
    )  # fmt: skip
    output = _run_cli(tmp_path, cmd, 1)  # strict: the failed job makes the sweep exit 1
    assert "sweep smoke_seg: 2 jobs: 1 complete, 0 skipped, 1 failed" in output
    folder = tmp_path / "results" / "smoke_seg"
    records = [json.loads(p.read_text()) for p in folder.glob("*.json")]
    assert sorted(r["status"] for r in records) == ["complete", "failed"]
    assert list((tmp_path / "multirun" / ".submitit").rglob("*_log.out"))  # ran through submitit
    for record in records:  # each job ran in its own submitit process, not in the main one
        assert record["run_dir"].startswith(str(tmp_path / "multirun"))
    output = _run_cli(tmp_path, cmd[:-1], 0)  # rerun, not strict: complete job skipped
    assert "sweep smoke_seg: 2 jobs: 0 complete, 1 skipped, 1 failed" in output

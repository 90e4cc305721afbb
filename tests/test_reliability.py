"""Reliability: resume fidelity, signals, damaged checkpoints, atomic writes, safe reports, input
checks, verified read-back, sweep summaries, worker lifetime and per-job locks.

Every test reproduces one kind of fault with a tiny real job (``tests/test_train.py``'s helpers)
or a hand-made file, and checks the documented behaviour.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_train import job

from sphere_bench.train.record import load_record


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

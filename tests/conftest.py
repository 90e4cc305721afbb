"""Shared test setup: one torch thread, headless matplotlib, W&B offline into a temporary folder."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_WANDB_TMP = tempfile.mkdtemp(prefix="sphere_bench_wandb_")
atexit.register(shutil.rmtree, _WANDB_TMP, ignore_errors=True)  # one per session, not left behind
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("JAX_ENABLE_X64", "1")
for _var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
    os.environ[_var] = os.path.join(_WANDB_TMP, _var.lower())
    os.makedirs(os.environ[_var], exist_ok=True)

import torch  # noqa: E402

# Under CPU contention torch's intra-op threads give 10-100x latency spikes; tests use one.
torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Data and Wigner-table cache in tmp, one per test module; subprocesses see it (and one
    thread) through the environment."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPHERE_BENCH_CACHE", str(path))
        mp.setenv("OMP_NUM_THREADS", "1")
        yield path


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The MNIST/FashionMNIST root: ``$SPHERE_BENCH_DATA`` or ``../shared/datasets``."""
    root = Path(os.environ.get("SPHERE_BENCH_DATA", REPO_ROOT.parent / "shared" / "datasets"))
    root = root.resolve()  # subprocess tests run in other working directories
    if not (root / "MNIST" / "raw").is_dir():
        message = f"no MNIST under {root}; set SPHERE_BENCH_DATA to a folder holding MNIST/raw"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI always has ../shared/datasets: never skip there
        pytest.skip(message)
    return root

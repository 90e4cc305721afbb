"""sphere_bench.runtime: with keep_freed_heap, training steps reuse freed memory instead of
faulting fresh pages in (page faults counted by the kernel, nothing timed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sphere_bench.runtime import _libc, keep_freed_heap

# One process per setting (mallopt is process-wide): training steps (forward + backward) of the
# Fig. 4 S2CNN classifier at batch 32, one thread; prints the minor page faults per step after
# two warm-up steps.
STEPS = """
import resource, sys, torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from sphere_bench.runtime import keep_freed_heap
keep = int(sys.argv[1])
assert keep_freed_heap(keep) == (keep > 0)
torch.set_num_threads(1)
torch.manual_seed(0)
model = instantiate(OmegaConf.load(sys.argv[2]))
x = torch.randn(32, 1, 60, 60)
def step():
    model.zero_grad(set_to_none=True)
    model(x).square().mean().backward()
step(); step()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 3)
"""
MODEL = Path(__file__).resolve().parents[1] / "conf" / "model" / "s2cnn_cls_150k.yaml"


def _faults_per_round(keep_mb: int) -> float:
    out = subprocess.run([sys.executable, "-c", STEPS, str(keep_mb), str(MODEL)],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("bad", [-1, 2048, 1.5, True, "1024"])
def test_bad_amount_names_the_value_and_the_range(bad):
    with pytest.raises(ValueError, match=r"heap_keep_mb .*\[0, 2047\], got "):
        keep_freed_heap(bad)


@pytest.mark.parametrize("off", [None, 0])
def test_zero_or_none_changes_nothing(off):
    assert keep_freed_heap(off) is False


@pytest.mark.skipif(_libc() is None, reason="mallopt needs glibc")
def test_kept_heap_removes_most_page_faults_of_an_s2cnn_training_step():
    default, kept = _faults_per_round(0), _faults_per_round(1024)
    # Measured: 12,800-31,900 faults per step with glibc's defaults, 0-2,300 with the kept heap.
    assert default > 5_000, default
    assert kept < 0.3 * default, (kept, default)

"""Latency, throughput and peak memory of a model's forward (and backward) pass.

Protocol (docs/paper_protocol.md §5, our choice where the paper is silent): ``warmup``
untimed calls, then ``repeats`` timed calls; on CUDA each call is bracketed by CUDA events after
``torch.cuda.synchronize()``, on the CPU by ``time.perf_counter``. Reported: median, p10 and p90
in milliseconds per batch, throughput in images/s at the median, and peak memory — CUDA
``max_memory_allocated`` on a GPU, the process's peak resident set size (``VmHWM``, reset before
the measurement through ``/proc/self/clear_refs``) on the CPU.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from sphere_bench import system_info
from sphere_bench.system_info import peak_rss_mb


@dataclass(frozen=True)
class Timing:
    """One latency measurement (times in ms per batch)."""

    batch_size: int
    mode: str  # "forward" | "forward_backward"
    median_ms: float
    p10_ms: float
    p90_ms: float
    images_per_s: float
    repeats: int
    peak_memory_mb: float | None
    baseline_memory_mb: float | None  # allocated (CUDA) or resident (CPU) before the first call
    memory_kind: str  # "cuda_max_allocated" | "cpu_peak_rss" | "unavailable"

    def as_dict(self) -> dict:
        return asdict(self)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    lo, hi = int(position), min(int(position) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (position - lo)


def reset_cpu_peak_rss() -> bool:
    """Reset this process's peak-RSS counter (Linux ≥ 4.0); ``False`` where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def time_callable(
    fn: Callable[[], object], device: torch.device, warmup: int = 2, repeats: int = 5
) -> list[float]:
    """Milliseconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    if device.type == "cuda":
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
    else:
        for _ in range(repeats):
            begin = time.perf_counter()
            fn()
            times.append((time.perf_counter() - begin) * 1e3)
    return times


def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int,
    device: torch.device | str = "cpu",
    mode: str = "forward",
    warmup: int = 2,
    repeats: int = 5,
    dtype: torch.dtype = torch.float32,
) -> Timing:
    """Time ``model`` on random inputs of shape ``[batch_size, *input_shape]``.

    Args:
        model: any module; evaluated in ``eval()`` mode with ``torch.no_grad`` for ``forward``, in
            ``train()`` mode with a sum-of-outputs backward for ``forward_backward`` (the model's
            train/eval state is restored afterwards).
        input_shape: one sample's shape, e.g. ``(1, 100, 100)``.
        batch_size: images per call.
        device: where to run; CUDA timings use CUDA events.
        mode: ``forward`` or ``forward_backward``.
    """
    if mode not in ("forward", "forward_backward"):
        raise ValueError(f"mode must be forward or forward_backward, got {mode!r}")
    device = torch.device(device)
    was_training = model.training
    model = model.to(device)
    x = torch.rand(batch_size, *input_shape, device=device, dtype=dtype) * 255

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def forward_backward() -> None:
        model.zero_grad(set_to_none=True)
        model(x).float().sum().backward()

    fn = forward if mode == "forward" else forward_backward
    model.train(mode == "forward_backward")
    memory_kind, baseline = "unavailable", None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        memory_kind, baseline = "cuda_max_allocated", torch.cuda.memory_allocated(device) / 2**20
    elif reset_cpu_peak_rss():
        memory_kind, baseline = "cpu_peak_rss", peak_rss_mb()
    try:
        times = time_callable(fn, device, warmup=warmup, repeats=repeats)
    finally:
        model.train(was_training)
    if memory_kind == "cuda_max_allocated":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    elif memory_kind == "cpu_peak_rss":
        peak = peak_rss_mb()
    else:
        peak = None
    median = statistics.median(times)
    return Timing(
        batch_size=batch_size,
        mode=mode,
        median_ms=median,
        p10_ms=_quantile(times, 0.1),
        p90_ms=_quantile(times, 0.9),
        images_per_s=batch_size / (median / 1e3),
        repeats=repeats,
        peak_memory_mb=peak,
        baseline_memory_mb=baseline,
        memory_kind=memory_kind,
    )


def device_description(device: torch.device | str) -> dict:
    """Device name, torch version and thread count, for records."""
    device = torch.device(device)
    return {
        "device": device.type,
        "device_name": system_info.device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }

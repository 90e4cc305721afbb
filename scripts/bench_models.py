"""Benchmark the S2CNN zoo and the harmonic transforms → results/bench_models.{json,md}.

Float32, median of ``--repeats`` (≥ 5) timed calls after ``--warmup`` untimed ones. Every
workload runs in a fresh subprocess, so its peak RSS is its own (tables + activations + the
torch runtime). On CUDA (``--device cuda``, or ``auto`` when a GPU is present) times come from
CUDA events and peak memory from ``torch.cuda.max_memory_allocated``.

For every S2CNN workload the same run also measures, on one thread and in its own subprocess:

* **FLOPs** with :class:`FlopCounter` (below): the executed matmul-family and FFT operations of
  one call, forward or forward + backward; **GFLOP/s** = FLOPs / median time, and its fraction
  of this machine's **SGEMM rate** (1024³ float32 ``torch.mm``, one thread, measured in this run);
* the **previous implementation** (``--old-commit``, default f20decf, checked out once with
  ``git worktree add``; its package is imported from there by the same worker code);
* the **paper's code** (``--reference-python`` / ``--reference-src``: the fork's s2cnn through
  ``scripts/reference_worker.py``; taken from ``/tmp/sphere_ref`` when it exists there);
* **e3nn** 0.6 (optional extra ``[peers]``), s2cnn-style layers built from its API: an
  ``o3.Linear`` per layer on spectra (S² irreps ``Σ_l 1×l``, SO(3) irreps ``Σ_l (2l+1)×l``,
  channels as ``f_in``/``f_out``), ``nn.SO3Activation`` (ReLU on its sampled SO(3) grid,
  resolution ``b_out``, the band-limit change included) between layers, ``o3.FromS2Grid`` /
  ``o3.ToS2Grid`` at the ends, the l = 0 component as the Haar integral. Same layer sizes
  (channels, bandwidths) and batch; its linear maps are the general equivariant ones (more
  weights than a grid kernel). Skipped where its dense SO(3) grid matrices would not fit.

Every worker (ours, the previous implementation, e3nn) first applies
:func:`sphere_bench.runtime.keep_freed_heap` (``--heap-keep-mb``, the trainer's default), so
their ratios compare implementations under one allocator; each S2CNN workload is also timed,
ours and the previous implementation, with glibc's default allocator settings ("glibc default"
columns; "as shipped" = the previous implementation with glibc's defaults / ours). The paper's
code runs in its own venv with glibc's defaults.

Ratios are *their time / ours* from the same run (> 1: ours is faster).

Usage::

    python scripts/bench_models.py              # S2CNN table + transforms, 1 thread
    python scripts/bench_models.py --quick      # S2CNN workloads only, no transforms
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sphere_bench.io import atomic_write_text
from sphere_bench.system_info import cpu_name, peak_rss_mb

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OLD_COMMIT = "f20decf"
DEFAULT_REFERENCE = Path("/tmp/sphere_ref")
# e3nn's SO3Grid keeps a dense [α, β, γ, Σ(2l+1)²] float32 matrix per activation grid, and
# evaluates it densely: peers above these limits are reported as skipped, with the estimate.
E3NN_GRID_LIMIT_GB = 1.0
E3NN_GFLOP_LIMIT = 170.0


class FlopCounter:
    """Count the FLOPs of the executed matmul-family and FFT ops (a ``TorchDispatchMode``).

    Counting rules (real FLOPs, one multiply-add = 2):

    * ``mm``, ``addmm``, ``bmm``, ``baddbmm`` (also what ``matmul`` and ``einsum`` lower to):
      ``2·M·N·K`` per product; **×4** when the operands are complex (a complex multiply-add is
      4 real multiplies and 4 adds).
    * FFTs (``_fft_r2c``, ``_fft_c2r``, ``_fft_c2c``): ``5·n·log2(n)`` per complex transform of
      ``n`` points (``n`` = product of the transformed sizes), half of that for real-input or
      real-output transforms, times the number of transforms.
    * Everything else (elementwise ops, reductions, copies, indexing) counts 0.

    So FLOPs are those *executed*, including multiplications by structural zeros in padded
    blocks and DFTs done as matrix products. ``torch.utils.flop_counter`` differs: it counts a
    complex matmul like a real one and skips FFTs.
    """

    def __init__(self) -> None:
        self.flops = 0.0
        self.by_op: dict[str, float] = {}
        #: every matmul-family call: (op, a shape, a stride, b shape, b stride, dtype, FLOPs)
        self.gemms: list[tuple] = []

    def __enter__(self) -> FlopCounter:
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self
        aten = torch.ops.aten
        mm_ops = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default,
                  aten.mm.out, aten.bmm.out, aten.addmm.out, aten.baddbmm.out}
        fft_ops = {aten._fft_r2c.default: 0.5, aten._fft_c2r.default: 0.5,
                   aten._fft_c2c.default: 1.0, aten._fft_r2c.out: 0.5,
                   aten._fft_c2r.out: 0.5, aten._fft_c2c.out: 1.0}

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                flops = 0.0
                if func in mm_ops:
                    a, b = (args[0], args[1]) if func in (aten.mm.default, aten.bmm.default,
                                                           aten.mm.out, aten.bmm.out) \
                        else (args[1], args[2])
                    batch = a.shape[0] if a.dim() == 3 else 1
                    m, k = a.shape[-2], a.shape[-1]
                    flops = 2.0 * batch * m * k * b.shape[-1]
                    if a.is_complex() or b.is_complex():
                        flops *= 4
                    counter.gemms.append((func.overloadpacket.__name__, tuple(a.shape),
                                          a.stride(), tuple(b.shape), b.stride(), a.dtype,
                                          flops))
                elif func in fft_ops:
                    x, dims = args[0], list(args[1])
                    if func in (aten._fft_c2r.default, aten._fft_c2r.out):
                        sizes = [x.shape[d] for d in dims[:-1]] + [int(args[3])]
                    else:
                        sizes = [x.shape[d] for d in dims]
                    n = math.prod(sizes)
                    transforms = x.numel() // max(1, math.prod(x.shape[d] for d in dims))
                    if n > 1:
                        flops = fft_ops[func] * 5.0 * n * math.log2(n) * transforms
                if flops:
                    counter.flops += flops
                    name = str(func.overloadpacket.__name__)
                    counter.by_op[name] = counter.by_op.get(name, 0.0) + flops
                return out

        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)


def _peak_rss_gb() -> float:
    """High-water RSS of this process image (``VmHWM``; ``ru_maxrss`` survives ``exec``)."""
    peak = peak_rss_mb()
    if peak is not None:
        return peak * 1024 / 1e6
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def _model_layout(size: str) -> dict:
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "model" / f"{size}.yaml"))
    return {k: cfg[k] for k in ("bandwidth", "channels", "bandlimits", "num_classes",
                                "in_channels", "task")}


def e3nn_grid_gb(size: str) -> float:
    """Memory of the dense SO(3) grid matrices of the e3nn peer of ``size`` (float32, GB)."""
    lay = _model_layout(size)
    degrees = _e3nn_degrees(lay)
    total = 0
    pairs = zip(degrees[:-1], degrees[1:], strict=True)
    for (l_in, l_out), res in zip(pairs, lay["bandlimits"], strict=True):
        for lmax in (l_in, l_out):
            total += (2 * res) ** 3 * sum((2 * l + 1) ** 2 for l in range(lmax + 1))
    return 4 * total / 1e9


def e3nn_grid_gflop(size: str, batch: int) -> float:
    """Forward GFLOP of the e3nn peer's dense grid evaluations (to and from each SO(3) grid)."""
    lay = _model_layout(size)
    degrees = _e3nn_degrees(lay)
    total = 0
    for i, res in enumerate(lay["bandlimits"]):
        dims = sum(sum((2 * l + 1) ** 2 for l in range(lm + 1)) for lm in degrees[i : i + 2])
        total += 2 * batch * lay["channels"][i] * (2 * res) ** 3 * dims
    return total / 1e9


def _e3nn_degrees(lay: dict) -> list[int]:
    """lmax of the spectra between the peer's layers: ``min(b_i, b_{i+1}) − 1`` as in ours."""
    bands = [lay["bandwidth"], *lay["bandlimits"]]
    out = [min(a, b) - 1 for a, b in zip(bands[:-1], bands[1:], strict=True)]
    if lay["task"] == "classification":
        return [*out, 0]  # the Haar integral keeps l = 0
    return [*out, min(bands[-1], lay["bandwidth"]) - 1]


def build_e3nn_peer(size: str):
    """The e3nn 0.6 s2cnn-style peer of the zoo model ``size`` (see the module docstring)."""
    import torch
    from e3nn import o3
    from e3nn.nn import SO3Activation

    lay = _model_layout(size)
    b, chans, bands = lay["bandwidth"], lay["channels"], lay["bandlimits"]
    lmax = _e3nn_degrees(lay)

    def s2_irreps(lm: int) -> o3.Irreps:
        return o3.Irreps([(1, (l, 1)) for l in range(lm + 1)])

    def so3_irreps(lm: int) -> o3.Irreps:
        return o3.Irreps([(2 * l + 1, (l, 1)) for l in range(lm + 1)])

    class Peer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.from_s2 = o3.FromS2Grid((2 * b, 2 * b), lmax[0])
            layers = [o3.Linear(s2_irreps(lmax[0]), so3_irreps(lmax[0]),
                                f_in=lay["in_channels"], f_out=chans[0])]
            for i in range(len(chans)):
                layers.append(SO3Activation(lmax[i], lmax[i + 1], torch.relu, bands[i],
                                            aspect_ratio=1))
                if i + 1 < len(chans):
                    layers.append(o3.Linear(so3_irreps(lmax[i + 1]), so3_irreps(lmax[i + 1]),
                                            f_in=chans[i], f_out=chans[i + 1]))
            self.layers = torch.nn.Sequential(*layers)
            if lay["task"] == "classification":
                self.head = torch.nn.Linear(chans[-1], lay["num_classes"])
            else:
                self.head = torch.nn.Sequential(
                    o3.Linear(so3_irreps(lmax[-1]), s2_irreps(lmax[-1]), f_in=chans[-1],
                              f_out=lay["num_classes"]),
                    o3.ToS2Grid(lmax[-1], (2 * b, 2 * b)),
                )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.layers(self.from_s2(x))  # [N, C, spectrum]
            if lay["task"] == "classification":
                return self.head(y[..., 0])
            return self.head(y)

    return Peer(), b


def _sgemm_rate(repeats: int) -> dict:
    import torch

    n = 1024
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(max(repeats, 5)):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    best = min(times)
    return {"n": n, "gflops_best": 2 * n**3 / best / 1e9,
            "gflops_median": 2 * n**3 / statistics.median(times) / 1e9,
            "loadavg_1min": os.getloadavg()[0]}


def _transform_module(name: str):
    """``sphere_bench.harmonic.<name>``, or ``sphere_bench.models.<name>`` in an old work tree
    (the transforms lived in ``models/`` before the harmonic package existed)."""
    import importlib

    try:
        return importlib.import_module(f"sphere_bench.harmonic.{name}")
    except ModuleNotFoundError:
        return importlib.import_module(f"sphere_bench.models.{name}")


def _runtime_module():
    """This tree's :mod:`sphere_bench.runtime`, loaded by path, so that a worker running an
    older tree's package (which predates the module) gets the same allocator settings."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_sb_runtime", REPO / "sphere_bench" /
                                                  "runtime.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _accepted_keys(conf):
    """``conf`` without the keys its ``_target_`` does not accept: a model config of this tree
    instantiated in an older work tree (whose classes may predate a key, e.g. ``task``)."""
    import inspect

    import hydra
    from omegaconf import OmegaConf

    params = inspect.signature(hydra.utils.get_class(conf._target_)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return conf
    kept = {k: v for k, v in OmegaConf.to_container(conf).items()
            if k == "_target_" or k in params}
    return OmegaConf.create(kept)


def _worker(spec: dict) -> dict:
    """Run one workload in this process and return its measurements."""
    import torch

    torch.set_num_threads(spec["threads"])
    if spec.get("heap_keep_mb"):
        _runtime_module().keep_freed_heap(spec["heap_keep_mb"])
    if spec["kind"] == "sgemm":
        return _sgemm_rate(spec["repeats"])
    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    kind, size, batch = spec["kind"], spec["size"], spec["batch"]

    if kind == "model":
        if spec.get("impl") == "e3nn":
            model, b = build_e3nn_peer(size)
        else:
            import hydra
            from omegaconf import OmegaConf

            conf = OmegaConf.load(REPO / "conf" / "model" / f"{size}.yaml")
            model = hydra.utils.instantiate(_accepted_keys(conf))
            b = model.bandwidth
        model = model.to(device)
        x = torch.randn(batch, 1, 2 * b, 2 * b, device=device)

        def fwd():
            with torch.no_grad():
                return model(x)

        def fwd_bwd():
            model.zero_grad(set_to_none=True)
            model(x).square().mean().backward()

    elif kind == "so3_pair":
        so3 = _transform_module("so3_fft")
        so3_fft, so3_ifft = so3.so3_fft, so3.so3_ifft

        x = torch.randn(batch, 2 * size, 2 * size, 2 * size, device=device)

        def fwd():
            with torch.no_grad():
                return so3_ifft(so3_fft(x), size)

        xg = x.clone().requires_grad_(True)

        def fwd_bwd():
            so3_ifft(so3_fft(xg), size).square().mean().backward()

    elif kind in ("s2_fft", "s2_pair"):
        s2 = _transform_module("s2_fft")
        s2_fft, s2_ifft = s2.s2_fft, s2.s2_ifft

        x = torch.randn(batch, 2 * size, 2 * size, device=device)
        pair = kind == "s2_pair"

        def fwd():
            with torch.no_grad():
                c = s2_fft(x)
                return s2_ifft(c, size) if pair else c

        xg = x.clone().requires_grad_(True)

        def fwd_bwd():
            c = s2_fft(xg)
            out = s2_ifft(c, size) if pair else torch.view_as_real(c)
            out.square().mean().backward()

    else:
        raise ValueError(kind)

    fn = fwd if spec["mode"] == "fwd" else fwd_bwd
    sgemm = _sgemm_rate(5)["gflops_best"] if spec.get("count_flops") and not cuda else None
    t0 = time.perf_counter()
    fn()  # first call: builds / loads Wigner tables
    first_s = time.perf_counter() - t0
    for _ in range(spec["warmup"]):
        fn()
    times = []
    for _ in range(spec["repeats"]):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            fn()
            times.append(1000 * (time.perf_counter() - t))
    out = {
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "times_ms": [round(t, 3) for t in times],
        "first_call_s": round(first_s, 3),
        "peak_rss_gb": _peak_rss_gb(),
        "loadavg_1min": os.getloadavg()[0],
    }
    if cuda:
        out["peak_cuda_gb"] = torch.cuda.max_memory_allocated() / 1e9
    if sgemm is not None:  # the machine's SGEMM rate right before and after this workload
        out["sgemm_gflops"] = max(sgemm, _sgemm_rate(5)["gflops_best"])
    if spec.get("count_flops"):
        with FlopCounter() as counter:
            fn()
        out["gflop"] = counter.flops / 1e9
        out["gflop_by_op"] = {k: round(v / 1e9, 4) for k, v in counter.by_op.items()}
    return out


def gemm_floor(gemms: list[tuple], repeats: int = 3) -> dict:
    """Time every matmul-family call of a workload alone: same op, shapes, strides and dtype,
    fresh random operands, hot caches, best of ``repeats``. Their sum is what the workload's
    GEMMs cost at the speed this machine's BLAS reaches for those shapes."""
    import torch

    def operand(shape: tuple, stride: tuple, dtype: torch.dtype) -> torch.Tensor:
        size = 1 + sum((n - 1) * st for n, st in zip(shape, stride, strict=True))
        return torch.randn(size, dtype=dtype).as_strided(shape, stride)

    total_s, flops = 0.0, 0.0
    for op, ashape, astride, bshape, bstride, dtype, f in gemms:
        a, b = operand(ashape, astride, dtype), operand(bshape, bstride, dtype)
        fn = torch.bmm if op in ("bmm", "baddbmm") else torch.mm
        fn(a, b)
        best = math.inf
        for _ in range(repeats):
            t = time.perf_counter()
            fn(a, b)
            best = min(best, time.perf_counter() - t)
        total_s += best
        flops += f
    return {"calls": len(gemms), "seconds": total_s, "gflop": flops / 1e9}


def profile_markdown(size: str, batch: int, mode: str, rows: int = 25) -> str:
    """``torch.profiler`` table (ops by self CPU time, one call after warm-up) and the FLOP
    counter's split of one S2CNN workload, as markdown (``--profile``)."""
    import hydra
    import torch
    from omegaconf import OmegaConf
    from torch.profiler import ProfilerActivity, profile

    model = hydra.utils.instantiate(OmegaConf.load(REPO / "conf" / "model" / f"{size}.yaml"))
    b = model.bandwidth
    x = torch.randn(batch, 1, 2 * b, 2 * b)

    def fn():
        if mode == "fwd":
            with torch.no_grad():
                model(x)
        else:
            model.zero_grad(set_to_none=True)
            model(x).square().mean().backward()

    for _ in range(2):
        fn()
    with FlopCounter() as counter:
        fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    averages = prof.key_averages()
    table = averages.table(sort_by="self_cpu_time_total", row_limit=rows)
    total_us = sum(e.self_cpu_time_total for e in averages)
    gemm_us = sum(e.self_cpu_time_total for e in averages
                  if e.key in ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm"))
    floor = gemm_floor(counter.gemms)
    sgemm = _sgemm_rate(5)["gflops_best"]
    split = ", ".join(f"{k} {v / 1e9:.2f}" for k, v in sorted(counter.by_op.items(),
                                                              key=lambda kv: -kv[1]))
    return (f"## {size} batch {batch} {mode}\n\n"
            f"torch {torch.__version__}, {torch.get_num_threads()} thread, load "
            f"{os.getloadavg()[0]:.1f}; executed GFLOP {counter.flops / 1e9:.2f} ({split}).\n\n"
            f"Profiled call: {total_us / 1e3:.1f} ms of operator self time, of which the "
            f"{floor['calls']} matmul-family calls take {gemm_us / 1e3:.1f} ms "
            f"({100 * gemm_us / total_us:.0f} %) and the rest (copies, ReLU, fills, autograd "
            f"bookkeeping) {(total_us - gemm_us) / 1e3:.1f} ms. **GEMM floor**: the same "
            f"{floor['calls']} calls timed one by one (same shapes and strides, hot caches, "
            f"best of 3) take {1e3 * floor['seconds']:.1f} ms, "
            f"{floor['gflop'] / floor['seconds']:.1f} GFLOP/s = "
            f"{100 * floor['gflop'] / floor['seconds'] / sgemm:.0f} % of this process's 1024³ "
            f"SGEMM rate ({sgemm:.1f} GFLOP/s): the speed BLAS reaches on these shapes.\n\n"
            f"```\n{table}\n```\n")


def _table_timing() -> dict:
    """Wigner-table precompute (empty cache) and load-from-cache times at B = 50."""
    import numpy as np

    from sphere_bench.harmonic import wigner

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SPHERE_BENCH_CACHE"] = tmp
        wigner.clear_memory_cache()
        t = time.perf_counter()
        arr = wigner.soft_wigner_d_compact(50)
        compute = time.perf_counter() - t
        wigner.clear_memory_cache()
        t = time.perf_counter()
        again = wigner.soft_wigner_d_compact(50)
        load = time.perf_counter() - t
        assert np.array_equal(arr, again)
        t = time.perf_counter()
        import torch

        wigner.so3_synthesis_table(50, 42, torch.float32, "cpu")
        expand = time.perf_counter() - t
    return {"b": 50, "precompute_s": compute, "load_s": load, "expand_table_s": expand,
            "disk_mb": arr.nbytes / 1e6}


def _run_reference(spec: dict, python: str, src: str, cwd: Path) -> dict:
    """The same workload in the paper's s2cnn (``scripts/reference_worker.py``, its own venv)."""
    cwd.mkdir(parents=True, exist_ok=True)  # the reference caches its tables in ./cache here
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]))
    env.pop("PYTHONPATH", None)
    worker = str(REPO / "scripts" / "reference_worker.py")
    proc = subprocess.run(
        [python, worker, "--src", src, json.dumps(spec)],
        capture_output=True, text=True, env=env, cwd=cwd, check=False,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _has_reference(kind: str, size: object, batch: int, mode: str) -> bool:
    """Workloads the fork can run in reasonable time (its 204k takes 13 s / 32 s per call at
    batch 1 on a quiet core: forward only)."""
    if kind == "model":
        return size != "s2cnn_seg_204k" or (batch == 1 and mode == "fwd")
    if kind == "so3_pair":
        return size in (10, 20, 30)
    return kind == "s2_fft" and mode == "fwd"


def _run_sub(spec: dict, pythonpath: str | None = None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]))
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        capture_output=True, text=True, env=env, cwd=REPO, check=False,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ensure_old_tree(commit: str, path: Path) -> Path | None:
    """A work tree of ``commit`` at ``path`` (``git worktree add`` once); None when impossible."""
    if (path / "sphere_bench" / "models" / "s2cnn_layers.py").exists():
        head = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=False).stdout.strip()
        want = subprocess.run(["git", "-C", str(REPO), "rev-parse", commit], capture_output=True,
                              text=True, check=False).stdout.strip()
        if head and head == want:
            return path
        print(f"{path} holds {head[:10]}, not {commit}: old implementation skipped", flush=True)
        return None
    proc = subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path),
                           commit], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(f"git worktree add {path} {commit} failed: {proc.stderr.strip()}", flush=True)
        return None
    return path


S2CNN_WORKLOADS = [("model", "s2cnn_cls_150k", 32), ("model", "s2cnn_seg_b20", 1),
                   ("model", "s2cnn_seg_b20", 8), ("model", "s2cnn_seg_204k", 1)]
TRANSFORM_WORKLOADS = [*[("so3_pair", b, 32) for b in (10, 20, 30)],
                       *[("s2_fft", b, 32) for b in (10, 30, 50)],
                       *[("s2_pair", b, 32) for b in (10, 30, 50)]]


def _label(kind: str, size, batch: int) -> str:
    if kind == "model":
        return f"{size} batch {batch}"
    names = {"so3_pair": "SO(3) fft+ifft", "s2_fft": "S² fft", "s2_pair": "S² fft+ifft"}
    return f"{names[kind]} [{batch}, 2b…] b={size}"


def _ms(r: dict | None) -> str:
    if not r:
        return ""
    if "median_ms" not in r:
        return r.get("error", r.get("skipped", ""))[:60]
    return f"{r['median_ms']:,.1f}"


def _ratio(other: dict | None, ours: dict) -> str:
    if not other or "median_ms" not in other or "median_ms" not in ours:
        return ""
    return f"{other['median_ms'] / ours['median_ms']:.2f}×"


def _markdown(results: dict) -> str:
    sg = results["sgemm"]
    rate = sg.get("gflops_best")
    lines = [
        "# bench_models",
        "",
        f"Device: {results['device_name']}; float32; {results['threads']} thread; median of "
        f"{results['repeats']} after {results['warmup']} warm-up (paper's code and e3nn: "
        f"median of {results['peer_repeats']}); torch {results['torch']}; {results['date']}.",
        f"Command: `{results['command']}`.",
        f"SGEMM rate of this machine, same run: {rate:.1f} GFLOP/s at the start (1024³ "
        f"`torch.mm`, best of {results['repeats']}); % SGEMM uses the rate measured by each "
        "workload's own process right before and after its timing (the better of the two), "
        "so that both see the same machine load.",
        f"Previous implementation: commit {results['old_commit']} (`git worktree`), same worker "
        "code, same run. Paper's code: the fork's s2cnn (`scripts/reference_worker.py`), same "
        "run. e3nn: " + results.get("e3nn_version", "not installed") + ", s2cnn-style peer "
        "(see the script's docstring). Ratios = their time / ours (> 1: ours is faster).",
        "GFLOP: executed matmul-family and FFT FLOPs of one call (`FlopCounter` in the script: "
        "complex matmul = 4 real, FFT = 5 n log2 n, real FFT half; padded zeros and DFT-by-GEMM "
        "count as executed). % SGEMM = (GFLOP / time) / SGEMM rate.",
        "Peak RSS: high-water RSS of the workload's own process (torch runtime ≈ 0.5 GB "
        "included). Load: 1-min load average of the 2-core machine after the workload.",
        f"Allocator: ours, {results['old_commit']} and e3nn run with the trainer's "
        f"`heap_keep_mb={results.get('heap_keep_mb', 0)}` (`sphere_bench/runtime.py`: glibc "
        "keeps freed memory for reuse), so their ratio compares the implementations; the "
        "'glibc default' columns time ours and the old commit with glibc's default settings "
        f"(how {results['old_commit']} trained), and 'as shipped' = {results['old_commit']} "
        "with glibc's defaults / ours with the kept heap.",
        "",
        "| workload | mode | ours (ms) | ours, glibc default (ms) | GFLOP | GFLOP/s | % SGEMM "
        f"| peak RSS (GB) | {results['old_commit']} (ms) | ratio "
        f"| {results['old_commit']}, glibc default (ms) | as shipped | its GFLOP | its RSS (GB) "
        "| paper's code (ms) | ratio | e3nn (ms) | ratio | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        if r["kind"] != "model":
            continue
        if "median_ms" not in r:
            lines.append(f"| {r['label']} | {r['mode']} | error: {r.get('error')} |" + " |" * 17)
            continue
        old, ref, e3 = r.get("old"), r.get("reference_same_run"), r.get("e3nn")
        gf = r.get("gflop", float("nan"))
        gfs = gf / (r["median_ms"] / 1000)
        row_rate = r.get("sgemm_gflops", rate)
        old_gf = f"{old['gflop']:.2f}" if old and "gflop" in old else ""
        old_rss = f"{old['peak_rss_gb']:.2f}" if old and "peak_rss_gb" in old else ""
        plain, old_plain = r.get("glibc_default"), r.get("old_glibc_default")
        lines.append(
            f"| {r['label']} | {r['mode']} | {r['median_ms']:,.1f} | {_ms(plain)} | {gf:.2f} | "
            f"{gfs:.1f} | {100 * gfs / row_rate:.0f} % | {r['peak_rss_gb']:.2f} | {_ms(old)} | "
            f"{_ratio(old, r)} | {_ms(old_plain)} | {_ratio(old_plain, r)} | {old_gf} | "
            f"{old_rss} | {_ms(ref)} | {_ratio(ref, r)} | "
            f"{_ms(e3)} | {_ratio(e3, r)} | {r.get('loadavg_1min', float('nan')):.1f} |"
        )
    transforms = [r for r in results["runs"] if r["kind"] != "model"]
    if transforms:
        lines += ["", "Harmonic transforms (public `s2_fft`/`so3_fft` API):", "",
                  f"| workload | mode | ours (ms) | peak RSS (GB) | {results['old_commit']} (ms) "
                  "| ratio | paper's code (ms) | ratio | load |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in transforms:
            old, ref = r.get("old"), r.get("reference_same_run")
            rss = f"{r['peak_rss_gb']:.2f}" if "peak_rss_gb" in r else ""
            lines.append(f"| {r['label']} | {r['mode']} | {_ms(r)} | {rss} | {_ms(old)} | "
                         f"{_ratio(old, r)} | {_ms(ref)} | {_ratio(ref, r)} | "
                         f"{r.get('loadavg_1min', float('nan')):.1f} |")
    t = results.get("tables")
    if t:
        lines += ["", f"Wigner tables, B = {t['b']}: precompute {t['precompute_s']:.2f} s, "
                      f"load from disk cache {t['load_s']:.3f} s ({t['disk_mb']:.0f} MB float64), "
                      f"build the float32 synthesis table (L = 42) {t['expand_table_s']:.2f} s."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="S2CNN workloads only")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--peer-repeats", type=int, default=3,
                        help="repeats of the paper's code and e3nn (slow)")
    parser.add_argument("--device", default="auto", help="cpu | cuda | auto")
    parser.add_argument("--out", default=str(REPO / "results" / "bench_models.json"))
    parser.add_argument("--old-commit", default=DEFAULT_OLD_COMMIT)
    parser.add_argument("--old-tree", default="/tmp/sb_old", help="where its work tree lives")
    parser.add_argument("--no-old", action="store_true")
    parser.add_argument("--heap-keep-mb", type=int,
                        default=_runtime_module().DEFAULT_KEEP_MB,
                        help="sphere_bench.runtime.keep_freed_heap in every worker (ours, the "
                             "old commit, e3nn), as the trainer's heap_keep_mb; model workloads "
                             "are also timed with glibc's defaults (0: only those)")
    parser.add_argument("--no-e3nn", action="store_true")
    parser.add_argument("--reference-python", help="python of a venv holding the fork's deps "
                        f"(default {DEFAULT_REFERENCE}/venv/bin/python when present)")
    parser.add_argument("--reference-src", help="exported work tree of Schuh93/sem_seg_s2cnn "
                        f"(default {DEFAULT_REFERENCE}/src/sem_seg_s2cnn when present)")
    parser.add_argument("--reference-cwd", default=None,
                        help="where the fork caches its Wigner tables (~2.2 GB for the 204k)")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--only", help="comma list of workload labels' substrings to run")
    parser.add_argument("--profile", nargs="*", metavar="MODEL:BATCH:MODE",
                        help="write torch.profiler tables of these S2CNN workloads to "
                             "results/bench_models_profile.md instead of benchmarking, e.g. "
                             "s2cnn_seg_b20:8:fwd+bwd")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return
    if args.profile is not None:
        import torch

        torch.set_num_threads(args.threads)
        if args.heap_keep_mb:
            _runtime_module().keep_freed_heap(args.heap_keep_mb)
        parts = ["# bench_models profiles", "",
                 f"Command: `python {' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}`"
                 f"; CPU {cpu_name()}; {time.strftime('%Y-%m-%d %H:%M')}.", ""]
        for item in args.profile:
            size, batch, mode = item.split(":")
            parts.append(profile_markdown(size, int(batch), mode))
        path = REPO / "results" / "bench_models_profile.md"
        atomic_write_text(path, "\n".join(parts))
        print(path)
        return
    if args.repeats < 5:
        parser.error("--repeats must be >= 5")

    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device_name = torch.cuda.get_device_name(0) if device == "cuda" else (
        f"CPU {cpu_name()}, {os.cpu_count()} cores")
    ref_py, ref_src = args.reference_python, args.reference_src
    if not args.no_reference and not ref_py and (DEFAULT_REFERENCE / "venv").exists():
        ref_py = str(DEFAULT_REFERENCE / "venv" / "bin" / "python")
        ref_src = ref_src or str(DEFAULT_REFERENCE / "src" / "sem_seg_s2cnn")
    in_default = bool(ref_py) and ref_py.startswith(str(DEFAULT_REFERENCE))
    ref_cwd = Path(args.reference_cwd or (DEFAULT_REFERENCE / "work" if in_default
                                          else REPO / "data" / "cache" / "reference"))
    reference = bool(ref_py and ref_src and not args.no_reference and device == "cpu")
    old_tree = None if args.no_old else ensure_old_tree(args.old_commit, Path(args.old_tree))
    try:
        import e3nn

        e3nn_version = f"e3nn {e3nn.__version__}"
    except ImportError:
        e3nn_version = None
    results = {
        "device": device, "device_name": device_name, "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"), "repeats": args.repeats, "warmup": args.warmup,
        "peer_repeats": args.peer_repeats, "threads": args.threads, "dtype": "float32",
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "old_commit": args.old_commit, "old_tree_ok": old_tree is not None,
        "heap_keep_mb": args.heap_keep_mb,
        "reference": f"{ref_src} via {ref_py}" if reference else None,
        "e3nn_version": e3nn_version, "runs": [],
    }
    out = Path(args.out)
    results["sgemm"] = _run_sub({"kind": "sgemm", "threads": args.threads,
                                 "repeats": args.repeats})
    print(f"sgemm: {results['sgemm']}", flush=True)
    if not args.quick:
        results["tables"] = _table_timing()
    base = {"threads": args.threads, "device": device, "warmup": args.warmup}
    workloads = S2CNN_WORKLOADS + ([] if args.quick else TRANSFORM_WORKLOADS)
    for kind, size, batch in workloads:
        for mode in ("fwd", "fwd+bwd"):
            if kind == "s2_fft" and mode == "fwd+bwd" and size not in (30, 50):
                continue
            label = _label(kind, size, batch)
            if args.only and not any(part in label for part in args.only.split(",")):
                continue
            spec = {**base, "kind": kind, "size": size, "batch": batch, "mode": mode,
                    "repeats": args.repeats, "count_flops": kind == "model",
                    "heap_keep_mb": args.heap_keep_mb}
            row = {**spec, "label": label, **_run_sub(spec)}
            plain = {**spec, "heap_keep_mb": 0, "count_flops": False}
            if kind == "model" and args.heap_keep_mb:
                row["glibc_default"] = _run_sub(plain)
            if old_tree is not None:
                row["old"] = _run_sub(spec, pythonpath=str(old_tree))
                if kind == "model" and args.heap_keep_mb:
                    row["old_glibc_default"] = _run_sub(plain, pythonpath=str(old_tree))
            peer = {**spec, "repeats": args.peer_repeats, "count_flops": False}
            if reference and _has_reference(kind, size, batch, mode):
                row["reference_same_run"] = _run_reference(peer, ref_py, ref_src, ref_cwd)
            if kind == "model" and not args.no_e3nn and e3nn_version and device == "cpu":
                need = e3nn_grid_gb(size)
                work = e3nn_grid_gflop(size, batch) * (1 if mode == "fwd" else 3)
                if need > E3NN_GRID_LIMIT_GB:
                    row["e3nn"] = {"skipped": f"skipped: dense SO(3) grids need {need:.0f} GB"}
                elif work > E3NN_GFLOP_LIMIT:
                    row["e3nn"] = {"skipped": f"skipped: ~{work:.0f} GFLOP of grid products"}
                else:
                    row["e3nn"] = _run_sub({**peer, "impl": "e3nn"})
            results["runs"].append(row)
            # Written after every workload: an interrupted run keeps what it measured.
            atomic_write_text(out, json.dumps(results, indent=2))
            print(f"{label:38s} {mode:8s} ours {_ms(row):>10} "
                  f"glibc {_ms(row.get('glibc_default')):>10} old {_ms(row.get('old')):>10} "
                  f"old glibc {_ms(row.get('old_glibc_default')):>10} "
                  f"ref {_ms(row.get('reference_same_run')):>10} "
                  f"e3nn {_ms(row.get('e3nn')):>10} load {os.getloadavg()[0]:.1f}", flush=True)
    atomic_write_text(out, json.dumps(results, indent=2))
    atomic_write_text(out.with_suffix(".md"), _markdown(results))
    print(_markdown(results))


if __name__ == "__main__":
    main()

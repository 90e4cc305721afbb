"""Benchmark the S2CNN zoo and the harmonic transforms → results/bench_models.{json,md}.

Float32, median of ``--repeats`` (≥ 5) timed calls after ``--warmup`` untimed ones, for each
thread count in ``--threads``. Every workload runs in a fresh subprocess, so its peak RSS is its
own (tables + activations + the torch runtime). On CUDA (``--device cuda``, or ``auto`` when a
GPU is present) times come from CUDA events and peak memory from
``torch.cuda.max_memory_allocated``.

Reference figures: issue 3 (the paper's s2cnn fork, CPU path, float32, 1 thread, median of ≥ 5,
measured on this machine type — not in the same run). Ratios are reference / ours.

Usage::

    python scripts/bench_models.py              # full set, threads 1 and 2
    python scripts/bench_models.py --quick      # small subset, 1 thread
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sphere_bench.data.cache import atomic_write_text
from sphere_bench.system_info import cpu_name, peak_rss_mb

REPO = Path(__file__).resolve().parents[1]

# Reference (issue 3): milliseconds, 1 thread, float32; peak RSS in GB where given.
REFERENCE_MS = {
    ("s2cnn_cls_150k", 32, "fwd"): 768,
    ("s2cnn_cls_150k", 32, "fwd+bwd"): 1463,
    ("s2cnn_seg_204k", 1, "fwd"): 10_900,
    ("s2cnn_seg_204k", 1, "fwd+bwd"): 32_200,
    ("s2cnn_seg_204k", 4, "fwd"): 54_700,
    ("s2cnn_seg_204k", 4, "fwd+bwd"): 128_700,
    ("s2cnn_seg_b20", 32, "fwd"): 11_800,
    ("s2cnn_seg_b20", 32, "fwd+bwd"): 21_700,
    ("so3_pair", 10, "fwd"): 19,
    ("so3_pair", 20, "fwd"): 293,
    ("so3_pair", 30, "fwd"): 2250,
    ("so3_pair", 10, "fwd+bwd"): 40,
    ("so3_pair", 20, "fwd+bwd"): 602,
    ("so3_pair", 30, "fwd+bwd"): 4301,
    ("s2_fft", 30, "fwd"): 16,
    ("s2_fft", 50, "fwd"): 49,
}
REFERENCE_RSS_GB = {
    ("s2cnn_cls_150k", 32, "fwd+bwd"): 0.9,
    ("s2cnn_seg_204k", 1, "fwd+bwd"): 4.9,
    ("s2cnn_seg_204k", 4, "fwd+bwd"): 5.6,
}


def _peak_rss_gb() -> float:
    """High-water RSS of this process image (``VmHWM``; ``ru_maxrss`` survives ``exec``)."""
    peak = peak_rss_mb()
    if peak is not None:
        return peak * 1024 / 1e6
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def _worker(spec: dict) -> dict:
    """Run one workload in this process and return its measurements."""
    import torch

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    kind, size, batch = spec["kind"], spec["size"], spec["batch"]

    if kind == "model":
        import hydra
        from omegaconf import OmegaConf

        model = hydra.utils.instantiate(OmegaConf.load(REPO / "conf" / "model" / f"{size}.yaml"))
        model = model.to(device)
        b = model.bandwidth
        x = torch.randn(batch, 1, 2 * b, 2 * b, device=device)

        def fwd():
            with torch.no_grad():
                return model(x)

        def fwd_bwd():
            model.zero_grad(set_to_none=True)
            model(x).square().mean().backward()

    elif kind == "so3_pair":
        from sphere_bench.models.so3_fft import so3_fft, so3_ifft

        x = torch.randn(batch, 2 * size, 2 * size, 2 * size, device=device)

        def fwd():
            with torch.no_grad():
                return so3_ifft(so3_fft(x), size)

        xg = x.clone().requires_grad_(True)

        def fwd_bwd():
            so3_ifft(so3_fft(xg), size).square().mean().backward()

    elif kind in ("s2_fft", "s2_pair"):
        from sphere_bench.models.s2_fft import s2_fft, s2_ifft

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
    return out


def _table_timing() -> dict:
    """Wigner-table precompute (empty cache) and load-from-cache times at B = 50."""
    import numpy as np

    from sphere_bench.models import wigner

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

        wigner.so3_pair_table(50, 50, torch.float32, "cpu")
        expand = time.perf_counter() - t
    return {"b": 50, "precompute_s": compute, "load_s": load, "expand_pair_table_s": expand,
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
    """Workloads the fork can run in reasonable time (its 204k at batch 4 takes 55 s / 129 s per
    call: that row keeps the issue's reference figure only)."""
    if kind == "model":
        return not (size == "s2cnn_seg_204k" and batch > 1)
    if kind == "so3_pair":
        return size in (10, 20, 30)
    return kind == "s2_fft" and mode == "fwd"


def _run_sub(spec: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]))
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        capture_output=True, text=True, env=env, cwd=REPO, check=False,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _workloads(quick: bool) -> list[tuple[str, object, int]]:
    if quick:
        return [("model", "s2cnn_cls_150k", 32), ("model", "s2cnn_seg_b20", 4),
                ("so3_pair", 10, 32), ("so3_pair", 20, 32), ("s2_fft", 30, 32)]
    return [
        ("model", "s2cnn_cls_150k", 32),
        ("model", "s2cnn_seg_204k", 1),
        ("model", "s2cnn_seg_204k", 4),
        ("model", "s2cnn_seg_b20", 32),
        *[("so3_pair", b, 32) for b in (10, 20, 30, 50)],
        *[("s2_fft", b, 32) for b in (10, 20, 30, 50)],
        *[("s2_pair", b, 32) for b in (10, 20, 30, 50)],
    ]


def _label(kind: str, size, batch: int) -> str:
    if kind == "model":
        return f"{size} batch {batch}"
    names = {"so3_pair": "SO(3) fft+ifft", "s2_fft": "S² fft", "s2_pair": "S² fft+ifft"}
    return f"{names[kind]} [{batch}, 2b…] b={size}"


def _markdown(results: dict) -> str:
    same_run = any("reference_same_run" in r for r in results["runs"])
    lines = [
        "# bench_models",
        "",
        f"Device: {results['device_name']}; float32; median of {results['repeats']} after "
        f"{results['warmup']} warm-up; torch {results['torch']}; {results['date']}.",
        "Reference = issue 3 figures for the paper's s2cnn fork (CPU path, 1 thread), measured on",
        "this machine type but **not in the same run**; ratio = reference / ours (> 1 is faster).",
        "Load = 1-min load average after the workload (> threads means other processes competed).",
    ]
    if same_run:
        lines += [
            "**Same run** = the fork's s2cnn timed right after ours in this run "
            "(`scripts/reference_worker.py`, its own venv, 1 thread, median of "
            f"{results.get('reference_repeats')} after {results['warmup']} warm-up); "
            "same-run ratio = its time / ours.",
        ]
    lines += [
        "",
        "| workload | mode | threads | ours (ms) | reference (ms) | ratio | peak RSS (GB) "
        "| ref RSS | load | same run: reference (ms) | same-run ratio | same run: ref RSS (GB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        key = (r["size"] if r["kind"] == "model" else r["kind"],
               r["batch"] if r["kind"] == "model" else r["size"], r["mode"])
        ref = REFERENCE_MS.get(tuple(key))
        ref_rss = REFERENCE_RSS_GB.get(tuple(key))
        if "error" in r:
            lines.append(f"| {r['label']} | {r['mode']} | {r['threads']} | error: {r['error']} "
                         "| | | | | | | | |")
            continue
        same = r.get("reference_same_run") or {}
        if "median_ms" in same:
            same_cols = (f"{same['median_ms']:,.1f} | {same['median_ms'] / r['median_ms']:.1f}× | "
                         f"{same['peak_rss_gb']:.2f}")
        else:
            same_cols = f"{same.get('error', '')} | | "
        ours = r["median_ms"]
        ratio = f"{ref / ours:.1f}×" if ref else ""
        lines.append(
            f"| {r['label']} | {r['mode']} | {r['threads']} | {ours:,.1f} | "
            f"{'' if ref is None else f'{ref:,}'} | {ratio} | {r['peak_rss_gb']:.2f} | "
            f"{'' if ref_rss is None else ref_rss} | {r.get('loadavg_1min', float('nan')):.1f} | "
            f"{same_cols} |"
        )
    t = results.get("tables")
    if t:
        lines += ["", f"Wigner tables, B = {t['b']}: precompute {t['precompute_s']:.2f} s, "
                      f"load from disk cache {t['load_s']:.3f} s ({t['disk_mb']:.0f} MB float64), "
                      f"expand to the padded float32 pair table {t['expand_pair_table_s']:.2f} s."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fast subset, 1 thread")
    parser.add_argument("--threads", default=None, help="comma list (default 1,2; quick: 1)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="auto", help="cpu | cuda | auto")
    parser.add_argument("--out", default=str(REPO / "results" / "bench_models.json"))
    parser.add_argument("--reference-python", help="python of a venv holding the fork's deps "
                        "(running_the_reference.md); with --reference-src, times the fork too")
    parser.add_argument("--reference-src", help="exported work tree of Schuh93/sem_seg_s2cnn")
    parser.add_argument("--reference-cwd", default=str(REPO / "data" / "cache" / "reference"),
                        help="where the fork caches its Wigner tables (~2.2 GB for the 204k)")
    parser.add_argument("--reference-repeats", type=int, default=3)
    parser.add_argument("--only", help="comma list of workload labels' substrings to run")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return
    if args.repeats < 5:
        parser.error("--repeats must be >= 5")

    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device_name = torch.cuda.get_device_name(0) if device == "cuda" else (
        f"CPU {cpu_name()}, {os.cpu_count()} cores")
    threads = [int(t) for t in (args.threads or ("1" if args.quick else "1,2")).split(",")]
    results = {
        "device": device, "device_name": device_name, "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"), "repeats": args.repeats, "warmup": args.warmup,
        "dtype": "float32", "reference": "issue 3 (s2cnn fork CPU path, 1 thread, not same run)",
        "reference_repeats": args.reference_repeats if args.reference_python else None,
        "runs": [],
    }
    reference = args.reference_python and args.reference_src
    out = Path(args.out)
    results["tables"] = _table_timing()
    print(f"tables: {results['tables']}", flush=True)
    for t in threads:
        for kind, size, batch in _workloads(args.quick):
            for mode in ("fwd", "fwd+bwd"):
                if kind == "s2_fft" and mode == "fwd+bwd" and size not in (30, 50):
                    continue
                spec = {"kind": kind, "size": size, "batch": batch, "mode": mode, "threads": t,
                        "device": device, "repeats": args.repeats, "warmup": args.warmup}
                label = _label(kind, size, batch)
                if args.only and not any(part in label for part in args.only.split(",")):
                    continue
                res = _run_sub(spec)
                row = {**spec, "label": label, **res}
                same_run = reference and t == 1 and device == "cpu"
                if same_run and _has_reference(kind, size, batch, mode):
                    ref_spec = {**spec, "repeats": args.reference_repeats}
                    row["reference_same_run"] = _run_reference(
                        ref_spec, args.reference_python, args.reference_src,
                        Path(args.reference_cwd),
                    )
                    print(f"  reference: {row['reference_same_run']}", flush=True)
                results["runs"].append(row)
                # Written after every workload: an interrupted run keeps what it measured.
                atomic_write_text(out, json.dumps(results, indent=2))
                print(f"{row['label']:45s} {mode:8s} thr={t} "
                      f"{res.get('median_ms', float('nan')):10.1f} ms "
                      f"rss={res.get('peak_rss_gb', float('nan')):.2f} GB {res.get('error', '')}",
                      flush=True)
    atomic_write_text(out, json.dumps(results, indent=2))
    atomic_write_text(out.with_suffix(".md"), _markdown(results))
    print(_markdown(results))


if __name__ == "__main__":
    main()

"""Time one workload of the paper's own s2cnn (the fork Schuh93/sem_seg_s2cnn) — a benchmark
worker that ``scripts/bench_models.py --reference-python ... --reference-src ...`` starts in the
reference's virtual environment, next to the same workload of sphere_bench, so both are measured
in one run on one machine (``docs/running_the_reference.md`` sets that up).

It imports the reference from ``--src`` (an exported work tree; nothing of it is copied here),
builds the workload, times it on the CPU and prints one JSON line. Standard library, numpy and
torch only: this file must not import sphere_bench (it runs in the reference's venv).

    <ref venv>/bin/python scripts/reference_worker.py --src <tree> '<json spec>'
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

# s2cnn's grid helpers use np.float, removed in NumPy 1.24: a runtime shim, not a code change.
setattr(np, "float", float)  # noqa: B010

# The 204k layout of the paper's README and its B = 20 scaling (reference rows of bench_models).
SEG_LAYOUTS = {
    "s2cnn_seg_204k": dict(b_in=50, b_ls=[42, 35, 27, 20, 27, 35, 42], b_out=50),
    "s2cnn_seg_b20": dict(b_in=20, b_ls=[16, 14, 11, 8, 11, 14, 16], b_out=20),
}
FEATURES = [11, 12, 13, 14, 13, 12, 11]
MAX_BETAS = [0.1238, 0.1474, 0.1768, 0.2292, 0.3095, 0.2292, 0.1768, 0.1474]


def _peak_rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1e6
    return float("nan")


def build(spec: dict, src: Path):
    import torch

    kind, size, batch = spec["kind"], spec["size"], spec["batch"]
    if kind == "model" and size in SEG_LAYOUTS:
        sys.path.insert(0, str(src / "examples" / "mnist_sem_seg"))
        from models import S2ConvNet_sem_seg

        layout = SEG_LAYOUTS[size]
        model = S2ConvNet_sem_seg(
            b_in=layout["b_in"], f_in=1, fs=FEATURES, b_ls=layout["b_ls"], b_out=layout["b_out"],
            f_out=11, kernel_max_beta=MAX_BETAS, use_skips=False,
        )  # fmt: skip
        x = torch.randn(batch, 1, 2 * layout["b_in"], 2 * layout["b_in"])
    elif kind == "model" and size == "s2cnn_cls_150k":
        sys.path.insert(0, str(src / "examples" / "mnist"))
        from run import S2ConvNet_original

        model = S2ConvNet_original()
        x = torch.randn(batch, 1, 60, 60)
    elif kind == "so3_pair":
        from s2cnn.soft.so3_fft import SO3_fft_real, SO3_ifft_real

        x = torch.randn(batch, 2 * size, 2 * size, 2 * size)
        xg = x.clone().requires_grad_(True)

        def fwd():
            with torch.no_grad():
                return SO3_ifft_real.apply(SO3_fft_real.apply(x))

        def fwd_bwd():
            SO3_ifft_real.apply(SO3_fft_real.apply(xg)).square().mean().backward()

        return fwd, fwd_bwd
    elif kind == "s2_fft":
        from s2cnn.soft.s2_fft import S2_fft_real

        x = torch.randn(batch, 2 * size, 2 * size)

        def fwd():
            with torch.no_grad():
                return S2_fft_real.apply(x)

        return fwd, None
    else:
        raise ValueError(f"no reference workload {kind} {size}")

    def model_fwd():
        with torch.no_grad():
            return model(x)

    def model_fwd_bwd():
        model.zero_grad(set_to_none=True)
        model(x).square().mean().backward()

    return model_fwd, model_fwd_bwd


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--src", type=Path, required=True, help="the fork's exported work tree")
    parser.add_argument("spec")
    args = parser.parse_args()
    spec = json.loads(args.spec)
    import torch

    torch.set_num_threads(spec["threads"])
    sys.path.insert(0, str(args.src))
    fwd, fwd_bwd = build(spec, args.src)
    fn = fwd if spec["mode"] == "fwd" else fwd_bwd
    if fn is None:
        raise ValueError(f"no {spec['mode']} for {spec['kind']}")
    start = time.perf_counter()
    fn()  # first call: builds (or loads from ./cache) the Wigner tables
    first = time.perf_counter() - start
    for _ in range(spec["warmup"]):
        fn()
    times = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    print(json.dumps({
        "median_ms": statistics.median(times), "min_ms": min(times),
        "times_ms": [round(t, 3) for t in times], "first_call_s": round(first, 3),
        "peak_rss_gb": _peak_rss_gb(), "loadavg_1min": os.getloadavg()[0],
    }))  # fmt: skip


if __name__ == "__main__":
    main()

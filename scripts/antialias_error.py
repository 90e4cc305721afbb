"""Equivariance error, latency and memory of an S2CNN vs the ReLU oversampling factor.

For each model config and oversampling factor (``model.oversampling``, see
``sphere_bench/models/antialias.py``): the untrained model (torch seed 0), MNIST test image 0
projected unrotated on the model's SOFT grid and band-limited, the ZYZ rotation
``(α, β, γ) = (3.216, 0.449, 0.906)``, and the relative L2 error
``‖f(R x) − R f(x)‖ / ‖f(x)‖`` of the output (segmentation logits, band-limited as the model's
output is; classification logits: ``‖f(R x) − f(x)‖ / ‖f(x)‖``), with ``R x`` the exact spectral
rotation of the band-limited input. Each factor runs in a fresh process (peak RSS is per
process): forward latency at batch 1 (median of ``--repeats`` after one warm-up) and the peak
RSS increase over the process's state before the first forward (CUDA: max allocated).

    python scripts/antialias_error.py --models s2cnn_seg_b20 --factors 1 1.5 2 3 \\
        --out results/antialias
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROTATION = (3.216, 0.449, 0.906)


def measure(
    model_name: str,
    factor: float,
    repeats: int,
    device: str,
    weights: str | None = None,
    upsampling: str = "exact",
) -> dict:
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from sphere_bench.data.planar_source import load_planar_split
    from sphere_bench.data.spherical_dataset import SplitSpec, generate_split
    from sphere_bench.harmonic.rotations import euler_zyz_to_matrix
    from sphere_bench.harmonic.s2_fft import s2_fft, s2_ifft
    from sphere_bench.harmonic.signal_rotation import rotate_s2
    from sphere_bench.system_info import peak_rss_mb

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    cfg = OmegaConf.load(REPO / "conf" / "model" / f"{model_name}.yaml")
    cfg.oversampling = factor
    cfg.upsampling = upsampling  # "paper": the reference's aliased up-sampling, to float rounding
    torch.manual_seed(0)
    net = instantiate(cfg)
    if weights:  # a reference s2cnn state_dict (e.g. the paper code's seed-0 initialisation)
        from sphere_bench.models.s2cnn_import import load_reference_state_dict

        load_reference_state_dict(net, torch.load(weights, map_location="cpu", weights_only=True))
    net = net.to(device).eval()
    b = int(cfg.bandwidth)
    root = os.environ.get("SPHERE_BENCH_DATA", str(REPO / "data"))
    source = load_planar_split("mnist", "test", root, None)
    task = "segmentation" if "Segmentation" in cfg._target_ else "classification"
    spec = SplitSpec("mnist", task, "test", 1, resolution=b, rotate="none")
    x = generate_split(spec, source, progress=False).inputs.to(torch.float64)[:, None]
    x = s2_ifft(s2_fft(x))  # band-limited: its spectral rotation is exact
    rotation = euler_zyz_to_matrix(*(torch.tensor(a, dtype=torch.float64) for a in ROTATION))
    xr = rotate_s2(x, rotation)
    x, xr = x.float().to(device), xr.float().to(device)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = peak_rss_mb()
    with torch.no_grad():
        y = net(x)
        yr = net(xr)
        times = []
        for _ in range(repeats):
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            net(x)
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else peak_rss_mb()
    if task == "segmentation":
        expected = rotate_s2(y.double().cpu(), rotation)
        got = s2_ifft(s2_fft(yr.double().cpu()))
    else:
        expected, got = y.double().cpu(), yr.double().cpu()
    error = float((got - expected).norm() / expected.norm())
    return {
        "model": model_name, "bandwidth": b, "factor": factor, "rel_error": error,
        "latency_ms": 1000 * statistics.median(times), "peak_memory_mb": peak - base,
        "memory_kind": "cuda_max_allocated" if cuda else "cpu_peak_rss_increase",
        "device": device, "threads": torch.get_num_threads(), "weights": weights or "seed 0",
        "upsampling": upsampling,
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["s2cnn_seg_b20"])
    parser.add_argument("--factors", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="writes <out>.json and <out>.md")
    parser.add_argument(
        "--weights",
        default=None,
        help="reference s2cnn state_dict (.pt) to load instead of our seed-0 init",
    )
    parser.add_argument(
        "--upsampling",
        choices=["exact", "paper"],
        default="exact",
        help="model.upsampling (paper = the reference code's function)",
    )
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        row = measure(
            args.models[0],
            args.factors[0],
            args.repeats,
            args.device,
            args.weights,
            args.upsampling,
        )
        print(json.dumps(row))
        return 0
    rows = []
    for model in args.models:
        for factor in args.factors:
            cmd = [sys.executable, __file__, "--one", "--models", model, "--factors", str(factor),
                   "--repeats", str(args.repeats), "--device", args.device]  # fmt: skip
            if args.weights:
                cmd += ["--weights", args.weights]
            cmd += ["--upsampling", args.upsampling]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.out:
        from sphere_bench.io import atomic_write_text

        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out.with_suffix(".json"), json.dumps(rows, indent=1))
        lines = [
            "# S2CNN equivariance error vs ReLU oversampling",
            "",
            f"Command: `python scripts/antialias_error.py --models {' '.join(args.models)} "
            f"--factors {' '.join(f'{f:g}' for f in args.factors)} --device {args.device}"
            f"{' --weights ' + args.weights if args.weights else ''}"
            f"{' --upsampling paper' if args.upsampling == 'paper' else ''}`; untrained "
            f"({'the weights of --weights' if args.weights else 'our seed-0 initialisation'}), "
            f"MNIST test image 0, rotation ZYZ {ROTATION}.",
            "",
            "| model | B | upsampling | factor | rel. error (%) | latency batch 1 (ms) | "
            "peak memory (MB) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            lines.append(
                f"| {r['model']} | {r['bandwidth']} | {r['upsampling']} | {r['factor']:g} | "
                f"{100 * r['rel_error']:.2f}"
                f" | {r['latency_ms']:.0f} | {r['peak_memory_mb']:.0f} ({r['memory_kind']}) |"
            )
        atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Latency, throughput and peak memory of every zoo model → ``results/bench.json`` (+ ``.md``).

Every ``conf/model/*.yaml`` at its own grid (SOFT bandwidth, HEALPix nside or torch-harmonics
nlat), forward pass (and forward + backward with
``--train``), batch 1 and 32, through :func:`sphere_bench.evaluate.latency.measure_latency`
(CUDA events on a GPU, ``perf_counter`` on the CPU; median and p10/p90 after warm-up). Each model
runs in its own subprocess, so its peak memory is its own. A batch whose estimated activation
memory exceeds ``--max-memory-gb`` is skipped and listed as such ("where memory allows").

    python scripts/bench_zoo.py [--device auto|cpu|cuda] [--threads 1] [--models a,b] [--train]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _input_shape(cfg) -> tuple[int, ...]:
    """``(1, *grid)`` of one input: ``(1, 12·nside²)``, ``(1, nlat, nlon)`` or ``(1, 2B, 2B)``."""
    if "nside" in cfg:
        return (1, 12 * int(cfg.nside) ** 2)
    if "nlat" in cfg:
        from sphere_bench.harmonic.grids import torch_harmonics_shape

        return (1, *torch_harmonics_shape(str(cfg.grid), int(cfg.nlat)))
    side = 2 * int(cfg.bandwidth)
    return (1, side, side)


def _grid_label(cfg) -> str:
    if "nside" in cfg:
        return f"HEALPix nside {cfg.nside}"
    if "nlat" in cfg:
        return f"{cfg.grid} {cfg.nlat}"
    return f"B = {cfg.bandwidth}"


def _activation_gb(model_name: str, batch: int) -> float:
    """A rough upper bound of the forward activations in GB (float32), to skip hopeless runs."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(REPO / "conf" / "model" / f"{model_name}.yaml")
    if "bandwidth" not in cfg:  # graph / DISCO nets: a few copies of every level's features
        points = _input_shape(cfg)[1:]
        floats = sum(cfg.channels) * (points[0] * (points[1] if len(points) > 1 else 1))
        return 12 * batch * floats * 4 / 1e9
    if "s2cnn" in model_name:
        channels = list(cfg.get("channels", [20, 40]))
        bandlimits = list(cfg.get("bandlimits", [10, 6]))
        floats = sum(c * (2 * b) ** 3 for c, b in zip(channels, bandlimits, strict=True))
        return 6 * batch * floats * 4 / 1e9  # FFT temporaries: a few copies per layer
    side = 2 * int(cfg.bandwidth)
    return 4 * batch * sum(cfg.get("features", [16])) * side * side * 4 / 1e9


def _worker(spec: dict) -> dict:
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from sphere_bench.evaluate.latency import device_description, measure_latency
    from sphere_bench.models import count_parameters

    torch.set_num_threads(spec["threads"])
    cfg = OmegaConf.load(REPO / "conf" / "model" / f"{spec['model']}.yaml")
    model = instantiate(cfg)
    timing = measure_latency(
        model, _input_shape(cfg), spec["batch"], spec["device"], mode=spec["mode"],
        warmup=spec["warmup"], repeats=spec["repeats"],
    )  # fmt: skip
    return {
        **timing.as_dict(),
        "parameters": count_parameters(model),
        "grid": _grid_label(cfg),
        **device_description(spec["device"]),
    }


def _run(spec: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]))
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        capture_output=True, text=True, env=env, cwd=REPO, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"
        return {"error": tail}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def markdown(result: dict) -> str:
    lines = [
        "# Zoo latency, throughput and memory",
        "",
        f"{result['date']}; device {result['device_name']}; {result['threads']} thread(s); "
        f"float32; median (p10–p90) of {result['repeats']} after {result['warmup']} warm-up; "
        "peak memory of the measurement's process (CPU: peak RSS incl. ~0.5–0.8 GB of torch "
        "itself; GPU: max allocated).",
        "",
        "| model | params | grid | mode | batch | ms/batch | p10–p90 ms | images/s | peak MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        grid = r.get("grid") or (f"B = {r['bandwidth']}" if "bandwidth" in r else "")
        head = f"| {r['model']} | {r.get('parameters', '')} | {grid} | "
        head += f"{r['mode']} | {r['batch']} |"
        if "skipped" in r:
            lines.append(f"{head} skipped: {r['skipped']} | | | |")
        elif "error" in r:
            lines.append(f"{head} error: {r['error']} | | | |")
        else:
            lines.append(
                f"{head} {r['median_ms']:,.1f} | {r['p10_ms']:,.1f}–{r['p90_ms']:,.1f} | "
                f"{r['images_per_s']:,.1f} | {r['peak_memory_mb'] or float('nan'):,.0f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", help="comma list (default: every conf/model entry)")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--train", action="store_true", help="also forward + backward")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-memory-gb", type=float, default=12.0)
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return

    import torch

    from sphere_bench.io import atomic_write_text
    from sphere_bench.system_info import device_name

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    models = (
        args.models.split(",")
        if args.models
        else sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml"))
    )
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "device": device,
        "device_name": device_name(device), "threads": args.threads, "warmup": args.warmup,
        "repeats": args.repeats, "rows": [],
    }  # fmt: skip
    modes = ["forward", "forward_backward"] if args.train else ["forward"]
    for model in models:
        for mode in modes:
            for batch in (int(b) for b in args.batches.split(",")):
                row = {"model": model, "mode": mode, "batch": batch}
                estimate = _activation_gb(model, batch) * (3 if mode != "forward" else 1)
                if device == "cpu" and estimate > args.max_memory_gb:
                    row["skipped"] = f"~{estimate:.0f} GB of activations > {args.max_memory_gb}"
                else:
                    spec = {**row, "device": device, "threads": args.threads,
                            "warmup": args.warmup, "repeats": args.repeats}  # fmt: skip
                    row.update(_run(spec))
                result["rows"].append(row)
                print(json.dumps(row), flush=True)
                atomic_write_text(args.out, json.dumps(result, indent=1))
    atomic_write_text(args.out.with_suffix(".md"), markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()

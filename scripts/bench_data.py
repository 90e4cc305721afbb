"""Benchmark of spherical dataset generation → ``results/bench_data.json`` (+ ``.md``).

Measures images/s of :func:`sphere_bench.data.spherical_dataset.generate_split` (projection,
min–max rescale, segmentation masks; the 10,000 MNIST test digits) at B = 30 and 50, unrotated and
with one Haar rotation per image, for 1 and 2 torch threads; median of ``--repeats`` runs after a
warm-up. Wall time is reported, together with process CPU time (robust to other processes on a
busy machine).

Optionally the paper's own ``gendata.py`` runs in the same process for a ratio measured in one
run: ``--reference PATH`` with PATH the fork's ``examples/mnist_sem_seg`` folder (a checkout of
Schuh93/sem_seg_s2cnn; see ``docs/running_the_reference.md``). Its functions are
called in the pattern of its ``main`` (one rotation per chunk, then the per-image mask loop);
lie_learn's grid helper is replaced by the same Driscoll–Healy grid built here.

    python scripts/bench_data.py [--quick] [--reference PATH]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import time
import types
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from sphere_bench.data.planar_source import load_planar_split
from sphere_bench.data.spherical_dataset import SplitSpec, generate_split
from sphere_bench.harmonic.grids import paper_betas, soft_alphas
from sphere_bench.io import atomic_write_text
from sphere_bench.system_info import cpu_name

REPO = Path(__file__).resolve().parents[1]


def _time(fn, repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def bench_ours(images: int, bandwidths: list[int], threads: list[int], repeats: int) -> list[dict]:
    source = load_planar_split("mnist", "test")
    rows = []
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        for b in bandwidths:
            for rotate in ("random", "none"):
                spec = SplitSpec("mnist", "segmentation", "test", images, resolution=b,
                                 rotate=rotate)  # fmt: skip
                wall, cpu = _time(lambda s=spec: generate_split(s, source, progress=False), repeats)
                rows.append({
                    "impl": "sphere_bench", "bandwidth": b, "rotate": rotate, "threads": n_threads,
                    "images": images, "wall_s": wall, "cpu_s": cpu, "images_per_s": images / wall,
                })  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
    return rows


def _load_reference(path: Path) -> types.ModuleType:
    """Import the fork's gendata.py with lie_learn's ``S2.meshgrid`` supplied by us."""

    def meshgrid(b: int, grid_type: str = "Driscoll-Healy") -> tuple[np.ndarray, np.ndarray]:
        if grid_type != "Driscoll-Healy":
            raise ValueError(grid_type)
        return np.meshgrid(paper_betas(b), soft_alphas(b), indexing="ij")

    s2 = types.ModuleType("lie_learn.spaces.S2")
    s2.meshgrid = meshgrid  # type: ignore[attr-defined]
    for name in ("lie_learn", "lie_learn.spaces"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["lie_learn.spaces.S2"] = s2
    sys.modules["lie_learn.spaces"].S2 = s2  # type: ignore[attr-defined]
    sys.path.insert(0, str(path))
    return importlib.import_module("gendata")


def bench_reference(path: Path, images: int, bandwidths: list[int], chunks: list[int],
                    repeats: int) -> list[dict]:  # fmt: skip
    ref = _load_reference(path)
    source = load_planar_split("mnist", "test")
    signals = source.images[:images].numpy().astype(np.float64)
    labels = source.labels[:images].numpy()
    rows = []
    for b in bandwidths:
        grid = ref.get_projection_grid(b=b)
        for chunk in chunks:

            def run(grid=grid, chunk=chunk, b=b) -> None:
                out = np.ndarray((images, 2 * b, 2 * b), dtype=np.uint8)
                masks = np.ndarray((images, 2 * b, 2 * b), dtype=np.uint8)
                for start in range(0, images, chunk):
                    idxs = np.arange(start, min(images, start + chunk))
                    rotated = ref.rotate_grid(ref.rand_rotation_matrix(deflection=1.0), grid)
                    out[idxs] = ref.project_2d_on_sphere(signals[idxs], rotated)
                    for i in idxs:
                        masks[i] = (out[i] > 150).astype(np.uint8) * (labels[i] + 1)

            wall, cpu = _time(run, repeats)
            rows.append({
                "impl": "reference gendata.py", "bandwidth": b, "rotate": "random",
                "rotation_chunk": chunk, "threads": 1, "images": images, "wall_s": wall,
                "cpu_s": cpu, "images_per_s": images / wall,
            })  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    return rows


def environment() -> dict:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
        "torch": torch.__version__, "numpy": np.__version__,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }  # fmt: skip


def markdown(result: dict) -> str:
    lines = [
        "# Dataset generation speed",
        "",
        f"{result['environment']['date']}, {result['environment']['cpu']}, "
        f"{result['environment']['cores']} cores, torch {result['environment']['torch']}; "
        f"{result['images']} MNIST test digits, segmentation (inputs + masks), median of "
        f"{result['repeats']}. Load average at start: {result['environment']['load_average']}.",
        "",
        "| implementation | B | rotation | threads | images/s | wall s | CPU s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        rot = r["rotate"] + (f", chunk {r['rotation_chunk']}" if "rotation_chunk" in r else "")
        lines.append(
            f"| {r['impl']} | {r['bandwidth']} | {rot} | {r['threads']} | "
            f"{r['images_per_s']:,.0f} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} |"
        )
    ratios = result.get("ratios_vs_reference")
    if ratios:
        lines += ["", "Speed-up over the reference in this run (same B, one rotation per image, "
                  "1 thread both):", ""]  # fmt: skip
        lines += [f"- B = {b}: {x:.1f}x" for b, x in ratios.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 images, 1 repeat")
    parser.add_argument("--reference", type=Path, help="the fork's examples/mnist_sem_seg folder")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench_data.json")
    args = parser.parse_args()
    images, repeats = (2000, 1) if args.quick else (10_000, 3)
    result = {"environment": environment(), "images": images, "repeats": repeats}
    rows = bench_ours(images, [30, 50], [1, 2], repeats)
    if args.reference:
        ref_rows = bench_reference(args.reference, min(images, 2000), [30, 50], [1, 500], 1)
        rows += ref_rows
        result["ratios_vs_reference"] = {
            str(r["bandwidth"]): next(
                o["images_per_s"] for o in rows
                if o["impl"] == "sphere_bench" and o["bandwidth"] == r["bandwidth"]
                and o["rotate"] == "random" and o["threads"] == 1
            ) / r["images_per_s"]
            for r in ref_rows if r["rotation_chunk"] == 1
        }  # fmt: skip
    result["rows"] = rows
    atomic_write_text(args.out, json.dumps(result, indent=1))
    atomic_write_text(args.out.with_suffix(".md"), markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()

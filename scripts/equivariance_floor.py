"""The floor of the cross-grid equivariance comparison → ``results/equivariance_floor.{json,md}``.

:func:`sphere_bench.evaluate.equivariance.grid_equivariance_errors` compares outputs after each
grid's own spherical analysis. Applied to an exactly equivariant model — the identity, whose
"output" is the exactly re-rendered input — it measures what sampling, aliasing and the analysis
of each grid contribute on their own: no model can score below it on that grid. This script
measures it on the first test spheres of one-digit MNIST segmentation, for the grids of the
quick_paradigms preset and a few others, at several band limits ``L``.

    python scripts/equivariance_floor.py [--samples 8] [--draws 2]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
GRIDS = [
    ("soft", 16), ("legendre-gauss", 24), ("equiangular", 33), ("healpix_nested", 8),
    ("healpix_nested", 16), ("soft", 30), ("legendre-gauss", 40), ("healpix_nested", 32),
]  # fmt: skip


def main() -> None:
    from sphere_bench.data.planar_source import load_planar_split
    from sphere_bench.data.spherical_dataset import SplitSpec, render_samples
    from sphere_bench.evaluate.equivariance import exact_degree_limit, grid_equivariance_errors

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--draws", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "results"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = os.environ.get("SPHERE_BENCH_DATA", "data")
    source = load_planar_split("mnist", "test", root, None)
    rows = []
    for grid_name, resolution in GRIDS:
        spec = SplitSpec(
            dataset="mnist", task="segmentation", split="test", n=args.samples, grid=grid_name,
            resolution=resolution, rotate="none",
        )  # fmt: skip
        grid = spec.make_grid()
        ids = torch.arange(args.samples)

        def rerender(extra, spec=spec, ids=ids):
            x, _ = render_samples(spec, source, ids, extra)
            return x.to(torch.float32).unsqueeze(1)

        inputs = rerender(None)  # the unrotated (NR) test spheres
        for lmax in (8, 12, 16):
            if lmax > exact_degree_limit(grid):
                continue
            start = time.perf_counter()
            errors = grid_equivariance_errors(
                torch.nn.Identity(), inputs, "segmentation", grid, rerender, n_haar=args.draws,
                generator=torch.Generator().manual_seed(0), lmax=lmax,
            )  # fmt: skip
            rows.append({
                "grid": grid_name, "resolution": resolution, "points": grid.num_points,
                "lmax": lmax, "identity_spectral_error": errors["spectral_rel_error"],
                "floor": errors["spectral_floor"], "grid_rel_error": errors.get("grid_rel_error"),
                "seconds": time.perf_counter() - start,
            })  # fmt: skip
            print(rows[-1], flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"samples": args.samples, "draws": args.draws, "rows": rows}
    (out / "equivariance_floor.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        "# Floor of the cross-grid equivariance comparison",
        "",
        f"Identity model on {args.samples} one-digit MNIST test spheres (NR), {args.draws} Haar "
        "draws each; relative L² error of the degree-< L part "
        "(`python scripts/equivariance_floor.py`).",
        "",
        "| grid | resolution | points | L | floor (relative error) |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['grid']} | {r['resolution']} | {r['points']} | {r['lmax']} | {r['floor']:.2e} |"
        for r in rows
    ]
    (out / "equivariance_floor.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

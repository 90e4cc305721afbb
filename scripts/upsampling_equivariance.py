"""Equivariance error of an S2CNN with ``upsampling=exact`` vs ``paper`` (same weights).

Builds ``conf/model/<model>.yaml`` twice (``model.upsampling`` exact and paper), gives both the
same seeded weights, and measures :func:`sphere_bench.evaluate.equivariance.equivariance_errors`
on random inputs band-limited to the input bandwidth, rotated exactly in the spectral domain
(:func:`sphere_bench.harmonic.signal_rotation.rotate_s2`), so the error is the network's own:
grid half-turns and Haar rotations. Untrained weights: this isolates what the reference's
aliased up-sampling costs in equivariance, not in accuracy (train with ``model.upsampling=paper``
for that).

    .venv/bin/python scripts/upsampling_equivariance.py --model s2cnn_seg_b20
"""

from __future__ import annotations

import argparse
from pathlib import Path

import hydra
import torch
from omegaconf import OmegaConf

from sphere_bench.evaluate.equivariance import equivariance_errors
from sphere_bench.harmonic.s2_fft import s2_fft, s2_ifft
from sphere_bench.harmonic.signal_rotation import rotate_s2

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="s2cnn_seg_b20", help="an S2CNN config in conf/model")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--haar", type=int, default=2, help="Haar rotation draws")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = OmegaConf.load(CONF / f"{args.model}.yaml")
    task = str(cfg.get("task", "segmentation"))
    b = int(cfg.bandwidth)
    gen = torch.Generator().manual_seed(args.seed)
    noise = torch.randn(args.batch, 1, 2 * b, 2 * b, generator=gen, dtype=torch.float64)
    x = s2_ifft(s2_fft(noise)).float()  # band-limited to l < B: rotate_s2 rotates it exactly
    models = {}
    for mode in ("exact", "paper"):
        cfg.upsampling = mode
        torch.manual_seed(args.seed)
        models[mode] = hydra.utils.instantiate(cfg)
    models["paper"].load_state_dict(models["exact"].state_dict())
    print(f"{args.model} ({task}), batch {args.batch}, {args.haar} Haar draws, seed {args.seed}")
    print("| upsampling | grid rel. error | Haar rel. error | Haar changed predictions |")
    print("|---|---|---|---|")
    for mode, model in models.items():
        errors = equivariance_errors(
            model, x, task, lambda r: rotate_s2(x, r.to(torch.float32)), n_haar=args.haar,
            generator=torch.Generator().manual_seed(args.seed + 1),
        )  # fmt: skip
        print(f"| {mode} | {errors['grid_rel_error']:.2e} | {errors['haar_rel_error']:.3f} | "
              f"{100 * errors['haar_changed_fraction']:.1f} % |")  # fmt: skip


if __name__ == "__main__":
    main()

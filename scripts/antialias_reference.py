"""The paper code's S2CNN equivariance error on the input and rotation of antialias_error.py.

Runs in two interpreters (the paper's code lives in its own venv, never in .venv; set it up as
the "Benchmarks" section of README.md describes):

    # 1. inputs (ours): MNIST test image 0 at B, band-limited, and its exact spectral rotation
    .venv/bin/python scripts/antialias_reference.py inputs --bandwidth 20 --work /tmp/aa_ref
    # 2. the paper's S2ConvNet_sem_seg (use_skips=False), torch seed 0: its state_dict and its
    #    outputs on both inputs (run from a scratch folder: it caches Wigner tables in ./cache)
    PYTHONPATH=<fork work tree> <ref venv>/bin/python scripts/antialias_reference.py reference \\
        --bandwidth 20 --work /tmp/aa_ref --fork <fork work tree>
    # 3. its error ‖P_B f(R x) − R f(x)‖ / ‖R f(x)‖ (ours), then our model with the same weights:
    .venv/bin/python scripts/antialias_reference.py error --bandwidth 20 --work /tmp/aa_ref
    .venv/bin/python scripts/antialias_error.py --models s2cnn_seg_b20 --factors 1 1.5 2 \\
        --weights /tmp/aa_ref/ref_seed0_b20.pt

Layouts: the paper's 204k segmentation S2CNN at B = 50 (bandlimits 42 35 27 20 27 35 42) and its
B = 20 scaling (16 14 11 8 11 14 16), as ``conf/model/s2cnn_seg_{204k,b20}.yaml``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROTATION = (3.216, 0.449, 0.906)
BANDLIMITS = {20: [16, 14, 11, 8, 11, 14, 16], 50: [42, 35, 27, 20, 27, 35, 42]}
CHANNELS = [11, 12, 13, 14, 13, 12, 11]
BETAS = [0.1238, 0.1474, 0.1768, 0.2292, 0.3095, 0.2292, 0.1768, 0.1474]


def make_inputs(b: int, work: Path) -> None:
    import torch

    from sphere_bench.data.planar_source import load_planar_split
    from sphere_bench.data.spherical_dataset import SplitSpec, generate_split
    from sphere_bench.harmonic.rotations import euler_zyz_to_matrix
    from sphere_bench.harmonic.s2_fft import s2_fft, s2_ifft
    from sphere_bench.harmonic.signal_rotation import rotate_s2

    source = load_planar_split("mnist", "test", os.environ.get("SPHERE_BENCH_DATA", "data"), None)
    spec = SplitSpec("mnist", "segmentation", "test", 1, resolution=b, rotate="none")
    x = generate_split(spec, source, progress=False).inputs.to(torch.float64)[:, None]
    x = s2_ifft(s2_fft(x))
    rotation = euler_zyz_to_matrix(*(torch.tensor(a, dtype=torch.float64) for a in ROTATION))
    out = {"x": x.float(), "xr": rotate_s2(x, rotation).float(), "R": rotation}
    torch.save(out, work / f"inputs_b{b}.pt")


def run_reference(b: int, work: Path, fork: Path) -> None:
    import numpy
    import torch

    numpy.float = float  # noqa: NPY001  (s2cnn grid helpers use np.float, gone in NumPy 1.24)
    sys.path[:0] = [str(fork), str(fork / "examples" / "mnist_sem_seg")]
    from models import S2ConvNet_sem_seg  # the fork's examples/mnist_sem_seg/models.py

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = S2ConvNet_sem_seg(b_in=b, f_in=1, fs=CHANNELS, b_ls=BANDLIMITS[b], b_out=b, f_out=11,
                            kernel_max_beta=BETAS, use_skips=False).eval()  # fmt: skip
    torch.save(net.state_dict(), work / f"ref_seed0_b{b}.pt")
    data = torch.load(work / f"inputs_b{b}.pt")
    with torch.no_grad():
        torch.save({"y": net(data["x"]), "yr": net(data["xr"])}, work / f"ref_out_b{b}.pt")


def error(b: int, work: Path) -> float:
    import torch

    from sphere_bench.harmonic.s2_fft import s2_fft, s2_ifft
    from sphere_bench.harmonic.signal_rotation import rotate_s2

    data = torch.load(work / f"inputs_b{b}.pt")
    out = torch.load(work / f"ref_out_b{b}.pt")
    expected = rotate_s2(out["y"].double(), data["R"])
    got = s2_ifft(s2_fft(out["yr"].double()))
    return float((got - expected).norm() / expected.norm())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("step", choices=["inputs", "reference", "error"])
    parser.add_argument("--bandwidth", type=int, choices=sorted(BANDLIMITS), default=20)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--fork", type=Path, default=None, help="the fork's work tree")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.step == "inputs":
        make_inputs(args.bandwidth, args.work)
    elif args.step == "reference":
        if args.fork is None:
            raise SystemExit("--fork <work tree of Schuh93/sem_seg_s2cnn> is required")
        run_reference(args.bandwidth, args.work, args.fork)
    else:
        value = error(args.bandwidth, args.work)
        print(f"paper code, B = {args.bandwidth}: relative error {value:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Golden numbers of the paper's own spherical-MNIST generator, for ``tests/test_paper_data.py``.

Runs the data functions of the paper's ``examples/mnist_sem_seg/gendata.py`` (fork
``Schuh93/sem_seg_s2cnn``; its projection, tent sampler, min–max rescale, uint8 cast and mask
threshold, unchanged) on fixed MNIST / Fashion-MNIST images and prints, per case, the per-image
sums of the uint8 spheres, the foreground pixel counts of the segmentation masks and CRC-32s of
the raw uint8 arrays. sphere_bench's ``data.grid=paper data.interpolation=paper`` must give the
same numbers; the test file holds a copy of this output.

It runs only where the paper's code exists, in an environment of its own (nothing of it is
copied here, installed into sphere_bench's venv or committed): an exported work tree of the fork
(``--src``) and numpy. ``gendata.py`` imports ``lie_learn.spaces.S2`` (pure numpy: the unpacked
lie_learn 0.0.2 wheel on ``PYTHONPATH`` is enough) and ``torchvision`` (only its ``main()`` uses
it; a stand-in module is inserted when torchvision is missing). Standard library and numpy only:
this file must not import sphere_bench.

    PYTHONPATH=<unpacked lie_learn> <ref venv>/bin/python scripts/paper_data_golden.py \\
        --src <fork tree> --data <folder holding MNIST/raw and FashionMNIST/raw>

Rotated cases feed the paper's ``rotate_grid`` the matrix ``M = Rᵀ`` of a rotation ``R`` built
from an integer quaternion (every entry a correctly rounded quotient of integers, so both sides
build bit-identical matrices): the paper samples its image at ``M x``, sphere_bench's rotation
``R`` shows ``f(R⁻¹ x)``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import struct
import sys
import types
import zlib
from pathlib import Path

import numpy as np

# (name, dataset folder, split prefix, first n images, bandwidth, quaternions or None, chunk)
CASES = [
    ("mnist_train_b30_first8", "MNIST", "train", 8, 30, None, 0),
    ("mnist_train_b30_first2000", "MNIST", "train", 2000, 30, None, 0),
    ("mnist_test_b16_first1000", "MNIST", "t10k", 1000, 16, None, 0),
    ("mnist_test_b50_first500", "MNIST", "t10k", 500, 50, None, 0),
    ("mnist_train_b25_first500", "MNIST", "train", 500, 25, None, 0),
    ("fashion_train_b30_first1000", "FashionMNIST", "train", 1000, 30, None, 0),
    ("fashion_test_b50_first300", "FashionMNIST", "t10k", 300, 50, None, 0),
    (
        "mnist_test_b30_rotated",
        "MNIST",
        "t10k",
        400,
        30,
        [(1, 2, 3, 4), (5, -1, 2, 7), (3, 0, 0, 4), (1, 1, 1, 1)],
        100,
    ),
    ("mnist_train_b50_rotated", "MNIST", "train", 200, 50, [(2, -3, 5, 1), (7, 1, -4, 2)], 100),
]
THRESHOLD = 150


def quaternion_rotation(q: tuple[int, int, int, int]) -> np.ndarray:
    """Rotation of the integer quaternion ``(a, b, c, d)``, float64, entries ``int / |q|²``."""
    a, b, c, d = q
    n = a * a + b * b + c * c + d * d
    entries = [
        [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
        [2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b)],
        [2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d],
    ]
    return np.array([[e / n for e in row] for row in entries], dtype=np.float64)


def read_idx(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    magic, n = struct.unpack(">II", raw[:8])
    if magic == 2051:
        rows, cols = struct.unpack(">II", raw[8:16])
        return np.frombuffer(raw, np.uint8, n * rows * cols, 16).reshape(n, rows, cols)
    return np.frombuffer(raw, np.uint8, n, 8)


def import_gendata(src: Path) -> types.ModuleType:
    folder = src / "examples" / "mnist_sem_seg"
    if not (folder / "gendata.py").is_file():
        raise SystemExit(f"--src {src}: no examples/mnist_sem_seg/gendata.py (the fork's tree?)")
    sys.path.insert(0, str(folder))
    try:
        import torchvision  # noqa: F401
    except ImportError:  # gendata uses torchvision.datasets only in main()
        stub = types.ModuleType("torchvision")
        stub.datasets = types.ModuleType("torchvision.datasets")  # type: ignore[attr-defined]
        sys.modules["torchvision"] = stub
        sys.modules["torchvision.datasets"] = stub.datasets  # type: ignore[attr-defined]
    import gendata

    return gendata


def run_case(gendata: types.ModuleType, data: Path, case: tuple) -> dict:
    name, folder, prefix, n, bandwidth, quaternions, chunk = case
    images = read_idx(data / folder / "raw" / f"{prefix}-images-idx3-ubyte.gz")[:n]
    labels = read_idx(data / folder / "raw" / f"{prefix}-labels-idx1-ubyte.gz")[:n].astype(np.int64)
    grid = gendata.get_projection_grid(b=bandwidth)
    signals = images.astype(np.float64)
    spheres = np.empty((n, 2 * bandwidth, 2 * bandwidth), dtype=np.uint8)
    step = chunk if quaternions else 500
    for c, start in enumerate(range(0, n, step)):
        idx = np.arange(start, min(n, start + step))
        if quaternions:
            rotation = quaternion_rotation(quaternions[c % len(quaternions)])
            sampled = gendata.rotate_grid(rotation.T, grid)
        else:
            sampled = grid
        spheres[idx] = gendata.project_2d_on_sphere(signals[idx], sampled)
    masks = (spheres > THRESHOLD).astype(np.uint8) * (labels[:, None, None] + 1).astype(np.uint8)
    out = {
        "case": name,
        "crc_spheres": zlib.crc32(spheres.tobytes()),
        "crc_masks": zlib.crc32(masks.tobytes()),
        "total_sum": int(spheres.astype(np.int64).sum()),
        "total_foreground": int((masks > 0).sum()),
    }
    if n <= 8:
        out["sums"] = spheres.reshape(n, -1).astype(np.int64).sum(1).tolist()
        out["foreground"] = (masks.reshape(n, -1) > 0).sum(1).tolist()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, required=True, help="exported tree of the fork")
    parser.add_argument("--data", type=Path, required=True, help="holds MNIST/raw etc.")
    args = parser.parse_args()
    gendata = import_gendata(args.src)
    for case in CASES:
        print(json.dumps(run_case(gendata, args.data, case)), flush=True)


if __name__ == "__main__":
    main()

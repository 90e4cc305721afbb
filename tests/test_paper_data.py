"""``data.grid=paper data.interpolation=paper`` is byte-identical to the paper's own generator.

The golden numbers come from running the data functions of ``examples/mnist_sem_seg/gendata.py``
(fork ``Schuh93/sem_seg_s2cnn``) on the same images: ``scripts/paper_data_golden.py`` re-derives
them where the paper's code is available. Per case: CRC-32 of the uint8 spheres and of the uint8
segmentation masks (threshold 150, label ``class + 1``), the total of all sphere values and the
number of foreground pixels; for the first 8 MNIST training images also the per-image numbers.
Rotated cases feed both sides the same integer-quaternion rotations (the paper's grid rotated by
``M = Rᵀ``).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest
import torch

from sphere_bench.data.planar_source import load_planar_split
from sphere_bench.data.projection import minmax_uint8, minmax_uint8_paper, project_planes
from sphere_bench.data.spherical_dataset import SplitSpec, generate_split
from sphere_bench.harmonic.grids import make_grid

# Output of scripts/paper_data_golden.py (paper's gendata.py, numpy 2.4, float64).
GOLDEN = {
    "mnist_train_b30_first8": dict(
        crc_spheres=3094489567, crc_masks=3634483368, total_sum=904472, total_foreground=3025,
        sums=[107756, 78888, 77847, 102688, 127792, 137463, 116715, 155323],
        foreground=[310, 245, 179, 379, 458, 482, 424, 548],
    ),
    "mnist_train_b30_first2000": dict(
        crc_spheres=3870966781, crc_masks=2755627520, total_sum=221863781, total_foreground=726555
    ),
    "mnist_test_b16_first1000": dict(
        crc_spheres=2377370431, crc_masks=900985577, total_sum=30867526, total_foreground=98857
    ),
    "mnist_test_b50_first500": dict(
        crc_spheres=3396194704, crc_masks=1651215218, total_sum=140998993, total_foreground=448375
    ),
    "mnist_train_b25_first500": dict(
        crc_spheres=4291605758, crc_masks=1912997538, total_sum=37472400, total_foreground=121628
    ),
    "fashion_train_b30_first1000": dict(
        crc_spheres=72938786, crc_masks=2228616822, total_sum=183083082, total_foreground=672600
    ),
    "fashion_test_b50_first300": dict(
        crc_spheres=3041409349, crc_masks=244459342, total_sum=154984344, total_foreground=581254
    ),
    "mnist_test_b30_rotated": dict(
        crc_spheres=1452990425, crc_masks=2212016556, total_sum=27528000, total_foreground=86116
    ),
    "mnist_train_b50_rotated": dict(
        crc_spheres=3307573165, crc_masks=2802604412, total_sum=44459378, total_foreground=142073
    ),
}  # fmt: skip

# (dataset, split, first n images, bandwidth), unrotated: through generate_split.
UNROTATED = {
    "mnist_train_b30_first8": ("mnist", "train", 8, 30),
    "mnist_train_b30_first2000": ("mnist", "train", 2000, 30),
    "mnist_test_b16_first1000": ("mnist", "test", 1000, 16),
    "mnist_test_b50_first500": ("mnist", "test", 500, 50),
    "mnist_train_b25_first500": ("mnist", "train", 500, 25),
    "fashion_train_b30_first1000": ("fashion_mnist", "train", 1000, 30),
    "fashion_test_b50_first300": ("fashion_mnist", "test", 300, 50),
}
# (dataset, split, n, bandwidth, integer quaternions, images per rotation).
ROTATED = {
    "mnist_test_b30_rotated": (
        "mnist", "test", 400, 30, [(1, 2, 3, 4), (5, -1, 2, 7), (3, 0, 0, 4), (1, 1, 1, 1)], 100
    ),
    "mnist_train_b50_rotated": ("mnist", "train", 200, 50, [(2, -3, 5, 1), (7, 1, -4, 2)], 100),
}  # fmt: skip


def quaternion_rotation(q: tuple[int, int, int, int]) -> torch.Tensor:
    """Rotation of an integer quaternion; every entry ``int / |q|²`` correctly rounded (float64)."""
    a, b, c, d = q
    n = a * a + b * b + c * c + d * d
    entries = [
        [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
        [2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b)],
        [2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d],
    ]
    return torch.tensor([[e / n for e in row] for row in entries], dtype=torch.float64)


def _numbers(spheres: torch.Tensor, masks: torch.Tensor, per_image: bool) -> dict:
    spheres, masks = spheres.contiguous(), masks.contiguous()
    out = dict(
        crc_spheres=zlib.crc32(spheres.numpy().tobytes()),
        crc_masks=zlib.crc32(masks.numpy().tobytes()),
        total_sum=int(spheres.long().sum()),
        total_foreground=int((masks > 0).sum()),
    )
    if per_image:
        out["sums"] = spheres.reshape(len(spheres), -1).long().sum(1).tolist()
        out["foreground"] = (masks.reshape(len(masks), -1) > 0).sum(1).tolist()
    return out


@pytest.mark.parametrize("case", sorted(UNROTATED))
def test_paper_mode_matches_paper_gendata(case: str, data_root: Path) -> None:
    dataset, split, n, bandwidth = UNROTATED[case]
    source = load_planar_split(dataset, split, data_root, None)
    spec = SplitSpec(
        dataset, "segmentation", split, n, grid="paper", resolution=bandwidth,
        interpolation="paper", intensity="minmax255", threshold=150,
    )  # fmt: skip
    tensors = generate_split(spec, source, progress=False)
    assert tensors.inputs.dtype == torch.uint8 and tensors.inputs.shape[1:] == (2 * bandwidth,) * 2
    got = _numbers(tensors.inputs, tensors.targets, per_image=n <= 8)
    assert got == GOLDEN[case]


@pytest.mark.parametrize("case", sorted(ROTATED))
def test_paper_mode_matches_paper_gendata_rotated(case: str, data_root: Path) -> None:
    dataset, split, n, bandwidth, quaternions, chunk = ROTATED[case]
    source = load_planar_split(dataset, split, data_root, None)
    grid = make_grid("paper", bandwidth)
    spheres = []
    for c, start in enumerate(range(0, n, chunk)):
        planes = source.images[start : start + chunk, None].to(torch.float32)
        rotation = quaternion_rotation(quaternions[c % len(quaternions)])
        rotations = rotation.expand(len(planes), 3, 3)
        projected = project_planes(planes, grid, rotations, interpolation="paper")[:, 0]
        spheres.append(minmax_uint8_paper(projected))
    inputs = torch.cat(spheres).reshape(n, 2 * bandwidth, 2 * bandwidth)
    labels = source.labels[:n].to(torch.uint8)
    masks = (inputs > 150).to(torch.uint8) * (labels + 1)[:, None, None]
    assert _numbers(inputs, masks, per_image=False) == GOLDEN[case]


def test_paper_grid_north_pole_row_reads_the_image_centre(data_root: Path) -> None:
    # The paper grid's beta = 0 row is the north pole, projected onto the image centre: every
    # point of the row carries the same value, the tent read around pixel (14, 14), and an NR
    # segmentation sphere of a digit with ink there has a stray label along that row.
    source = load_planar_split("mnist", "train", data_root, None)
    spec = SplitSpec(
        "mnist", "segmentation", "train", 8, grid="paper", resolution=30, interpolation="paper"
    )
    tensors = generate_split(spec, source, progress=False)
    pole = tensors.inputs[:, 0, :]
    assert torch.all(pole == pole[:, :1])
    centre = source.images[:8, 13:16:2, 13:16:2].double().sum((1, 2))  # tent at r = 14
    assert torch.equal(pole[:, 0] > 0, centre > 0)
    stray = (tensors.targets[:, 0, :] > 0).all(dim=1)
    assert stray.any() and not stray.all()
    # The SOFT grid has no pole row: the first ring sits half a cell off and reads far outside.
    soft = generate_split(
        SplitSpec("mnist", "segmentation", "train", 8, resolution=30, interpolation="paper"),
        source, progress=False,
    )  # fmt: skip
    assert not (soft.targets[:, 0, :] > 0).any()


def test_paper_minmax_rounds_like_the_paper() -> None:
    # ((x - min) / (max - min)) * 255 in float64, truncated, as Python's floats do it; the maximum
    # maps to exactly 255. The reordered (x - min) * (255 / (max - min)) of minmax_uint8 gives
    # 7 * (255 / 7) = 254.99999999999997 -> 254 there.
    values = torch.cat([torch.arange(8.0, dtype=torch.float64)[None], torch.full((1, 8), 2.0)])
    expected = [int(x / 7 * 255) for x in range(8)]
    assert minmax_uint8_paper(values).tolist() == [expected, [0] * 8]
    assert expected[-1] == 255 and minmax_uint8(values)[0, -1] == 254

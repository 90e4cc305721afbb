"""Spherical splits: sources, protocol, masks, seeds, cache and bad input."""

from __future__ import annotations

import gzip
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from sphere_bench.data import spherical_dataset as sd
from sphere_bench.data.canvas import compose_layers
from sphere_bench.data.planar_source import DataRootError, load_planar_split
from sphere_bench.data.spherical_dataset import (
    SplitSpec,
    draw_plan,
    generate_split,
    load_or_generate,
    source_pool,
)


@pytest.fixture(scope="module")
def mnist_test(data_root: Path):
    return load_planar_split("mnist", "test", data_root, None)


def test_planar_source_reads_gz_and_plain_idx_alike(data_root: Path, tmp_path: Path) -> None:
    gz = load_planar_split("mnist", "test", data_root, None)
    assert gz.images.shape == (10_000, 28, 28) and gz.images.dtype == torch.uint8
    assert gz.labels.shape == (10_000,) and set(gz.labels.tolist()) == set(range(10))
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        packed = (data_root / "MNIST" / "raw" / f"{stem}.gz").read_bytes()
        (raw / stem).write_bytes(gzip.decompress(packed))
    plain = load_planar_split("mnist", "test", tmp_path, None)
    assert torch.equal(plain.images, gz.images) and torch.equal(plain.labels, gz.labels)
    fashion = load_planar_split("fashion_mnist", "train", data_root, None)
    assert fashion.images.shape == (60_000, 28, 28)


def test_missing_data_root_gives_clear_error(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(DataRootError) as err:
        load_planar_split("mnist", "train", tmp_path / "nowhere", None)
    text = str(err.value)
    assert str((tmp_path / "nowhere" / "MNIST" / "raw").resolve()) in text
    assert "SPHERE_BENCH_DATA" in text and "internet" in text
    # With a download folder, the downloader's failure is reported too.
    monkeypatch.setattr(
        "sphere_bench.data.planar_source._try_download", lambda name, root: "URLError: offline"
    )
    with pytest.raises(DataRootError, match="URLError: offline"):
        load_planar_split("mnist", "test", tmp_path / "nowhere", tmp_path / "dl")


def test_truncated_source_file_is_reported(data_root: Path, tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    shutil.copy(data_root / "MNIST/raw/t10k-labels-idx1-ubyte.gz", raw)
    blob = gzip.decompress((data_root / "MNIST/raw/t10k-images-idx3-ubyte.gz").read_bytes())
    (raw / "t10k-images-idx3-ubyte").write_bytes(blob[:5000])
    with pytest.raises(ValueError, match="truncated"):
        load_planar_split("mnist", "test", tmp_path, None)


@pytest.mark.parametrize("n_items", [1, 4])
def test_masks_label_sets_and_background(mnist_test, n_items: int) -> None:
    spec = SplitSpec("mnist", "segmentation", "test", 24, resolution=30, rotate="random",
                     n_items=n_items)  # fmt: skip
    data = generate_split(spec, mnist_test, progress=False)
    assert data.inputs.shape == (24, 60, 60) and data.inputs.dtype == torch.uint8
    assert data.targets.shape == (24, 60, 60)
    assert set(data.targets.unique().tolist()) <= set(range(11))
    for i in range(24):
        expected = {0} | {c + 1 for c in data.item_labels[i].tolist()}
        assert set(data.targets[i].unique().tolist()) == expected, i
        assert (data.targets[i] == 0).float().mean() > 0.5
        # Foreground is exactly where the 0..255 input exceeds the threshold.
        assert torch.equal(data.targets[i] > 0, data.inputs[i] > spec.threshold)
    # Item 0 is the protocol's image i; the labels match the source.
    assert torch.equal(data.item_indices[:, 0], torch.arange(24))
    assert torch.equal(data.item_labels, mnist_test.labels[data.item_indices])


def test_classification_targets_and_unit_intensity(mnist_test) -> None:
    spec = SplitSpec("mnist", "classification", "test", 10, resolution=8, intensity="unit")
    data = generate_split(spec, mnist_test, progress=False)
    assert torch.equal(data.targets, mnist_test.labels[:10])
    assert data.inputs.dtype == torch.float16 and data.inputs.min() >= 0 and data.inputs.max() <= 1
    assert data.inputs.float().amax(dim=(1, 2)).min() > 0.5


def test_same_seed_same_tensors_other_seed_other_rotations(mnist_test) -> None:
    spec = SplitSpec("mnist", "segmentation", "test", 40, resolution=10, rotate="random", seed=3)
    a = generate_split(spec, mnist_test, progress=False)
    b = generate_split(spec, mnist_test, batch_size=7, progress=False)  # batching is irrelevant
    for key, value in a.as_dict().items():
        assert torch.equal(value, getattr(b, key)), key
    c = generate_split(replace(spec, seed=4), mnist_test, progress=False)
    assert not torch.allclose(a.rotations, c.rotations)
    assert not torch.equal(a.inputs, c.inputs)
    nr = generate_split(replace(spec, rotate="none"), mnist_test, progress=False)
    assert torch.equal(nr.rotations, torch.eye(3).expand(40, 3, 3))


def test_rotation_chunks_share_rotations(mnist_test) -> None:
    spec = SplitSpec("mnist", "classification", "test", 25, resolution=4, rotate="random",
                     rotation_chunk=10)  # fmt: skip
    _, _, rotations = draw_plan(spec, source_pool(spec)[1])
    assert torch.equal(rotations[0], rotations[9]) and not torch.equal(rotations[9], rotations[10])
    assert len({tuple(r.flatten().tolist()) for r in rotations}) == 3


def test_n_beyond_the_pool_reuses_images_with_fresh_rotations(data_root: Path) -> None:
    train = load_planar_split("mnist", "train", data_root, None)
    spec = SplitSpec("mnist", "classification", "train", 60_500, resolution=4, rotate="random",
                     val_fraction=0.0)  # fmt: skip
    indices, _, rotations = draw_plan(spec, source_pool(spec)[1])
    first = indices[:60_000, 0]
    assert torch.equal(first, torch.arange(60_000))  # the paper: all 60k, then extras
    extra = indices[60_000:, 0]
    assert len(extra) == 500 and extra.max() < 60_000 and len(set(extra.tolist())) > 450
    data = generate_split(spec, train, batch_size=8192, progress=False)
    assert len(data) == 60_500 and torch.equal(data.targets, train.labels[indices[:, 0]])
    # A reused image carries a different rotation, hence a different spherical image.
    j = int(extra[0])
    assert not torch.allclose(rotations[60_000], rotations[j])
    assert not torch.equal(data.inputs[60_000], data.inputs[j])
    # With a validation hold-out, training never sees the held-out images.
    held = SplitSpec("mnist", "classification", "train", 100, resolution=4, val_fraction=0.1)
    val = replace(held, split="val")
    assert source_pool(held)[1].max() < source_pool(val)[1].min() == 54_000


def test_cache_hit_and_truncated_file_rebuilt(data_root: Path, tmp_path: Path, monkeypatch,
                                              caplog) -> None:  # fmt: skip
    spec = SplitSpec("mnist", "segmentation", "test", 16, resolution=8, rotate="random")
    first = load_or_generate(spec, data_root, tmp_path, None, progress=False)
    files = list((tmp_path / "spherical").glob("*.pt"))
    assert len(files) == 1 and files[0].with_name(files[0].name + ".json").is_file()

    calls = []
    real = sd.generate_split
    monkeypatch.setattr(sd, "generate_split", lambda *a, **k: calls.append(1) or real(*a, **k))
    second = load_or_generate(spec, data_root, tmp_path, None, progress=False)
    assert calls == [] and torch.equal(first.inputs, second.inputs)

    blob = files[0].read_bytes()
    files[0].write_bytes(blob[: len(blob) // 2])
    with caplog.at_level(logging.WARNING):
        third = load_or_generate(spec, data_root, tmp_path, None, progress=False)
    assert calls == [1] and "truncated" in caplog.text
    assert torch.equal(first.targets, third.targets)
    # Same size, flipped byte: the checksum catches it.
    blob = bytearray(files[0].read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    files[0].write_bytes(bytes(blob))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_or_generate(spec, data_root, tmp_path, None, progress=False)
    assert calls == [1, 1] and "CRC-32" in caplog.text


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"dataset": "cifar"}, "data.dataset"),
        ({"grid": "icosahedron"}, "data.grid"),
        ({"resolution": 1}, "bandwidth"),
        ({"n": 0}, "data.n_test"),
        ({"n_items": 5}, "data.canvas_tiles"),
        ({"n_items": 2, "canvas_tiles": 1}, "data.n_items=2"),
        ({"threshold": 300}, "data.threshold"),
        ({"threshold": -1}, "data.threshold"),
        ({"rotate": "sometimes"}, "data.rotate_test"),
        ({"interpolation": "cubic"}, "data.interpolation"),
        ({"intensity": "hdr"}, "data.intensity"),
        ({"rotation_chunk": 0}, "data.rotation_chunk"),
        ({"jitter": -2}, "data.jitter"),
    ],
)
def test_bad_input_names_the_key(changes: dict, key: str) -> None:
    base = dict(dataset="mnist", task="segmentation", split="test", n=10, resolution=8)
    if changes.get("n_items") == 5:
        base["canvas_tiles"] = 2
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        SplitSpec(**{**base, **changes})


def test_classification_rejects_several_items() -> None:
    with pytest.raises(ValueError, match="n_items=4"):
        SplitSpec("mnist", "classification", "test", 10, n_items=4)


def test_canvas_tiles_and_overwrites() -> None:
    items = torch.zeros(1, 2, 28, 28, dtype=torch.uint8)
    items[0, 0] = 10
    items[0, 1, 5:10, 5:10] = 200
    layers = compose_layers(items, tiles=2)
    assert layers.shape == (1, 2, 56, 56)
    assert torch.all(layers[0, 0, :28, :28] == 10) and torch.all(layers[0, 0, 28:] == 0)
    assert torch.all(layers[0, 1, 5:10, 33:38] == 200)
    # Overlap: item 1 moved onto item 0's cell overwrites it where it has ink, nowhere else.
    offsets = torch.tensor([[[0, 0], [0, -28]]])
    layers = compose_layers(items, tiles=2, offsets=offsets)
    assert torch.all(layers[0, 0, 5:10, 5:10] == 0) and torch.all(layers[0, 1, 5:10, 5:10] == 200)
    assert layers[0, 0, 0, 0] == 10
    assert torch.equal((layers > 0).sum(1) <= 1, torch.ones(1, 56, 56, dtype=torch.bool))

"""The CNN zoo: exact parameter counts, shapes, bandwidth errors, the circular_lon option."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch
from hydra.errors import InstantiationException
from omegaconf import OmegaConf

from sphere_bench.models import count_parameters
from sphere_bench.models.cnn_zoo import (
    ClassificationCNN,
    SegmentationCNN,
    encoder_sizes,
    min_bandwidth,
)

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"

# name -> (exact parameter count, bandwidth, task)
ZOO = {
    "cnn_seg_218k": (218_144, 50, "segmentation"),
    "cnn_seg_1m": (1_042_013, 50, "segmentation"),
    "cnn_seg_5m5": (5_519_335, 50, "segmentation"),
    "cnn_seg_small": (20_643, 16, "segmentation"),
    "cnn_cls_114k": (115_720, 30, "classification"),
    "cnn_cls_114k_rf49": (115_720, 30, "classification"),  # the 114k CNN, strides moved forward
    "cnn_cls_500k": (506_920, 30, "classification"),
    "cnn_cls_2m5": (2_507_170, 30, "classification"),
    "cnn_cls_small": (9_250, 16, "classification"),
    "cnn_seg_quick_218k": (218_144, 16, "segmentation"),  # quick preset: the 218k CNN at B = 16
    "cnn_cls_quick_115k": (115_720, 16, "classification"),  # quick preset: the 114k CNN at B = 16
    "cnn_seg_quick_180k": (179_411, 16, "segmentation"),  # quick preset: cnn_seg_small × 3 width
}
PAPER_SEG = {  # name -> (features, kernels, strides, params with skips, without)
    "218k": ([13, 15, 22, 31, 141], [5, 3, 9, 7, 3], [1, 1, 1, 1, 2], 218_144, 206_698),
    "1m": ([12, 13, 16, 77, 96, 163], [3, 3, 5, 5, 3, 5], [1, 1, 1, 2, 1, 1], 1_042_013, 992_162),
    "5m5": (
        [12, 15, 16, 85, 141, 191, 1100],
        [3, 5, 3, 7, 5, 3, 3],
        [1, 1, 1, 2, 1, 1, 2],
        5_519_335,
        5_015_735,
    ),
}
# hydra.utils.instantiate wraps the constructor's ValueError, keeping its message
ERRORS = (ValueError, InstantiationException)
CLS_TARGETS = {
    "cnn_cls_114k": 114_000,
    "cnn_cls_114k_rf49": 114_000,
    "cnn_cls_500k": 500_000,
    "cnn_cls_2m5": 2_500_000,
}


def load(name: str, **overrides: object) -> torch.nn.Module:
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    for key, value in overrides.items():
        cfg[key] = value
    return hydra.utils.instantiate(cfg)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_config_instantiates_with_exact_count(name: str) -> None:
    count, bandwidth, task = ZOO[name]
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    assert cfg.bandwidth == bandwidth
    model = hydra.utils.instantiate(cfg)
    assert model.task == task
    assert count_parameters(model) == count
    # circular_lon changes no parameter
    assert count_parameters(load(name, padding="circular_lon")) == count


def test_every_cnn_config_is_listed() -> None:
    assert {p.stem for p in CONF.glob("cnn_*.yaml")} == set(ZOO)


@pytest.mark.parametrize("name", sorted(PAPER_SEG))
def test_paper_counts_with_and_without_skips(name: str) -> None:
    features, kernels, strides, with_skips, without = PAPER_SEG[name]
    net = SegmentationCNN(50, features, kernels, strides, use_skips=True)
    assert count_parameters(net) == with_skips
    net = SegmentationCNN(50, features, kernels, strides, use_skips=False)
    assert count_parameters(net) == without


@pytest.mark.parametrize("name", sorted(CLS_TARGETS))
def test_classification_counts_within_3_percent(name: str) -> None:
    assert abs(ZOO[name][0] / CLS_TARGETS[name] - 1) <= 0.03


def test_rf49_variant_differs_from_114k_only_in_strides() -> None:
    base = OmegaConf.load(CONF / "cnn_cls_114k.yaml")
    variant = OmegaConf.load(CONF / "cnn_cls_114k_rf49.yaml")
    assert {k for k in base if base[k] != variant[k]} == {"strides"}
    # 60 -> 28 -> 13 -> 6 -> 4 -> 2 at B = 30 (receptive field 1 + 4 + 2·2 + 2·4 + 2·8 + 2·8 = 49)
    assert [h for h, _ in encoder_sizes(30, variant.kernel_sizes, variant.strides)] == [
        60, 28, 13, 6, 4, 2,
    ]  # fmt: skip
    assert min_bandwidth(variant.kernel_sizes, variant.strides) == 25


def test_paper_encoder_sizes() -> None:
    assert [h for h, _ in encoder_sizes(50, [5, 3, 9, 7, 3], [1, 1, 1, 1, 2])] == [
        100, 96, 94, 86, 80, 39,
    ]  # fmt: skip
    assert [h for h, _ in encoder_sizes(50, *PAPER_SEG["5m5"][1:3])] == [
        100, 98, 94, 92, 43, 39, 37, 18,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "bandwidth"),
    [("cnn_seg_218k", 50), ("cnn_seg_218k", 16), ("cnn_seg_1m", 20), ("cnn_seg_5m5", 16)],
)
@pytest.mark.parametrize("padding", ["valid", "circular_lon"])
def test_segmentation_output_shape(name: str, bandwidth: int, padding: str) -> None:
    model = load(name, bandwidth=bandwidth, padding=padding)
    with torch.no_grad():
        out = model(torch.randn(2, 1, 2 * bandwidth, 2 * bandwidth))
    assert out.shape == (2, 11, 2 * bandwidth, 2 * bandwidth)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(("name", "bandwidth"), [("cnn_cls_114k", 30), ("cnn_cls_114k", 16)])
@pytest.mark.parametrize("padding", ["valid", "circular_lon"])
def test_classification_output_shape(name: str, bandwidth: int, padding: str) -> None:
    model = load(name, bandwidth=bandwidth, padding=padding)
    with torch.no_grad():
        out = model(torch.randn(3, 1, 2 * bandwidth, 2 * bandwidth))
    assert out.shape == (3, 10)


def test_small_configs_backprop() -> None:
    for name in ("cnn_seg_small", "cnn_cls_small"):
        model = load(name)
        model(torch.randn(2, 1, 32, 32)).sum().backward()
        assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ["cnn_seg_218k", "cnn_seg_1m", "cnn_seg_5m5", "cnn_cls_114k"])
def test_too_small_bandwidth_is_a_clear_error(name: str) -> None:
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    smallest = min_bandwidth(cfg.kernel_sizes, cfg.strides)
    load(name, bandwidth=smallest)  # the smallest bandwidth works ...
    with pytest.raises(ERRORS, match=rf"bandwidth={smallest - 1} is too small.*encoder layer"):
        load(name, bandwidth=smallest - 1)  # ... one less does not
    with pytest.raises(ERRORS, match=rf"bandwidth >= {smallest}"):
        load(name, bandwidth=4)


def test_min_bandwidth_of_paper_nets() -> None:
    assert min_bandwidth([5, 3, 9, 7, 3], [1, 1, 1, 1, 2]) == 12
    assert min_bandwidth(*PAPER_SEG["1m"][1:3]) == 13
    assert min_bandwidth(*PAPER_SEG["5m5"][1:3]) == 16


def test_wrong_input_size_is_a_clear_error() -> None:
    model = load("cnn_seg_small")
    with pytest.raises(ValueError, match=r"bandwidth=16 expects input \[N, 1, 32, 32\]"):
        model(torch.randn(1, 1, 40, 40))


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("padding", "same", r"padding must be one of \['valid', 'circular_lon'\]"),
        ("bandwidth", 0, "bandwidth must be an integer >= 1"),
        ("features", [8, 12], "features, kernel_sizes and strides must have the same length"),
        ("kernel_sizes", [3, 0, 5, 3], "kernel_sizes must be a list of positive integers"),
        ("strides", "2", "strides must be a list of positive integers"),
        ("use_skips", "yes", "use_skips must be true or false"),
        ("num_classes", 1, "num_classes must be an integer >= 2"),
    ],
)
def test_bad_arguments_name_the_key(key: str, value: object, match: str) -> None:
    with pytest.raises(ERRORS, match=match):
        load("cnn_seg_small", **{key: value})
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "cnn_seg_small.yaml"))
    cfg.pop("_target_")
    with pytest.raises(ValueError, match=match):  # the constructor's own error
        SegmentationCNN(**(cfg | {key: value}))


def test_circular_lon_segmentation_rolls_with_longitude() -> None:
    # 5.5M net at B=16: strides multiply to 4 and 32 % 4 == 0, so rolls by 4k commute exactly.
    torch.manual_seed(0)
    model = load("cnn_seg_5m5", bandwidth=16, padding="circular_lon").eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        y = model(x)
        for shift in (4, 12, -8):
            torch.testing.assert_close(
                model(torch.roll(x, shift, dims=-1)), torch.roll(y, shift, dims=-1)
            )


def test_circular_lon_small_and_218k_roll() -> None:
    torch.manual_seed(0)
    for name, bandwidth in (("cnn_seg_small", 16), ("cnn_seg_218k", 20)):
        model = load(name, bandwidth=bandwidth, padding="circular_lon").eval()
        x = torch.randn(1, 1, 2 * bandwidth, 2 * bandwidth)
        with torch.no_grad():
            torch.testing.assert_close(
                model(torch.roll(x, 6, dims=-1)), torch.roll(model(x), 6, dims=-1)
            )


def test_circular_lon_classification_is_roll_invariant() -> None:
    torch.manual_seed(0)
    model = load("cnn_cls_small", padding="circular_lon").eval()
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(torch.roll(x, 8, dims=-1)), model(x))


def test_valid_padding_is_not_roll_equivariant() -> None:
    # Sanity check that the test above is not vacuous: the paper's valid net has no such property.
    torch.manual_seed(0)
    model = load("cnn_seg_small").eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        diff = model(torch.roll(x, 4, dims=-1)) - torch.roll(model(x), 4, dims=-1)
    assert diff.abs().max() > 1e-3


def test_circular_lon_decoder_is_adjoint_of_encoder_width() -> None:
    # With circular_lon the width stays 2B at stride 1 and halves at stride 2; the height follows
    # the paper's valid arithmetic.
    model = SegmentationCNN(16, [4, 6], [3, 3], [1, 2], padding="circular_lon")
    assert model.sizes == [(32, 32), (30, 32), (14, 16)]
    assert ClassificationCNN(16, [4, 6], [3, 3], [1, 2], padding="valid").sizes == [
        (32, 32), (30, 30), (14, 14),
    ]  # fmt: skip

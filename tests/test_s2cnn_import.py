"""Loading reference s2cnn state_dicts (sphere_bench.models.s2cnn_import)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sphere_bench.models.s2cnn_import import (
    ReferenceLayoutError,
    load_reference_checkpoint,
    load_reference_state_dict,
    reference_key_map,
)
from sphere_bench.models.s2cnn_zoo import S2CNNClassifier, S2CNNSegmentation


def _small_segmenter() -> S2CNNSegmentation:
    return S2CNNSegmentation(
        bandwidth=6, channels=[3, 4, 3], bandlimits=[4, 3, 5],
        kernel_max_beta=[0.1238, 0.1474, 0.1768, 0.1474], num_classes=5,
    )  # fmt: skip


def _reference_style_segmentation(gen: torch.Generator) -> dict[str, torch.Tensor]:
    # What S2ConvNet_sem_seg(b_in=6, f_in=1, fs=[3, 4, 3], b_ls=[4, 3, 5], b_out=6, f_out=5,
    # use_skips=False).state_dict() holds: 24-point S2 grid, 192-point SO(3) grids.
    shapes = {
        "input_layer.kernel": (1, 3, 24), "input_layer.bias": (1, 3, 1, 1, 1),
        "hidden_layers.0.kernel": (3, 4, 192), "hidden_layers.0.bias": (1, 4, 1, 1, 1),
        "hidden_layers.1.kernel": (4, 3, 192), "hidden_layers.1.bias": (1, 3, 1, 1, 1),
        "output_layer.kernel": (3, 5, 192), "output_layer.bias": (1, 5, 1, 1),
    }  # fmt: skip
    return {k: torch.rand(s, generator=gen) * 2 - 1 for k, s in shapes.items()}


def test_segmentation_state_dict_maps_one_to_one() -> None:
    gen = torch.Generator().manual_seed(0)
    reference = _reference_style_segmentation(gen)
    model = load_reference_state_dict(_small_segmenter(), reference)
    ours = model.state_dict()
    key_map = reference_key_map(model)
    assert key_map["input_layer.kernel"] == "layers.0.kernel"
    assert key_map["hidden_layers.1.bias"] == "layers.4.bias"
    assert key_map["output_layer.kernel"] == "layers.6.kernel"
    assert sorted(key_map.values()) == sorted(ours)
    for ref_key, our_key in key_map.items():
        assert torch.equal(ours[our_key], reference[ref_key])
    # The loaded weights determine the function: two models loaded alike agree exactly.
    other = load_reference_state_dict(
        _small_segmenter(), {"module." + k: v for k, v in reference.items()}
    )
    x = torch.rand(2, 1, 12, 12, generator=gen)
    assert torch.equal(model(x), other(x))


def test_classifier_state_dict_of_s2convnet_original(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(1)
    # S2ConvNet_original: conv1 S2Convolution(1->20, b 30->10), conv2 SO3Convolution(20->40,
    # b 10->6), out_layer Linear(40, 10): 154,550 parameters.
    shapes = {
        "conv1.kernel": (1, 20, 24), "conv1.bias": (1, 20, 1, 1, 1),
        "conv2.kernel": (20, 40, 192), "conv2.bias": (1, 40, 1, 1, 1),
        "out_layer.weight": (10, 40), "out_layer.bias": (10,),
    }  # fmt: skip
    reference = {k: torch.randn(s, generator=gen) for k, s in shapes.items()}
    assert sum(v.numel() for v in reference.values()) == 154_550
    path = tmp_path / "s2convnet_original.pt"
    torch.save({"epoch": 3, "state_dict": reference}, path)
    model = load_reference_checkpoint(S2CNNClassifier(bandwidth=30), path)
    ours = model.state_dict()
    assert torch.equal(ours["features.0.kernel"], reference["conv1.kernel"])
    assert torch.equal(ours["features.2.bias"], reference["conv2.bias"])
    assert torch.equal(ours["out_layer.weight"], reference["out_layer.weight"])


def test_mismatching_layouts_raise_clear_errors() -> None:
    gen = torch.Generator().manual_seed(2)
    reference = _reference_style_segmentation(gen)
    model = _small_segmenter()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    wrong = dict(reference, **{"hidden_layers.0.kernel": torch.zeros(3, 4, 24)})
    with pytest.raises(
        ReferenceLayoutError, match=r"hidden_layers\.0\.kernel has shape \(3, 4, 24\)"
    ):
        load_reference_state_dict(model, wrong)
    skips = dict(reference, **{"skip_layers.0.conv.kernel": torch.zeros(3, 4, 1)})
    with pytest.raises(ReferenceLayoutError, match="use_skips=True"):
        load_reference_state_dict(model, skips)
    missing = {k: v for k, v in reference.items() if k != "output_layer.bias"}
    with pytest.raises(ReferenceLayoutError, match=r"missing keys \['output_layer.bias'\]"):
        load_reference_state_dict(model, missing)
    for key, value in model.state_dict().items():  # nothing was copied
        assert torch.equal(value, before[key])
    with pytest.raises(ReferenceLayoutError, match="exactly 2 spherical layers"):
        reference_key_map(
            S2CNNClassifier(
                bandwidth=8, channels=[2, 3, 4], bandlimits=[4, 3, 2], kernel_max_beta=[0.125] * 3
            )
        )
    with pytest.raises(ReferenceLayoutError, match="no reference s2cnn layout"):
        reference_key_map(torch.nn.Linear(2, 2))

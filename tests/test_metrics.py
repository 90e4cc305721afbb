"""Dataset-level metrics on hand-made confusion matrices, and accumulation over batches."""

from __future__ import annotations

import math

import pytest
import torch

from sphere_bench.train.metrics import (
    ConfusionMetrics,
    accuracy,
    iou_per_class,
    mean_iou,
    metrics_from_confmat,
    pixel_accuracy,
)

# CM[target, pred], 4 classes; class 3 is absent from target and prediction.
CM = torch.tensor(
    [
        [50, 2, 3, 0],  # target 0 (background)
        [4, 10, 1, 0],  # target 1
        [1, 0, 5, 0],  # target 2
        [0, 0, 0, 0],  # target 3: absent
    ]
)
# by hand: IoU_c = CM[c,c] / (row_c + col_c - CM[c,c])
#   c=0: row 55, col 55 -> 50 / (55 + 55 - 50) = 50/60
#   c=1: row 15, col 12 -> 10 / (15 + 12 - 10) = 10/17
#   c=2: row 6,  col 9  -> 5 / (6 + 9 - 5)     = 5/10
#   c=3: 0/0 -> NaN (excluded from means)
IOU = [50 / 60, 10 / 17, 5 / 10]


def test_iou_per_class_by_hand() -> None:
    iou = iou_per_class(CM)
    assert iou[:3].tolist() == pytest.approx(IOU)
    assert math.isnan(iou[3])
    # transposing (the paper's CM[pred, true]) changes nothing
    assert iou_per_class(CM.T)[:3].tolist() == pytest.approx(IOU)


def test_mean_iou_excludes_absent_classes() -> None:
    assert mean_iou(CM) == pytest.approx((10 / 17 + 5 / 10) / 2)
    assert mean_iou(CM, ignore_background=False) == pytest.approx(sum(IOU) / 3)


def test_predicted_but_absent_class_counts_as_zero() -> None:
    cm = torch.tensor([[8, 0, 2], [0, 5, 0], [0, 0, 0]])  # class 2 predicted twice, never true
    iou = iou_per_class(cm)
    assert iou.tolist() == pytest.approx([8 / 10, 1.0, 0.0])
    assert mean_iou(cm) == pytest.approx(0.5)
    # present but never predicted: also 0
    assert iou_per_class(cm.T)[2] == 0.0


def test_all_absent_gives_nan() -> None:
    cm = torch.tensor([[7, 0, 0], [0, 0, 0], [0, 0, 0]])
    assert math.isnan(mean_iou(cm))
    assert mean_iou(cm, ignore_background=False) == pytest.approx(1.0)
    assert math.isnan(accuracy(torch.zeros(3, 3)))


def test_accuracy_and_pixel_accuracy_by_hand() -> None:
    assert accuracy(CM) == pytest.approx(65 / 76)
    assert pixel_accuracy(CM) == pytest.approx(65 / 76)


def test_metrics_from_confmat_keys() -> None:
    seg = metrics_from_confmat(CM, "segmentation")
    assert seg["miou"] == pytest.approx((10 / 17 + 5 / 10) / 2)
    assert seg["miou_all"] == pytest.approx(sum(IOU) / 3)
    assert seg["pixel_acc"] == pytest.approx(65 / 76)
    assert seg["iou_1"] == pytest.approx(10 / 17)
    assert math.isnan(seg["iou_3"])
    assert metrics_from_confmat(CM, "classification") == {"acc": pytest.approx(65 / 76)}
    with pytest.raises(ValueError, match="task must be one of"):
        metrics_from_confmat(CM, "detection")
    with pytest.raises(ValueError, match="square"):
        iou_per_class(torch.zeros(2, 3))


def test_metric_builds_the_confmat_from_labels() -> None:
    target = torch.tensor([[[0, 0], [1, 2]]])  # [N=1, H=2, W=2]
    preds = torch.tensor([[[0, 1], [1, 1]]])
    metric = ConfusionMetrics(4, "segmentation")
    metric.update(preds, target)
    expected = torch.zeros(4, 4, dtype=torch.long)
    expected[0, 0] = expected[0, 1] = expected[1, 1] = expected[2, 1] = 1
    assert torch.equal(metric.confmat, expected)
    out = metric.compute()
    # IoU_1 = 1 / (1 + 3 - 1); IoU_2 = 0 / (1 + 0 - 0); IoU_3 absent
    assert out["iou_1"] == pytest.approx(1 / 3)
    assert out["iou_2"] == 0.0
    assert out["miou"] == pytest.approx((1 / 3 + 0) / 2)
    assert out["pixel_acc"] == pytest.approx(0.5)


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_accumulation_over_batches_equals_one_shot(task: str) -> None:
    torch.manual_seed(0)
    n, c = 37, 11
    shape = (n, c) if task == "classification" else (n, c, 6, 6)
    logits = torch.randn(shape)
    target = torch.randint(0, c, (n,) if task == "classification" else (n, 6, 6))
    target[target == 7] = 3  # make class 7 absent from the targets

    one_shot = ConfusionMetrics(c, task)
    one_shot.update(logits, target)
    batched = ConfusionMetrics(c, task)
    for chunk in (slice(0, 5), slice(5, 6), slice(6, 30), slice(30, n)):  # unequal batches
        batched.update(logits[chunk], target[chunk])
    assert torch.equal(one_shot.confmat, batched.confmat)
    a, b = one_shot.compute(), batched.compute()
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], nan_ok=True)

    # dataset-level is not the mean of per-batch values (unequal batches)
    per_batch = []
    for chunk in (slice(0, 5), slice(5, 30), slice(30, n)):
        m = ConfusionMetrics(c, task)
        m.update(logits[chunk], target[chunk])
        per_batch.append(m.compute()["acc" if task == "classification" else "miou"])
    key = "acc" if task == "classification" else "miou"
    assert a[key] != pytest.approx(sum(per_batch) / len(per_batch))

    batched.reset()
    assert batched.confmat.sum() == 0


def test_bad_task() -> None:
    with pytest.raises(ValueError, match="task must be one of"):
        ConfusionMetrics(3, "regression")

"""SphericalLitModule: fast_dev_run fit + test on tiny synthetic tensors, for both tasks."""

from __future__ import annotations

import functools
import math
import warnings

import pytest
import torch
from omegaconf import OmegaConf
from pytorch_lightning import Trainer
from torch.utils.data import DataLoader, TensorDataset

from sphere_bench.models.cnn_zoo import ClassificationCNN, SegmentationCNN
from sphere_bench.train.lit_module import SphericalLitModule
from sphere_bench.train.metrics import metrics_from_confmat

B = 8  # 16×16 inputs


def seg_net() -> SegmentationCNN:
    return SegmentationCNN(B, [4, 6, 8], [3, 3, 3], [1, 2, 1], use_skips=True)


def cls_net() -> ClassificationCNN:
    return ClassificationCNN(B, [4, 8], [3, 3], [2, 1])


def loader(task: str, n: int = 8, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 2 * B, 2 * B, generator=g)
    if task == "classification":
        y = torch.randint(0, 10, (n,), generator=g)
    else:
        y = torch.randint(0, 11, (n, 2 * B, 2 * B), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=4)


def trainer(fast_dev_run: bool = True) -> Trainer:
    return Trainer(
        fast_dev_run=fast_dev_run,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def fit_and_test(
    module: SphericalLitModule, task: str, n_test: int
) -> tuple[dict[str, float], dict[str, float]]:
    """``fast_dev_run`` fit and test; the metrics Lightning saw after fit and after test."""
    t = trainer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few-workers / small-dataset warnings
        t.fit(module, loader(task), loader(task, seed=1))
        fitted = {k: float(v) for k, v in t.callback_metrics.items()}
        t.test(module, [loader(task, seed=2 + i) for i in range(n_test)], verbose=False)
    return fitted, {k: float(v) for k, v in t.callback_metrics.items()}


def test_segmentation_fit_and_test_two_sets() -> None:
    torch.manual_seed(0)
    module = SphericalLitModule(seg_net(), "segmentation", 11, test_set_names=["nr", "r"])
    assert module.monitor == "val/miou"
    fitted, logged = fit_and_test(module, "segmentation", 2)
    assert {"train/loss", "train/miou", "val/loss", "val/miou", "val/miou_best"} <= set(fitted)
    assert set(module.test_results) == {"nr", "r"}
    for name in ("nr", "r"):
        res = module.test_results[name]
        assert {"miou", "miou_all", "pixel_acc", "loss", "iou_0", "iou_10"} <= set(res)
        assert 0.0 <= res["miou"] <= 1.0
        assert math.isfinite(res["loss"])
        assert logged[f"test_{name}/miou"] == pytest.approx(res["miou"])
        assert logged[f"test_{name}/loss"] == pytest.approx(res["loss"], rel=1e-5)
    assert module.test_results["nr"] != module.test_results["r"]  # different data per loader


def test_classification_fit_and_test() -> None:
    torch.manual_seed(0)
    module = SphericalLitModule(cls_net(), "classification", 10)
    fitted, logged = fit_and_test(module, "classification", 1)
    assert module.monitor == "val/acc"
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best"} <= set(fitted)
    assert set(module.test_results) == {"test"}
    assert logged["test/acc"] == pytest.approx(module.test_results["test"]["acc"])


def test_test_metrics_equal_one_shot_confmat() -> None:
    # What the module reports for a set equals the metric of one confusion matrix over the set.
    torch.manual_seed(0)
    net = seg_net().eval()
    module = SphericalLitModule(net, "segmentation", 11, test_set_names=["r"])
    dl = loader("segmentation", n=10)  # batches of 4, 4, 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer(fast_dev_run=False).test(module, dl, verbose=False)  # every batch
    x, y = dl.dataset.tensors
    with torch.no_grad():
        logits = net(x)
    cm = torch.zeros(11, 11, dtype=torch.long)
    pred = logits.argmax(1)
    cm.index_put_((y.flatten(), pred.flatten()), torch.ones(y.numel(), dtype=torch.long), True)
    expected = metrics_from_confmat(cm, "segmentation")
    got = module.test_results["r"]
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, nan_ok=True)
    ce = torch.nn.functional.cross_entropy(logits, y)
    assert got["loss"] == pytest.approx(float(ce), rel=1e-5)


def test_optimizer_partial_and_default() -> None:
    module = SphericalLitModule(cls_net(), "classification", 10)
    opt = module.configure_optimizers()
    assert isinstance(opt, torch.optim.Adam)
    assert opt.defaults["lr"] == 1e-3 and opt.defaults["weight_decay"] == 0.0
    partial = functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9)
    opt = SphericalLitModule(cls_net(), "classification", 10, optimizer=partial)
    opt = opt.configure_optimizers()
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["lr"] == 0.1
    sched = functools.partial(torch.optim.lr_scheduler.ReduceLROnPlateau, mode="max")
    out = SphericalLitModule(
        cls_net(), "classification", 10, scheduler=sched
    ).configure_optimizers()
    assert out["lr_scheduler"]["monitor"] == "val/acc"


def test_class_weights_change_the_loss() -> None:
    weights = [0.1] + [1.0] * 10
    module = SphericalLitModule(seg_net(), "segmentation", 11, class_weights=weights)
    batch = next(iter(loader("segmentation")))
    loss_w = module._shared_step(batch)[0]
    module_u = SphericalLitModule(seg_net(), "segmentation", 11)
    module_u.load_state_dict(module.state_dict())
    assert not torch.isclose(loss_w, module_u._shared_step(batch)[0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"task": "detection"}, "task must be one of"),
        ({"task": "classification", "num_classes": 10}, "is a segmentation model"),
        ({"num_classes": 10}, "outputs 11"),
        ({"class_weights": [1.0, 2.0]}, "class_weights must have num_classes=11"),
        ({"optimizer": "adam"}, "optimizer must be a callable"),
        ({"test_set_names": ["r", "r"]}, "distinct"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    args = {"task": "segmentation", "num_classes": 11} | kwargs
    with pytest.raises(ValueError, match=match):
        SphericalLitModule(seg_net(), **args)


def test_wrong_target_shape_is_a_clear_error() -> None:
    module = SphericalLitModule(seg_net(), "segmentation", 11)
    x = torch.randn(2, 1, 2 * B, 2 * B)
    with pytest.raises(ValueError, match="expected logits"):
        module._shared_step((x, torch.zeros(2, dtype=torch.long)))


def test_unnamed_second_test_loader_is_an_error() -> None:
    module = SphericalLitModule(cls_net(), "classification", 10, test_set_names=["nr"])
    with pytest.raises(ValueError, match="has no name"):
        module._test_name(1)


def test_checkpoint_loads_with_weights_only(tmp_path) -> None:
    # Hydra hands over ListConfig arguments; the checkpoint must still hold plain values only.
    names = OmegaConf.create(["nr", "r"])
    weights = OmegaConf.create([1.0] * 11)
    module = SphericalLitModule(
        seg_net(), "segmentation", 11, class_weights=weights, test_set_names=names
    )
    t = trainer(fast_dev_run=False)
    t.strategy.connect(module)
    t.save_checkpoint(tmp_path / "m.ckpt")
    ckpt = torch.load(tmp_path / "m.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["test_set_names"] == ["nr", "r"]
    fresh = SphericalLitModule(seg_net(), "segmentation", 11, test_set_names=["nr", "r"])
    fresh.load_state_dict(ckpt["state_dict"])

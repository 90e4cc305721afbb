"""SphericalDataModule built from conf/data: batches, online augmentation, config errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from sphere_bench.data.datamodule import SphericalDataModule

DATA_CONFIGS = ["mnist_cls", "fashion_cls", "mnist_seg", "mnist_seg4", "fashion_seg"]


def _compose(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        return compose("prepare_data", overrides=[f"data={name}", *overrides]).data


@pytest.mark.parametrize("name", DATA_CONFIGS)
def test_every_data_config_instantiates_and_batches(name: str, data_root: Path,
                                                    tmp_path: Path) -> None:  # fmt: skip
    cfg = _compose(name, [f"data.root={data_root}", f"data.cache_dir={tmp_path}",
                          "data.bandwidth=8", "data.n_train=40", "data.n_val=8", "data.n_test=12",
                          "data.batch_size=16", "data.progress=false"])  # fmt: skip
    dm = instantiate(cfg)
    assert isinstance(dm, SphericalDataModule)
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    x, y = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert x.shape == (16, 1, 16, 16) and x.dtype == torch.float32 and x.max() == 255
    if dm.task == "classification":
        assert dm.num_classes == 10 and y.shape == (16,)
    else:
        assert dm.num_classes == 11 and y.shape == (16, 16, 16) and y.dtype == torch.long
    assert dm.test_set_names == ["nr", "r"]
    assert [len(loader.dataset) for loader in dm.test_dataloader()] == [12, 12]
    assert len(dm.val_dataloader().dataset) == 8
    assert len(dm.class_names) == dm.num_classes


def test_online_augmentation_new_rotations_each_epoch(data_root: Path) -> None:
    dm = SphericalDataModule("mnist", "segmentation", bandwidth=8, n_train=20, n_val=0,
                             rotate_train="random", augmentation="online", batch_size=20,
                             root=data_root, cache_dir=None, progress=False)  # fmt: skip
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    order = batch["index"]
    x0, y0 = dm.on_after_batch_transfer(batch, 0)

    class FakeTrainer:
        current_epoch = 0

    dm.trainer = FakeTrainer()  # type: ignore[assignment]
    again, _ = dm.on_after_batch_transfer(batch, 0)
    assert torch.equal(x0, again)  # epoch 0 is reproducible
    FakeTrainer.current_epoch = 1
    x1, y1 = dm.on_after_batch_transfer(batch, 0)
    assert not torch.equal(x0, x1)
    # Same digits, new rotations: the label sets per sample stay the same.
    labels = dm.train_set.source.labels[dm.train_set.indices[order, 0]]
    for i in range(20):
        assert set(y1[i].unique().tolist()) == {0, int(labels[i]) + 1}


def test_healpix_datamodule(data_root: Path) -> None:
    dm = SphericalDataModule("mnist", "segmentation", grid="healpix", nside=8, n_train=8, n_val=0,
                             n_test=8, root=data_root, cache_dir=None, batch_size=8,
                             progress=False)  # fmt: skip
    dm.setup("test")
    x, y = dm.on_after_batch_transfer(next(iter(dm.test_dataloader()[1])), 0)
    assert x.shape == (8, 1, 768) and y.shape == (8, 768)
    assert dm.bandwidth is None and dm.input_shape == (1, 768)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"augmentation": "online"}, "rotate_train=random"),
        ({"augmentation": "sometimes"}, "data.augmentation"),
        ({"rotate_test": ["none", "upside_down"]}, "data.rotate_test"),
        ({"rotate_test": []}, "data.rotate_test"),
        ({"batch_size": 0}, "data.batch_size"),
        ({"n_val": -1}, "data.n_val"),
        ({"bandwidth": 1}, "bandwidth"),
        ({"n_train": 0}, "data.n_train"),
        ({"dataset": "cifar10"}, "data.dataset"),
    ],
)
def test_datamodule_rejects_bad_config_before_work(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SphericalDataModule(**{"cache_dir": None, **kwargs})


def test_training_order_depends_only_on_seed_and_epoch(data_root: Path) -> None:
    def order(epoch: int, seed: int = 0) -> list[int]:
        dm = SphericalDataModule("mnist", "classification", bandwidth=4, n_train=50, n_val=0,
                                 root=data_root, cache_dir=None, batch_size=50, seed=seed,
                                 progress=False)  # fmt: skip
        loader = dm.train_dataloader()  # a fresh loader, as after resuming from a checkpoint
        loader.sampler.set_epoch(epoch)
        return next(iter(loader))[1].tolist()

    assert order(3) == order(3)
    assert order(3) != order(4) and order(3) != order(3, seed=1)
    assert sorted(order(0)) == sorted(order(1))

"""LightningDataModule for spherical MNIST / Fashion-MNIST (built from ``conf/data/*.yaml``).

Batches reach the model as ``(x, y)``:

* ``x``: float32 ``[batch, 1, 2B, 2B]`` on the SOFT (or paper) grid ``[beta, alpha]``,
  ``[batch, 1, 12·nside²]`` on HEALPix (RING or NESTED), or ``[batch, 1, nlat, nlon]`` on a
  torch-harmonics grid (equiangular, legendre-gauss; :mod:`sphere_bench.harmonic.grids`); values
  0–255 (``intensity=minmax255``) or 0–1 (``unit``).
* ``y``: int64 ``[batch]`` classes 0–9, or ``[batch, *grid]`` masks (0 = background, 1–10 = class
  + 1) for segmentation.

Datasets are stored as uint8 and converted on the device (``on_after_batch_transfer``). With
``augmentation="online"`` the training set is re-rotated every epoch: samples carry their planar
canvas and the projection runs per batch on the device (fresh Haar rotations drawn per epoch from
``(seed, epoch)``, so runs stay reproducible). Validation and test sets are always fixed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from sphere_bench.data.canvas import compose_layers
from sphere_bench.data.planar_source import CLASS_NAMES, PlanarSplit, load_planar_split
from sphere_bench.data.spherical_dataset import (
    NUM_SEG_CLASSES,
    ROTATE_MODES,
    SphericalTensors,
    SplitSpec,
    holdout_size,
    item_plan,
    load_or_generate,
    render,
    split_generator,
)
from sphere_bench.harmonic.grids import grid_resolution
from sphere_bench.harmonic.rotations import haar_rotations
from sphere_bench.schema import CLASSIFICATION, TEST_SET_OF_ROTATION

log = logging.getLogger(__name__)

AUGMENTATIONS = ("offline", "online")
SET_SUFFIX = TEST_SET_OF_ROTATION


class SphericalTensorDataset(Dataset):
    """Map-style dataset over a generated split: items ``(input, target)`` as stored (uint8)."""

    def __init__(self, tensors: SphericalTensors) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tensors.inputs[index], self.tensors.targets[index]


class OnlineCanvasDataset(Dataset):
    """Training samples as planar canvases, projected per batch with fresh rotations.

    Items are dicts ``{"layers": uint8 [k, H, W], "labels": int64 [k], "index": int}``.
    """

    def __init__(self, spec: SplitSpec, source: PlanarSplit) -> None:
        self.spec = spec
        self.source = source
        self.indices, self.offsets = item_plan(spec)

    def __len__(self) -> int:
        return self.spec.n

    def __getitem__(self, index: int) -> dict[str, Any]:
        items = self.source.images[self.indices[index]].unsqueeze(0)
        offsets = self.offsets[index : index + 1] if self.spec.jitter > 0 else None
        layers = compose_layers(items, self.spec.tiles, offsets)[0]
        return {"layers": layers, "labels": self.source.labels[self.indices[index]], "index": index}


class EpochShuffleSampler(Sampler[int]):
    """A random order of ``range(n)`` that depends only on ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` before every epoch, so a job resumed from a checkpoint sees
    the same order in epoch ``e`` as an uninterrupted one (a plain shuffling DataLoader would
    restart its generator).
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        gen = split_generator(self.seed, "loader", f"epoch-{self.epoch}")
        return iter(torch.randperm(self.n, generator=gen).tolist())


def _as_tuple(value: str | Sequence[str] | None, key: str) -> tuple[str, ...]:
    values = (value,) if isinstance(value, str) else tuple(value or ())
    for v in values:
        if v not in ROTATE_MODES:
            raise ValueError(f"unknown {key} {v!r}; allowed values: {', '.join(ROTATE_MODES)}")
    return values


class SphericalDataModule(pl.LightningDataModule):
    """Spherical images for classification or segmentation.

    Args:
        dataset: ``mnist`` or ``fashion_mnist``.
        task: ``classification`` or ``segmentation``.
        grid: ``soft`` (the S2CNN grid), ``paper`` (the paper's half-pixel-off grid),
            ``healpix`` (RING), ``healpix_nested`` (the HEALPix graph CNNs' order), or a
            torch-harmonics grid, ``equiangular`` or ``legendre-gauss`` (the DISCO CNNs').
        bandwidth: B of the soft/paper grid (signals ``2B × 2B``).
        nside: HEALPix resolution (used when ``grid=healpix`` or ``healpix_nested``).
        nlat: colatitudes of a torch-harmonics grid (``nlon`` follows from it).
        n_train: number of training samples N (beyond the pool, images are reused with fresh
            rotations).
        n_val: validation samples drawn from the held-out pool (``None``: the whole pool, 0: no
            validation).
        n_test: test samples (the first ``n_test`` official test images).
        rotate_train: ``none`` (NR) or ``random`` (R).
        rotate_val: like ``rotate_train``; ``None`` means the same as ``rotate_train``.
        rotate_test: one mode or a list; one test set per entry, named ``nr`` / ``r``.
        rotation_chunk: samples sharing one rotation (1; the paper's code used 500).
        augmentation: ``offline`` (a fixed rotated set) or ``online`` (new rotations every epoch;
            needs ``rotate_train=random``).
        interpolation, intensity, threshold, n_items, canvas_tiles, jitter, val_fraction: see
            :class:`sphere_bench.data.spherical_dataset.SplitSpec`.
        seed: seeds rotations, reused images and the training order.
        batch_size, num_workers, pin_memory: DataLoader settings.
        root: planar data root (``None``: ``$SPHERE_BENCH_DATA`` or ``./data``); read only.
        cache_dir: where generated splits are cached (``None``: no cache).
        download_root: writable folder for torchvision downloads when ``root`` lacks the files.
        progress: show progress bars while generating.
    """

    def __init__(
        self,
        dataset: str = "mnist",
        task: str = "segmentation",
        grid: str = "soft",
        bandwidth: int = 30,
        nside: int = 16,
        nlat: int = 24,
        n_train: int = 60_000,
        n_val: int | None = None,
        n_test: int = 10_000,
        rotate_train: str = "none",
        rotate_val: str | None = None,
        rotate_test: str | Sequence[str] = ("none", "random"),
        rotation_chunk: int = 1,
        augmentation: str = "offline",
        interpolation: str = "bilinear",
        intensity: str = "minmax255",
        threshold: float = 150,
        n_items: int = 1,
        canvas_tiles: int | None = None,
        jitter: int = 0,
        val_fraction: float = 0.1,
        seed: int = 0,
        batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool = False,
        root: str | Path | None = None,
        cache_dir: str | Path | None = "data/cache",
        download_root: str | Path | None = "data/downloads",
        progress: bool = True,
    ) -> None:
        super().__init__()
        if augmentation not in AUGMENTATIONS:
            raise ValueError(
                f"unknown data.augmentation {augmentation!r}; allowed: {', '.join(AUGMENTATIONS)}"
            )
        if augmentation == "online" and rotate_train != "random":
            raise ValueError(
                "data.augmentation=online re-rotates the training set every epoch and needs "
                f"data.rotate_train=random (got {rotate_train!r})"
            )
        for key, value in (("batch_size", batch_size), ("n_test", n_test)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"data.{key} must be a positive integer, got {value!r}")
        rotate_tests = _as_tuple(rotate_test, "data.rotate_test")
        if not rotate_tests:
            raise ValueError("data.rotate_test needs at least one of: none, random")
        if n_val is None:
            n_val = holdout_size(val_fraction)
        if isinstance(n_val, bool) or not isinstance(n_val, int) or n_val < 0:
            raise ValueError(f"data.n_val must be an integer >= 0 or null, got {n_val!r}")
        common = dict(
            dataset=dataset, task=task, grid=grid,
            resolution=grid_resolution(grid, bandwidth, nside, nlat),
            rotation_chunk=rotation_chunk, seed=seed, interpolation=interpolation,
            intensity=intensity, threshold=threshold, n_items=n_items,
            canvas_tiles=canvas_tiles, jitter=jitter, val_fraction=val_fraction,
        )  # fmt: skip
        # Building the specs validates every key before any heavy work.
        self.train_spec = SplitSpec(split="train", n=n_train, rotate=rotate_train, **common)
        self.val_spec = (
            SplitSpec(split="val", n=n_val, rotate=rotate_val or rotate_train, **common)
            if n_val > 0
            else None
        )
        self.test_specs = {
            SET_SUFFIX[mode]: SplitSpec(split="test", n=n_test, rotate=mode, **common)
            for mode in rotate_tests
        }
        self.augmentation = augmentation
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.root, self.cache_dir, self.download_root = root, cache_dir, download_root
        self.progress = progress
        self.grid = self.train_spec.make_grid()
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_sets: dict[str, Dataset] = {}
        self._epoch_rotations: tuple[int, torch.Tensor] | None = None

    # ----------------------------------------------------------------- description
    @property
    def task(self) -> str:
        return self.train_spec.task

    @property
    def num_classes(self) -> int:
        """10 for classification, 11 (background + 10) for segmentation."""
        return 10 if self.task == CLASSIFICATION else NUM_SEG_CLASSES

    @property
    def class_names(self) -> tuple[str, ...]:
        names = CLASS_NAMES[self.train_spec.dataset]
        return names if self.task == CLASSIFICATION else ("background", *names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one model input: ``(1, 2B, 2B)`` or ``(1, npix)``."""
        return (1, *self.grid.shape)

    @property
    def bandwidth(self) -> int | None:
        """B of a soft/paper grid; ``None`` on the other grids (see :attr:`grid`)."""
        return self.grid.resolution if self.grid.name in ("soft", "paper") else None

    @property
    def test_set_names(self) -> list[str]:
        return list(self.test_specs)

    # ----------------------------------------------------------------- data
    def _load(self, spec: SplitSpec) -> SphericalTensors:
        return load_or_generate(
            spec, self.root, self.cache_dir, self.download_root, progress=self.progress
        )

    def prepare_data(self) -> None:
        """Generate and cache every split once (single process)."""
        if self.cache_dir is None:
            return
        for spec in self._specs(None):
            if not (spec.split == "train" and self.augmentation == "online"):
                self._load(spec)

    def _specs(self, stage: str | None) -> list[SplitSpec]:
        specs: list[SplitSpec] = []
        if stage in (None, "fit"):
            specs.append(self.train_spec)
        if stage in (None, "fit", "validate") and self.val_spec is not None:
            specs.append(self.val_spec)
        if stage in (None, "test", "predict"):
            specs.extend(self.test_specs.values())
        return specs

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            if self.augmentation == "online":
                source = load_planar_split(
                    self.train_spec.dataset, "train", self.root, self.download_root
                )
                self.train_set = OnlineCanvasDataset(self.train_spec, source)
            else:
                self.train_set = SphericalTensorDataset(self._load(self.train_spec))
        if stage in (None, "fit", "validate") and self.val_spec and self.val_set is None:
            self.val_set = SphericalTensorDataset(self._load(self.val_spec))
        if stage in (None, "test", "predict") and not self.test_sets:
            self.test_sets = {
                name: SphericalTensorDataset(self._load(spec))
                for name, spec in self.test_specs.items()
            }

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        sampler = EpochShuffleSampler(len(dataset), self.train_spec.seed) if shuffle else None
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.setup("fit")
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_spec is None:
            return []
        if self.val_set is None:
            self.setup("validate")
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> list[DataLoader]:
        if not self.test_sets:
            self.setup("test")
        return [self._loader(ds, shuffle=False) for ds in self.test_sets.values()]

    # ----------------------------------------------------------------- device-side conversion
    def _online_rotations(self, device: torch.device) -> torch.Tensor:
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        if self._epoch_rotations is None or self._epoch_rotations[0] != epoch:
            gen = split_generator(self.train_spec.seed, "train", f"online-epoch-{epoch}")
            self._epoch_rotations = (epoch, haar_rotations(self.train_spec.n, generator=gen))
        return self._epoch_rotations[1].to(device=device, dtype=torch.float32)

    def render_online_batch(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Project a batch of canvases with this epoch's rotations (on the batch's device)."""
        layers = batch["layers"]
        rotations = self._online_rotations(layers.device)[batch["index"]]
        inputs, masks = render(
            layers.to(torch.float32), batch["labels"], self.grid, rotations, self.train_spec
        )
        shape = (layers.shape[0], *self.grid.shape)
        targets = batch["labels"][:, 0] if masks is None else masks.reshape(shape)
        return inputs.reshape(shape), targets

    def on_after_batch_transfer(
        self, batch: Any, dataloader_idx: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8/float16 storage → float32 inputs ``[b, 1, *grid]`` and int64 targets."""
        if isinstance(batch, dict):
            batch = self.render_online_batch(batch)
        x, y = batch
        return x.to(torch.float32).unsqueeze(1), y.to(torch.long)

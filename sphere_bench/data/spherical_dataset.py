"""Spherical MNIST / Fashion-MNIST splits: which images, which rotations, what labels.

A split is fully described by a :class:`SplitSpec`; :func:`generate_split` turns it into tensors
(deterministically: the same spec gives bit-identical tensors) and :func:`load_or_generate` adds
the on-disk cache (:mod:`sphere_bench.io`).

Protocol (docs/paper_protocol.md §1.5, §2):

* **Pools.** ``test`` draws from the 10,000 official test images. The official 60,000 training
  images are split into a training pool (the first ``60000 − n_holdout``) and a validation pool
  (the last ``n_holdout = round(val_fraction · 60000)``), so validation images never appear in
  training. With ``val_fraction = 0`` the training pool is all 60,000, exactly the paper's.
* **Size N.** The first ``min(N, pool)`` images of the pool, then ``N − pool`` extra images drawn
  uniformly *with replacement* from the pool. Each sample gets its own rotation, so the reused
  images are fresh augmentations (the paper's protocol for N > 60k).
* **Rotations.** ``rotate="none"``: unrotated (NR); ``"random"``: Haar-uniform (R), one rotation
  per ``rotation_chunk`` consecutive samples (1 by default; 500 reproduces the paper's quirk).
* **Items.** Item 0 of sample ``i`` is the protocol's image ``i``; items ``1 … n_items−1`` are
  drawn uniformly from the same pool (:mod:`sphere_bench.data.canvas` tiles them).
* **Inputs.** ``intensity="minmax255"``: the projection rescaled per sphere to [0, 255] and cast
  to uint8 (the paper's inputs, fed to the models as raw 0–255 floats); ``"unit"``: the
  interpolated intensities in [0, 1] with no rescaling (stored as float16).
* **Targets.** Classification: the item's class 0–9. Segmentation: per grid point
  ``(minmax255 intensity > threshold) · (class + 1)``, 0 = background, 11 classes; with several
  items the class is that of the item whose projected layer is largest at the point.

Random numbers come from one ``torch.Generator`` per split, seeded from ``(seed, split)``, and are
drawn up front in a fixed order (extra indices, other items, jitter, rotations), so results do
not depend on the generation batch size.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from sphere_bench import io as cache
from sphere_bench.data.canvas import check_canvas, compose_layers, default_tiles
from sphere_bench.data.planar_source import (
    PlanarSplit,
    check_dataset_name,
    load_planar_split,
    source_fingerprint,
)
from sphere_bench.data.projection import (
    INTERPOLATIONS,
    minmax_uint8,
    minmax_uint8_paper,
    project_planes,
)
from sphere_bench.harmonic.grids import SphereGrid, make_grid
from sphere_bench.harmonic.rotations import haar_rotations
from sphere_bench.schema import ROTATIONS, TASKS

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
ROTATE_MODES = ROTATIONS
INTENSITIES = ("minmax255", "unit")
NUM_SOURCE_TRAIN = 60_000
NUM_SEG_CLASSES = 11  # background + 10 item classes
# Bump when the generation code changes what it produces, to invalidate old caches.
GENERATOR_VERSION = 1
# Revision of the paper-arithmetic path (interpolation="paper"), part of those splits' cache keys
# only, so other caches stay valid. 2: byte-identical to the paper's gendata.py.
PAPER_ARITHMETIC_VERSION = 2


@dataclass(frozen=True)
class SplitSpec:
    """Everything that determines one generated split (and so its cache key).

    Attributes:
        dataset: ``mnist`` or ``fashion_mnist``.
        task: ``classification`` or ``segmentation``.
        split: ``train``, ``val`` or ``test``.
        n: number of samples N (> 0).
        grid: ``soft``, ``paper`` or ``healpix`` (:mod:`sphere_bench.harmonic.grids`).
        resolution: bandwidth B (soft, paper) or nside (healpix).
        rotate: ``none`` or ``random``.
        rotation_chunk: consecutive samples sharing one rotation (1 = one per sample).
        seed: base seed; each split derives its own generator from ``(seed, split)``.
        interpolation: ``bilinear`` or ``paper``.
        intensity: ``minmax255`` or ``unit``.
        threshold: segmentation threshold on the 0–255 scale (0 ≤ t < 255).
        n_items: items per sphere (1 for classification).
        canvas_tiles: cells per canvas side (``None``: smallest square holding ``n_items``).
        jitter: maximal random offset of an item in its cell, pixels.
        val_fraction: share of the 60k official training images held out as validation pool.
    """

    dataset: str
    task: str
    split: str
    n: int
    grid: str = "soft"
    resolution: int = 30
    rotate: str = "none"
    rotation_chunk: int = 1
    seed: int = 0
    interpolation: str = "bilinear"
    intensity: str = "minmax255"
    threshold: int = 150
    n_items: int = 1
    canvas_tiles: int | None = None
    jitter: int = 0
    val_fraction: float = 0.1
    version: int = field(default=GENERATOR_VERSION)

    def __post_init__(self) -> None:
        validate_spec(self)

    @property
    def tiles(self) -> int:
        return self.canvas_tiles if self.canvas_tiles is not None else default_tiles(self.n_items)

    def make_grid(self) -> SphereGrid:
        return make_grid(self.grid, self.resolution)

    def key(self) -> str:
        """Hash of every field: the cache key."""
        fields = asdict(self)
        if self.interpolation == "paper":
            fields["paper_arithmetic"] = PAPER_ARITHMETIC_VERSION
        text = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:20]


def _choice(key: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {key} {value!r}; allowed values: {', '.join(allowed)}")


def _positive_int(key: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{key} must be a positive integer, got {value!r}")


def validate_spec(spec: SplitSpec) -> None:
    """Check every field before any heavy work; errors name the config key and allowed values."""
    check_dataset_name(spec.dataset)
    _choice("data.task", spec.task, TASKS)
    _choice("split", spec.split, SPLITS)
    _positive_int(f"data.n_{spec.split} (number of samples)", spec.n)
    make_grid(spec.grid, spec.resolution)  # validates grid name and resolution
    _choice("data.rotate_" + spec.split, spec.rotate, ROTATE_MODES)
    _positive_int("data.rotation_chunk", spec.rotation_chunk)
    _choice("data.interpolation", spec.interpolation, INTERPOLATIONS)
    _choice("data.intensity", spec.intensity, INTENSITIES)
    if (
        isinstance(spec.threshold, bool)
        or not isinstance(spec.threshold, int | float)
        or not (0 <= spec.threshold < 255)
    ):
        raise ValueError(
            f"data.threshold must be a number in [0, 255) on the 0-255 intensity scale, "
            f"got {spec.threshold!r}"
        )
    check_canvas(spec.n_items, spec.tiles, spec.jitter)
    if spec.task == "classification" and spec.n_items != 1:
        raise ValueError(
            f"data.n_items={spec.n_items} but classification needs one item per sphere; "
            "use data.task=segmentation for several items"
        )
    if not 0.0 <= spec.val_fraction < 1.0:
        raise ValueError(f"data.val_fraction must be in [0, 1), got {spec.val_fraction!r}")
    if spec.split == "val" and holdout_size(spec.val_fraction) == 0:
        raise ValueError("a validation split needs data.val_fraction > 0")


def holdout_size(val_fraction: float) -> int:
    """Number of official training images reserved for validation."""
    return round(val_fraction * NUM_SOURCE_TRAIN)


@dataclass
class SphericalTensors:
    """A generated split.

    Attributes:
        inputs: ``[n, *grid.shape]`` uint8 (minmax255) or float16 (unit) spherical images.
        targets: ``[n]`` int64 classes, or ``[n, *grid.shape]`` uint8 masks (segmentation).
        rotations: ``[n, 3, 3]`` float32, the rotation of each sample (identity for NR).
        item_indices: ``[n, n_items]`` int64 indices into the planar source split.
        item_labels: ``[n, n_items]`` int64 classes of the items.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    rotations: torch.Tensor
    item_indices: torch.Tensor
    item_labels: torch.Tensor

    def as_dict(self) -> dict[str, torch.Tensor]:
        return dict(vars(self))

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


def split_generator(seed: int, split: str, stream: str = "") -> torch.Generator:
    """A CPU generator seeded from ``(seed, split, stream)`` by hashing."""
    digest = hashlib.sha256(f"{seed}:{split}:{stream}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def source_pool(spec: SplitSpec) -> tuple[str, torch.Tensor]:
    """The planar split and the indices of its images this split draws from."""
    if spec.split == "test":
        return "test", torch.arange(10_000)
    n_hold = holdout_size(spec.val_fraction)
    if spec.split == "val":
        return "train", torch.arange(NUM_SOURCE_TRAIN - n_hold, NUM_SOURCE_TRAIN)
    return "train", torch.arange(NUM_SOURCE_TRAIN - n_hold)


def draw_plan(
    spec: SplitSpec, pool: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices ``[n, k]``, jitter offsets ``[n, k, 2]`` and rotations ``[n, 3, 3]``."""
    gen = split_generator(spec.seed, spec.split)
    n, k = spec.n, spec.n_items
    first = pool[: min(n, len(pool))]
    extra = pool[torch.randint(len(pool), (n - len(first),), generator=gen)]
    indices = torch.cat([first, extra])[:, None]
    if k > 1:
        others = pool[torch.randint(len(pool), (n, k - 1), generator=gen)]
        indices = torch.cat([indices, others], dim=1)
    offsets = torch.randint(-spec.jitter, spec.jitter + 1, (n, k, 2), generator=gen)
    if spec.rotate == "random":
        n_chunks = -(-n // spec.rotation_chunk)
        per_chunk = haar_rotations(n_chunks, generator=gen)
        rotations = per_chunk.repeat_interleave(spec.rotation_chunk, dim=0)[:n]
    else:
        rotations = torch.eye(3, dtype=torch.float64).expand(n, 3, 3).clone()
    return indices, offsets, rotations


def item_plan(spec: SplitSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Source indices ``[n, k]`` and jitter offsets ``[n, k, 2]`` of a split's samples.

    The same as :func:`draw_plan` gives (rotations are drawn last, so they do not affect these).
    """
    indices, offsets, _ = draw_plan(replace(spec, rotate="none"), source_pool(spec)[1])
    return indices, offsets


def render(
    layers: torch.Tensor,
    item_labels: torch.Tensor,
    grid: SphereGrid,
    rotations: torch.Tensor | None,
    spec: SplitSpec,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Project canvases onto the sphere and derive inputs and segmentation masks.

    Args:
        layers: ``[b, k, H, W]`` float32 canvas layers (values 0–255).
        item_labels: ``[b, k]`` int64 item classes.
        grid: the sphere grid (``P`` points).
        rotations: ``[b, 3, 3]`` or ``None``.
        spec: the split (interpolation, intensity, threshold, task).

    Returns:
        ``(inputs [b, P], masks [b, P] uint8 or None)`` with ``inputs`` uint8 (minmax255) or
        float16 (unit).
    """
    projected = project_planes(layers, grid, rotations, spec.interpolation)  # [b, k, P]
    intensity = projected[:, 0] if projected.shape[1] == 1 else projected.sum(dim=1)
    scaled = (minmax_uint8_paper if spec.interpolation == "paper" else minmax_uint8)(intensity)
    if spec.intensity == "minmax255":
        inputs = scaled
    else:
        tent_gain = 4.0 if spec.interpolation == "paper" else 1.0
        inputs = (intensity / (255.0 * tent_gain)).clamp_(0, 1).to(torch.float16)
    if spec.task != "segmentation":
        return inputs, None
    if projected.shape[1] == 1:
        classes = item_labels[:, :1]
    else:
        classes = torch.gather(item_labels, 1, projected.argmax(dim=1))
    foreground = scaled > spec.threshold
    masks = torch.where(
        foreground, (classes + 1).to(torch.uint8), torch.zeros((), dtype=torch.uint8)
    )
    return inputs, masks


def generate_split(
    spec: SplitSpec,
    source: PlanarSplit,
    batch_size: int = 128,
    progress: bool = True,
) -> SphericalTensors:
    """Generate a split from its planar source (see the module docstring for the protocol)."""
    _, pool = source_pool(spec)
    indices, offsets, rotations = draw_plan(spec, pool)
    grid = spec.make_grid()
    n = spec.n
    input_dtype = torch.uint8 if spec.intensity == "minmax255" else torch.float16
    inputs = torch.empty(n, grid.num_points, dtype=input_dtype)
    targets = (
        torch.empty(n, grid.num_points, dtype=torch.uint8) if spec.task == "segmentation" else None
    )
    item_labels = source.labels[indices]
    rotated = spec.rotate == "random"
    bar = tqdm(
        total=n,
        desc=f"{spec.dataset} {spec.split} B/nside={spec.resolution}",
        unit="img",
        disable=not progress,
        leave=False,
    )
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        items = source.images[indices[start:stop]]
        jitter = offsets[start:stop] if spec.jitter > 0 else None
        layers = compose_layers(items, spec.tiles, jitter).to(torch.float32)
        # float64 for the paper's arithmetic; project_planes casts to float32 for bilinear.
        rot = rotations[start:stop] if rotated else None
        x, y = render(layers, item_labels[start:stop], grid, rot, spec)
        inputs[start:stop] = x
        if targets is not None:
            targets[start:stop] = y
        bar.update(stop - start)
    bar.close()
    shape = (n, *grid.shape)
    return SphericalTensors(
        inputs=inputs.reshape(shape),
        targets=item_labels[:, 0].clone() if targets is None else targets.reshape(shape),
        rotations=rotations.to(torch.float32),
        item_indices=indices,
        item_labels=item_labels,
    )


def render_samples(
    spec: SplitSpec,
    source: PlanarSplit,
    sample_ids: torch.Tensor,
    rotations: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-render samples of a split with other rotations (e.g. to test equivariance).

    Args:
        spec: the split the samples belong to (fixes their items and canvas).
        source: its planar source split.
        sample_ids: ``[n]`` sample indices in the split.
        rotations: ``[n, 3, 3]`` absolute rotations to render with (``None``: unrotated).

    Returns:
        ``(inputs [n, *grid.shape], targets)`` exactly as :func:`generate_split` stores them for
        these items under these rotations.
    """
    indices, offsets = item_plan(spec)
    ids = sample_ids.long()
    items = source.images[indices[ids]]
    jitter = offsets[ids] if spec.jitter > 0 else None
    layers = compose_layers(items, spec.tiles, jitter).to(torch.float32)
    item_labels = source.labels[indices[ids]]
    rot = None if rotations is None else rotations.to(torch.float32)
    grid = spec.make_grid()
    x, y = render(layers, item_labels, grid, rot, spec)
    shape = (len(ids), *grid.shape)
    return x.reshape(shape), (item_labels[:, 0] if y is None else y.reshape(shape))


def load_or_generate(
    spec: SplitSpec,
    root: str | Path | None = None,
    cache_dir: str | Path | None = "data/cache",
    download_root: str | Path | None = "data/downloads",
    progress: bool = True,
) -> SphericalTensors:
    """The split from the cache if a valid entry exists, else generated (and cached).

    Args:
        spec: the split.
        root: planar data root (``None``: ``$SPHERE_BENCH_DATA`` or ``./data``).
        cache_dir: cache folder; ``None`` disables caching.
        download_root: where torchvision may download missing source files.
        progress: show a progress bar while generating.
    """
    path = None
    source_split, _ = source_pool(spec)
    if cache_dir is not None:
        origin = source_fingerprint(spec.dataset, source_split, root, download_root)
        name = f"{spec.dataset}-{spec.split}-{spec.key()}-{origin}.pt"
        path = Path(cache_dir) / "spherical" / name
        hit = cache.load_tensors(path)
        if hit is not None:
            return SphericalTensors(**hit)
    source = load_planar_split(spec.dataset, source_split, root, download_root)
    tensors = generate_split(spec, source, progress=progress)
    if path is not None:
        cache.save_tensors(path, tensors.as_dict(), meta=asdict(spec))
    return tensors

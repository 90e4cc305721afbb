"""Preview figures of spherical samples: equirectangular, Mollweide and an orthographic close-up.

Written by ``python -m sphere_bench.data data=mnist_seg4`` (any ``conf/data`` entry and override,
e.g. ``data.bandwidth=30 data.grid=healpix``) into ``results/figures/``. Each row is a test
sample, unrotated (NR) and rotated (R): the input and, for segmentation, the mask in three views.
The orthographic view looks at the sphere from the direction where the unrotated items sit (the
south pole, moved by the sample's rotation), so the digits read as on paper.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib
import numpy as np
import torch

from sphere_bench.data.spherical_dataset import load_or_generate
from sphere_bench.harmonic.grids import SphereGrid, soft_betas

if TYPE_CHECKING:
    from sphere_bench.data.datamodule import SphericalDataModule

log = logging.getLogger(__name__)

#: The segmentation palette, one RGB row per label (0 = background, 1…10 = digit/item class + 1),
#: used by every figure that shows a mask (previews, the report's sample predictions, the
#: prediction images of training runs): black, then matplotlib's tab10 without its grey (too close
#: to the grey-scale inputs), then near-white for class 10.
MASK_COLORS = np.array(
    [
        [0.0, 0.0, 0.0],
        [0.12, 0.47, 0.71],
        [1.0, 0.5, 0.05],
        [0.17, 0.63, 0.17],
        [0.84, 0.15, 0.16],
        [0.58, 0.4, 0.74],
        [0.55, 0.34, 0.29],
        [0.89, 0.47, 0.76],
        [0.74, 0.74, 0.13],
        [0.09, 0.75, 0.81],
        [0.95, 0.95, 0.95],
    ]
)


def lookup(values: np.ndarray, grid: SphereGrid, beta: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Nearest-sample values of a spherical signal at angles ``(beta, alpha)`` (any shape)."""
    if grid.name in ("healpix", "healpix_nested"):
        import healpy

        nest = grid.name == "healpix_nested"
        return values[healpy.ang2pix(grid.resolution, beta, alpha, nest=nest)]
    if grid.name in ("equiangular", "legendre-gauss"):
        thetas, phis = grid.product_angles()
        j = np.abs(beta[..., None] - thetas).argmin(-1)
        step = 2 * np.pi / len(phis)
        k = np.rint(np.mod(alpha, 2 * np.pi) / step).astype(int) % len(phis)
        return values.reshape(grid.shape)[j, k]
    b = grid.resolution
    betas = soft_betas(b) if grid.name == "soft" else np.pi * np.arange(2 * b) / (2 * b)
    j = np.abs(beta[..., None] - betas).argmin(-1)
    k = np.rint(np.mod(alpha, 2 * np.pi) / (np.pi / b)).astype(int) % (2 * b)
    return values.reshape(2 * b, 2 * b)[j, k]


def equirectangular(values: np.ndarray, grid: SphereGrid, height: int = 90) -> np.ndarray:
    """The signal on a ``[colatitude, longitude]`` raster (longitude −180°…180°)."""
    if grid.name in ("soft", "paper"):
        b = grid.resolution
        return np.roll(values.reshape(2 * b, 2 * b), b, axis=1)  # alpha in [pi, 2pi) first
    beta = (np.arange(height) + 0.5) * np.pi / height
    lon = (np.arange(2 * height) + 0.5) * np.pi / height - np.pi
    bb, ll = np.meshgrid(beta, lon, indexing="ij")
    return lookup(values, grid, bb, np.mod(ll, 2 * np.pi))


def orthographic(
    values: np.ndarray, grid: SphereGrid, rotation: np.ndarray, size: int = 96, reach: float = 1.0
) -> np.ndarray:
    """An orthographic view of the hemisphere around ``rotation · (0, 0, −1)``.

    The view is the one of the unrotated sphere seen from below, carried along by ``rotation``,
    so an item reads the same way for every rotation. ``reach`` ≤ 1 zooms in.
    """
    u = np.linspace(-reach, reach, size)
    row, col = np.meshgrid(u, u, indexing="ij")
    inside = row**2 + col**2 <= 1.0
    depth = np.sqrt(np.clip(1.0 - row**2 - col**2, 0.0, None))
    # Unrotated view from below: plane row axis = +x, column axis = +y, sphere point z = -depth.
    points = np.stack([row, col, -depth], axis=-1) @ rotation.T
    beta = np.arccos(np.clip(points[..., 2], -1, 1))
    alpha = np.arctan2(points[..., 1], points[..., 0])
    out = lookup(values, grid, beta, alpha).astype(float)
    out[~inside] = np.nan
    return out


def _mask_rgb(mask: np.ndarray) -> np.ndarray:
    rgb = MASK_COLORS[np.nan_to_num(mask, nan=0).astype(int) % len(MASK_COLORS)]
    rgb[np.isnan(mask)] = 1.0
    return rgb


def plot_samples(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    rotations: torch.Tensor,
    grid: SphereGrid,
    row_titles: list[str],
    path: Path,
    class_names: tuple[str, ...],
) -> Path:
    """Write a PNG with one row per sample (input and, for masks, target in three views)."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    segmentation = targets.ndim > 1
    views = ["equirectangular", "Mollweide", "orthographic (item side)"]
    columns = [(kind, view) for kind in (["input", "mask"] if segmentation else ["input"])
               for view in views]  # fmt: skip
    n = inputs.shape[0]
    fig = plt.figure(figsize=(3.1 * len(columns), 2.2 * n + 0.4), dpi=110)
    for i in range(n):
        x = inputs[i].reshape(-1).float().numpy()
        y = targets[i].reshape(-1).float().numpy() if segmentation else None
        for c, (kind, view) in enumerate(columns):
            values = x if kind == "input" else y
            position = i * len(columns) + c + 1
            if view == "Mollweide":
                ax = fig.add_subplot(n, len(columns), position, projection="mollweide")
                raster = equirectangular(values, grid)
                lat = np.linspace(np.pi / 2, -np.pi / 2, raster.shape[0] + 1)
                lon = np.linspace(-np.pi, np.pi, raster.shape[1] + 1)
                if kind == "mask":
                    ax.pcolormesh(lon, lat, raster, cmap=mask_cmap(), vmin=-0.5, vmax=10.5)
                else:
                    ax.pcolormesh(lon, lat, raster, cmap="gray")
                ax.set_xticklabels([])
                ax.set_yticklabels([])
                ax.grid(True, alpha=0.3)
            else:
                ax = fig.add_subplot(n, len(columns), position)
                if view == "equirectangular":
                    raster = equirectangular(values, grid)
                    extent = (-180, 180, -90, 90)
                else:
                    raster = orthographic(values, grid, rotations[i].double().numpy())
                    extent = None
                if kind == "mask":
                    ax.imshow(_mask_rgb(raster), extent=extent, interpolation="nearest")
                else:
                    ax.imshow(raster, cmap="gray", extent=extent, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
            if i == 0:
                ax.set_title(f"{kind}: {view}", fontsize=8)
            if c == 0:
                ax.set_ylabel(row_titles[i], fontsize=8)
    legend = ", ".join(f"{k}={name}" for k, name in enumerate(class_names))
    fig.suptitle(f"{path.stem}   [{legend}]" if segmentation else path.stem, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


def mask_cmap() -> matplotlib.colors.ListedColormap:
    """:data:`MASK_COLORS` as a colormap; draw label ``k`` with ``vmin=-0.5, vmax=10.5``."""
    return matplotlib.colors.ListedColormap(MASK_COLORS)


def write_previews(
    datamodule: SphericalDataModule, n_samples: int, out_dir: str | Path
) -> list[Path]:
    """Generate the first ``n_samples`` test samples of each test set and plot them."""
    from sphere_bench.data.datamodule import SphericalDataModule

    if not isinstance(datamodule, SphericalDataModule):
        raise TypeError(f"expected a SphericalDataModule, got {type(datamodule).__name__}")
    specs = {name: replace(spec, n=n_samples) for name, spec in datamodule.test_specs.items()}
    names = datamodule.class_names
    inputs, targets, rotations, titles = [], [], [], []
    for name, spec in specs.items():
        data = load_or_generate(spec, datamodule.root, None, datamodule.download_root, False)
        inputs.append(data.inputs)
        targets.append(data.targets)
        rotations.append(data.rotations)
        for labels in data.item_labels.tolist():
            items = "+".join(
                datamodule.class_names[lab + (1 if datamodule.task == "segmentation" else 0)]
                for lab in labels
            )
            titles.append(f"{name.upper()}: {items}")
    spec = datamodule.train_spec
    stem = f"preview_{spec.dataset}_{spec.task}_k{spec.n_items}_{spec.grid}{spec.resolution}"
    path = Path(out_dir) / f"{stem}.png"
    plot_samples(
        torch.cat(inputs), torch.cat(targets), torch.cat(rotations), datamodule.grid, titles,
        path, names,
    )  # fmt: skip
    log.info("wrote %s", path)
    return [path]

"""Reading the planar source datasets (MNIST, Fashion-MNIST) from a read-only data root.

Layout (torchvision's): ``<root>/MNIST/raw`` and ``<root>/FashionMNIST/raw`` holding the IDX files
``{train,t10k}-{images-idx3,labels-idx1}-ubyte``, either gzipped (``.gz``, as the original
downloads) or decompressed. Files are read directly (gzip in memory); nothing is ever written
into the root. When the files are missing, torchvision's downloader is tried into a separate
writable folder; if that fails too, :class:`DataRootError` says where we looked and how to fix it.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

SOURCE_FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
SPLIT_PREFIX = {"train": "train", "test": "t10k"}
ENV_DATA_ROOT = "SPHERE_BENCH_DATA"

# Class names, index = label.
CLASS_NAMES = {
    "mnist": tuple(str(d) for d in range(10)),
    "fashion_mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
}


class DataRootError(FileNotFoundError):
    """The planar source files are neither under the data root nor downloadable."""


class SourceFileError(ValueError):
    """A planar source file is damaged (truncated or corrupt gzip, wrong IDX header or size)."""


#: Images in each official split (the IDX headers must say so).
SPLIT_SIZES = {"train": 60_000, "test": 10_000}


def _damaged(path: Path, reason: str) -> SourceFileError:
    return SourceFileError(
        f"source file {path} is damaged: {reason}. Fix: replace it with an intact copy of the "
        "original download (e.g. delete it and run once with internet access so torchvision "
        f"downloads it again, or point data.root / ${ENV_DATA_ROOT} at another copy)"
    )


@dataclass(frozen=True)
class PlanarSplit:
    """One split of a planar dataset: ``images`` uint8 ``[n, 28, 28]``, ``labels`` int64 ``[n]``."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def default_data_root() -> Path:
    """``$SPHERE_BENCH_DATA`` if set, else ``./data``."""
    return Path(os.environ.get(ENV_DATA_ROOT, "data"))


def check_dataset_name(name: str) -> None:
    if name not in SOURCE_FOLDERS:
        raise ValueError(
            f"unknown dataset {name!r}; allowed values for data.dataset: "
            f"{', '.join(SOURCE_FOLDERS)}"
        )


def _parse_idx(raw: bytes, path: Path) -> np.ndarray:
    """The array of an IDX file's bytes; :class:`SourceFileError` naming ``path`` if damaged."""
    if len(raw) < 8:
        raise _damaged(path, f"{len(raw)} bytes, shorter than an IDX header")
    magic, n = struct.unpack(">II", raw[:8])
    if magic == 2051 and len(raw) >= 16:
        rows, cols = struct.unpack(">II", raw[8:16])
        expected, offset, shape = n * rows * cols, 16, (n, rows, cols)
    elif magic == 2049:
        expected, offset, shape = n, 8, (n,)
    else:
        raise _damaged(path, f"not an IDX file (magic number {magic})")
    if len(raw) - offset != expected:
        raise _damaged(path, f"truncated: {len(raw) - offset} of {expected} data bytes")
    return np.frombuffer(raw, np.uint8, offset=offset).reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


@lru_cache(maxsize=8)
def _read_idx(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as err:  # truncated, bad CRC, not gzip
            raise _damaged(path, f"gzip cannot read it ({type(err).__name__}: {err})") from None
    return _parse_idx(raw, path)


def _split_files(folder: Path, prefix: str) -> tuple[Path, Path] | None:
    images = _find_idx(folder, f"{prefix}-images-idx3-ubyte")
    labels = _find_idx(folder, f"{prefix}-labels-idx1-ubyte")
    return (images, labels) if images is not None and labels is not None else None


def _try_download(name: str, download_root: Path) -> str | None:
    """Run torchvision's downloader into ``download_root``; return an error text or ``None``."""
    from torchvision import datasets

    cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    try:
        download_root.mkdir(parents=True, exist_ok=True)
        cls(root=str(download_root), train=True, download=True)
        cls(root=str(download_root), train=False, download=True)
    except Exception as err:  # any network, HTTP or disk error: report it, never hide it
        return f"{type(err).__name__}: {err}"
    return None


def source_fingerprint(
    name: str, split: str, root: str | Path | None = None, download_root: str | Path | None = None
) -> str:
    """A cheap identity of the source files a split would be read from (for cache keys).

    Hashes each file's name, size and first MiB, so two releases of a dataset (e.g. the two
    Fashion-MNIST releases) never share cache entries. ``"missing"`` when no files are found.
    """
    check_dataset_name(name)
    root = Path(root) if root is not None else default_data_root()
    folders = [root / SOURCE_FOLDERS[name] / "raw"]
    if download_root is not None:
        folders.append(Path(download_root) / SOURCE_FOLDERS[name] / "raw")
    for folder in folders:
        files = _split_files(folder, SPLIT_PREFIX[split])
        if files is not None:
            digest = hashlib.sha256()
            for path in files:
                digest.update(f"{path.name}:{path.stat().st_size}:".encode())
                with path.open("rb") as handle:
                    digest.update(handle.read(1 << 20))
            return digest.hexdigest()[:16]
    return "missing"


def load_planar_split(
    name: str,
    split: str,
    root: str | Path | None = None,
    download_root: str | Path | None = "data/downloads",
) -> PlanarSplit:
    """Load a split of MNIST or Fashion-MNIST as tensors.

    Args:
        name: ``"mnist"`` or ``"fashion_mnist"``.
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
        root: data root holding ``MNIST/raw`` / ``FashionMNIST/raw`` (default:
            ``$SPHERE_BENCH_DATA``
            or ``./data``). Never written to.
        download_root: writable folder for torchvision's download when ``root`` lacks the files;
            ``None`` disables downloading.

    Raises:
        DataRootError: the files are missing under ``root`` and could not be downloaded.
    """
    check_dataset_name(name)
    if split not in SPLIT_PREFIX:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLIT_PREFIX)}")
    root = Path(root) if root is not None else default_data_root()
    folder = root / SOURCE_FOLDERS[name] / "raw"
    files = _split_files(folder, SPLIT_PREFIX[split])
    download_error = "downloading disabled"
    if files is None and download_root is not None:
        download_folder = Path(download_root) / SOURCE_FOLDERS[name] / "raw"
        files = _split_files(download_folder, SPLIT_PREFIX[split])
        if files is None:
            download_error = _try_download(name, Path(download_root)) or "download gave no files"
            files = _split_files(download_folder, SPLIT_PREFIX[split])
    if files is None:
        prefix = SPLIT_PREFIX[split]
        raise DataRootError(
            f"{SOURCE_FOLDERS[name]} {split} files ({prefix}-images-idx3-ubyte[.gz], "
            f"{prefix}-labels-idx1-ubyte[.gz]) not found in {folder.resolve()}, and the download "
            f"failed ({download_error}). Fix: point data.root or ${ENV_DATA_ROOT} at a folder "
            f"holding {SOURCE_FOLDERS[name]}/raw/*.gz (e.g. export {ENV_DATA_ROOT}="
            f"../shared/datasets), or run once with internet access so torchvision can download."
        )
    images, labels = (_read_idx(p.resolve()) for p in files)
    for path, array in zip(files, (images, labels), strict=True):
        wrong_size = array.ndim == 3 and array.shape[1:] != (28, 28)
        if array.shape[0] != SPLIT_SIZES[split] or wrong_size:
            raise _damaged(
                path, f"shape {tuple(array.shape)}; the {split} split has "
                f"{SPLIT_SIZES[split]} items of 28 x 28 pixels",
            )  # fmt: skip
    return PlanarSplit(torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)))

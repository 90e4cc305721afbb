"""Atomic, verified on-disk cache for dictionaries of tensors.

An entry is two files: ``<name>.pt`` (``torch.save`` of the tensors) and ``<name>.pt.json`` (its
byte size, CRC-32 and free-form metadata). Both are written to a temporary file in the same folder
and moved into place with ``os.replace``; the JSON is written last and marks the entry complete.
On load the size and checksum are verified first, so a truncated or corrupt file is reported
(a warning naming the file and the reason) and treated as a miss, and the caller regenerates it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import zlib
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

_CHUNK = 1 << 24


def _crc32(path: Path) -> int:
    crc = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Store ``tensors`` at ``path`` with a verification sidecar ``path + '.json'``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save({k: v.contiguous() for k, v in tensors.items()}, tmp)
        tmp_path = Path(tmp)
        record = {"size": tmp_path.stat().st_size, "crc32": _crc32(tmp_path), "meta": meta}
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    atomic_write_text(sidecar(path), json.dumps(record, indent=1, sort_keys=True))


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def load_tensors(path: Path) -> dict[str, torch.Tensor] | None:
    """The tensors stored at ``path``, or ``None`` when absent or invalid (with a warning)."""
    path = Path(path)
    side = sidecar(path)
    if not path.is_file() and not side.is_file():
        return None
    reason = _invalid_reason(path, side)
    if reason is None:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as err:  # corrupt despite the checksum (e.g. written by another version)
            reason = f"unreadable ({type(err).__name__}: {err})"
    log.warning("cache entry %s is invalid: %s; regenerating it", path, reason)
    return None


def _invalid_reason(path: Path, side: Path) -> str | None:
    if not side.is_file():
        return "its checksum file is missing (interrupted write?)"
    if not path.is_file():
        return "the data file is missing"
    try:
        record = json.loads(side.read_text())
        size, crc = int(record["size"]), int(record["crc32"])
    except (ValueError, KeyError, TypeError) as err:
        return f"unreadable checksum file ({err})"
    actual = path.stat().st_size
    if actual != size:
        return f"size {actual} bytes, expected {size} (truncated?)"
    if _crc32(path) != crc:
        return "CRC-32 mismatch (corrupt file)"
    return None

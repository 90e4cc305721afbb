"""Files written atomically, and an atomic, verified on-disk cache for dictionaries of tensors.

Used project-wide: :func:`atomic_write_text` / :func:`atomic_write_bytes` for records, reports and
figures; :func:`save_tensors` / :func:`load_tensors` for generated datasets, Wigner tables and
checkpoint sidecars; :func:`pid_alive` for job locks. It imports nothing from sphere_bench.

An entry is two files: ``<name>.pt`` (``torch.save`` of the tensors) and ``<name>.pt.json`` (its
byte size, CRC-32 and free-form metadata). Both are written to a temporary file in the same folder
and moved into place with ``os.replace``; the JSON is written last and marks the entry complete.
On load the size and checksum are verified first, so a truncated or corrupt file is reported
(a warning naming the file and the reason) and treated as a miss, and the caller regenerates it;
so is a file of the right type but the wrong content (other keys, shapes or dtypes than the
sidecar recorded).

Temporary files are named ``.<name>.<host>-<pid>.<random>.tmp`` beside their target (never in
the system temp folder, so the final ``os.replace`` stays on one filesystem). A process killed
while writing leaves one behind; :func:`remove_stale_temp_files` deletes those of dead processes
(same host) or older than a day, and every cache read and write runs it on its folder.

A cache write that fails for lack of space (or any ``OSError``) is a warning, not an error: the
data is in memory and the job goes on (``save_tensors`` returns ``False``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

_CHUNK = 1 << 24
#: Temporary files of another host (or of an unknown owner) older than this are stale.
STALE_TEMP_AGE_S = 24 * 3600.0
_TEMP_RE = re.compile(r"^\..+\.(?P<host>[^.]+)-(?P<pid>\d+)\.[^.]+\.tmp$")


def temp_beside(path: Path) -> str:
    """Create (empty) and return a temporary file beside ``path``, named after its owner."""
    host = socket.gethostname().split(".")[0].replace("-", "_") or "host"
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.{host}-{os.getpid()}.", suffix=".tmp"
    )
    os.close(fd)
    return tmp


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (``os.kill(pid, 0)``)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_files(folder: Path | str, max_age_s: float = STALE_TEMP_AGE_S) -> list[Path]:
    """Delete the ``.*.tmp`` files in ``folder`` left by killed writers; return them.

    A file named by :func:`temp_beside` is stale when its process is gone (same host) or it is
    older than ``max_age_s`` (another host); any other ``.*.tmp`` file when older than
    ``max_age_s``. Each deletion is logged with the file's name and size.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    host = socket.gethostname().split(".")[0].replace("-", "_") or "host"
    removed = []
    now = time.time()
    for path in folder.glob(".*.tmp"):
        try:
            stat = path.stat()
        except OSError:
            continue
        match = _TEMP_RE.match(path.name)
        if match and match["host"] == host:
            stale = not pid_alive(int(match["pid"]))
        else:
            stale = now - stat.st_mtime > max_age_s
        if stale:
            try:
                path.unlink()
            except OSError:
                continue
            log.warning("removed %s (%d bytes), left by a killed writer", path, stat.st_size)
            removed.append(path)
    return removed


def _crc32(path: Path) -> int:
    crc = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    try:
        with open(tmp, "wb") as handle:
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


def _layout(tensors: dict[str, torch.Tensor]) -> dict[str, list]:
    return {k: [list(v.shape), str(v.dtype)] for k, v in sorted(tensors.items())}


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> bool:
    """Store ``tensors`` at ``path`` with a verification sidecar ``path + '.json'`` (byte size,
    CRC-32, each tensor's shape and dtype, ``meta``).

    Returns ``False`` (after a warning naming the file, the error and the fix) when the write
    fails with an ``OSError`` such as a full disk: the caller keeps its tensors in memory.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(path.parent)
        tmp = temp_beside(path)
        torch.save({k: v.contiguous() for k, v in tensors.items()}, tmp)
        tmp_path = Path(tmp)
        record = {
            "size": tmp_path.stat().st_size, "crc32": _crc32(tmp_path), "meta": meta,
            "layout": _layout(tensors),
        }  # fmt: skip
        os.replace(tmp, path)
        tmp = None
        atomic_write_text(sidecar(path), json.dumps(record, indent=1, sort_keys=True))
    except OSError as err:
        log.warning(
            "could not write cache entry %s (%s: %s); going on with the data in memory. Fix: "
            "free space there, or point data.cache_dir (or $SPHERE_BENCH_CACHE) at a disk with "
            "room, or set data.cache_dir=null to cache nothing", path, type(err).__name__, err,
        )
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        else:  # the data file is in place but its sidecar is not: an invalid entry, drop it
            path.unlink(missing_ok=True)
            sidecar(path).unlink(missing_ok=True)
        return False
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return True


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def load_tensors(path: Path) -> dict[str, torch.Tensor] | None:
    """The tensors stored at ``path``, or ``None`` when absent or invalid (with a warning)."""
    path = Path(path)
    side = sidecar(path)
    if not path.is_file() and not side.is_file():
        return None
    remove_stale_temp_files(path.parent)
    reason = _invalid_reason(path, side)
    if reason is None:
        try:
            tensors = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            reason = _layout_mismatch(tensors, side)
            if reason is None:
                return tensors
        except Exception as err:  # corrupt despite the checksum (e.g. written by another version)
            reason = f"unreadable ({type(err).__name__}: {err})"
    log.warning("cache entry %s is invalid: %s; regenerating it", path, reason)
    return None


def _layout_mismatch(tensors: Any, side: Path) -> str | None:
    """Why ``tensors`` is not what the sidecar describes (keys, shapes, dtypes), or None."""
    if not isinstance(tensors, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items()
    ):
        return f"not a dict of tensors (a {type(tensors).__name__})"
    expected = json.loads(side.read_text()).get("layout")
    if expected is None:  # entries written before layouts were recorded
        return None
    actual = json.loads(json.dumps(_layout(tensors)))
    if actual != expected:
        return f"wrong content: tensors {actual}, expected {expected}"
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

"""Checkpoints that are written atomically beside their target and verified before every use.

* :class:`VerifiedCheckpointIO` (a Lightning ``CheckpointIO`` plugin, added to every trainer by
  the training script) writes ``torch.save`` output to a temporary file in the checkpoint's own
  folder, ``fsync``\\ s it and moves it into place with ``os.replace``, then writes the sidecar
  ``<name>.ckpt.json`` with its byte size and CRC-32. Lightning's default stages the file in the
  system temp folder and moves it, which on another filesystem (node-local ``/tmp`` vs shared
  results, the SLURM case) is a copy: a kill during it left a 0-byte ``last.ckpt`` and an orphan
  of the full size in ``/tmp``. Loading verifies first and raises :class:`CheckpointError`
  naming the file and the reason.
* :func:`verify_checkpoint` says why a file is not an intact checkpoint: missing, empty, size or
  CRC-32 different from its sidecar (truncated, flipped bytes), or, for a checkpoint without a
  sidecar (written before this module, or killed between the two renames), unreadable by
  ``torch.load`` or without a ``state_dict``.
* :func:`pick_resume_checkpoint` is how an interrupted job chooses where to resume: ``last.ckpt``,
  else the newest other checkpoint of the job; every damaged one is reported by path and moved to
  ``<job dir>/damaged/`` (kept for inspection, out of the way of the next run); with no intact
  one the job starts again from scratch.
* :func:`resume_checkpoint`, :func:`best_checkpoint` and :func:`checkpoint_to_test` are the
  three choices a job makes: where ``fit`` resumes, which checkpoint won, which one is tested.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from sphere_bench.io import (
    _crc32,
    atomic_write_text,
    remove_stale_temp_files,
    sidecar,
    temp_beside,
)

log = logging.getLogger(__name__)

DAMAGED_DIR = "damaged"


class CheckpointError(RuntimeError):
    """A checkpoint is missing or damaged; the message names the file, the reason and the fix."""

    def __init__(self, path: Path | str, reason: str, fix: str = "") -> None:
        self.path, self.reason = Path(path), reason
        fix = fix or (
            "the job's other checkpoints are tried on a rerun; to start the job afresh, delete "
            f"{self.path.parent}"
        )
        super().__init__(f"checkpoint {self.path} is damaged: {reason}. Fix: {fix}")


def save_verified(checkpoint: dict[str, Any], path: Path | str) -> None:
    """``torch.save`` ``checkpoint`` to ``path`` atomically (temporary file beside it, fsync,
    ``os.replace``) and write its sidecar (size, CRC-32). A failure or a kill leaves the previous
    file intact; a killed writer's temporary file is removed by the next save or job start."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path.parent)
    tmp = Path(temp_beside(path))
    try:
        with tmp.open("wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())
        record = {"size": tmp.stat().st_size, "crc32": _crc32(tmp), "format": "torch.save"}
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    atomic_write_text(sidecar(path), json.dumps(record, sort_keys=True) + "\n")


def verify_checkpoint(path: Path | str) -> str | None:
    """Why ``path`` is not an intact checkpoint, or None when it is (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        return "the file is missing"
    size = path.stat().st_size
    if size == 0:
        return "the file is empty (0 bytes)"
    side = sidecar(path)
    if side.is_file():
        try:
            record = json.loads(side.read_text(encoding="utf-8"))
            expected_size, expected_crc = int(record["size"]), int(record["crc32"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            return f"its checksum file {side} is unreadable ({err})"
        if size != expected_size:
            return f"{size} bytes, {expected_size} written (truncated or overwritten)"
        if _crc32(path) != expected_crc:
            return "CRC-32 differs from the one written (corrupt bytes)"
        return None
    try:  # no sidecar: an older checkpoint, or a kill between the two renames
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - any failure to load means damaged
        return f"unreadable by torch.load ({type(err).__name__}: {err})"
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        return "not a Lightning checkpoint (no state_dict)"
    return None


def move_aside(path: Path | str, reason: str) -> Path:
    """Move a damaged checkpoint (and its sidecar) to ``<job dir>/damaged/``; warn with both
    paths and the reason. Returns the new path."""
    path = Path(path)
    target_dir = path.parent.parent / DAMAGED_DIR
    target_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target = target_dir / f"{path.name}.{stamp}"
    os.replace(path, target)
    if sidecar(path).is_file():
        os.replace(sidecar(path), target_dir / f"{target.name}.json")
    log.warning("checkpoint %s is damaged (%s): moved to %s", path, reason, target)
    return target


def pick_resume_checkpoint(ckpt_dir: Path | str) -> Path | None:
    """The checkpoint an interrupted job resumes from: ``last.ckpt`` when intact, else the newest
    intact ``*.ckpt`` of ``ckpt_dir``; damaged ones are moved aside on the way (with a warning).
    None when there is no intact one (the job starts again)."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return None
    remove_stale_temp_files(ckpt_dir)
    others = sorted(
        (p for p in ckpt_dir.glob("*.ckpt") if p.name != "last.ckpt"),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    candidates = [ckpt_dir / "last.ckpt", *others]
    damaged = 0
    for path in candidates:
        if not path.exists():
            continue
        reason = verify_checkpoint(path)
        if reason is None:
            if damaged:
                log.warning("resuming from the intact checkpoint %s instead", path)
            return path
        move_aside(path, reason)
        damaged += 1
    if damaged:
        log.warning("no intact checkpoint left in %s: the job starts again from scratch", ckpt_dir)
    return None


def resume_checkpoint(ckpt_path: str | None, ckpt_dir: Path) -> str | None:
    """Where ``fit`` resumes: ``ckpt_path`` when the user gave one (verified, never moved), else
    this job's own last intact checkpoint in ``ckpt_dir`` (:func:`pick_resume_checkpoint`).

    Raises:
        CheckpointError: the given ``ckpt_path`` is missing or damaged.
    """
    if ckpt_path:
        reason = verify_checkpoint(ckpt_path)
        if reason is not None:
            raise CheckpointError(ckpt_path, reason, fix="pass an intact file as ckpt_path=")
        return ckpt_path
    picked = pick_resume_checkpoint(ckpt_dir)
    return None if picked is None else str(picked)


def best_checkpoint(trainer: Any, monitor: str | None) -> tuple[str | None, float | None]:
    """``(path, score)`` of the best checkpoint of the ``ModelCheckpoint`` watching ``monitor``,
    else ``(None, None)``; without checkpoints (e.g. ``fast_dev_run``) the score is the logged
    ``<monitor>_best``."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    best, score = None, None
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.monitor == monitor:
            best = callback.best_model_path or None
            if monitor is not None and callback.best_model_score is not None:
                score = float(callback.best_model_score)
            break
    if score is None and monitor is not None:
        value = trainer.callback_metrics.get(f"{monitor}_best")
        score = None if value is None else float(value)
    return best, score


def checkpoint_to_test(
    best: str | None, resume: str | None, *, validated: bool, trained: bool, user_path: str | None,
    job_dir: Path,
) -> str | None:
    """The checkpoint ``test`` loads: the best one when the job validated, the resume point when
    it only tests (``train=false``), else None (the current weights).

    Raises:
        CheckpointError: that checkpoint is damaged; this job's own is moved aside first (its
            weights are lost and the fix says to train again), a user's ``ckpt_path`` never.
    """
    ckpt = best if validated and best else None
    if ckpt is None and not trained:
        ckpt = resume
    reason = None if ckpt is None else verify_checkpoint(ckpt)
    if reason is not None:
        moved = move_aside(ckpt, reason) if ckpt != user_path else ckpt
        raise CheckpointError(
            ckpt, f"{reason}; moved to {moved}",
            fix=f"its weights are lost: delete {job_dir} and rerun to train the job again",
        )  # fmt: skip
    return ckpt


class VerifiedCheckpointIO(TorchCheckpointIO):
    """Lightning ``CheckpointIO``: atomic saves beside the target with a checksum sidecar, loads
    verified first (:class:`CheckpointError`), removals that take the sidecar along."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        save_verified(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: Any = None) -> Any:
        reason = verify_checkpoint(path)
        if reason is not None:
            raise CheckpointError(path, reason)
        kwargs: dict[str, Any] = {"weights_only": weights_only}
        if map_location is not None:
            kwargs["map_location"] = map_location
        return super().load_checkpoint(path, **kwargs)

    def remove_checkpoint(self, path: Any) -> None:
        super().remove_checkpoint(path)
        sidecar(Path(path)).unlink(missing_ok=True)

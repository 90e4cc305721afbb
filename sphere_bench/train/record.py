"""The result record of one training job: a plain JSON dict, built in one place.

Every job writes it twice, atomically (temporary file + ``os.replace``): ``result.json`` in its
Hydra run dir, and ``<results_dir>/<sweep_name>/<config hash>.json``, where a rerun of the sweep
finds it and skips the job if its ``status`` is ``complete``.

The config hash is the SHA-256 (first 16 hex digits) of the resolved config without the keys in
:data:`IGNORED_KEYS` — those that name, place or display a run but do not change its result —
and without the keys of :data:`NEUTRAL_DEFAULTS` while they hold their listed value: keys added
after records existed, whose default reproduces what those records did, so an existing record
keeps its hash (and a rerun still skips it) when the config tree grows.

The record's fields, its writer (:meth:`~sphere_bench.schema.Record.to_dict`) and its reader
(:meth:`~sphere_bench.schema.Record.from_dict`) are defined in :mod:`sphere_bench.schema`;
:func:`build_record` fills one from a job. NaN and ±inf are stored as null (e.g. the IoU of a
class absent from a small test set).
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import logging
import re
import socket
import sys
import traceback
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from sphere_bench import system_info
from sphere_bench.io import atomic_write_text
from sphere_bench.models import count_parameters
from sphere_bench.schema import (
    DATA_FIELDS,
    SCHEMA_VERSION,
    STATUS_COMPLETE,
    STATUS_FAILED,
    DataInfo,
    ModelInfo,
    Record,
    json_safe,
    record_problem,
)

log = logging.getLogger(__name__)

__all__ = [
    "DATA_FIELDS",
    "IGNORED_KEYS",
    "NEUTRAL_DEFAULTS",
    "SCHEMA",
    "STATUS_COMPLETE",
    "STATUS_FAILED",
    "build_record",
    "config_hash",
    "hashed_config",
    "load_record",
    "record_problem",
    "safe_instantiate",
    "write_record",
]

SCHEMA = SCHEMA_VERSION

#: Dotted config keys left out of the config hash: names, places, display and logging only.
IGNORED_KEYS: tuple[str, ...] = (
    "logger",
    "results_dir",
    "task_name",
    "sweep_name",
    "run_name",
    "tags",
    "ckpt_path",
    "skip_finished",
    "strict",
    "threads",
    "heap_keep_mb",
    "data.root",
    "data.cache_dir",
    "data.download_root",
    "data.progress",
    "data.num_workers",
    "data.pin_memory",
    "trainer.default_root_dir",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "callbacks.model_summary",
    "callbacks.rich_progress_bar",
    "callbacks.prediction_images",
)

#: Dotted config keys added after records were written, with the value that reproduces the
#: earlier behaviour: left out of the hash while they hold it, hashed as soon as they differ.
#: Add a key here (never change a listed value) when a new config key must not invalidate records.
NEUTRAL_DEFAULTS: dict[str, Any] = {
    "data.nlat": 24,  # torch-harmonics grid size; unused by the soft, paper and HEALPix grids
    "callbacks.evaluation.spectral_lmax": 16,  # band limit of the cross-grid equivariance error
}

def hashed_config(config: Mapping[str, Any], ignored: Iterable[str] = IGNORED_KEYS) -> dict:
    """Copy of the resolved ``config`` without the ``ignored`` dotted keys and without the keys of
    :data:`NEUTRAL_DEFAULTS` that hold their neutral value."""
    out = copy.deepcopy(dict(config))
    drop = [(dotted, None) for dotted in ignored] + list(NEUTRAL_DEFAULTS.items())
    for dotted, neutral in drop:
        *parents, leaf = dotted.split(".")
        node: Any = out
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            continue
        if dotted in NEUTRAL_DEFAULTS and node[leaf] != neutral:
            continue
        node.pop(leaf)
    return out


def config_hash(config: Mapping[str, Any], ignored: Iterable[str] = IGNORED_KEYS) -> str:
    """First 16 hex digits of the SHA-256 of the canonical JSON of :func:`hashed_config`."""
    text = json.dumps(
        hashed_config(config, ignored), sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def error_info(err: BaseException) -> dict[str, str]:
    """``{type, message, traceback}`` of an exception."""
    return {
        "type": type(err).__name__,
        "message": str(err),
        "traceback": "".join(traceback.format_exception(type(err), err, err.__traceback__)),
    }


def device_name(trainer: Any | None) -> str:
    """GPU name when the trainer ran on CUDA, else the CPU's description."""
    device = getattr(getattr(trainer, "strategy", None), "root_device", None)
    return system_info.device_name(device if device is not None else "cpu")


def build_record(
    *,
    status: str,
    config: Mapping[str, Any],
    hash_: str,
    run_dir: Path | str,
    model_name: str,
    data_name: str,
    run_name: str | None = None,
    net: torch.nn.Module | None = None,
    lit: Any | None = None,
    trainer: Any | None = None,
    val_best: float | None = None,
    timing: Mapping[str, Any] | None = None,
    total_seconds: float | None = None,
    checkpoint: Mapping[str, Any] | None = None,
    error: BaseException | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The result record (see the module docstring); any argument after ``data_name`` may be
    missing when the job failed early. ``extra`` adds top-level entries (e.g. ``evaluation`` from
    callbacks with a ``record_entries()`` method)."""
    import pytorch_lightning as pl

    data_cfg = config.get("data", {}) or {}
    model_cfg = config.get("model", {}) or {}
    trainer_cfg = config.get("trainer", {}) or {}
    monitor = getattr(lit, "monitor", None)
    timing = dict(timing or {})
    timing["total_seconds"] = total_seconds
    record = Record(
        status=status,
        error=None if error is None else error_info(error),
        config_hash=hash_,
        sweep_name=config.get("sweep_name"),
        run_name=run_name,
        run_dir=str(run_dir),
        finished_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        seed=config.get("seed"),
        model=ModelInfo(
            name=model_name,
            target=model_cfg.get("_target_"),
            parameters=None if net is None else count_parameters(net),
        ),
        data=DataInfo(name=data_name, **{k: data_cfg.get(k) for k in DATA_FIELDS}),
        monitor=monitor,
        val_best=None if val_best is None else float(val_best),
        test=dict(getattr(lit, "test_results", {}) or {}),
        epochs_run=None if trainer is None else int(trainer.current_epoch),
        timing=timing,
        checkpoint=dict(checkpoint or {}),
        env={
            "device": device_name(trainer),
            "accelerator": trainer_cfg.get("accelerator"),
            "precision": trainer_cfg.get("precision"),
            "torch": torch.__version__,
            "pytorch_lightning": pl.__version__,
            "python": sys.version.split()[0],
            "threads": torch.get_num_threads(),
            "hostname": socket.gethostname(),
        },
        config=dict(config),
        extra=dict(extra or {}),
    )
    return record.to_dict()


def write_record(record: Mapping[str, Any], *paths: Path | str) -> None:
    """Write ``record`` as JSON to every path, each atomically."""
    text = json.dumps(json_safe(record), indent=1, allow_nan=False) + "\n"
    for path in paths:
        atomic_write_text(Path(path), text)


def load_record(path: Path | str) -> dict[str, Any] | None:
    """The record at ``path``; None if it is missing, unreadable or not shaped like a record
    (a warning names the file and says why; the job then runs again)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        log.warning("ignoring unreadable result record %s: %s", path, err)
        return None
    problem = record_problem(record, for_rerun=True)
    if problem is not None:
        log.warning("ignoring result record %s: %s", path, problem)
        return None
    return record


# ------------------------------------------------------------------------------------------------
# building objects from records: allowlisted sphere_bench classes only
# ------------------------------------------------------------------------------------------------
#: Packages whose classes a record may name, and the base class each must derive from.
ALLOWED_TARGETS: dict[str, tuple[str, ...]] = {
    "model": ("sphere_bench.models.",),
    "data": ("sphere_bench.data.",),
}


class UntrustedTargetError(ValueError):
    """A record names a ``_target_`` outside the allowlist (records are never run as code)."""


def _base_class(kind: str) -> type:
    if kind == "model":
        import torch

        return torch.nn.Module
    import pytorch_lightning as pl

    return pl.LightningDataModule


def _check_targets(node: Any, kind: str, where: str) -> None:
    """Every ``_target_`` in ``node`` is an allowlisted class of ``kind``; else raise."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "_target_":
                _check_target(value, kind, where)
            elif key in ("_partial_", "_args_", "_recursive_", "_convert_") and value not in (
                None, False, "none", [],
            ):  # fmt: skip
                raise UntrustedTargetError(f"{where}: '{key}' is not allowed in a record's config")
            else:
                _check_targets(value, kind, f"{where}.{key}")
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            _check_targets(value, kind, f"{where}[{i}]")


def _check_target(target: Any, kind: str, where: str) -> None:
    prefixes = ALLOWED_TARGETS[kind]
    if not isinstance(target, str) or not target.startswith(prefixes) or not re.fullmatch(
        r"[A-Za-z_][A-Za-z0-9_.]*", target
    ):
        raise UntrustedTargetError(
            f"{where}._target_={target!r} is not a sphere_bench {kind} class (allowed: "
            f"{', '.join(p + '*' for p in prefixes)}); a record is data and never runs other code"
        )
    from hydra.utils import get_class

    try:
        cls = get_class(target)
    except Exception as err:  # noqa: BLE001 - an unknown name inside an allowed package
        raise UntrustedTargetError(f"{where}._target_={target!r} is not a class: {err}") from None
    if not issubclass(cls, _base_class(kind)):
        raise UntrustedTargetError(
            f"{where}._target_={target!r} is not a {_base_class(kind).__name__}"
        )


def safe_instantiate(config: Mapping[str, Any], kind: str, source: str = "record") -> Any:
    """``hydra.utils.instantiate(config)`` after checking every ``_target_`` in it against
    :data:`ALLOWED_TARGETS` for ``kind`` (``model`` or ``data``).

    Raises:
        UntrustedTargetError: a target outside the allowlist or not a class of ``kind``; nothing
            is imported from outside sphere_bench and nothing is called.
    """
    if kind not in ALLOWED_TARGETS:
        raise ValueError(f"kind must be one of {', '.join(ALLOWED_TARGETS)}, got {kind!r}")
    if not isinstance(config, Mapping) or "_target_" not in config:
        raise UntrustedTargetError(f"{source}: the {kind} config has no _target_")
    _check_targets(config, kind, f"{source}: {kind}")
    from hydra.utils import instantiate

    return instantiate(dict(config))

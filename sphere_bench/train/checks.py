"""Checks of a training job before any work starts: every user-settable value, and the pairing of
its model with its data.

:func:`check_values` collects every problem of a composed config (``conf/config.yaml``) and raises
one :class:`ConfigValueError` listing each bad key with its value, the allowed range and the fix.
Values whose meaning is the library's (Lightning's trainer flags) are checked against what gives a
meaningful benchmark job: a job must train at least one batch of one epoch and test at least one
batch, otherwise it would write a ``complete`` record of an untrained network.

**The model–data contract.** Every model class states what it needs of its data the same way, as
attributes (class attributes, or constructor arguments stored under these names):

* ``task``: ``classification`` or ``segmentation`` (:data:`sphere_bench.schema.TASKS`);
* ``grid``: the data grid it takes (``healpix_nested``, ``equiangular``, ``legendre-gauss``), or
  ``None`` for the models on ``2B × 2B`` arrays (S2CNNs, planar CNNs), which take the ``soft`` or
  the ``paper`` grid;
* its resolution under the grid's key (:data:`sphere_bench.harmonic.grids.RESOLUTION_KEY`):
  ``bandwidth`` (soft/paper), ``nside`` (HEALPix) or ``nlat`` (torch-harmonics grids).

:func:`model_needs` reads them from a model config (before anything is built: the config's keys,
else the ``_target_`` class's attributes) or from a built net; :func:`data_offers` reads the same
from a data config or a datamodule; :func:`check_pairing` is the one check, called on the configs
before anything is built (:func:`check_config`), on the built net and datamodule, and by the
LightningModule on its net and task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig

from sphere_bench.data.planar_source import SPLIT_SIZES
from sphere_bench.harmonic.grids import RESOLUTION_KEY
from sphere_bench.runtime import DEFAULT_KEEP_MB, MAX_KEEP_MB
from sphere_bench.schema import SEGMENTATION

#: The config tree (``conf/``) the training entry point composes.
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

#: Official training images (the validation pool is the last ``val_fraction`` of them).
NUM_SOURCE_TRAIN = SPLIT_SIZES["train"]


_UNRESOLVED = object()


class ConfigValueError(ValueError):
    """One or more config values are out of range; the message lists each with its fix."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _batches_ok(value: Any, allow_zero: bool) -> bool:
    """Lightning's ``limit_*_batches``: None, an int >= 1 (batches) or a float in (0, 1]."""
    if value is None:
        return True
    if _is_int(value):
        return value >= 1 or (allow_zero and value == 0)
    if _is_number(value):
        return 0.0 < value <= 1.0 or (allow_zero and value == 0.0)
    return False


def check_values(cfg: DictConfig) -> None:
    """Raise :class:`ConfigValueError` listing every out-of-range value of ``cfg``.

    Checked: ``trainer.{max_epochs, min_epochs, limit_train_batches, limit_val_batches,
    limit_test_batches, fast_dev_run}``, ``data.{n_train, n_val, n_test, batch_size, bandwidth,
    val_fraction}`` (``n_test`` and ``n_val`` at most the images of their pool, so no test or
    validation image is silently repeated), ``lit.{lr, weight_decay}``,
    ``callbacks.early_stopping.patience``, ``seed``, ``threads`` and ``heap_keep_mb``.
    """
    problems: list[str] = []

    def need(ok: bool, key: str, value: Any, allowed: str, fix: str) -> None:
        if value is _UNRESOLVED:
            return
        if not ok:
            problems.append(f"{key}={value!r}: allowed {allowed}; fix: {fix}")

    def get(node: Any, key: str, default: Any = None) -> Any:
        if not isinstance(node, DictConfig | dict):
            return default
        try:
            return node.get(key, default)
        except Exception:  # noqa: BLE001 - e.g. ${hydra:...} outside a Hydra app: checked later
            return _UNRESOLVED

    trainer, data, lit = cfg.get("trainer"), cfg.get("data"), cfg.get("lit")
    callbacks = cfg.get("callbacks")

    max_epochs = get(trainer, "max_epochs")
    need(
        max_epochs is None or (_is_int(max_epochs) and (max_epochs >= 1 or max_epochs == -1)),
        "trainer.max_epochs", max_epochs, "an integer >= 1 (or -1: until early stopping)",
        "e.g. trainer.max_epochs=10",
    )  # fmt: skip
    min_epochs = get(trainer, "min_epochs")
    need(
        min_epochs is None or (_is_int(min_epochs) and min_epochs >= 0
                               and (not _is_int(max_epochs) or max_epochs == -1
                                    or min_epochs <= max_epochs)),
        "trainer.min_epochs", min_epochs, "an integer from 0 to trainer.max_epochs",
        f"e.g. trainer.min_epochs=1 (trainer.max_epochs is {max_epochs})",
    )  # fmt: skip
    for key, allow_zero, fix in (
        ("limit_train_batches", False, "null (all), a count >= 1 or a fraction in (0, 1]"),
        ("limit_val_batches", True, "null, 0 (no validation), a count or a fraction in (0, 1]"),
        ("limit_test_batches", False, "null (all), a count >= 1 or a fraction in (0, 1]"),
    ):
        value = get(trainer, key)
        if key == "limit_test_batches" and cfg.get("test", True) is False:
            continue
        need(_batches_ok(value, allow_zero), f"trainer.{key}", value,
             "a count >= 1 or a fraction in (0, 1]" + (" or 0" if allow_zero else ""),
             f"trainer.{key}=null ({fix})")  # fmt: skip
    fast_dev_run = get(trainer, "fast_dev_run", False)
    need(
        isinstance(fast_dev_run, bool) or (_is_int(fast_dev_run) and fast_dev_run >= 0),
        "trainer.fast_dev_run", fast_dev_run, "true, false or a batch count >= 0",
        "trainer.fast_dev_run=false",
    )  # fmt: skip

    if isinstance(data, DictConfig | dict):
        n_items = get(data, "n_items", 1) or 1
        for key in ("n_train", "batch_size"):
            value = get(data, key)
            if value is not None or key == "batch_size":
                need(_is_int(value) and value >= 1, f"data.{key}", value, "an integer >= 1",
                     f"e.g. data.{key}=32")  # fmt: skip
        n_test = get(data, "n_test")
        test_pool = SPLIT_SIZES["test"]
        need(
            _is_int(n_test) and n_test >= 1 and (n_items != 1 or n_test <= test_pool),
            "data.n_test", n_test,
            f"1 to {test_pool:,} (the official test set; more would repeat test images)",
            f"data.n_test={test_pool}",
        )  # fmt: skip
        val_fraction = get(data, "val_fraction", 0.1)
        need(
            _is_number(val_fraction) and 0.0 <= val_fraction < 1.0,
            "data.val_fraction", val_fraction, "a fraction in [0, 1)", "data.val_fraction=0.1",
        )  # fmt: skip
        n_val = get(data, "n_val")
        if _is_number(val_fraction) and 0.0 <= val_fraction < 1.0:
            pool = round(val_fraction * NUM_SOURCE_TRAIN)
            need(
                n_val is None or (_is_int(n_val) and n_val >= 0
                                  and (n_items != 1 or n_val <= pool)),
                "data.n_val", n_val,
                f"null, or 0 to {pool:,} (the validation pool, data.val_fraction={val_fraction}"
                " of the 60,000 training images; more would repeat validation images)",
                f"data.n_val={min(pool, 1000)} or a larger data.val_fraction"
                if pool else "data.n_val=0, or data.val_fraction=0.1 for a validation pool",
            )  # fmt: skip
        bandwidth = get(data, "bandwidth")
        if get(data, "grid", "soft") != "healpix":
            need(_is_int(bandwidth) and bandwidth >= 1, "data.bandwidth", bandwidth,
                 "an integer >= 1", "e.g. data.bandwidth=16")  # fmt: skip

    if isinstance(lit, DictConfig | dict):
        lr = get(lit, "lr")
        need(lr is None or (_is_number(lr) and lr > 0), "lit.lr", lr, "a number > 0",
             "e.g. lit.lr=1e-3")  # fmt: skip
        wd = get(lit, "weight_decay", 0.0)
        need(wd is None or (_is_number(wd) and wd >= 0), "lit.weight_decay", wd,
             "a number >= 0", "lit.weight_decay=0")  # fmt: skip

    early = get(callbacks, "early_stopping")
    if isinstance(early, DictConfig | dict):
        patience = get(early, "patience")
        need(_is_int(patience) and patience >= 0, "callbacks.early_stopping.patience",
             patience, "an integer >= 0 (epochs)", "e.g. callbacks.early_stopping.patience=10")

    seed = cfg.get("seed")
    need(_is_int(seed) and seed >= 0, "seed", seed, "an integer >= 0", "e.g. seed=0")
    threads = cfg.get("threads")
    need(threads is None or (_is_int(threads) and threads >= 1), "threads", threads,
         "null or an integer >= 1", "threads=1")  # fmt: skip
    keep = cfg.get("heap_keep_mb")
    need(keep is None or (_is_int(keep) and 0 <= keep <= MAX_KEEP_MB), "heap_keep_mb", keep,
         f"null or an integer in [0, {MAX_KEEP_MB}] (MiB)",
         f"heap_keep_mb={DEFAULT_KEEP_MB} (0: glibc's defaults)")

    if problems:
        raise ConfigValueError(
            "bad config value(s), nothing was run:\n  - " + "\n  - ".join(problems)
        )


# ------------------------------------------------------------------------------------------------
# the model–data contract
# ------------------------------------------------------------------------------------------------
#: Grids on ``2B × 2B`` arrays, resolution ``bandwidth``: the grids of models with ``grid=None``.
BANDWIDTH_GRIDS = ("soft", "paper")


@dataclass(frozen=True)
class Needs:
    """What a model needs of its data, or what data offers (module docstring).

    Attributes:
        task: ``classification`` / ``segmentation``; None where not stated (then not checked).
        grid: model side: the grid it needs, None for a ``2B × 2B`` grid (soft or paper). Data
            side: the data's grid, None where it is not known (then only the task is checked).
        resolution: ``bandwidth``, ``nside`` or ``nlat``, under the grid's
            :data:`~sphere_bench.harmonic.grids.RESOLUTION_KEY`; None where not stated.
    """

    task: str | None = None
    grid: str | None = None
    resolution: int | None = None


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def model_needs(model: Any) -> Needs:
    """:class:`Needs` of a model config node (its keys, else its ``_target_`` class's attributes)
    or of a built net (its attributes)."""
    if isinstance(model, DictConfig | dict):
        cls: Any = None
        if "_target_" in model:
            try:
                cls = get_class(model["_target_"])
            except Exception:  # noqa: BLE001 - an unimportable target: instantiate() reports it
                cls = None

        def get(key: str) -> Any:
            value = model.get(key)
            return getattr(cls, key, None) if value is None else value
    else:

        def get(key: str) -> Any:
            return getattr(model, key, None)

    task, grid = get("task"), get("grid")
    task = task if isinstance(task, str) else None
    if not (isinstance(grid, str) and grid in RESOLUTION_KEY and grid not in BANDWIDTH_GRIDS):
        return Needs(task, None, _int_or_none(get("bandwidth")))
    return Needs(task, grid, _int_or_none(get(RESOLUTION_KEY[grid])))


def data_offers(data: Any) -> Needs:
    """:class:`Needs` met by a data config node or a datamodule (its ``task`` and ``grid``)."""
    if isinstance(data, DictConfig | dict):
        grid = str(data.get("grid", "soft"))
        return Needs(
            data.get("task"), grid, _int_or_none(data.get(RESOLUTION_KEY.get(grid, "bandwidth")))
        )
    return Needs(data.task, data.grid.name, int(data.grid.resolution))


def _models_for(task: str) -> list[str]:
    """Model config names in ``conf/model`` for ``task`` (by the ``_seg``/``_cls`` naming)."""
    tag = "_seg" if task == SEGMENTATION else "_cls"
    return sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml") if tag in p.stem)


def check_pairing(
    model: Needs, data: Needs, model_name: str, data_name: str | None = None
) -> None:
    """One clear :class:`ValueError` if the model does not fit the data: task, grid, resolution.

    Args:
        model: :func:`model_needs` of the model.
        data: :func:`data_offers` of the data.
        model_name, data_name: the config names (``model=…``, ``data=…``) the message names;
            ``data_name`` None when the data is known only by its task.
    """
    data_ref = "the data" if data_name is None else f"data={data_name}"
    if model.task is not None and data.task is not None and model.task != data.task:
        other_data = "mnist_seg" if model.task == SEGMENTATION else "mnist_cls"
        raise ValueError(
            f"model={model_name} is a {model.task} model but {data_ref} is {data.task} "
            f"data. Pick a {data.task} model ({', '.join(_models_for(data.task))}) or "
            f"{model.task} data (e.g. data={other_data})."
        )
    if data.grid is None:  # only the task is known
        return
    have = f"data.{RESOLUTION_KEY.get(data.grid, 'bandwidth')}={data.resolution}"
    if model.grid is not None:
        key = RESOLUTION_KEY[model.grid]
        if data.grid != model.grid or (
            model.resolution is not None and data.resolution != model.resolution
        ):
            raise ValueError(
                f"grid mismatch: model={model_name} needs data on the {model.grid} grid with "
                f"{key}={model.resolution}, but {data_ref} is on data.grid={data.grid} "
                f"({have}). Set data.grid={model.grid} data.{key}={model.resolution}."
            )
        return
    if model.resolution is None:
        return
    if data.grid not in BANDWIDTH_GRIDS:
        raise ValueError(
            f"{data_ref} is on data.grid={data.grid}, a grid without a bandwidth, but "
            f"model={model_name} expects 2B x 2B inputs with B={model.resolution}; use "
            "data.grid=soft or data.grid=paper."
        )
    if data.resolution != model.resolution:
        raise ValueError(
            f"bandwidth mismatch: {data_ref} has data.bandwidth={data.resolution} but "
            f"model={model_name} is built for model.bandwidth={model.resolution}. Set both to "
            f"the same value, e.g. data.bandwidth={model.resolution} "
            f"(or model.bandwidth={data.resolution})."
        )


def check_config(cfg: DictConfig, model_name: str, data_name: str) -> None:
    """:func:`check_pairing` of ``cfg.model`` and ``cfg.data``, before anything is built."""
    check_pairing(model_needs(cfg.model), data_offers(cfg.data), model_name, data_name)

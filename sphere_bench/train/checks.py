"""Checks of every user-settable value of a training job, before any work starts.

:func:`check_values` collects every problem of a composed config (``conf/config.yaml``) and raises
one :class:`ConfigValueError` listing each bad key with its value, the allowed range and the fix.
Values whose meaning is the library's (Lightning's trainer flags) are checked against what gives a
meaningful benchmark job: a job must train at least one batch of one epoch and test at least one
batch, otherwise it would write a ``complete`` record of an untrained network.
"""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig

from sphere_bench.data.planar_source import SPLIT_SIZES

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
    ``callbacks.early_stopping.patience``, ``seed`` and ``threads``.
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

    if problems:
        raise ConfigValueError(
            "bad config value(s), nothing was run:\n  - " + "\n  - ".join(problems)
        )

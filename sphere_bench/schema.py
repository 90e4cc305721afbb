"""The project's vocabulary and the schema of the result record, in one place.

Every package reads its words from here: the tasks and their metrics, the rotation modes of a
split, the test sets and the suffix a test set takes in metric names and records, and the shape of
the result record that training writes (:mod:`sphere_bench.train.record`) and the report reads
(:mod:`sphere_bench.report.records`). It imports nothing from sphere_bench, so data, models,
training, evaluation and the report all stand on it.

**Vocabulary.**

* Tasks (:data:`TASKS`): ``classification`` (one class 0–9 per sphere) and ``segmentation`` (one
  class per grid point, 0 = background). The metric a task is ranked by (:data:`MAIN_METRIC`):
  ``acc`` and ``miou`` (mean IoU over the non-background classes); all metric names of a task:
  :func:`metric_names`.
* Rotations of a split (:data:`ROTATIONS`): ``none`` (the NR sets of the paper) and ``random``
  (Haar-random, the R sets). A test set is named by its rotation's suffix
  (:data:`TEST_SET_OF_ROTATION`: ``nr``, ``r``); metrics are logged as ``test_<suffix>/<metric>``
  and stored in the record under ``test.<suffix>.<metric>``.

**The record** (:class:`Record`, ``schema`` :data:`SCHEMA_VERSION`): one JSON object per training
job. :meth:`Record.to_dict` is the one writer (JSON-safe: tensors become numbers or lists, paths
strings, NaN and ±inf null), :meth:`Record.from_dict` the one reader; a field is added by adding
it to the dataclass (and, for the report, to the row it flattens into). Readers are lenient with
records written before a field existed: a missing field reads as its default. Fields:

``status`` (``complete`` | ``failed``), ``error`` (``{type, message, traceback}`` or None),
``config_hash``, ``sweep_name``, ``run_name``, ``run_dir``, ``finished_at``, ``seed``,
``model`` (:class:`ModelInfo`), ``data`` (:class:`DataInfo`), ``monitor``, ``val_best``, ``test``
(per test set, e.g. ``nr``/``r``: ``acc`` or ``miou``, ``miou_all``, ``pixel_acc``, ``iou_0`` …
and ``loss``), ``epochs_run``, ``timing`` (``total_seconds``, ``train_seconds``,
``epoch_seconds``, ``mean_epoch_seconds``, ``best_epoch``, ``seconds_to_best_epoch``),
``checkpoint`` (``dir``, ``best``, ``last``, ``resumed_from``), ``env`` (``device``,
``accelerator``, ``precision``, ``torch``, ``pytorch_lightning``, ``python``, ``threads``,
``hostname``), ``config`` (the resolved config), and whatever callbacks add through
``record_entries()`` (kept in :attr:`Record.extra`): ``evaluation`` (``latency`` list of
``{batch_size, mode, median_ms, p10_ms, p90_ms, images_per_s, repeats, peak_memory_mb,
baseline_memory_mb, memory_kind}``, ``equivariance`` ``{grid_rel_error, grid_changed_fraction,
haar_rel_error, haar_changed_fraction, n_samples, test_set, …}``, ``train_peak_memory_mb``,
``device``; see :mod:`sphere_bench.evaluate.callback`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

# ------------------------------------------------------------------------------------------------
# vocabulary
# ------------------------------------------------------------------------------------------------
CLASSIFICATION = "classification"
SEGMENTATION = "segmentation"
TASKS: tuple[str, ...] = (CLASSIFICATION, SEGMENTATION)

#: The metric each task is ranked, early-stopped and reported by.
MAIN_METRIC: dict[str, str] = {CLASSIFICATION: "acc", SEGMENTATION: "miou"}

#: Rotation modes of a split: unrotated (NR) or Haar-random (R).
ROTATIONS: tuple[str, ...] = ("none", "random")
#: The name (metric and record suffix) of the test set of each rotation mode.
TEST_SET_OF_ROTATION: dict[str, str] = {"none": "nr", "random": "r"}
#: The rotation mode of each test set.
ROTATION_OF_TEST_SET: dict[str, str] = {v: k for k, v in TEST_SET_OF_ROTATION.items()}
#: Test set names, in the order they are built, logged and reported.
TEST_SETS: tuple[str, ...] = tuple(TEST_SET_OF_ROTATION.values())
#: Short label of a rotation mode (``train NR`` / ``train R`` in the report).
ROTATION_LABEL: dict[str, str] = {"none": "NR", "random": "R"}


def check_task(task: Any) -> str:
    """``task`` if it is one of :data:`TASKS`, else a :class:`ValueError` naming it."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
    return task


def metric_names(task: str, num_classes: int) -> tuple[str, ...]:
    """Every metric computed for ``task`` on one set (besides ``loss``): ``("acc",)`` for
    classification; ``miou``, ``miou_all``, ``pixel_acc``, ``iou_0`` … ``iou_{C−1}`` for
    segmentation (see :func:`sphere_bench.train.metrics.metrics_from_confmat`)."""
    if check_task(task) == CLASSIFICATION:
        return ("acc",)
    return ("miou", "miou_all", "pixel_acc", *(f"iou_{c}" for c in range(num_classes)))


# ------------------------------------------------------------------------------------------------
# the result record
# ------------------------------------------------------------------------------------------------
SCHEMA_VERSION = 1
STATUS_COMPLETE = "complete"
STATUS_FAILED = "failed"
STATUSES: tuple[str, ...] = (STATUS_COMPLETE, STATUS_FAILED)


class RecordError(ValueError):
    """Parsed JSON that is not a result record; the message says why."""


def json_safe(value: Any) -> Any:
    """JSON-safe copy: tensors → numbers/lists, mappings → dicts with str keys, tuples → lists,
    NaN/±inf → None, numpy scalars → Python numbers, anything else → ``str``."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if hasattr(value, "detach") and hasattr(value, "tolist"):  # a torch tensor
        return json_safe(value.detach().cpu().tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bool | int | str) or value is None:
        return value
    if hasattr(value, "item"):  # numpy scalars
        return json_safe(value.item())
    return str(value)


def _from_mapping(cls: type, node: Mapping[str, Any]) -> Any:
    """``cls(**node)`` over the dataclass fields of ``cls``; other keys are kept in ``extra``."""
    names = {f.name for f in dataclasses.fields(cls)}
    known = {k: v for k, v in node.items() if k in names and k != "extra"}
    extra = {k: v for k, v in node.items() if k not in names or k == "extra"}
    return cls(**known, extra=extra)


def _to_mapping(obj: Any) -> dict[str, Any]:
    """The dataclass fields of ``obj`` in declaration order, then its ``extra`` entries."""
    out = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.name != "extra"}
    out.update(obj.extra)
    return out


@dataclass
class ModelInfo:
    """``record["model"]``: the model config's name, its ``_target_`` and its parameter count."""

    name: str | None = None
    target: str | None = None
    parameters: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataInfo:
    """``record["data"]``: the data config's name and the data keys that define a setting.

    Every field but ``name`` is copied from the resolved ``data`` config (:data:`DATA_FIELDS`).
    """

    name: str | None = None
    task: str | None = None
    dataset: str | None = None
    grid: str | None = None
    bandwidth: int | None = None
    nside: int | None = None
    nlat: int | None = None
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    rotate_train: str | None = None
    rotate_test: Any = None
    augmentation: str | None = None
    interpolation: str | None = None
    n_items: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


#: The ``data`` config keys copied into ``record["data"]``.
DATA_FIELDS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(DataInfo) if f.name not in ("name", "extra")
)


@dataclass
class Record:
    """One training job's result record (module docstring); field order is the JSON key order."""

    status: str
    schema: int = SCHEMA_VERSION
    error: dict[str, str] | None = None
    config_hash: str | None = None
    sweep_name: str | None = None
    run_name: str | None = None
    run_dir: str | None = None
    finished_at: str | None = None
    seed: int | None = None
    model: ModelInfo = field(default_factory=ModelInfo)
    data: DataInfo = field(default_factory=DataInfo)
    monitor: str | None = None
    val_best: float | None = None
    test: dict[str, dict[str, float | None]] = field(default_factory=dict)
    epochs_run: int | None = None
    timing: dict[str, Any] = field(default_factory=dict)
    checkpoint: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    #: Entries added by callbacks (``evaluation``) and any other top-level key.
    extra: dict[str, Any] = field(default_factory=dict)

    #: Top-level entries with the JSON type each must have when present and not null.
    SHAPE: ClassVar[dict[str, type | tuple[type, ...]]] = {
        "status": str,
        "model": dict,
        "data": dict,
        "test": dict,
        "timing": dict,
        "config": dict,
        "checkpoint": dict,
        "evaluation": dict,
        "env": dict,
        "error": (dict, type(None)),
    }

    @property
    def evaluation(self) -> dict[str, Any]:
        """The evaluation callback's entry (``{}`` when the job ran none)."""
        return self.extra.get("evaluation") or {}

    def test_metric(self, test_set: str, metric: str) -> Any:
        """``test.<test_set>.<metric>``, or None."""
        return (self.test.get(test_set) or {}).get(metric)

    def to_dict(self) -> dict[str, Any]:
        """The record as written to disk: JSON-safe, keys in field order, ``extra`` last."""
        out = _to_mapping(self)
        out["model"] = _to_mapping(self.model)
        out["data"] = _to_mapping(self.data)
        schema = out.pop("schema")
        return json_safe({"schema": schema, **out})

    @classmethod
    def from_dict(cls, obj: Any) -> Record:
        """The record in parsed JSON ``obj``.

        Raises:
            RecordError: ``obj`` is not shaped like a record (:func:`record_problem` says why).
        """
        problem = record_problem(obj)
        if problem is not None:
            raise RecordError(problem)
        node = {k: v for k, v in obj.items() if v is not None or k not in _DICT_FIELDS}
        record = _from_mapping(cls, node)
        record.model = _from_mapping(ModelInfo, obj.get("model") or {})
        record.data = _from_mapping(DataInfo, obj.get("data") or {})
        return record


_DICT_FIELDS = ("model", "data", "test", "timing", "checkpoint", "env", "config")


def record_problem(obj: Any, *, for_rerun: bool = False) -> str | None:
    """Why parsed JSON ``obj`` is not a result record, or None.

    Every reader needs a dict with a ``status`` whose entries have the types of
    :attr:`Record.SHAPE` and, when complete, ``model`` (with a ``name``), ``data`` and a dict of
    metrics per test set. With ``for_rerun`` (may a rerun skip this job?) the record must also be
    ``complete`` or ``failed`` and carry ``config``, ``model``, ``data``, ``test`` and its
    ``config_hash``.
    """
    if not isinstance(obj, dict):
        return f"not a result record (a JSON {type(obj).__name__})"
    if "status" not in obj:
        return "not a result record (no 'status')"
    for key, kind in Record.SHAPE.items():
        if key in obj and obj[key] is not None and not isinstance(obj[key], kind):
            wanted = getattr(kind, "__name__", None) or "/".join(k.__name__ for k in kind)
            return f"'{key}' is a {type(obj[key]).__name__}, not a {wanted}"
    if obj["status"] == STATUS_COMPLETE:
        for key in ("model", "data"):
            if not isinstance(obj.get(key), dict):
                return f"a complete record without '{key}'"
        if not isinstance(obj["model"].get("name"), str):
            return "'model.name' is missing"
        for name, metrics in (obj.get("test") or {}).items():
            if not isinstance(metrics, dict):
                return f"'test.{name}' is a {type(metrics).__name__}, not a dict of metrics"
    if for_rerun:
        if obj.get("status") not in STATUSES:
            return f"status {obj.get('status')!r} is neither {STATUS_COMPLETE} nor {STATUS_FAILED}"
        for key in ("config", "model", "data", "test"):
            if not isinstance(obj.get(key), dict):
                return f"'{key}' is a {type(obj.get(key)).__name__}, not a dict"
        if not isinstance(obj.get("config_hash"), str):
            return "no 'config_hash'"
    return None

"""The vocabulary and record schema: one writer, one reader, and every package using them.

A record built by the training side's writer goes to disk and comes back through the report's
reader unchanged; every committed record reads; the words the data, metrics and Lightning module
produce are the schema's.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from sphere_bench import schema
from sphere_bench.report.records import flatten, load_runs
from sphere_bench.schema import DATA_FIELDS, Record, RecordError
from sphere_bench.train.metrics import metrics_from_confmat
from sphere_bench.train.record import build_record, load_record, write_record

REPO_ROOT = Path(__file__).resolve().parents[1]
COMMITTED = sorted(
    [*(REPO_ROOT / "results" / "records").rglob("*.json"),
     *(REPO_ROOT / "results" / "equivariance" / "records").glob("*.json")]
)  # fmt: skip


class _Lit:
    monitor = "val/miou"
    test_results = {  # noqa: RUF012 - a stand-in for the LightningModule's attribute
        "nr": {"miou": 0.5, "miou_all": 0.625, "pixel_acc": 0.9, "iou_3": float("nan"),
               "loss": torch.tensor(0.25)},
        "r": {"miou": 0.25, "miou_all": 0.3, "pixel_acc": 0.8, "loss": 1.5},
    }  # fmt: skip


class _Trainer:
    current_epoch = 7


def _written_record(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    config = {
        "sweep_name": "s", "seed": 3, "model": {"_target_": "sphere_bench.models.X", "w": 2},
        "data": {"task": "segmentation", "dataset": "mnist", "grid": "soft", "bandwidth": 16,
                 "n_train": 100, "rotate_train": "random", "rotate_test": ["none", "random"],
                 "n_items": 1, "root": "/somewhere"},
        "trainer": {"accelerator": "cpu", "precision": 32, "max_epochs": 9},
    }  # fmt: skip
    record = build_record(
        status="complete", config=config, hash_="0123456789abcdef", run_dir=tmp_path,
        model_name="m_seg", data_name="mnist_seg", run_name="m-n100",
        net=torch.nn.Linear(3, 2), lit=_Lit(), trainer=_Trainer(), val_best=torch.tensor(0.5),
        timing={"train_seconds": 12.0, "mean_epoch_seconds": 1.5}, total_seconds=13.0,
        checkpoint={"best": "b.ckpt"},
        extra={"evaluation": {"equivariance": {"haar_rel_error": 0.125}}},
    )  # fmt: skip
    path = tmp_path / "s" / "0123456789abcdef.json"
    write_record(record, path)
    return record, path


def test_record_round_trips_through_the_writer_and_the_reader(tmp_path: Path) -> None:
    written, path = _written_record(tmp_path)
    on_disk = json.loads(path.read_text())
    assert on_disk == written and list(on_disk) == list(written)
    # the reader gives typed fields, and the writer gives back the same JSON
    record = Record.from_dict(on_disk)
    assert record.to_dict() == on_disk and list(record.to_dict()) == list(on_disk)
    assert record.schema == schema.SCHEMA_VERSION and record.status == schema.STATUS_COMPLETE
    assert record.model.name == "m_seg" and record.model.parameters == 3 * 2 + 2
    assert record.data.name == "mnist_seg" and record.data.bandwidth == 16
    assert record.data.nside is None and "root" not in record.data.extra  # only DATA_FIELDS
    assert record.test_metric("nr", "iou_3") is None  # NaN is stored as null
    assert record.test_metric("nr", "loss") == 0.25 and record.val_best == 0.5
    assert record.epochs_run == 7 and record.timing["total_seconds"] == 13.0
    assert record.evaluation == {"equivariance": {"haar_rel_error": 0.125}}
    assert list(on_disk)[0] == "schema" and list(on_disk)[-1] == "evaluation"
    assert set(on_disk["data"]) == {"name", *DATA_FIELDS}
    # the training side finds it complete; the report reads it into its row
    assert load_record(path) == on_disk
    runs = load_runs(tmp_path)
    assert [r["config_hash"] for r in runs.complete] == ["0123456789abcdef"]
    row = flatten(runs.complete[0])
    assert (row["test_nr"], row["test_r"], row["drop"]) == (50.0, 25.0, 25.0)
    assert row["test_nr_miou_all"] == 62.5 and row["eq_haar"] == 0.125
    assert row["n_train"] == 100 and row["max_epochs"] == 9 and row["parameters"] == 8.0
    assert math.isnan(row["lat_b1_ms"])


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_committed_record_reads(path: Path) -> None:
    """Each record reads; writing it back adds only the fields it predates (as null)."""
    original = json.loads(path.read_text())
    again = Record.from_dict(original).to_dict()
    for section in (again, again["model"], again["data"]):
        ref = original if section is again else original[next(
            k for k in ("model", "data") if again[k] is section)]  # fmt: skip
        for key in [k for k in section if k not in ref]:
            assert section.pop(key) is None, (path, key)
    assert again == original


@pytest.mark.parametrize(
    ("obj", "problem"),
    [
        ([1, 2], "a JSON list"),
        ({"model": {}}, "no 'status'"),
        ({"status": "complete", "model": {"name": "m"}, "data": {}, "test": [0.5]}, "'test' is a"),
        ({"status": "complete", "model": {}, "data": {}}, "'model.name' is missing"),
        ({"status": "complete", "model": {"name": "m"}, "data": {}, "test": {"nr": 1}},
         "'test.nr' is a int"),
    ],
)  # fmt: skip
def test_reader_names_what_is_wrong(obj: Any, problem: str) -> None:
    with pytest.raises(RecordError, match=problem):
        Record.from_dict(obj)


def test_a_rerun_trusts_only_complete_or_failed_records_with_a_hash() -> None:
    base = {"status": "complete", "model": {"name": "m"}, "data": {}, "test": {}, "config": {}}
    assert schema.record_problem(base) is None
    assert schema.record_problem(base, for_rerun=True) == "no 'config_hash'"
    busy = {**base, "status": "busy", "config_hash": "x"}
    assert "neither complete nor failed" in schema.record_problem(busy, for_rerun=True)


def test_packages_speak_the_schema_vocabulary() -> None:
    from sphere_bench.data.datamodule import SphericalDataModule

    dm = SphericalDataModule(task="segmentation", bandwidth=4, n_train=1, n_val=0, n_test=1,
                             rotate_test=["none", "random"])  # fmt: skip
    assert tuple(dm.test_set_names) == schema.TEST_SETS
    for task, classes in (("classification", 10), ("segmentation", 11)):
        confmat = torch.eye(classes) * 3 + 1
        assert tuple(metrics_from_confmat(confmat, task)) == schema.metric_names(task, classes)
        assert schema.metric_names(task, classes)[0] == schema.MAIN_METRIC[task]
    with pytest.raises(ValueError, match=r"task must be one of .*got 'detection'"):
        schema.check_task("detection")

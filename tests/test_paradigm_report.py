"""The paradigms report on hand-made records: grouping, the per-parameter / per-ms answer, files."""

from __future__ import annotations

import json
from pathlib import Path

from sphere_bench.report.paradigms import PARADIGMS, build, paradigm

# model, params, R-test accuracy, batch-1 latency (ms)
MODELS = [
    ("s2cnn_cls_small", 154_550, 0.60, 20.0),
    ("disco_cls_quick", 154_602, 0.50, 5.0),
    ("hpgcnn_cls_quick", 142_570, 0.40, 1.0),
    ("cnn_cls_quick_115k", 115_720, 0.30, 0.5),
]


def _record(model: str, params: int, r: float, latency: float, rotate: str) -> dict:
    return {
        "schema": 1, "status": "complete", "error": None, "config_hash": f"{model}-{rotate}",
        "sweep_name": "quick_paradigms_cls", "run_name": f"{model}-{rotate}", "seed": 0,
        "model": {"name": model, "target": "x", "parameters": params},
        "data": {"task": "classification", "dataset": "mnist", "grid": "soft", "bandwidth": 16,
                 "n_train": 2000, "rotate_train": rotate, "n_items": 1},
        "test": {"nr": {"acc": 0.9}, "r": {"acc": r if rotate == "random" else r / 2}},
        "timing": {"train_seconds": 10.0},
        "evaluation": {
            "latency": [{"batch_size": b, "median_ms": latency * b, "images_per_s": 1.0}
                        for b in (1, 32)],
            "equivariance": {"haar_rel_error": 0.1, "spectral_floor": 0.01, "grid_rel_error": 0.0},
        },
        "env": {}, "config": {},
    }  # fmt: skip


def test_paradigm_names() -> None:
    names = [paradigm(m) for m, *_ in MODELS]
    assert names == list(PARADIGMS)


def test_report_groups_by_paradigm_and_answers(tmp_path: Path) -> None:
    folder = tmp_path / "runs" / "quick_paradigms_cls"
    folder.mkdir(parents=True)
    for i, (model, params, r, latency) in enumerate(MODELS):
        for rotate in ("none", "random"):
            record = _record(model, params, r, latency, rotate)
            (folder / f"{i}{rotate}.json").write_text(json.dumps(record))
    report = build(tmp_path / "runs", tmp_path / "out", ["quick_paradigms_cls"])
    text = report.read_text()
    assert report.name == "report_paradigms.md" and not (tmp_path / "out" / "report.md").exists()
    # best R test: the S2CNN; per 100k parameters: S2CNN 60/1.5455 = 38.8; per ms: the CNN 30/0.5
    assert "Best rotated-test accuracy: **exact SO(3)** (s2cnn_cls_small, trained on R)" in text
    assert "per 100k parameters: **exact SO(3)** (60.0 % → 38.8" in text
    assert "per ms of batch-1 forward latency: **planar CNN** (30.0 % → 60.0; next HEALPix" in text
    table = (tmp_path / "out" / "tables" / "paradigms_classification.md").read_text()
    rows = [line.split(" | ")[0].strip("| ") for line in table.splitlines()[2:]]
    assert rows == [p for p in PARADIGMS for _ in range(2)]  # grouped in paradigm order
    for kind in ("n", "params", "latency"):
        assert (tmp_path / "out" / "figures" / f"paradigms_classification_vs_{kind}.png").is_file()

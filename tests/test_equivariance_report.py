"""quick_equivariance report: training cost in network passes, the cheapest-route table and the
soft-equivariance-at-equal-cost summary, on hand-made records."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
_SCRIPT = REPO / "scripts" / "equivariance_report.py"
_spec = importlib.util.spec_from_file_location("equivariance_report", _SCRIPT)
report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report)


def _record(model: str, rot: str, weight: float, epochs: int, r_acc: float) -> dict[str, Any]:
    lit = {"lr": 1e-3} if weight == 0 else {"lr": 1e-3, "equivariance_weight": weight}
    return {
        "status": "complete", "config_hash": f"{model}{rot}{weight}{epochs}", "seed": 0,
        "finished_at": "2026-01-01T00:00:00", "sweep_name": "quick_equivariance",
        "model": {"name": model, "parameters": 100},
        "data": {"rotate_train": rot, "n_train": 3000},
        "config": {"lit": lit, "trainer": {"max_epochs": epochs}, "model": {}, "seed": 0,
                   "data": {"rotate_train": rot}, "m": model},
        "test": {"r": {"acc": r_acc}, "nr": {"acc": 0.9}},
        "timing": {"train_seconds": 10.0 * epochs * (3 if weight else 1)},
        "evaluation": {"equivariance": {"haar_rel_error": 1 - r_acc, "haar_changed_fraction": 0.5,
                                        "grid_rel_error": 0.1},
                       "latency": [{"batch_size": 32, "median_ms": 5.0}]},
    }  # fmt: skip


def _rows(tmp_path: Path) -> list[dict[str, Any]]:
    folder = tmp_path / "runs" / "quick_equivariance"
    folder.mkdir(parents=True)
    records = [
        _record("cnn_cls_quick_115k", "none", 0, 6, 0.10),
        _record("fa_cnn_cls_quick_115k", "none", 0, 6, 0.85),
        _record("bl_cnn_cls_quick_115k", "none", 0, 6, 0.11),
        _record("bl_cnn_cls_quick_115k", "none", 0, 18, 0.12),
        _record("bl_cnn_cls_quick_115k", "none", 1.0, 6, 0.30),
        _record("bl_cnn_cls_quick_115k", "none", 10.0, 6, 0.50),
    ]
    for r in records:
        (folder / f"{r['config_hash']}.json").write_text(json.dumps(r))
    return report.collect(tmp_path / "runs", tmp_path)


def test_passes_count_the_penalty_batches_and_the_frame(tmp_path: Path) -> None:
    rows = {r["label"]: r for r in _rows(tmp_path)}
    assert rows["cnn_cls_quick_115k (NR)"]["passes"] == 6
    assert rows["fa_cnn_cls_quick_115k (NR)"]["passes"] == 24  # 4 frame elements
    assert rows["bl_cnn_cls_quick_115k λ=0 (NR, 18 ep)"]["passes"] == 18
    assert rows["bl_cnn_cls_quick_115k λ=10 (NR)"]["passes"] == 18  # CE + 2 penalty batches
    assert rows["bl_cnn_cls_quick_115k λ=10 (NR)"]["route"] == "soft equivariance"


def test_cheapest_table_names_each_pick_with_its_score(tmp_path: Path) -> None:
    rows = _rows(tmp_path)
    lines = report.cheapest(rows, [40, 90])
    # 40 %: cheapest in seconds is the FA job (60 s vs 180 s), fewest passes the penalty run
    # (18 vs 24); each pick is printed with its own R accuracy.
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[0] == "40 %"
    assert cells[1].startswith("fa_cnn_cls_quick_115k") and cells[2] == "85.0"
    assert cells[4].startswith("bl_cnn_cls_quick_115k λ=10") and cells[5] == "50.0"
    assert cells[6] == "18"
    assert "none reaches it" in lines[3]


def test_soft_summary_compares_the_best_penalty_run_with_lambda_zero_at_equal_cost(
    tmp_path: Path,
) -> None:
    rows = _rows(tmp_path)
    (sentence,) = report.soft_summary(rows)
    assert sentence.startswith("Trained on NR: the best penalty run (λ = 10, 18 passes / sample)")
    assert "scores 50.0 % on R" in sentence and "same cost (18 epochs) 12.0 %" in sentence
    table = report.soft_table(rows)
    assert [line.split("|")[2].strip() for line in table[2:]] == ["0", "0", "1", "10"]
    assert report.soft_figure(rows, tmp_path / "soft.png") and (tmp_path / "soft.png").is_file()

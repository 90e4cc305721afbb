"""``scripts/migrate_record_hashes.py``: a job trained with a per-model lookup table in its config
(as the experiments had before ``conf/recipe/``), moved to the hash of its config without the
table, is skipped (finished) or resumed to the same result (unfinished) by the same job run
without the table; the script refuses to overwrite or to move a running job, and a second run
finds nothing to do.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train import job

from sphere_bench.train.checkpoints import verify_checkpoint
from sphere_bench.train.lifecycle import JobLock
from sphere_bench.train.record import config_hash

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "migrate_record_hashes", REPO / "scripts" / "migrate_record_hashes.py"
)
assert _spec is not None and _spec.loader is not None
migrate = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = migrate  # its dataclass looks its module up there
_spec.loader.exec_module(migrate)



TABLE = "+lr_by_model={cnn_seg_small:1.0e-3}"  # what the old experiments put in every job
RUN = ("trainer.max_epochs=2", "seed=3")


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _model_checkpoint_dirs(job_dir: Path) -> set[str]:
    dirs = set()
    for path in (job_dir / "checkpoints").glob("*.ckpt"):
        assert verify_checkpoint(path) is None, path
        state = torch.load(path, map_location="cpu", weights_only=True)
        dirs |= {v["dirpath"] for k, v in state["callbacks"].items() if "ModelCheckpoint" in k}
    return dirs


def test_migrated_jobs_are_skipped_or_resumed_without_the_table(
    tmp_path: Path, data_root: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    first = job(tmp_path, data_root, cache_dir, *RUN, TABLE)
    assert first["status"] == "complete", first["error"]
    old = first["config_hash"]
    new = config_hash({k: v for k, v in first["config"].items() if k != "lr_by_model"})
    assert new != old
    results = tmp_path / "results"
    sweep = results / "smoke_seg"
    # The same job in a second results dir, as a kill during testing leaves it: no record.
    unfinished = tmp_path / "unfinished" / "smoke_seg"
    second = job(tmp_path, data_root, cache_dir, *RUN, TABLE,
                 f"results_dir={unfinished.parent}", name="second")  # fmt: skip
    assert second["config_hash"] == old
    (unfinished / f"{old}.json").unlink()

    # --dry-run prints the plan and changes nothing.
    before = _tree(results)
    assert migrate.main([str(results), "--dry-run"]) == 0
    assert f"{old} -> {new}" in capsys.readouterr().out and _tree(results) == before

    assert migrate.main([str(results)]) == 0
    assert not (sweep / f"{old}.json").exists() and not (sweep / old).exists()
    record = json.loads((sweep / f"{new}.json").read_text())
    assert record["config_hash"] == new and "lr_by_model" not in record["config"]
    assert record["test"] == first["test"] and record["checkpoint"]["dir"].endswith(
        f"{new}/checkpoints"
    )
    assert {Path(d).parent.name for d in _model_checkpoint_dirs(sweep / new)} == {new}
    assert migrate.main([str(results)]) == 0
    assert capsys.readouterr().out.strip().endswith("nothing to do")

    # The same job without the table finds its record: skipped.
    again = job(tmp_path, data_root, cache_dir, *RUN, name="again")
    outcome = json.loads((tmp_path / "again" / "outcome.json").read_text())
    assert outcome["outcome"] == "skipped" and again["config_hash"] == new

    # The unfinished job: its new hash comes from the preset jobs (here: this job).
    monkeypatch.setattr(migrate, "_sweep_presets", lambda sweeps: ["smoke_seg"])
    monkeypatch.setattr(migrate, "preset_hash_map", lambda rev, presets: {old: (new, "job")})
    (unfinished / new).mkdir()  # a target that exists: refused, nothing moves
    assert migrate.main([str(unfinished.parent)]) == 2
    assert "exists already" in capsys.readouterr().err and (unfinished / old).is_dir()
    (unfinished / new).rmdir()
    with JobLock(unfinished / old / "job.lock"):  # a running job: refused
        assert migrate.main([str(unfinished.parent)]) == 2
    assert "running" in capsys.readouterr().err and (unfinished / old).is_dir()
    assert migrate.main([str(unfinished.parent)]) == 0
    assert _model_checkpoint_dirs(unfinished / new) == {str(unfinished / new / "checkpoints")}
    # Resumed from its last checkpoint, it ends as the uninterrupted job did: same best
    # checkpoint tested (Lightning keeps the best score only under the same dirpath).
    resumed = job(
        tmp_path, data_root, cache_dir, *RUN, f"results_dir={unfinished.parent}", name="resumed"
    )
    assert resumed["status"] == "complete", resumed["error"]
    assert resumed["config_hash"] == new and resumed["checkpoint"]["resumed_from"]
    assert resumed["test"] == first["test"] and resumed["val_best"] == first["val_best"]


def test_preset_jobs_map_from_the_old_conf_to_the_new() -> None:
    """The mapping for unfinished preset jobs: the golden hashes of the old ``conf/`` to today's."""
    show = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{migrate.OLD_REV}:tests/golden/preset_hashes.json"],
        capture_output=True, text=True,
    )  # fmt: skip
    if show.returncode != 0:
        pytest.skip(f"commit {migrate.OLD_REV} is not in this clone's history")
    old_golden = json.loads(show.stdout)["paper_fig4_cpu"]
    new_golden = json.loads((REPO / "tests" / "golden" / "preset_hashes.json").read_text())
    mapping = migrate.preset_hash_map(migrate.OLD_REV, ["paper_fig4_cpu"])
    assert mapping == {
        h: (new_golden["paper_fig4_cpu"][overrides], overrides)
        for overrides, h in old_golden.items()
    }

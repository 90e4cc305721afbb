"""The config hash of every preset job is the one its committed record carries.

``make sweep`` finds a job's record by the job's config hash, so a change to ``conf/`` that
changes a hash reruns finished jobs and strands the records in ``results/records/``. The golden
list ``tests/golden/preset_hashes.json`` holds the hash of every job of every preset, written by
``scripts/preset_hashes.py --write tests/golden/preset_hashes.json``; regenerate it only for a
change that is meant to change what a job computes.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from sphere_bench.train.record import config_hash

REPO = Path(__file__).resolve().parents[1]
GOLDEN = json.loads((REPO / "tests" / "golden" / "preset_hashes.json").read_text())

_spec = importlib.util.spec_from_file_location(
    "preset_hashes", REPO / "scripts" / "preset_hashes.py"
)
assert _spec is not None and _spec.loader is not None
preset_hashes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(preset_hashes)


def test_every_preset_job_keeps_its_config_hash() -> None:
    # Every job, except the paper presets' ten N (each model at its first N; no per-model setting
    # depends on N): about 90 composed configs.
    now = preset_hashes.preset_hashes(every_n=False)
    assert set(now) == set(GOLDEN)
    golden = {overrides: hash_ for jobs in GOLDEN.values() for overrides, hash_ in jobs.items()}
    jobs = {overrides: hash_ for jobs in now.values() for overrides, hash_ in jobs.items()}
    changed = [f"{o}: {h} (golden {golden[o]})" for o, h in jobs.items() if golden.get(o, h) != h]
    assert not changed, "config hash changed (records of these jobs no longer match):\n" + (
        "\n".join(changed)
    )
    # A job added to a preset: the golden list is rewritten on purpose.
    new = sorted(set(jobs) - set(golden))
    assert not new, (
        f"new preset jobs {new}: add them with "
        "`python scripts/preset_hashes.py --write tests/golden/preset_hashes.json`"
    )


def test_committed_records_are_preset_jobs() -> None:
    # Every committed record is a preset job, or a trial of an architecture search
    # (conf/hparams_search/: its shape is drawn, so its hash is in no golden list, but a rerun of
    # the search finds it by the hash of its config all the same).
    golden = {h for jobs in GOLDEN.values() for h in jobs.values()}
    records = sorted((REPO / "results" / "records").glob("*/*.json"))
    assert records
    for path in records:
        record = json.loads(path.read_text())
        if record["config"].get("search"):
            assert path.stem == record["config_hash"] == config_hash(record["config"]), path
            continue
        assert path.stem == record["config_hash"] in golden, path

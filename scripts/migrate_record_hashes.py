"""Move result records and job folders to the config hashes of the per-model recipe files.

Up to commit ff62966 the experiments of ``conf/experiment/`` held per-model lookup tables
(``lr_by_model``, ``rotate_train_by_model``, ``n_train_by_model``, ``grid_by_model``), which
were keys of every job's resolved config and so entered its config hash
(``sphere_bench/train/record.py``). ``conf/recipe/<experiment>/<model>.yaml`` now sets the same
values: every job's config is the old one without the tables (``--check`` composes every preset
job both ways and compares), so only the hash changed. This script moves each job to its new
hash, so that rerunning a sweep skips its finished jobs and resumes the others from their
checkpoints:

* a record ``<folder>/<old>.json`` (``<results>/<sweep>/``, or a flat folder of records): its
  ``config`` without the tables, its ``config_hash`` and the paths in its ``checkpoint`` entry
  updated, written atomically as ``<new>.json``; then ``<old>.json`` is removed;
* the job folder ``<folder>/<old>/`` (checkpoints, lock), renamed to ``<new>/`` once the paths
  inside its Lightning checkpoints are rewritten (``ModelCheckpoint`` keeps its ``dirpath`` and
  best/last paths there and, resumed under another ``dirpath``, forgets its best score, so a
  resumed job would test a worse checkpoint); each rewritten checkpoint is saved atomically with
  a new size + CRC-32 sidecar;
* a job folder without a record (an unfinished job, nothing stores its config): its new hash is
  found by composing the preset jobs of its sweep under the ``conf/`` of ``--old-rev`` (via
  ``git archive``) and under today's ``conf/``.

Every target is checked before anything moves: an existing ``<new>/`` folder, a ``<new>.json``
with other content, or a job whose lock is held (a running sweep: stop it first) stops the
script with a message and changes nothing. A second run finds nothing to do. Hydra's run dirs
(``multirun/``, ``outputs/``: ``result.json``, ``outcome.json``) keep the old hash; they are
logs, nothing reads them back.

    python scripts/migrate_record_hashes.py results/records results/runs --dry-run
    python scripts/migrate_record_hashes.py results/records results/runs
    python scripts/migrate_record_hashes.py --check     # every preset job, old conf vs new
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import preset_hashes  # noqa: E402
import torch  # noqa: E402

from sphere_bench.schema import json_safe  # noqa: E402
from sphere_bench.train.checkpoints import save_verified, verify_checkpoint  # noqa: E402
from sphere_bench.train.lifecycle import JobLock  # noqa: E402
from sphere_bench.train.record import config_hash, write_record  # noqa: E402

#: The last commit whose experiments held the ``*_by_model`` tables.
OLD_REV = "ff62966cefe9a38049d2e1c2f419bc6c1726b061"
TABLE_SUFFIX = "_by_model"
HASH = re.compile(r"^[0-9a-f]{16}$")
LOCK_NAME = "job.lock"


class MigrationError(RuntimeError):
    """A target exists, a job is running, or a record is inconsistent; nothing was changed."""


def without_tables(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` without its top-level ``*_by_model`` keys (the removed lookup tables)."""
    return {k: v for k, v in config.items() if not str(k).endswith(TABLE_SUFFIX)}


def repath(value: Any, old: str, new: str) -> Any:
    """Copy of ``value`` with the path component ``old`` replaced by ``new`` in every string
    (dict keys included), e.g. ``.../paper_fig4_cpu/<old>/checkpoints/last.ckpt``."""
    if isinstance(value, str):
        parts = re.split(r"([/\\])", value)
        return "".join(new if part == old else part for part in parts)
    if isinstance(value, dict):
        return {repath(k, old, new): repath(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [repath(v, old, new) for v in value]
    if isinstance(value, tuple):
        return tuple(repath(v, old, new) for v in value)
    return value


def migrated_record(record: dict[str, Any]) -> dict[str, Any]:
    """The record as the recipe layout writes it: config without the tables, its hash, and the
    checkpoint paths under the new hash folder."""
    old = record["config_hash"]
    config = without_tables(record["config"])
    new = config_hash(config)
    out = dict(record)
    out["config"] = config
    out["config_hash"] = new
    if isinstance(record.get("checkpoint"), dict):
        out["checkpoint"] = repath(record["checkpoint"], old, new)
    return out


def record_text(record: dict[str, Any]) -> str:
    """The bytes :func:`~sphere_bench.train.record.write_record` writes for ``record``."""
    return json.dumps(json_safe(record), indent=1, allow_nan=False) + "\n"


@dataclass
class Move:
    """One job to move: ``folder/<old>.json`` and/or ``folder/<old>/`` → ``<new>``."""

    folder: Path
    old: str
    new: str
    record: dict[str, Any] | None = None  # the migrated record to write (None: no record)
    source: str = "record"  # where ``new`` comes from: the record, or the preset job's overrides
    checkpoints: list[Path] = field(default_factory=list)

    @property
    def old_dir(self) -> Path:
        return self.folder / self.old

    @property
    def new_dir(self) -> Path:
        return self.folder / self.new

    def describe(self) -> str:
        what = []
        if (self.folder / f"{self.old}.json").is_file():
            what.append("record")
        if self.old_dir.is_dir():
            what.append(f"job folder ({len(self.checkpoints)} checkpoints)")
        return f"{self.folder}/{self.old} -> {self.new}: {' + '.join(what)} [{self.source}]"


def _folders(root: Path) -> Iterator[Path]:
    """``root`` and its sub-folders that are not job folders (``<sweep>/`` of a results dir)."""
    yield root
    yield from sorted(p for p in root.iterdir() if p.is_dir() and not HASH.match(p.name))


def _checkpoints(job_dir: Path) -> list[Path]:
    folder = job_dir / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.ckpt") if p.is_file() and not p.is_symlink())


@contextlib.contextmanager
def old_conf(rev: str, repo: Path = REPO) -> Iterator[Path]:
    """A temporary copy of ``conf/`` at git revision ``rev``."""
    try:
        tar = subprocess.run(
            ["git", "-C", str(repo), "archive", rev, "conf"], capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        detail = getattr(err, "stderr", b"") or b""
        raise MigrationError(
            f"cannot read conf/ at revision {rev} with git ({detail.decode().strip() or err}); "
            "run from a clone that has that commit, or pass --old-rev"
        ) from None
    with tempfile.TemporaryDirectory(prefix="sb_old_conf_") as tmp:
        with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
            archive.extractall(tmp, filter="data")
        yield Path(tmp) / "conf"


def _sweep_presets(sweeps: set[str]) -> list[str]:
    """The presets (as :mod:`preset_hashes` enumerates them) whose sweep name is in ``sweeps``."""
    return [p for p, name in preset_hashes.preset_sweep_names().items() if name in sweeps]


def preset_hash_map(rev: str, presets: Sequence[str] | None = None) -> dict[str, tuple[str, str]]:
    """``{old hash: (new hash, overrides)}`` of every job of ``presets`` (all when None),
    composed under ``conf/`` at ``rev`` and today."""
    now = preset_hashes.preset_configs(presets=presets)
    with old_conf(rev) as conf:
        before = preset_hashes.preset_configs(conf, presets=presets)
    out = {}
    for preset, jobs in before.items():
        for overrides, config in jobs.items():
            out[config_hash(config)] = (config_hash(now[preset][overrides]), overrides)
    return out


def compare_presets(rev: str) -> tuple[int, list[str]]:
    """Compose every preset job under ``conf/`` at ``rev`` and today; ``(jobs, differing)``,
    where a job differs when its old config without the tables is not its new config."""
    now = preset_hashes.preset_configs()
    with old_conf(rev) as conf:
        before = preset_hashes.preset_configs(conf)
    count, differing = 0, []
    for preset, jobs in before.items():
        for overrides, config in jobs.items():
            count += 1
            new = now.get(preset, {}).get(overrides)
            old = json.dumps(without_tables(config), sort_keys=True)
            if old != json.dumps(new, sort_keys=True):
                differing.append(overrides)
    missing = sum(len(j) for j in now.values()) - count
    if missing:
        differing.append(f"{missing} jobs exist only under today's conf/")
    return count, differing


def plan(roots: Sequence[Path], rev: str) -> tuple[list[Move], list[str]]:
    """The moves under ``roots`` and notes on what is left alone.

    Raises:
        MigrationError: a target exists with other content, or a job is running.
    """
    moves: list[Move] = []
    notes: list[str] = []
    orphans: list[tuple[Path, str]] = []  # job folders without a record
    for root in roots:
        if not root.is_dir():
            raise MigrationError(f"{root} is not a folder (give a results dir, e.g. results/runs)")
        for folder in _folders(root):
            stems = {p.stem for p in folder.glob("*.json") if HASH.match(p.stem)}
            dirs = {p.name for p in folder.iterdir() if p.is_dir() and HASH.match(p.name)}
            for old in sorted(stems):
                path = folder / f"{old}.json"
                try:
                    record = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError) as err:
                    notes.append(f"{path}: unreadable ({err}), left alone")
                    continue
                if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
                    notes.append(f"{path}: not a record with a config, left alone")
                    continue
                if record.get("config_hash") != old:
                    notes.append(
                        f"{path}: its config_hash is {record.get('config_hash')!r}, "
                        "not its name; left alone"
                    )
                    continue
                new_record = migrated_record(record)
                new = new_record["config_hash"]
                if new == old:
                    if config_hash(record["config"]) != old:
                        notes.append(f"{path}: its config does not hash to its name, left alone")
                    continue  # no tables: nothing to do (or migrated already)
                moves.append(
                    Move(folder, old, new, new_record, "record", _checkpoints(folder / old))
                )
            orphans += [(folder, name) for name in sorted(dirs - stems)]
    if orphans:
        known = {(m.folder, m.new) for m in moves}  # renamed already, its record not yet
        todo = [(f, n) for f, n in orphans if (f, n) not in known]
        if todo:
            presets = _sweep_presets({f.name for f, _ in todo})
            mapping = preset_hash_map(rev, presets) if presets else {}
            news = {new for new, _ in mapping.values()}
            for folder, name in todo:
                if name in mapping:
                    new, overrides = mapping[name]
                    if new != name:
                        moves.append(
                            Move(
                                folder,
                                name,
                                new,
                                None,
                                f"preset job {overrides}",
                                _checkpoints(folder / name),
                            )
                        )
                elif name not in news:
                    notes.append(
                        f"{folder / name}: a job folder without a record whose hash is "
                        "no preset job's; left alone"
                    )
    _check_targets(moves)
    return moves, notes


def _lock_busy(job_dir: Path) -> str | None:
    """Why the job of ``job_dir`` is running (its lock is held), else None; writes nothing."""
    lock = job_dir / LOCK_NAME
    if not lock.is_file():
        return None
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
        return f"the job is running (lock {lock} held by {holder}); stop the sweep first"
    finally:
        os.close(fd)  # closing releases the lock
    return None


def _check_targets(moves: list[Move]) -> None:
    problems = []
    seen: dict[Path, str] = {}
    for move in moves:
        target = move.folder / move.new
        if target in seen:
            problems.append(f"{move.folder}/{move.old} and {seen[target]} both map to {target}")
        seen[target] = f"{move.folder}/{move.old}"
        if move.old_dir.is_dir():
            if move.new_dir.exists():
                problems.append(
                    f"{move.new_dir} exists already (so does {move.old_dir}): delete "
                    "the one you do not want, then rerun"
                )
            busy = _lock_busy(move.old_dir)
            if busy:
                problems.append(f"{move.old_dir}: {busy}")
        new_json = move.folder / f"{move.new}.json"
        if (
            move.record is not None
            and new_json.exists()
            and new_json.read_text(encoding="utf-8") != record_text(move.record)
        ):
            problems.append(
                f"{new_json} exists with other content than the migrated {move.old}.json: "
                "delete the one you do not want, then rerun"
            )
    if problems:
        raise MigrationError("nothing was changed:\n  " + "\n  ".join(problems))


def _rewrite_checkpoint(path: Path, old: str, new: str) -> bool:
    """Replace the path component ``old`` by ``new`` in the callback states of a Lightning
    checkpoint (atomic save, new sidecar). Returns whether the file changed."""
    reason = verify_checkpoint(path)
    if reason is not None:
        print(f"  {path}: damaged ({reason}); left as it is (a rerun moves it aside)")
        return False
    state = torch.load(path, map_location="cpu", weights_only=True)
    callbacks = state.get("callbacks")
    updated = repath(callbacks, old, new)
    if updated == callbacks:
        return False
    state["callbacks"] = updated
    save_verified(state, path)
    return True


def apply(move: Move) -> None:
    """Carry out one move (each step atomic; a rerun after a crash completes it)."""
    if move.old_dir.is_dir():
        with JobLock(move.old_dir / LOCK_NAME):
            for ckpt in move.checkpoints:
                _rewrite_checkpoint(ckpt, move.old, move.new)
            os.rename(move.old_dir, move.new_dir)
    if move.record is not None:
        new_json = move.folder / f"{move.new}.json"
        if not new_json.exists():
            write_record(move.record, new_json)
        (move.folder / f"{move.old}.json").unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "roots",
        nargs="*",
        type=Path,
        help="results dirs (results/runs, results/records), folders of records",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    parser.add_argument(
        "--old-rev",
        default=OLD_REV,
        help="git revision whose conf/ made the old hashes (default: %(default)s)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="compose every preset job under --old-rev's conf/ and today's and "
        "compare the configs without the tables",
    )
    args = parser.parse_args(argv)
    if not args.roots and not args.check:
        parser.error("give results dirs to migrate, or --check")
    try:
        if args.check:
            count, differing = compare_presets(args.old_rev)
            print(
                f"{count} preset jobs composed under {args.old_rev[:7]} and today: "
                f"{count - len(differing)} identical without the *{TABLE_SUFFIX} tables"
            )
            for item in differing:
                print(f"  differs: {item}")
            if differing:
                return 1
        if args.roots:
            moves, notes = plan(args.roots, args.old_rev)
            for note in notes:
                print(f"note: {note}")
            for move in moves:
                print(("would move " if args.dry_run else "moving ") + move.describe())
                if not args.dry_run:
                    apply(move)
            verb = "to move" if args.dry_run else "moved"
            print(f"{len(moves)} jobs {verb}" if moves else "nothing to do")
    except MigrationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

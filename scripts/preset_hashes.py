"""The config hash of every job of every preset, as a JSON golden list.

A job's record is ``results/runs/<sweep>/<config hash>.json`` (``sphere_bench/train/record.py``);
``make sweep`` skips a job whose record exists. A change to ``conf/`` that changes a hash makes
the committed records under ``results/records/`` stale and reruns their jobs. This script composes
every job of every preset (each experiment file's ``hydra.sweeper.params`` expanded as Hydra's
basic sweeper does, and the six multiruns of ``scripts/quick_equivariance.sh``), resolves it as
a job does (``${hydra:runtime.choices.model}`` included) and prints ``{preset: {overrides: hash}}``.
``tests/test_preset_hashes.py`` compares it with ``tests/golden/preset_hashes.json``.

    python scripts/preset_hashes.py                       # print the list
    python scripts/preset_hashes.py --write tests/golden/preset_hashes.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import sphere_bench.train.run  # noqa: E402, F401  (registers the config resolvers)
from sphere_bench.io import atomic_write_text  # noqa: E402
from sphere_bench.train.record import config_hash  # noqa: E402

CONF = REPO / "conf"
EQUIVARIANCE_SCRIPT = REPO / "scripts" / "quick_equivariance.sh"
#: Experiment files whose jobs are enumerated from their own sweeper params (or the single job).
PRESETS = (
    "quick", "quick_cls", "quick_paradigms", "quick_paradigms_cls", "paper_fig4_cpu",
    "paper_fig2_main", "paper_fig4_cls", "paper_fig5_nr", "paper_fig7_four", "paper_fig9_fashion",
    "smoke_seg", "smoke_cls", "sweep_smoke",
)  # fmt: skip


def _expand(tokens: list[str]) -> Iterator[list[str]]:
    """Every combination of comma-separated override values, in Hydra's basic-sweeper order."""
    keys, values = [], []
    for token in tokens:
        key, _, value = token.partition("=")
        keys.append(key)
        values.append([v.strip() for v in value.split(",")])
    for combo in itertools.product(*values):
        yield [f"{k}={v}" for k, v in zip(keys, combo, strict=True)]


def _sweeper_overrides(experiment: str) -> list[str]:
    cfg = compose("config", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params or {}
    return [f"{key}={value}" for key, value in params.items()]


def _first_n(token: str) -> str:
    key, _, value = token.partition("=")
    values = value.split(",")
    return f"{key}={values[0]}" if key == "data.n_train" and len(values) > 3 else token


def _equivariance_multiruns() -> list[list[str]]:
    """The override lists of the ``train ...`` lines of ``scripts/quick_equivariance.sh``."""
    runs = []
    for line in EQUIVARIANCE_SCRIPT.read_text().splitlines():
        if re.match(r"^train \S+=", line):
            runs.append([t for t in line.split()[1:] if t != '"$@"'])
    return runs


def jobs(
    every_n: bool = True, presets: Iterable[str] | None = None
) -> Iterator[tuple[str, list[str]]]:
    """``(preset, overrides)`` of every job, ``experiment=...`` first (of ``presets`` only, when
    given; composes in an initialised Hydra context).

    ``every_n=False`` keeps only the first value of a ``data.n_train`` sweep of more than three
    values (the paper presets' ten N, which no per-model setting depends on): a quicker check.
    """
    wanted = set(PRESETS) | {"quick_equivariance"} if presets is None else set(presets)
    for preset in PRESETS:
        if preset not in wanted:
            continue
        base = [f"experiment={preset}"]
        sweep = _sweeper_overrides(preset)
        if not every_n:
            sweep = [_first_n(token) for token in sweep]
        for combo in _expand(sweep):
            yield preset, base + combo
    for run in _equivariance_multiruns() if "quick_equivariance" in wanted else []:
        for combo in _expand(run):
            yield "quick_equivariance", ["experiment=quick_equivariance", *combo]


def job_config(overrides: list[str]) -> dict:
    """The resolved config of the job composed from ``overrides`` (in an initialised Hydra
    context), as ``run.py`` resolves it (``${hydra:...}`` included), without ``hydra``."""
    cfg = compose("config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    try:
        job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        return OmegaConf.to_container(job, resolve=True)  # type: ignore[return-value]
    finally:
        HydraConfig.instance().cfg = None  # type: ignore[assignment]


def job_hash(overrides: list[str]) -> str:
    """The config hash of the job composed from ``overrides``, resolved as ``run.py`` does."""
    return config_hash(job_config(overrides))


def preset_configs(
    conf_dir: Path | str = CONF, every_n: bool = True, presets: Iterable[str] | None = None
) -> dict[str, dict[str, dict]]:
    """``{preset: {"override override ...": resolved job config}}`` of every job of every preset
    composed from ``conf_dir`` (``every_n``: see :func:`jobs`; ``presets``: only these)."""
    GlobalHydra.instance().clear()
    out: dict[str, dict[str, dict]] = {}
    try:
        with initialize_config_dir(config_dir=str(Path(conf_dir).resolve()), version_base=None):
            for preset, overrides in jobs(every_n, presets):
                out.setdefault(preset, {})[" ".join(overrides)] = job_config(overrides)
    finally:
        GlobalHydra.instance().clear()
    return out


def preset_sweep_names(conf_dir: Path | str = CONF) -> dict[str, str]:
    """``{preset: sweep_name}`` of every preset composed from ``conf_dir``."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(Path(conf_dir).resolve()), version_base=None):
            return {
                name: str(compose("config", overrides=[f"experiment={name}"]).sweep_name)
                for name in [*PRESETS, "quick_equivariance"]
            }
    finally:
        GlobalHydra.instance().clear()


def preset_hashes(every_n: bool = True) -> dict[str, dict[str, str]]:
    """``{preset: {"override override ...": config hash}}`` of every job of every preset
    (``every_n``: see :func:`jobs`)."""
    return {
        preset: {overrides: config_hash(config) for overrides, config in configs.items()}
        for preset, configs in preset_configs(CONF, every_n).items()
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", type=Path, help="write the JSON here instead of printing it")
    args = parser.parse_args(argv)
    text = json.dumps(preset_hashes(), indent=1, sort_keys=True) + "\n"
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.write, text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()

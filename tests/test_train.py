"""Training entry point: config composition, pairing checks, real tiny runs, sweeps, records, W&B.

In-process jobs call :func:`sphere_bench.train.run.run_job` on configs composed with Hydra's
``compose``; sweeps run ``python -m sphere_bench.train -m ...`` in a subprocess. Everything is
written under pytest's tmp dirs (data cache, results, run dirs, W&B).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException
from omegaconf import DictConfig, OmegaConf

from sphere_bench.train.callbacks import EpochTimer, NonFiniteLossGuard
from sphere_bench.train.record import config_hash, hashed_config, load_record
from sphere_bench.train.run import CONF_DIR, check_config, run_job

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
DATASETS = sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml") if not p.stem.startswith("_"))
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
TINY = ["data.n_train=32", "data.n_val=16", "data.n_test=16", "data.batch_size=16"]


def _task(name: str) -> str:
    return "classification" if "_cls" in name else "segmentation"


def compose_cfg(*overrides: str) -> DictConfig:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return compose("config", overrides=list(overrides))


def _choice(overrides: tuple[str, ...], group: str, default: str) -> str:
    for item in overrides:
        if item.startswith(f"{group}="):
            return item.split("=", 1)[1]
    return default


def job(tmp: Path, data_root: Path, cache: Path, *overrides: str, name: str = "run") -> dict:
    """Run one in-process job of ``experiment=smoke_seg`` (or what ``overrides`` pick)."""
    cfg = compose_cfg(
        "experiment=smoke_seg", "logger=none", "~callbacks.rich_progress_bar", *TINY,
        f"data.root={data_root}", f"data.cache_dir={cache}", f"results_dir={tmp / 'results'}",
        *overrides,
    )  # fmt: skip
    default_model = "cnn_cls_small" if cfg.data.task == "classification" else "cnn_seg_small"
    choices = {
        "model": _choice(overrides, "model", default_model),
        "data": _choice(overrides, "data", "mnist_" + cfg.data.task[:3]),
    }
    return run_job(cfg, run_dir=tmp / name, choices=choices)


# ------------------------------------------------------------------------------------------------
# composition and bad input
# ------------------------------------------------------------------------------------------------
def _grid_overrides(model: str) -> list[str]:
    """The data overrides that put data on the grid ``model`` needs."""
    node = OmegaConf.load(CONF_DIR / "model" / f"{model}.yaml")
    if "nside" in node:
        return ["data.grid=healpix_nested", f"data.nside={node.nside}"]
    if "nlat" in node:
        return [f"data.grid={node.grid}", f"data.nlat={node.nlat}"]
    return [f"data.bandwidth={node.bandwidth}"]


VALID_PAIRS = [(m, d) for m in MODELS for d in DATASETS if _task(m) == _task(d)]


@pytest.mark.parametrize(("model", "data"), VALID_PAIRS)
def test_valid_pairs_compose_and_pass_the_check(model: str, data: str) -> None:
    cfg = compose_cfg(f"model={model}", f"data={data}", *_grid_overrides(model))
    check_config(cfg, model, data)
    assert cfg.data.seed == cfg.seed
    assert cfg.logger.wandb.offline is (os.environ.get("WANDB_MODE", "offline") != "online")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert len(config_hash(resolved)) == 16


@pytest.mark.parametrize(("mode", "offline"), [("online", False), ("offline", True), (None, True)])
def test_wandb_is_offline_unless_wandb_mode_is_online(
    monkeypatch: pytest.MonkeyPatch, mode: str | None, offline: bool
) -> None:
    if mode is None:
        monkeypatch.delenv("WANDB_MODE", raising=False)
    else:
        monkeypatch.setenv("WANDB_MODE", mode)
    cfg = compose_cfg("logger=wandb", "experiment=smoke_seg")
    assert cfg.logger.wandb.offline is offline
    assert cfg.logger.wandb.group == "smoke_seg" and cfg.logger.wandb.project == "sphere_bench"


def test_default_config_and_experiments_pass_the_check() -> None:
    check_config(compose_cfg(), "cnn_seg_218k", "mnist_seg")
    sweep_names = []
    from hydra.core.hydra_config import HydraConfig

    for name in EXPERIMENTS:
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
            # as in a job: ${hydra:runtime.choices.model} resolves (e.g. data.grid per model)
            cfg = compose("config", overrides=[f"experiment={name}"], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        try:
            check_config(cfg, str(cfg.model._target_), str(cfg.data.dataset))
        finally:
            HydraConfig.instance().cfg = None  # later in-process jobs must not see it
        assert str(cfg.sweep_name).startswith(name.split("_")[0]), (name, cfg.sweep_name)
        sweep_names.append(cfg.sweep_name)
    # Every recipe keeps its records apart from the others'.
    assert len(set(sweep_names)) == len(sweep_names)


def test_hash_ignores_paths_and_logging_but_not_results() -> None:
    base = OmegaConf.to_container(compose_cfg(), resolve=True)
    same = OmegaConf.to_container(
        compose_cfg("logger=csv", "results_dir=elsewhere", "data.root=/x", "sweep_name=s"),
        resolve=True,
    )
    assert config_hash(base) == config_hash(same)
    for override in ("seed=1", "data.n_train=10", "model=cnn_seg_1m", "trainer.max_epochs=3"):
        other = OmegaConf.to_container(compose_cfg(override), resolve=True)
        assert config_hash(other) != config_hash(base), override
    assert "logger" not in hashed_config(base) and "root" not in hashed_config(base)["data"]


def test_hash_of_a_record_survives_a_new_key_at_its_neutral_default() -> None:
    """A key added later (data.nlat) at its neutral default leaves an older record's hash as it
    was; any other value of it changes the hash."""
    base = OmegaConf.to_container(compose_cfg(), resolve=True)
    older = copy.deepcopy(base)
    del older["data"]["nlat"], older["callbacks"]["evaluation"]["spectral_lmax"]
    assert config_hash(older) == config_hash(base)
    other = OmegaConf.to_container(compose_cfg("data.nlat=32"), resolve=True)
    assert config_hash(other) != config_hash(base)
    lmax = OmegaConf.to_container(compose_cfg("callbacks.evaluation.spectral_lmax=8"), resolve=True)
    assert config_hash(lmax) != config_hash(base)


def test_task_mismatch_is_one_clear_error() -> None:
    cfg = compose_cfg("model=cnn_cls_small", "data=mnist_seg", "data.bandwidth=16")
    with pytest.raises(ValueError, match=r"model=cnn_cls_small is a classification model but "
                       r"data=mnist_seg is segmentation data.*cnn_seg_small"):  # fmt: skip
        check_config(cfg, "cnn_cls_small", "mnist_seg")


def test_bandwidth_mismatch_is_one_clear_error() -> None:
    cfg = compose_cfg("model=cnn_seg_small", "data=mnist_seg")
    with pytest.raises(ValueError, match=r"data\.bandwidth=50 .*model\.bandwidth=16"):
        check_config(cfg, "cnn_seg_small", "mnist_seg")


@pytest.mark.parametrize(
    ("model", "needs"),
    [
        ("s2cnn_cls_small", ("classification", None, 16)),
        ("s2cnn_seg_quick", ("segmentation", None, 16)),
        ("cnn_cls_small", ("classification", None, 16)),
        ("hpgcnn_cls_quick", ("classification", "healpix_nested", 8)),
    ],
)
def test_every_model_states_its_needs_the_same_way(model: str, needs: tuple) -> None:
    """Config and built net give the same task, grid and resolution (S2CNNs included, which used
    to validate their task and drop it), and the one pairing check sees them at run time."""
    from hydra.utils import instantiate

    from sphere_bench.train.checks import Needs, check_pairing, data_offers, model_needs
    from sphere_bench.train.lit_module import SphericalLitModule

    cfg = compose_cfg(f"model={model}")
    net = instantiate(cfg.model)
    assert model_needs(cfg.model) == model_needs(net) == Needs(*needs)
    other = "segmentation" if needs[0] == "classification" else "classification"
    offers = Needs(other, needs[1] or "soft", needs[2])
    with pytest.raises(ValueError, match=rf"model={model} is a {needs[0]} model but data=d is "
                       rf"{other} data"):  # fmt: skip
        check_pairing(model_needs(net), offers, model, "d")
    with pytest.raises(ValueError, match=f"is a {needs[0]} model"):
        SphericalLitModule(net, other, 11 if other == "segmentation" else 10)
    check_pairing(model_needs(net), data_offers(compose_cfg(
        f"model={model}", f"data={'mnist_cls' if needs[0] == 'classification' else 'mnist_seg'}",
        *([f"data.grid={needs[1]}", f"data.nside={needs[2]}"] if needs[1] else
          [f"data.bandwidth={needs[2]}"])).data), model, "d")  # fmt: skip


def test_mismatch_fails_the_job_before_training(
    tmp_path: Path, data_root: Path, cache_dir: Path
) -> None:
    with pytest.raises(ValueError, match="bandwidth mismatch"):
        job(tmp_path, data_root, cache_dir, "data.bandwidth=20")
    record = load_record(tmp_path / "run" / "result.json")
    assert record is not None and record["status"] == "failed"
    assert record["error"]["type"] == "ValueError" and "Traceback" in record["error"]["traceback"]
    assert record["epochs_run"] is None  # no trainer was built


@pytest.mark.parametrize("group", ["model", "data", "experiment"])
def test_unknown_names_list_the_options(group: str) -> None:
    with pytest.raises(MissingConfigException) as info:
        compose_cfg(f"{group}=no_such_thing")
    message = str(info.value)
    assert "no_such_thing" in message and "Available options" in message
    known = {"model": "cnn_seg_small", "data": "mnist_cls", "experiment": "smoke_seg"}[group]
    assert known in message


def test_non_finite_loss_raises() -> None:
    class FakeTrainer:
        current_epoch, global_step = 2, 17

    guard, trainer, module = NonFiniteLossGuard(), FakeTrainer(), None
    guard.on_train_batch_end(trainer, module, torch.tensor(0.5), None, 0)  # type: ignore[arg-type]
    nan = {"loss": torch.tensor(float("nan"))}
    with pytest.raises(FloatingPointError, match="non-finite training loss nan at epoch 2"):
        guard.on_train_batch_end(trainer, module, nan, None, 3)  # type: ignore[arg-type]


def test_epoch_timer_summary_and_state() -> None:
    timer = EpochTimer(monitor="val/miou")
    timer.load_state_dict(
        {"epochs": {0: {"seconds": 1.0, "value": 0.2}, 1: {"seconds": 2.0, "value": 0.5},
                    2: {"seconds": 3.0, "value": 0.5}, 3: {"seconds": 4.0, "value": None}}}
    )  # fmt: skip
    summary = timer.summary()
    assert summary["best_epoch"] == 1 and summary["seconds_to_best_epoch"] == 3.0
    assert summary["train_seconds"] == 10.0 and summary["mean_epoch_seconds"] == 2.5
    assert EpochTimer().summary()["best_epoch"] is None


# ------------------------------------------------------------------------------------------------
# real tiny runs
# ------------------------------------------------------------------------------------------------
FAST_CASES = [
    ("mnist_seg", "cnn_seg_small"),
    ("mnist_cls", "cnn_cls_small"),
    *[("mnist_seg", m) for m in ("s2cnn_seg_small",) if m in MODELS],
]


@pytest.mark.parametrize(("data", "model"), FAST_CASES)
def test_fast_dev_run_on_real_data(
    tmp_path: Path, data_root: Path, cache_dir: Path, data: str, model: str
) -> None:
    record = job(
        tmp_path, data_root, cache_dir, f"data={data}", f"model={model}",
        "trainer.fast_dev_run=true",
    )  # fmt: skip
    assert record["status"] == "complete", record["error"]
    assert record["model"]["name"] == model and record["model"]["parameters"] > 0
    assert record["data"]["task"] == _task(data) and record["data"]["bandwidth"] == 16
    assert set(record["test"]) == {"nr", "r"}
    main = "acc" if _task(data) == "classification" else "miou"
    assert 0.0 <= record["test"]["r"][main] <= 1.0
    if main == "miou":
        assert "iou_10" in record["test"]["nr"]
    assert (tmp_path / "run" / "result.json").is_file()
    assert (tmp_path / "results" / "smoke_seg" / f"{record['config_hash']}.json").is_file()


def test_same_seed_same_metrics_and_resume_from_last_checkpoint(
    tmp_path: Path, data_root: Path, cache_dir: Path
) -> None:
    overrides = ("trainer.max_epochs=2", "seed=3")
    first = job(tmp_path / "a", data_root, cache_dir, *overrides)
    second = job(tmp_path / "b", data_root, cache_dir, *overrides)
    for record in (first, second):
        assert record["status"] == "complete", record["error"]
    assert first["config_hash"] == second["config_hash"]
    assert first["test"] == second["test"] and first["val_best"] == second["val_best"]
    assert first["val_best"] is not None and first["epochs_run"] == 2
    assert first["timing"]["best_epoch"] in (0, 1) and len(first["timing"]["epoch_seconds"]) == 2
    ckpt = torch.load(first["checkpoint"]["best"], weights_only=True, map_location="cpu")
    assert ckpt["epoch"] == first["timing"]["best_epoch"]
    assert first["checkpoint"]["best"].endswith(".ckpt")
    last = torch.load(first["checkpoint"]["last"], weights_only=True, map_location="cpu")
    assert last["epoch"] == 1  # written after every epoch, not only after a new best

    # An interrupted job (a last.ckpt after epoch 0, no record) resumes instead of restarting:
    # take the epoch-0 checkpoint of a 1-epoch run and put it where the 2-epoch job keeps its own.
    part = job(tmp_path / "p", data_root, cache_dir, "trainer.max_epochs=1", "seed=3")
    ckpt_dir = tmp_path / "c" / "results" / "smoke_seg" / first["config_hash"] / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    shutil.copy(part["checkpoint"]["last"], ckpt_dir / "last.ckpt")
    resumed = job(tmp_path / "c", data_root, cache_dir, *overrides)
    assert resumed["status"] == "complete", resumed["error"]
    assert resumed["config_hash"] == first["config_hash"]
    assert resumed["checkpoint"]["resumed_from"] == str(ckpt_dir / "last.ckpt")
    assert resumed["epochs_run"] == 2 and len(resumed["timing"]["epoch_seconds"]) == 2
    # epoch 0 was not run again: its time comes from the checkpoint's timer state
    assert resumed["timing"]["epoch_seconds"][0] == part["timing"]["epoch_seconds"][0]


def test_failure_in_a_single_run_raises_after_writing_the_record(
    tmp_path: Path, data_root: Path, cache_dir: Path
) -> None:
    with pytest.raises(RuntimeError, match="debug.fail"):
        job(tmp_path, data_root, cache_dir, "debug.fail=true")
    record = load_record(tmp_path / "run" / "result.json")
    assert record is not None and record["status"] == "failed"
    assert record["model"]["parameters"] == 20643  # built before the failure


def test_offline_wandb_writes_a_run_dir(tmp_path: Path, data_root: Path, cache_dir: Path) -> None:
    record = job(
        tmp_path, data_root, cache_dir, "logger=many_loggers", "trainer.max_epochs=1",
        "trainer.limit_train_batches=1", "callbacks.prediction_images.n_samples=2",
    )  # fmt: skip
    assert record["status"] == "complete", record["error"]
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("run-*.wandb"))
    assert list((runs[0] / "files" / "media" / "images").rglob("*.png"))
    assert (tmp_path / "run" / "predictions" / "test_r.png").is_file()
    assert (tmp_path / "run" / "csv" / "version_0" / "metrics.csv").is_file()


# ------------------------------------------------------------------------------------------------
# sweeps (subprocess: the real command line)
# ------------------------------------------------------------------------------------------------
def sweep(tmp: Path, data_root: Path, cache: Path, sweep_dir: str, *overrides: str) -> str:
    """``python -m sphere_bench.train -m ...``; returns stdout + stderr (asserts exit code 0)."""
    cmd = [
        sys.executable, "-m", "sphere_bench.train", "-m", "experiment=smoke_seg", "logger=csv",
        "~callbacks.rich_progress_bar", "threads=1", *TINY, f"data.root={data_root}",
        f"data.cache_dir={cache}", f"results_dir={tmp / 'results'}",
        f"hydra.sweep.dir={tmp / sweep_dir}", *overrides,
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    return output


def _records(tmp: Path) -> dict[str, dict]:
    folder = tmp / "results" / "smoke_seg"
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def test_multirun_records_failure_goes_on_and_rerun_skips(
    tmp_path: Path, data_root: Path, cache_dir: Path
) -> None:
    sweep(tmp_path, data_root, cache_dir, "mr1", "debug.fail=false,true")
    records = _records(tmp_path)
    assert len(records) == 2
    by_status = {r["status"]: r for r in records.values()}
    assert set(by_status) == {"complete", "failed"}
    assert "debug.fail" in by_status["failed"]["error"]["message"]
    assert by_status["complete"]["test"]["nr"]["miou"] is not None
    for num in (0, 1):
        assert (tmp_path / "mr1" / str(num) / "result.json").is_file()
    assert (tmp_path / "mr1" / "multirun.yaml").is_file()

    done = by_status["complete"]
    output = sweep(tmp_path, data_root, cache_dir, "mr2", "debug.fail=false,true")
    assert f"skipping finished run {done['config_hash']}" in output
    again = _records(tmp_path)
    assert again[done["config_hash"]] == done  # untouched
    assert json.loads((tmp_path / "mr2" / "0" / "result.json").read_text()) == done


def test_joblib_launcher_runs_a_two_job_sweep(
    tmp_path: Path, data_root: Path, cache_dir: Path
) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep(
        tmp_path, data_root, cache_dir, "mr", "seed=1,2", "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
    )  # fmt: skip
    records = _records(tmp_path)
    assert len(records) == 2
    assert {r["status"] for r in records.values()} == {"complete"}
    assert sorted(r["seed"] for r in records.values()) == [1, 2]

"""Deep-ensemble evaluator on hand-made members whose mean is known."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from sphere_bench.evaluate.ensemble import (
    EnsembleMean,
    ensemble_groups,
    ensemble_metrics,
    evaluate_ensemble,
    main,
)
from sphere_bench.evaluate.equivariance import equivariance_errors
from sphere_bench.harmonic.signal_rotation import rotate_s2_grid
from sphere_bench.models.cnn_zoo import ClassificationCNN

B = 8


class TableNet(nn.Module):
    """Logits looked up by sample: input pixel [0, 0] holds the sample index."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x[:, 0, 0, 0].long()]


class Rotated(nn.Module):
    """``x ↦ φ(g⁻¹ x)`` for a grid half-turn ``g`` (its own inverse)."""

    def __init__(self, net: nn.Module, shift: int, flip: bool) -> None:
        super().__init__()
        self.net, self.shift, self.flip = net, shift, flip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(rotate_s2_grid(x, self.shift, self.flip))


def test_ensemble_mean_and_metrics_on_hand_made_members() -> None:
    n = 4
    x = torch.zeros(n, 1, 2 * B, 2 * B)
    x[:, 0, 0, 0] = torch.arange(n, dtype=torch.float32)
    labels = torch.tensor([0, 1, 2, 3])
    right = torch.nn.functional.one_hot(labels, 5).float()  # margin 1 on the right class
    wrong = torch.zeros(n, 5)
    wrong[:2, 4] = 3.0  # confidently wrong on the first half
    wrong[2:] = right[2:]
    ensemble = EnsembleMean([TableNet(right), TableNet(wrong)])
    assert torch.equal(ensemble(x), (right + wrong) / 2)
    assert ensemble_metrics(TableNet(right), x, labels, "classification", 5)["acc"] == 1.0
    # Mean logits: class 4 gets 1.5 against 0.5 on the first two samples -> accuracy 1/2.
    assert ensemble_metrics(ensemble, x, labels, "classification", 5)["acc"] == 0.5
    probs = EnsembleMean([TableNet(right), TableNet(wrong)], average="probs")(x)
    expected = torch.log((torch.softmax(right, 1) + torch.softmax(wrong, 1)) / 2)
    assert torch.allclose(probs, expected, atol=1e-6)
    with pytest.raises(ValueError, match="average must be one of"):
        EnsembleMean([TableNet(right)], average="median")
    with pytest.raises(ValueError, match="at least one member"):
        EnsembleMean([])


def test_ensemble_over_a_group_orbit_is_invariant_though_no_member_is() -> None:
    torch.manual_seed(0)
    cnn = ClassificationCNN(B, [4, 4, 8], [3, 3, 3], [1, 2, 1], False, "valid", 10)
    # The four grid half-turns {1, Rz(π), Ry(π), Rz(π)Ry(π)} form a group: the mean over the
    # orbit {φ ∘ g⁻¹} is exactly invariant to each of them (what equivariance_errors measures).
    members = [Rotated(cnn, s, f) for s, f in ((0, False), (B, False), (0, True), (B, True))]
    x = torch.rand(3, 1, 2 * B, 2 * B, generator=torch.Generator().manual_seed(0))
    single = equivariance_errors(members[1], x, "classification")["grid_rel_error"]
    pair = equivariance_errors(EnsembleMean(members[:2]), x, "classification")["grid_rel_error"]
    full = equivariance_errors(EnsembleMean(members), x, "classification")["grid_rel_error"]
    assert single > 1e-3 and pair > 1e-3
    assert full < 1e-6


def _fake_member(tmp: Path, cfg, seed: int, state: dict) -> dict:
    run_hash = f"{seed:016d}"
    ckpt = tmp / "sweep" / run_hash / "checkpoints" / "epoch_000.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": {f"net.{k}": v for k, v in state.items()}}, ckpt)
    config = OmegaConf.to_container(cfg, resolve=True)
    config["seed"] = config["data"]["seed"] = seed
    record = {
        "status": "complete", "config_hash": run_hash, "config": config, "seed": seed,
        "model": {"name": "cnn_cls_small"},
        "data": {"name": "mnist_cls", "task": "classification", "rotate_train": "random",
                 "n_train": 64},
        "checkpoint": {"best": f"/elsewhere/{run_hash}/checkpoints/epoch_000.ckpt", "last": None},
    }  # fmt: skip
    (tmp / "sweep" / f"{run_hash}.json").write_text(json.dumps(record))
    return record


def test_evaluate_ensemble_from_records_and_checkpoints(tmp_path: Path, data_root: Path) -> None:
    with initialize_config_dir(str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=["data=mnist_cls", "model=cnn_cls_small", "data.bandwidth=16", "logger=none",
                       "data.n_test=16", f"data.root={data_root}",
                       f"data.cache_dir={tmp_path / 'cache'}"],
        )  # fmt: skip
    torch.manual_seed(0)
    net = instantiate(cfg.model)
    state = net.state_dict()
    # Two members with the same weights (the ensemble equals each) and a third with other weights.
    torch.manual_seed(1)
    other = instantiate(cfg.model).state_dict()
    for seed, weights in ((1, state), (0, state), (2, other)):
        _fake_member(tmp_path, cfg, seed, weights)
    from sphere_bench.report.records import load_runs

    groups = ensemble_groups(load_runs(tmp_path).complete)
    assert list(groups) == ["cnn_cls_small/mnist_cls/rot_random/n64"]
    members = groups["cnn_cls_small/mnist_cls/rot_random/n64"]
    assert [m["seed"] for m in members] == [0, 1, 2]
    rows = evaluate_ensemble(members, ks=(1, 2, 3, 8), equivariance_samples=4, haar_draws=1)
    assert [row["k"] for row in rows] == [1, 2, 3]
    assert rows[0]["test"]["r"]["acc"] == rows[1]["test"]["r"]["acc"]
    for key in ("grid_rel_error", "haar_rel_error"):
        assert rows[0]["equivariance"][key] == pytest.approx(rows[1]["equivariance"][key], rel=1e-5)
    assert rows[2]["equivariance"]["grid_rel_error"] != rows[0]["equivariance"]["grid_rel_error"]
    assert set(rows[0]["test"]) == {"nr", "r"}
    out = tmp_path / "out"
    assert main(["--runs", str(tmp_path), "--out", str(out), "--ks", "1", "2",
                 "--equivariance-samples", "2", "--n-test", "8"]) == 0  # fmt: skip
    saved = json.loads((out / "ensemble.json").read_text())
    assert [row["k"] for row in saved["cnn_cls_small/mnist_cls/rot_random/n64"]["rows"]] == [1, 2]
    assert (out / "figures" / "ensemble.png").stat().st_size > 0
    assert (
        "| cnn_cls_small/mnist_cls/rot_random/n64 | 2 | 0,1 |" in (out / "ensemble.md").read_text()
    )


def test_groups_keep_one_record_per_seed_and_split_configs() -> None:
    def record(seed: int, run_hash: str, finished: str, lr: float = 1e-3) -> dict:
        return {
            "status": "complete", "config_hash": run_hash, "seed": seed, "finished_at": finished,
            "config": {"seed": seed, "data": {"seed": seed, "n_train": 8}, "lit": {"lr": lr}},
            "model": {"name": "m"}, "data": {"name": "d", "rotate_train": "none", "n_train": 8},
        }  # fmt: skip

    groups = ensemble_groups([
        record(1, "a", "2026-01-01T00:00:00"), record(0, "b", "2026-01-01T00:00:00"),
        record(1, "c", "2026-01-02T00:00:00"), record(0, "d", "2026-01-01T00:00:00", lr=0.1),
        {**record(2, "e", "2026-01-01T00:00:00"), "status": "failed"},
    ])  # fmt: skip
    assert len(groups) == 2  # the lr=0.1 run is another config
    members = next(g for g in groups.values() if len(g) == 2)
    assert [(m["seed"], m["config_hash"]) for m in members] == [(0, "b"), (1, "c")]

"""HEALPix graph CNNs and DISCO CNNs: parameter counts, orderings, exact grid symmetries.

* Parameter counts of every ``conf/model/{hpgcnn,disco}_*.yaml``, exactly.
* RING ↔ NESTED on hand-made maps: the conversion moves values with their pixel centres, and the
  four NESTED children of a pixel lie inside it.
* Equivariance to the grid's exact symmetries: on HEALPix, ``Rz(π/2)`` (about the polar axis)
  permutes the pixels; on the torch-harmonics grids, a longitude shift by one grid step is a roll.
  Layers and whole models commute with them to float precision (eval mode).
"""

from __future__ import annotations

import math
from pathlib import Path

import healpy
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from sphere_bench.data.projection import project_planes
from sphere_bench.harmonic.grids import make_grid, torch_harmonics_levels, torch_harmonics_shape
from sphere_bench.models import count_parameters
from sphere_bench.models.disco_cnn import DiscoClassifier, DiscoSegmenter, _conv, _conv_t
from sphere_bench.models.healpix_gcnn import (
    ChebConv,
    HealpixGCNNClassifier,
    HealpixGCNNSegmenter,
    nested_to_ring,
    pool_nested,
    ring_to_nested,
    unpool_nested,
)

CONF_MODEL = Path(__file__).resolve().parents[1] / "conf" / "model"

EXPECTED_PARAMETERS = {
    "hpgcnn_cls_150k": 142_570,
    "hpgcnn_seg_200k": 195_323,
    "hpgcnn_cls_quick": 142_570,
    "hpgcnn_seg_quick": 195_323,
    "hpgcnn_cls_small": 13_866,
    "hpgcnn_seg_small": 33_451,
    "disco_cls_150k": 154_602,
    "disco_seg_200k": 197_167,
    "disco_cls_quick": 154_602,
    "disco_seg_quick": 197_167,
    "disco_cls_small": 24_170,
    "disco_seg_small": 70_075,
}


def test_every_paradigm_config_is_listed() -> None:
    names = {p.stem for p in CONF_MODEL.glob("*.yaml") if p.stem.startswith(("hpgcnn", "disco"))}
    assert names == set(EXPECTED_PARAMETERS)


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMETERS))
def test_parameter_counts_are_exact(name: str) -> None:
    cfg = OmegaConf.load(CONF_MODEL / f"{name}.yaml")
    model = instantiate(cfg)
    assert count_parameters(model) == EXPECTED_PARAMETERS[name]
    # closed form (module docstring): Chebyshev K·c_in·c_out + c_out, BatchNorm 2c, linear head
    if name.startswith("hpgcnn") and "_cls" in name:
        w = [1, *cfg.channels]
        expected = sum(cfg.order * a * b + 3 * b for a, b in zip(w, w[1:], strict=False))
        assert count_parameters(model) == expected + w[-1] * 10 + 10


def test_ring_nested_on_a_hand_made_map() -> None:
    nside = 4
    npix = 12 * nside**2
    ring_map = torch.arange(npix, dtype=torch.float64)  # value = RING index
    nest_map = ring_to_nested(ring_map, nside)
    # NESTED pixel q holds the value of the RING pixel with the same centre.
    ring_xyz = np.stack(healpy.pix2vec(nside, nest_map.long().numpy(), nest=False), -1)
    nest_xyz = np.stack(healpy.pix2vec(nside, np.arange(npix), nest=True), -1)
    np.testing.assert_allclose(ring_xyz, nest_xyz, atol=1e-12)
    assert torch.equal(nested_to_ring(nest_map, nside), ring_map)
    # Hand-made value: RING pixel 0 (the first next to the north pole) is the last, north-most
    # pixel of base face 0 in NESTED, nside² − 1.
    assert int(nest_map[nside**2 - 1]) == 0 and int(nest_map[0]) != 0
    # NESTED hierarchy: the 4 children 4p..4p+3 at 2n lie inside parent p at n.
    parents = torch.arange(12 * (nside // 2) ** 2, dtype=torch.float64)
    children = unpool_nested(parents)
    child_xyz = np.stack(healpy.pix2vec(nside, np.arange(npix), nest=True), -1)
    owner = healpy.vec2pix(nside // 2, *child_xyz.T, nest=True)
    assert np.array_equal(owner, children.long().numpy())
    assert torch.equal(pool_nested(children), parents)
    with pytest.raises(ValueError, match=r"\[\.\.\., 192\] for nside=4"):
        ring_to_nested(torch.zeros(10), nside)


def test_projector_gives_the_same_values_in_both_orders() -> None:
    planes = torch.rand(2, 1, 28, 28)
    rotations = torch.linalg.qr(torch.randn(2, 3, 3))[0]
    rotations = rotations * torch.det(rotations).sign()[:, None, None]
    ring = project_planes(planes, make_grid("healpix", 8), rotations)
    nest = project_planes(planes, make_grid("healpix_nested", 8), rotations)
    assert torch.allclose(ring_to_nested(ring, 8), nest, atol=1e-6)


def _rz_quarter_permutation(nside: int) -> torch.Tensor:
    """``perm[i]``: the NESTED pixel that ``Rz(π/2)`` moves pixel ``i``'s centre onto."""
    npix = 12 * nside**2
    x, y, z = healpy.pix2vec(nside, np.arange(npix), nest=True)
    perm = healpy.vec2pix(nside, -y, x, z, nest=True)  # Rz(π/2)(x, y, z) = (−y, x, z)
    assert sorted(perm.tolist()) == list(range(npix))  # an exact grid symmetry
    rx, ry, rz = healpy.pix2vec(nside, perm, nest=True)
    np.testing.assert_allclose(np.stack([rx, ry, rz]), np.stack([-y, x, z]), atol=1e-12)
    return torch.from_numpy(perm.astype(np.int64))


def _rotate(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """``(R f)[perm[i]] = f[i]`` on the last axis."""
    out = torch.empty_like(x)
    out[..., perm] = x
    return out


def test_healpix_layers_and_models_commute_with_the_quarter_turn() -> None:
    torch.manual_seed(0)
    nside = 8
    perm = _rz_quarter_permutation(nside)
    x = torch.randn(2, 3, 12 * nside**2)
    conv = ChebConv(3, 4, 5, nside)
    torch.testing.assert_close(conv(_rotate(x, perm)), _rotate(conv(x), perm), atol=1e-5, rtol=0)
    # pooling: the quarter turn at nside maps parents to parents at nside/2
    coarse = _rz_quarter_permutation(nside // 2)
    torch.testing.assert_close(pool_nested(_rotate(x, perm)), _rotate(pool_nested(x), coarse))
    seg = HealpixGCNNSegmenter(nside, (4, 6, 8), 3, 5, in_channels=3).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            seg(_rotate(x, perm)), _rotate(seg(x), perm), atol=1e-5, rtol=1e-5
        )
        cls = HealpixGCNNClassifier(nside, (4, 6, 8, 8), 3, in_channels=3).eval()
        torch.testing.assert_close(cls(_rotate(x, perm)), cls(x), atol=1e-5, rtol=1e-5)
        # an arbitrary permutation is not a symmetry: the check can fail
        shuffled = torch.randperm(x.shape[-1])
        assert not torch.allclose(seg(x[..., shuffled]), seg(x)[..., shuffled], atol=1e-3)


@pytest.mark.parametrize("grid", ["equiangular", "legendre-gauss"])
def test_disco_layers_and_models_commute_with_longitude_shifts(grid: str) -> None:
    torch.manual_seed(0)
    nlat = 17 if grid == "equiangular" else 16
    levels = torch_harmonics_levels(grid, nlat, 3)
    shapes = [torch_harmonics_shape(grid, n) for n in levels]
    x = torch.randn(2, 2, *shapes[0])
    same = _conv(2, 3, shapes[0], shapes[0], (5, 4), grid)
    torch.testing.assert_close(same(x.roll(1, -1)), same(x).roll(1, -1), atol=1e-5, rtol=1e-5)
    # down: a shift by 2 input steps is 1 output step; up (transpose): 1 input step, 2 output
    down = _conv(2, 3, shapes[0], shapes[1], (5, 4), grid)
    torch.testing.assert_close(down(x.roll(2, -1)), down(x).roll(1, -1), atol=1e-5, rtol=1e-5)
    up = _conv_t(3, 2, shapes[1], shapes[0], (5, 4), grid)
    y = torch.randn(2, 3, *shapes[1])
    torch.testing.assert_close(up(y.roll(1, -1)), up(y).roll(2, -1), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        seg = DiscoSegmenter(grid, nlat, (4, 6, 8), (5, 4), in_channels=2).eval()
        step = 2 ** (len(levels) - 1)
        torch.testing.assert_close(
            seg(x.roll(step, -1)), seg(x).roll(step, -1), atol=1e-5, rtol=1e-5
        )
        cls = DiscoClassifier(grid, nlat, (4, 6, 8), (5, 4), in_channels=2).eval()
        torch.testing.assert_close(cls(x.roll(step, -1)), cls(x), atol=1e-5, rtol=1e-5)
        # a latitude flip of only half the sphere is not a symmetry: the check can fail
        broken = x.clone()
        broken[..., : shapes[0][0] // 2, :] = broken[..., : shapes[0][0] // 2, :].roll(1, -1)
        assert not torch.allclose(seg(broken), seg(x).roll(1, -1), atol=1e-3)


def test_bad_grids_are_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"nside must be a power of two.*12"):
        HealpixGCNNClassifier(12)
    with pytest.raises(ValueError, match=r"nside=4 is too small for 4 resolution levels"):
        HealpixGCNNClassifier(4, (4, 4, 4, 4))
    with pytest.raises(ValueError, match=r"nlat=24 on the equiangular grid cannot be halved"):
        DiscoClassifier("equiangular", 24, (4, 4, 4))
    with pytest.raises(ValueError, match=r"grid must be one of"):
        DiscoSegmenter("soft", 24)
    model = DiscoClassifier("legendre-gauss", 8, (4, 4))
    with pytest.raises(ValueError, match=r"data\.grid=legendre-gauss data\.nlat=8"):
        model(torch.zeros(1, 1, 16, 16))
    same_net_at_nlat_16 = DiscoClassifier("legendre-gauss", 16, (4, 4))
    assert math.isclose(count_parameters(model), count_parameters(same_net_at_nlat_16))


# ------------------------------------------------------------------------------------------------
# a real tiny training job per paradigm
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "data", "grid"),
    [
        ("hpgcnn_seg_small", "mnist_seg", ["data.grid=healpix_nested", "data.nside=8"]),
        ("disco_cls_small", "mnist_cls", ["data.grid=legendre-gauss", "data.nlat=24"]),
    ],
)
def test_tiny_training_job_per_paradigm(
    tmp_path: Path, data_root: Path, cache_dir: Path, model: str, data: str, grid: list[str]
) -> None:
    from hydra import compose, initialize_config_dir

    from sphere_bench.train.run import CONF_DIR, run_job

    overrides = [
        "experiment=smoke_seg", f"model={model}", f"data={data}", *grid, "logger=none",
        "~callbacks.rich_progress_bar", "data.n_train=32", "data.n_val=16", "data.n_test=16",
        "data.batch_size=16", "trainer.max_epochs=1", f"data.root={data_root}",
        f"data.cache_dir={cache_dir}", f"results_dir={tmp_path / 'results'}",
        "callbacks.evaluation.equivariance_samples=2", "callbacks.evaluation.latency_repeats=1",
    ]  # fmt: skip
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose("config", overrides=overrides)
    record = run_job(cfg, run_dir=tmp_path / "run", choices={"model": model, "data": data})
    assert record["status"] == "complete"
    assert record["model"]["parameters"] == EXPECTED_PARAMETERS[model]
    metric = "acc" if "_cls" in model else "miou"
    for name in ("nr", "r"):
        value = record["test"][name][metric]
        assert 0.0 <= value <= 1.0
    equivariance = record["evaluation"]["equivariance"]
    assert equivariance["grid"] == grid[0].split("=")[1] and equivariance["spectral_lmax"] == 16
    assert 0.0 < equivariance["spectral_floor"] < 0.2
    error = equivariance["spectral_rel_error" if "_seg" in model else "haar_rel_error"]
    assert error > 0.0 and equivariance["grid_rel_error"] >= 0.0
    # a mismatched grid is one clear error before anything trains
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        bad = compose("config", overrides=[*overrides[:3], "data.bandwidth=16"])
    from sphere_bench.train.run import check_config

    key = "nside=8" if "hpgcnn" in model else "nlat=24"
    with pytest.raises(ValueError, match=rf"grid mismatch: model={model} needs .*{key}.*"
                       r"data\.grid=soft"):  # fmt: skip
        check_config(bad, model, data)

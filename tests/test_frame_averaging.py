"""Frame averaging: the PCA frame, and exact invariance/equivariance of wrapped CNNs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT
from equivariance_check import equivariance_error
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from sphere_bench.data.planar_source import load_planar_split
from sphere_bench.data.spherical_dataset import SplitSpec, generate_split, render_samples
from sphere_bench.evaluate.equivariance import equivariance_errors
from sphere_bench.harmonic.grids import angles_to_xyz, soft_alphas, soft_betas
from sphere_bench.harmonic.rotations import haar_rotations
from sphere_bench.harmonic.s2_fft import s2_fft, s2_ifft
from sphere_bench.harmonic.signal_rotation import rotate_s2
from sphere_bench.models import count_parameters
from sphere_bench.models.cnn_zoo import ClassificationCNN, SegmentationCNN
from sphere_bench.models.frame_averaging import FrameAveraged, pca_frames, second_moment

B = 8


def _grid_xyz(b: int) -> torch.Tensor:
    beta, alpha = torch.meshgrid(
        torch.from_numpy(soft_betas(b)), torch.from_numpy(soft_alphas(b)), indexing="ij"
    )
    return torch.from_numpy(angles_to_xyz(beta.numpy(), alpha.numpy()))  # [2B, 2B, 3]


def _quadratic_sphere(q: torch.Tensor, c: torch.Tensor, b: int = B) -> torch.Tensor:
    """``f(x) = Σ_i c_i (q_i · x)²`` on the SOFT grid: principal axes ``q_i`` (columns of q)."""
    proj = _grid_xyz(b) @ q  # [2B, 2B, 3]
    return (proj**2 * c).sum(-1)[None, None]


def _nets(b: int) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {
        "classification": ClassificationCNN(b, [4, 4, 8], [3, 3, 3], [1, 2, 1], False, "valid", 10),
        "segmentation": SegmentationCNN(b, [4, 6, 8], [3, 3, 3], [1, 2, 1], True, "valid", 11),
    }


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_second_moment_and_frame_of_a_sphere_with_known_principal_axes() -> None:
    q = haar_rotations(1, torch.Generator().manual_seed(3))[0]
    c = torch.tensor([1.0, 2.5, 4.0], dtype=torch.float64)
    moment = second_moment(_quadratic_sphere(q, c))[0]
    # ∫ (u·x)² x xᵀ dx = 4π/15 (I + 2 u uᵀ) for a unit vector u.
    expected = (
        4
        * math.pi
        / 15
        * (c.sum() * torch.eye(3, dtype=torch.float64) + 2 * q @ torch.diag(c) @ q.T)
    )
    assert torch.allclose(moment, expected, atol=1e-12)
    frames, gaps = pca_frames(moment[None])
    assert frames.shape == (1, 4, 3, 3)
    # Eigenvalues 4π/15 (Σc + 2 c_i): gaps 2·1.5 and 2·1.5, total 5 Σc = 37.5.
    assert float(gaps[0]) == pytest.approx(3.0 / 37.5, rel=1e-9)
    for g in frames[0]:
        assert torch.allclose(g.T @ g, torch.eye(3, dtype=torch.float64), atol=1e-12)
        assert float(torch.linalg.det(g)) == pytest.approx(1.0, abs=1e-12)
        # Column i is ±q_i (ascending eigenvalues: c is ascending).
        assert torch.allclose((g * q).sum(0).abs(), torch.ones(3, dtype=torch.float64), atol=1e-10)
    # The four frames are the four sign patterns: pairwise distinct.
    flat = frames[0].reshape(4, 9)
    assert float(torch.cdist(flat, flat).add(torch.eye(4) * 10).min()) > 1.0


def test_frame_rotates_with_the_image() -> None:
    x = torch.rand(
        3, 1, 2 * B, 2 * B, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    rotation = haar_rotations(1, torch.Generator().manual_seed(1))[0]
    x = s2_ifft(s2_fft(x))  # band-limited: spectral rotation is exact
    m, m_rot = second_moment(x), second_moment(rotate_s2(x, rotation))
    assert torch.allclose(m_rot, rotation @ m @ rotation.T, atol=1e-10)


def test_degenerate_eigenvalues_are_reported() -> None:
    ez = torch.eye(3, dtype=torch.float64)
    x = _quadratic_sphere(ez, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)).float()
    net = _nets(B)["classification"]
    with pytest.raises(ValueError, match="relative eigenvalue gap"):
        FrameAveraged(net, degenerate="error")(x)
    fa = FrameAveraged(net, degenerate="ignore")
    fa(x)
    assert fa.degenerate_count == 1 and float(fa.last_gaps[0]) < 1e-6


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_frame_averaged_cnn_is_exact_on_grid_and_spectral_rotations(task: str) -> None:
    net = _nets(B)[task]
    fa = FrameAveraged(net).eval()
    x = torch.rand(4, 1, 2 * B, 2 * B, generator=torch.Generator().manual_seed(0)) ** 4
    space_out = "s2" if task == "segmentation" else None  # classification: invariant
    with torch.no_grad():
        y, y_net = fa(x), net(x)
    # Longitude shifts by multiples of the grid step, and the half-turn Ry(π) (module doc of
    # signal_rotation): both permute the grid points.
    for rotation in ((1, False), (3, False), (B, False), (0, True), (5, True)):
        assert equivariance_error(fa, x, rotation, "s2", space_out, y=y) <= 1e-5
        assert equivariance_error(net, x, rotation, "s2", space_out, y=y_net) > 1e-3
    # Haar rotations of a band-limited input (one per sample): the spectral rotation is exact.
    xb = s2_ifft(s2_fft(x.double())).float()
    rotations = haar_rotations(4, torch.Generator().manual_seed(2))
    assert equivariance_error(fa, xb, rotations, "s2", space_out) <= 1e-5


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_haar_error_of_rerendered_digits_is_within_the_resampling_floor(
    data_root: Path, task: str
) -> None:
    b, n = 16, 8
    source = load_planar_split("mnist", "test", data_root, None)
    spec = SplitSpec("mnist", task, "test", n, resolution=b, rotate="random")
    data = generate_split(spec, source, progress=False)
    ids = torch.arange(n)

    def rerender(extra: torch.Tensor) -> torch.Tensor:
        return render_samples(spec, source, ids, extra.float() @ data.rotations)[0].float()[:, None]

    x = data.inputs.float()[:, None]
    rotations = haar_rotations(n, torch.Generator().manual_seed(0))
    band = s2_ifft(s2_fft(x.double()))
    floor = _rel(s2_ifft(s2_fft(rerender(rotations).double())), rotate_s2(band, rotations))
    torch.manual_seed(0)
    net = _nets(b)[task]
    fa = FrameAveraged(net)
    errors = equivariance_errors(fa, x, task, rerender, n_haar=1,
                                 generator=torch.Generator().manual_seed(0))  # fmt: skip
    plain = equivariance_errors(net, x, task, rerender, n_haar=1,
                                generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert 0.01 < floor < 0.3  # the input's own resampling error at this bandwidth
    assert errors["grid_rel_error"] < 1e-5
    assert errors["haar_rel_error"] <= floor
    assert plain["haar_rel_error"] > 3 * errors["haar_rel_error"]


def test_fa_configs_wrap_their_cnn_with_the_same_parameters() -> None:
    with initialize_config_dir(str(REPO_ROOT / "conf"), version_base="1.3"):
        for name, inner in (
            ("fa_cnn_cls_small", "cnn_cls_small"),
            ("fa_cnn_seg_small", "cnn_seg_small"),
        ):
            cfg = compose("config", overrides=[f"model={name}"])
            fa = instantiate(cfg.model)
            ref = instantiate(compose("config", overrides=[f"model={inner}"]).model)
            assert isinstance(fa, FrameAveraged) and fa.bandwidth == ref.bandwidth
            assert fa.task == ref.task
            assert count_parameters(fa) == count_parameters(ref)
    with pytest.raises(ValueError, match="bandwidth=20 but the wrapped net is built for B=16"):
        FrameAveraged(_nets(16)["classification"], bandwidth=20)
    with pytest.raises(ValueError, match="task must be"):
        FrameAveraged(torch.nn.Identity())

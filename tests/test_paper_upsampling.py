"""``model.upsampling=paper``: the reference's aliased up-sampling (models/paper_upsampling.py).

Agreement with the paper's own code is measured by ``scripts/compare_reference_s2cnn.py`` (needs
the reference; numbers in ``docs/reference_s2cnn.md``); these tests check the transform against
a direct quadrature and the layers' wiring.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from sphere_bench.harmonic.grids import soft_alphas, soft_betas, soft_quadrature_weights
from sphere_bench.harmonic.paper_upsampling import so3_analysis_aliased
from sphere_bench.harmonic.so3_fft import so3_analysis_pairs
from sphere_bench.harmonic.wigner import wigner_D_padded
from sphere_bench.models.s2cnn_layers import SO3Convolution, SO3ToS2Convolution
from sphere_bench.models.s2cnn_zoo import S2CNNClassifier, S2CNNSegmentation

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"


def test_aliased_analysis_is_the_coarse_grid_quadrature() -> None:
    # F^l_mn = sum_jkp w_j / (8 B^2) f(a_k, b_j, g_p) D^l_mn(a_k, b_j, g_p) for every l < L, also
    # l >= B (aliased), restricted to |m|, |n| < B: a brute-force sum over the grid.
    b, L = 3, 5
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2 * b, 2 * b, 2 * b, generator=gen, dtype=torch.float64)
    beta, alpha = torch.tensor(soft_betas(b)), torch.tensor(soft_alphas(b))
    bb, aa, gg = torch.meshgrid(beta, alpha, alpha, indexing="ij")
    D = wigner_D_padded(L, aa, bb, gg)  # [j, k, p, l, m, n]
    w = torch.tensor(soft_quadrature_weights(b)) / (8 * b * b)
    direct = torch.einsum("ijkp,j,jkplmn->imnl", x.to(torch.complex128), w.to(torch.complex128), D)
    got = so3_analysis_aliased(x, L).permute(3, 0, 1, 2)  # [i, m >= 0, n, l]
    expected = direct[:, L - 1 :].clone()
    orders = torch.arange(-(L - 1), L).abs()
    expected[:, orders[L - 1 :] >= b] = 0
    expected[:, :, orders >= b] = 0
    assert torch.allclose(got, expected, atol=1e-12)
    assert expected[:, :, :, b:].abs().max() > 1e-2  # the aliased degrees are not zero
    # For L <= B it is the exact transform.
    assert torch.allclose(so3_analysis_aliased(x, b), so3_analysis_pairs(x, b), atol=1e-14)


@pytest.mark.parametrize("layer_cls", [SO3Convolution, SO3ToS2Convolution])
def test_paper_mode_changes_only_upsampling_layers(layer_cls) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 8, 8, 8, generator=gen)
    for b_out, differs in ((6, True), (3, False), (4, False)):
        torch.manual_seed(2)
        exact = layer_cls(3, 2, 4, b_out)
        paper = layer_cls(3, 2, 4, b_out, upsampling="paper")
        paper.load_state_dict(exact.state_dict())
        diff = (exact(x) - paper(x)).norm() / exact(x).norm()
        assert (diff > 1e-3) if differs else (diff == 0), (b_out, diff)


def test_models_take_upsampling_and_reject_unknown_values() -> None:
    torch.manual_seed(3)
    kwargs = dict(bandwidth=6, channels=[3, 4, 3], bandlimits=[4, 3, 5],
                  kernel_max_beta=[0.1238, 0.1474, 0.1768, 0.1474], num_classes=5)  # fmt: skip
    exact = S2CNNSegmentation(**kwargs)
    paper = S2CNNSegmentation(**kwargs, upsampling="paper")
    paper.load_state_dict(exact.state_dict())
    x = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(4)) * 255
    assert not torch.allclose(exact(x), paper(x), rtol=1e-3)
    # The classifier only down-samples (30 -> 10 -> 6): both modes are the same function.
    cls_exact = S2CNNClassifier(bandwidth=8, bandlimits=[4, 3])
    cls_paper = S2CNNClassifier(bandwidth=8, bandlimits=[4, 3], upsampling="paper")
    cls_paper.load_state_dict(cls_exact.state_dict())
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    assert torch.equal(cls_exact(x), cls_paper(x))
    with pytest.raises(ValueError, match="model.upsampling 'aliased'"):
        S2CNNSegmentation(**kwargs, upsampling="aliased")
    cfg = OmegaConf.load(CONF / "s2cnn_seg_b20.yaml")
    cfg.upsampling = "paper"
    model = hydra.utils.instantiate(cfg)
    assert {m.upsampling for m in model.modules() if hasattr(m, "upsampling")} == {"paper"}

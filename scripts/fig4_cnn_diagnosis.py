"""Diagnose a Fig. 4 classification CNN: fit, receptive field vs digit extent, errors by position.

For a finished classification checkpoint of the ``paper_fig4_cpu`` preset (or any run of a
``ClassificationCNN`` on the paper grid) this prints, from the cached splits of that run's data
config:

* accuracy and mean cross-entropy on the training set, the validation set and the R test set
  (under- or over-fitting);
* the model's receptive field (``1 + Σ (k_i − 1) · Π_{j<i} s_j``) and final map size, next to the
  digit's extent on the ``2B × 2B`` grid: rows (colatitude) and columns (longitude, the shortest
  circular arc) spanned by pixels above the segmentation threshold (150 of 255, the paper's rule);
* the untrained model's logit spread and loss on raw 0–255 inputs and on inputs / 255 (does the
  paper's unnormalised input scale start the training badly?);
* the R-test error rate binned by the colatitude of the digit's centroid (intensity- and
  area-weighted mean of the grid points' unit vectors, area weight ``sin β``), and the share of
  all errors whose digit sits within 30° of either pole (13.4 % of a uniform sphere).

Usage (from the repository root, ``PYTHONPATH=$PWD``)::

    python scripts/fig4_cnn_diagnosis.py --checkpoint PATH/epoch_017.ckpt --model cnn_cls_114k \\
        [--n-train 10000] [override ...]

Trailing arguments are extra Hydra overrides for the composed ``experiment=paper_fig4_cpu`` config
(e.g. ``data.rotation_chunk=500`` evaluates on the paper code's chunked rotations, one per 500
images; the per-orientation accuracy spread is then printed too). Splits are read from (or
generated into) ``data.cache_dir``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra import compose, initialize_config_dir

CONF = Path(__file__).resolve().parents[1] / "conf"
THRESHOLD = 150
POLE_DEG = 30.0


def receptive_field(kernels: list[int], strides: list[int]) -> int:
    """``1 + Σ (k_i − 1) · Π_{j<i} s_j`` in input pixels."""
    rf, jump = 1, 1
    for k, s in zip(kernels, strides, strict=True):
        rf += (k - 1) * jump
        jump *= s
    return rf


def load_run(checkpoint: Path, model: str, n_train: int, overrides: Sequence[str] = ()) -> tuple:
    """``(cfg, datamodule, net)`` of a ``paper_fig4_cpu`` job: the composed config
    (``experiment=paper_fig4_cpu model=<model> data.n_train=<n_train>`` and ``overrides``), its
    data module with the fit and test splits set up (from ``data.cache_dir``), and the net with
    the checkpoint's weights, in eval mode."""
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(
            "config",
            overrides=[
                "experiment=paper_fig4_cpu",
                f"model={model}",
                f"data.n_train={n_train}",
                *overrides,
            ],
        )
    dm = hydra.utils.instantiate(cfg.data)
    dm.setup("fit")
    dm.setup("test")
    net = hydra.utils.instantiate(cfg.model)
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items()})
    return cfg, dm, net.eval()


def evaluate(net: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, batch: int = 500):
    """Per-sample predictions and cross-entropy losses for uint8 ``[n, H, W]`` inputs."""
    preds, losses = [], []
    with torch.no_grad():
        for i in range(0, len(inputs), batch):
            x = inputs[i : i + batch].to(torch.float32).unsqueeze(1)
            logits = net(x)
            y = targets[i : i + batch]
            losses.append(torch.nn.functional.cross_entropy(logits, y, reduction="none"))
            preds.append(logits.argmax(-1))
    return torch.cat(preds), torch.cat(losses)


def extents(inputs: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Rows and shortest circular column arc spanned by pixels > THRESHOLD, per sample."""
    ink = (inputs > THRESHOLD).numpy()
    n, h, w = ink.shape
    rows = np.zeros(n, int)
    cols = np.zeros(n, int)
    for i in range(n):
        r = np.flatnonzero(ink[i].any(1))
        c = np.flatnonzero(ink[i].any(0))
        if len(r) == 0:
            continue
        rows[i] = r[-1] - r[0] + 1
        gaps = np.diff(np.concatenate([c, [c[0] + w]]))  # circular gaps between inked columns
        cols[i] = w - (gaps.max() - 1)
    return rows, cols


def centroid_colatitude(inputs: torch.Tensor, betas: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Colatitude in degrees of each sample's intensity- and area-weighted centroid."""
    beta, alpha = np.meshgrid(betas, alphas, indexing="ij")
    xyz = np.stack([np.sin(beta) * np.cos(alpha), np.sin(beta) * np.sin(alpha), np.cos(beta)], -1)
    weight = inputs.numpy().astype(np.float64) * np.sin(beta)[None]
    c = np.einsum("nhw,hwd->nd", weight, xyz)
    c /= np.linalg.norm(c, axis=-1, keepdims=True)
    return np.degrees(np.arccos(np.clip(c[:, 2], -1, 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--model", required=True, help="conf/model name of the checkpoint")
    parser.add_argument("--n-train", type=int, default=10000)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(1)

    cfg, dm, net = load_run(
        args.checkpoint, args.model, args.n_train, ["data.rotate_train=random", *args.overrides]
    )

    kernels, strides = list(cfg.model.kernel_sizes), list(cfg.model.strides)
    side = 2 * cfg.data.bandwidth
    size = side
    for k, s in zip(kernels, strides, strict=True):
        size = (size - k) // s + 1
    print(
        f"model {args.model}: receptive field {receptive_field(kernels, strides)} px, "
        f"final map {size}x{size}, input {side}x{side}"
    )

    x0 = dm.test_sets["r"].tensors.inputs[:500].to(torch.float32).unsqueeze(1)
    y0 = dm.test_sets["r"].tensors.targets[:500]
    for scale, label in ((1.0, "raw 0-255"), (1 / 255, "divided by 255")):
        torch.manual_seed(0)
        fresh = hydra.utils.instantiate(cfg.model)
        with torch.no_grad():
            logits = fresh(x0 * scale)
        ce = torch.nn.functional.cross_entropy(logits, y0).item()
        print(
            f"untrained (seed 0), inputs {label}: logit std {logits.std().item():.3f}, "
            f"cross-entropy {ce:.3f} on 500 R-test spheres (ln 10 = 2.303)"
        )

    sets = {"train": dm.train_set, "val": dm.val_set, "test_r": dm.test_sets["r"]}
    results = {}
    for name, ds in sets.items():
        t = ds.tensors
        pred, loss = evaluate(net, t.inputs, t.targets)
        correct = (pred == t.targets).numpy()
        results[name] = (t, correct)
        print(
            f"{name:7s} n={len(t):6d} acc={100 * correct.mean():6.2f} % "
            f"loss={loss.mean().item():.4f}"
        )

    t, correct = results["test_r"]
    rows, cols = extents(t.inputs)
    for label, e in (("rows (colatitude)", rows), ("cols (longitude arc)", cols)):
        q = np.percentile(e, [10, 50, 90])
        print(
            f"R-test digit extent, {label}: p10 {q[0]:.0f}, median {q[1]:.0f}, p90 {q[2]:.0f} "
            f"px; > receptive field in {100 * (e > receptive_field(kernels, strides)).mean():.1f}"
            " % of digits"
        )
    b = cfg.data.bandwidth
    betas = np.pi * np.arange(2 * b) / (2 * b)  # the paper grid (lie_learn Driscoll-Healy)
    alphas = np.pi * np.arange(2 * b) / b
    colat = centroid_colatitude(t.inputs, betas, alphas)
    errors = ~correct
    print(
        "R-test error rate by centroid colatitude (deg): bin, share of digits, error rate, "
        "share of errors"
    )
    edges = [0, 30, 60, 90, 120, 150, 180]
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (colat >= lo) & (colat < hi) if hi < 180 else (colat >= lo)
        print(
            f"  [{lo:3d},{hi:3d}): {100 * m.mean():5.1f} % of digits, "
            f"error {100 * errors[m].mean():5.1f} %, {100 * errors[m].sum() / errors.sum():5.1f} "
            "% of errors"
        )
    polar = (colat < POLE_DEG) | (colat > 180 - POLE_DEG)
    uniform = 100 * (1 - math.cos(math.radians(POLE_DEG)))
    polar_share = 100 * errors[polar].sum() / errors.sum()
    print(
        f"within {POLE_DEG:.0f} deg of a pole: {100 * polar.mean():.1f} % of digits "
        f"(uniform sphere {uniform:.1f} %), error {100 * errors[polar].mean():.1f} % vs "
        f"{100 * errors[~polar].mean():.1f} % elsewhere; {polar_share:.1f} % of all errors"
    )
    print(
        f"R-test accuracy if polar digits were classified as well as the rest: "
        f"{100 * (1 - errors[~polar].mean()):.2f} %"
    )
    _, group = torch.unique(t.rotations.reshape(len(t), -1), dim=0, return_inverse=True)
    n_groups = int(group.max()) + 1
    if n_groups < len(t) // 2:  # chunked rotations (data.rotation_chunk > 1)
        acc = np.array([correct[(group == g).numpy()].mean() for g in range(n_groups)]) * 100
        print(
            f"R-test accuracy per orientation ({n_groups} orientations): min {acc.min():.1f}, "
            f"median {np.median(acc):.1f}, max {acc.max():.1f}, std {acc.std(ddof=1):.1f} %; "
            f"std of the mean over orientations {acc.std(ddof=1) / math.sqrt(n_groups):.1f}"
        )


if __name__ == "__main__":
    main()

"""Does a soft-equivariance run see the inputs its penalty sees? Raw x vs band-limited P_B x.

The penalty (``sphere_bench/train/equivariance_loss.py``) compares the logits of ``P_B x`` and
``R P_B x``; the cross-entropy and the test see raw rendered images. For every complete
classification record of the planar CNNs (``cnn_*``, ``bl_*``; seed 0) in ``<runs>/<sweep>``,
this loads the best checkpoint and measures on the first ``--n`` NR test images: the accuracy on
``x`` and on ``P_B x``, the spread of the logits over the batch (mean over classes of their
standard deviation) on each, and the penalty ``P`` (Haar rotations seeded by ``--seed``). A
network that emits constant logits on ``P_B x`` (spread ≈ 0, accuracy at chance) while
classifying ``x`` has satisfied the penalty without becoming invariant.

    python scripts/soft_equivariance_inputs.py --runs results/runs --sweep quick_equivariance \\
        --out results/equivariance/soft_inputs.md
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

from sphere_bench.evaluate.ensemble import load_member
from sphere_bench.harmonic.rotations import haar_rotations
from sphere_bench.io import atomic_write_text
from sphere_bench.models.band_limited import band_limit
from sphere_bench.report.records import load_runs
from sphere_bench.train.equivariance_loss import equivariance_penalty
from sphere_bench.train.record import safe_instantiate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default="results/runs")
    parser.add_argument("--sweep", default="quick_equivariance")
    parser.add_argument("--out", default="results/equivariance/soft_inputs.md")
    parser.add_argument("--n", type=int, default=256, help="NR test images")
    parser.add_argument("--seed", type=int, default=0, help="seeds the penalty's rotations")
    parser.add_argument("--data-root", default=None, help="overrides the records' data.root")
    args = parser.parse_args()
    torch.set_num_threads(1)
    records = [
        r for r in load_runs(args.runs, [args.sweep]).complete
        if r["model"]["name"].startswith(("cnn_", "bl_")) and int(r.get("seed", 0)) == 0
        and r["data"].get("task", "classification") == "classification"
    ]  # fmt: skip
    if not records:
        raise SystemExit(f"no complete CNN classification records in {args.runs}/{args.sweep}")
    records.sort(key=lambda r: (r["model"]["name"], r["data"]["rotate_train"],
                                r["config"].get("lit", {}).get("equivariance_weight") or 0.0,
                                r["config"]["trainer"]["max_epochs"]))  # fmt: skip
    data_cfg = copy.deepcopy(records[0]["config"]["data"])
    data_cfg["progress"] = False
    if args.data_root:
        data_cfg["root"] = args.data_root
    datamodule = safe_instantiate(data_cfg, "data")
    datamodule.setup("test")
    tensors = datamodule.test_sets["nr"].tensors
    x = tensors.inputs[: args.n].to(torch.float32).unsqueeze(1)
    y = tensors.targets[: args.n].long()
    projected = band_limit(x)
    rotations = haar_rotations(len(x), torch.Generator().manual_seed(args.seed))
    lines = [
        "# Soft equivariance: raw inputs vs the penalty's band-limited inputs",
        "",
        f"First {len(x)} NR test images of `{args.sweep}` (B = {datamodule.bandwidth}); "
        f"relative L2 distance of x from P_B x: {float((x - projected).norm() / x.norm()):.3f}. "
        "Spread = mean over classes of the logits' standard deviation over the images. "
        "P = the penalty on these images (one Haar rotation each).",
        f"Command: `python scripts/soft_equivariance_inputs.py --runs {args.runs} --sweep "
        f"{args.sweep} --n {args.n} --seed {args.seed}`.",
        "",
        "| model | training | λ | epochs | acc on x (%) | acc on P_B x (%) | spread on x | "
        "spread on P_B x | P |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for record in records:
        net = load_member(record)
        with torch.no_grad():
            raw, low = net(x), net(projected)
            penalty = float(equivariance_penalty(net, x, "classification", rotations))
        weight = float(record["config"].get("lit", {}).get("equivariance_weight") or 0.0)
        train = "R" if record["data"]["rotate_train"] == "random" else "NR"
        lines.append(
            f"| {record['model']['name']} | {train} "
            f"| {weight:g} | {record['config']['trainer']['max_epochs']} | "
            f"{100 * float((raw.argmax(1) == y).float().mean()):.1f} | "
            f"{100 * float((low.argmax(1) == y).float().mean()):.1f} | "
            f"{float(raw.std(0).mean()):.3f} | {float(low.std(0).mean()):.3f} | {penalty:.3g} |"
        )
    atomic_write_text(Path(args.out), "\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Under- or over-fitting of a Fig. 4 checkpoint: accuracy and loss on train, validation and R test.

For a checkpoint of the ``paper_fig4_cpu`` preset (any model: the S2CNN or a CNN), this composes
that job's config (``experiment=paper_fig4_cpu model=<model> data.n_train=<N>``, so the model's
recipe picks its training rotation), reads the same cached splits and prints the accuracy and
mean cross-entropy of the checkpoint's weights on the first ``--samples`` images of the training
set, the validation set and the R test set. Train ≈ validation: the model is capacity-limited
(more data or epochs will not help much); train ≫ validation: it overfits.
(``scripts/fig4_cnn_diagnosis.py``, whose loading and evaluation this reuses, goes further for
the CNNs.)

Usage (from the repository root, ``PYTHONPATH=$PWD``)::

    python scripts/fig4_fit.py --checkpoint PATH/epoch_061.ckpt --model s2cnn_cls_150k \\
        --n-train 30000 [--samples 3000] [override ...]

Trailing arguments are extra Hydra overrides (e.g. ``data.cache_dir=...`` where the run's data
cache is).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from fig4_cnn_diagnosis import evaluate, load_run  # scripts/ is on sys.path when run as a script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--model", required=True, help="conf/model name of the checkpoint")
    parser.add_argument("--n-train", type=int, required=True)
    parser.add_argument("--samples", type=int, default=3000, help="first images of each split")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg, dm, net = load_run(args.checkpoint, args.model, args.n_train, args.overrides)
    print(f"{args.model}, N = {args.n_train}, trained {cfg.data.rotate_train}: {args.checkpoint}")
    splits = (("train", dm.train_set), ("val", dm.val_set), ("R test", dm.test_sets["r"]))
    for name, dataset in splits:
        tensors = dataset.tensors
        m = min(args.samples, len(tensors.targets))
        pred, loss = evaluate(net, tensors.inputs[:m], tensors.targets[:m])
        acc = 100 * (pred == tensors.targets[:m]).double().mean().item()
        print(f"  {name:7s} accuracy {acc:6.2f} %  cross-entropy {loss.mean():.3f}  (first {m})")


if __name__ == "__main__":
    main()

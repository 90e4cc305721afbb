"""Under- or over-fitting of a Fig. 4 checkpoint: accuracy and loss on train, validation and R test.

For a checkpoint of the ``paper_fig4_cpu`` preset (any model: the S2CNN or a CNN), this composes
that job's config (``experiment=paper_fig4_cpu model=<model> data.n_train=<N>``, so the model's
recipe picks its training rotation), reads the same cached splits and prints the accuracy and
mean cross-entropy of the checkpoint's weights on the first ``--samples`` images of the training
set, the validation set and the R test set. Train ≈ validation: the model is capacity-limited
(more data or epochs will not help much); train ≫ validation: it overfits.
(``scripts/fig4_cnn_diagnosis.py`` goes further for the CNNs.)

Usage (from the repository root, ``PYTHONPATH=$PWD``)::

    python scripts/fig4_fit.py --checkpoint PATH/epoch_061.ckpt --model s2cnn_cls_150k \\
        --n-train 30000 [--samples 3000] [override ...]

Trailing arguments are extra Hydra overrides (e.g. ``data.cache_dir=...`` where the run's data
cache is).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import hydra
import torch
from hydra import compose, initialize_config_dir

CONF = Path(__file__).resolve().parents[1] / "conf"


def accuracy_and_loss(
    net: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, batch: int = 250
) -> tuple[float, float]:
    """Accuracy (%) and mean cross-entropy of ``net`` on uint8 ``[n, H, W]`` inputs."""
    correct, loss = 0, 0.0
    with torch.no_grad():
        for i in range(0, len(inputs), batch):
            logits = net(inputs[i : i + batch].to(torch.float32).unsqueeze(1))
            y = targets[i : i + batch]
            correct += int((logits.argmax(1) == y).sum())
            loss += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
    return 100 * correct / len(inputs), loss / len(inputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--model", required=True, help="conf/model name of the checkpoint")
    parser.add_argument("--n-train", type=int, required=True)
    parser.add_argument("--samples", type=int, default=3000, help="first images of each split")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(
            "config",
            overrides=[
                "experiment=paper_fig4_cpu",
                f"model={args.model}",
                f"data.n_train={args.n_train}",
                *args.overrides,
            ],
        )
    dm = hydra.utils.instantiate(cfg.data)
    dm.setup("fit")
    dm.setup("test")
    net = hydra.utils.instantiate(cfg.model)
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items()})
    net.eval()
    print(f"{args.model}, N = {args.n_train}, trained {cfg.data.rotate_train}: {args.checkpoint}")
    splits = (("train", dm.train_set), ("val", dm.val_set), ("R test", dm.test_sets["r"]))
    for name, dataset in splits:
        tensors = dataset.tensors
        m = min(args.samples, len(tensors.targets))
        acc, loss = accuracy_and_loss(net, tensors.inputs[:m], tensors.targets[:m])
        print(f"  {name:7s} accuracy {acc:6.2f} %  cross-entropy {loss:.3f}  (first {m})")


if __name__ == "__main__":
    main()

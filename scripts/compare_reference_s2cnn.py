"""Same weights through the paper's s2cnn and sphere_bench's S2CNN: per-layer relative difference.

Builds a sphere_bench S2CNN (seeded random weights), exports its weights as the reference's
state_dict (:func:`sphere_bench.models.s2cnn_import.reference_key_map`), and runs this file again
as a worker in the reference's own environment (``--reference-python``; the fork
``Schuh93/sem_seg_s2cnn`` exported at ``--reference-src``, see ``docs/running_the_reference.md``;
nothing of it is installed into sphere_bench's venv or committed). The worker loads the weights
into ``S2ConvNet_sem_seg`` / ``S2ConvNet_original`` with ``load_state_dict`` and records every
spherical layer's input and output on one input batch. sphere_bench then reports, per layer,
``‖ours − ref‖ / ‖ref‖`` (Frobenius norms over the batch), for ``model.upsampling`` ``exact`` and
``paper``:

* ``isolated``: our layer applied to the reference layer's own input (the layer alone);
* ``chained``: our whole network on the same input (differences accumulate).

    .venv/bin/python scripts/compare_reference_s2cnn.py --layout seg_b20 \\
        --reference-python <WORK>/venv/bin/python --reference-src <WORK>/src/sem_seg_s2cnn

Layouts: ``seg_b20`` (the 204k layout at B = 20, conf/model/s2cnn_seg_b20.yaml; up-sampling
layers 8→11, 11→14, 14→16, 16→20), ``seg_204k`` (B = 50; the reference needs ~4 min and ~4 GB
for its tables), ``cls_150k`` (upstream's MNIST model, no up-sampling). The input is a batch of
paper-mode MNIST spheres (``data.grid=paper data.interpolation=paper``, 0–255). float32 on the CPU.

In worker mode (``--worker``) this file imports only the standard library, numpy and torch,
never sphere_bench.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
# Constructor arguments per layout: sphere_bench's (model) and the reference's (reference).
LAYOUTS = {
    "seg_b20": dict(
        kind="segmentation", bandwidth=20,
        model=dict(channels=[11, 12, 13, 14, 13, 12, 11], bandlimits=[16, 14, 11, 8, 11, 14, 16],
                   kernel_max_beta=[0.1238, 0.1474, 0.1768, 0.2292, 0.3095, 0.2292, 0.1768,
                                    0.1474], num_classes=11),
    ),
    "seg_204k": dict(
        kind="segmentation", bandwidth=50,
        model=dict(channels=[11, 12, 13, 14, 13, 12, 11], bandlimits=[42, 35, 27, 20, 27, 35, 42],
                   kernel_max_beta=[0.1238, 0.1474, 0.1768, 0.2292, 0.3095, 0.2292, 0.1768,
                                    0.1474], num_classes=11),
    ),
    "cls_150k": dict(kind="classification", bandwidth=30, model={}),
}  # fmt: skip


# ---------------------------------------------------------------- worker (reference venv) ----
def _worker(src: Path, exchange: Path, out: Path, threads: int) -> None:
    torch.set_num_threads(threads)
    setattr(np, "float", float)  # noqa: B010  # s2cnn's grid helpers use np.float (NumPy < 1.24)
    sys.path.insert(0, str(src))
    data = torch.load(exchange, weights_only=True)
    layout = LAYOUTS[data["layout"]]
    if layout["kind"] == "segmentation":
        sys.path.insert(0, str(src / "examples" / "mnist_sem_seg"))
        from models import S2ConvNet_sem_seg

        m = layout["model"]
        model = S2ConvNet_sem_seg(
            b_in=layout["bandwidth"], f_in=1, fs=m["channels"], b_ls=m["bandlimits"],
            b_out=layout["bandwidth"], f_out=m["num_classes"],
            kernel_max_beta=m["kernel_max_beta"], use_skips=False,
        )  # fmt: skip
        names = ["input_layer"] + [f"hidden_layers.{i}" for i in range(len(model.hidden_layers))]
        names.append("output_layer")
    else:
        sys.path.insert(0, str(src / "examples" / "mnist"))
        from run import S2ConvNet_original

        model = S2ConvNet_original()
        names = ["conv1", "conv2"]
    model.load_state_dict(data["state_dict"], strict=True)
    model.eval()
    record: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    for name in names:

        def hook(_m, args, output, name=name):
            record[f"{name}.in"] = args[0].detach().clone()
            record[f"{name}.out"] = output.detach().clone()

        modules[name].register_forward_hook(hook)
    with torch.no_grad():
        record["logits"] = model(data["x"]).detach().clone()
    torch.save({"names": names, "record": record}, out)


# ---------------------------------------------------------------- main (sphere_bench venv) ----
def _our_model(layout_name: str, upsampling: str) -> torch.nn.Module:
    from sphere_bench.models.s2cnn_zoo import S2CNNClassifier, S2CNNSegmentation

    layout = LAYOUTS[layout_name]
    cls = S2CNNSegmentation if layout["kind"] == "segmentation" else S2CNNClassifier
    return cls(bandwidth=layout["bandwidth"], upsampling=upsampling, **layout["model"])


def _inputs(bandwidth: int, batch: int, data_root: Path) -> torch.Tensor:
    from sphere_bench.data.planar_source import load_planar_split
    from sphere_bench.data.spherical_dataset import SplitSpec, generate_split

    source = load_planar_split("mnist", "test", data_root, None)
    spec = SplitSpec(
        "mnist", "classification", "test", batch, grid="paper", resolution=bandwidth,
        interpolation="paper",
    )  # fmt: skip
    return generate_split(spec, source, progress=False).inputs[:, None].to(torch.float32)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layout", choices=sorted(LAYOUTS), default="seg_b20")
    parser.add_argument("--reference-python", help="python of the reference's venv")
    parser.add_argument("--reference-src", type=Path, help="exported tree of the fork")
    parser.add_argument(
        "--reference-cwd",
        type=Path,
        default=Path(tempfile.gettempdir()) / "s2cnn_ref_cache",
        help="the worker's working folder (the reference caches its tables in ./cache)",
    )
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--data", type=Path, default=Path(os.environ.get("SPHERE_BENCH_DATA", "data"))
    )
    parser.add_argument(
        "--worker", nargs=2, type=Path, metavar=("EXCHANGE", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.worker:
        _worker(args.reference_src, args.worker[0], args.worker[1], args.threads)
        return
    if not (args.reference_python and args.reference_src):
        parser.error("--reference-python and --reference-src are needed (the paper's code)")

    from sphere_bench.models.s2cnn_import import load_reference_state_dict, reference_key_map

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    layout = LAYOUTS[args.layout]
    base = _our_model(args.layout, "exact")
    for p in base.parameters():  # non-zero biases too, so the bias mapping is exercised
        torch.nn.init.uniform_(p, -1.0, 1.0) if p.dim() > 1 else torch.nn.init.normal_(p, 0.0, 0.1)
    ours_state = base.state_dict()
    reference_state = {ref: ours_state[key].clone() for ref, key in reference_key_map(base).items()}
    x = _inputs(layout["bandwidth"], args.batch, args.data)
    args.reference_cwd.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        exchange, out = Path(tmp) / "exchange.pt", Path(tmp) / "out.pt"
        torch.save({"layout": args.layout, "state_dict": reference_state, "x": x}, exchange)
        cmd = [args.reference_python, str(Path(__file__).resolve()), "--worker", str(exchange),
               str(out), "--reference-src", str(args.reference_src.resolve()),
               "--threads", str(args.threads)]  # fmt: skip
        subprocess.run(cmd, check=True, cwd=args.reference_cwd)
        result = torch.load(out, weights_only=True)
    names, record = result["names"], result["record"]
    print(f"layout {args.layout}, batch {args.batch}, float32, seed {args.seed}")
    print("| layer | b_in → b_out | upsampling | isolated rel. diff | chained rel. diff |")
    print("|---|---|---|---|---|")
    for upsampling in ("exact", "paper"):
        model = load_reference_state_dict(_our_model(args.layout, upsampling), reference_state)
        model.eval()
        ref_to_ours = {ref.rsplit(".", 1)[0]: key.rsplit(".", 1)[0]
                       for ref, key in reference_key_map(model).items()}  # fmt: skip
        modules = dict(model.named_modules())
        chained: dict[str, torch.Tensor] = {}
        handles = []
        for name in names:

            def hook(_m, _args, output, name=name, store=chained):
                store[name] = output.detach().clone()

            handles.append(modules[ref_to_ours[name]].register_forward_hook(hook))
        with torch.no_grad():
            logits = model(x)
            for handle in handles:  # the isolated calls below must not overwrite `chained`
                handle.remove()
            for name in names:
                layer = modules[ref_to_ours[name]]
                isolated = layer(record[f"{name}.in"])
                print(f"| {name} | {layer.b_in} → {layer.b_out} | {upsampling} | "
                      f"{_relative(isolated, record[f'{name}.out']):.2e} | "
                      f"{_relative(chained[name], record[f'{name}.out']):.2e} |")  # fmt: skip
        print(f"| network output | | {upsampling} | | {_relative(logits, record['logits']):.2e} |")


if __name__ == "__main__":
    main()

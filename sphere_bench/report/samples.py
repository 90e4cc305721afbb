"""Sample predictions of trained S2CNN and CNN on a rotated test sphere."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sphere_bench.report.figures import pyplot, save_figure
from sphere_bench.report.records import family, safe_instantiate
from sphere_bench.report.text import fmt_n
from sphere_bench.schema import ROTATION_LABEL

log = logging.getLogger("sphere_bench.report")


# ============================================================================ sample predictions
def _checkpoint(record: Mapping[str, Any], runs_dir: Path) -> Path | None:
    """The best (else last) checkpoint of a record, also looked up next to the record."""
    ckpt = record.get("checkpoint") or {}
    for key in ("best", "last"):
        value = ckpt.get(key)
        if not value:
            continue
        path = Path(value)
        if path.is_file():
            return path
        if record.get("_path"):
            local = Path(record["_path"]).with_suffix("") / "checkpoints" / path.name
            if local.is_file():
                return local
    return None


def load_net(record: Mapping[str, Any], checkpoint: Path) -> Any:
    """The record's net with the weights of ``checkpoint`` (a Lightning checkpoint)."""
    import torch

    net = safe_instantiate(record["config"]["model"], "model", record.get("_path", "record"))
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    net.load_state_dict(
        {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    )
    return net.eval()


def _sample_miou(pred: np.ndarray, target: np.ndarray, background: int = 0) -> float:
    classes = sorted((set(np.unique(pred)) | set(np.unique(target))) - {background})
    ious = [
        np.sum((pred == c) & (target == c)) / np.sum((pred == c) | (target == c)) for c in classes
    ]
    return 100 * float(np.mean(ious)) if ious else math.nan


def _record_family(record: Mapping[str, Any]) -> str:
    return family(record["model"]["name"], record["model"].get("target"))


def _largest_n(
    candidates: list[tuple[Mapping[str, Any], Path]], rotate_train: str | None = None
) -> tuple[Mapping[str, Any], Path] | None:
    """The candidate with the largest N (lowest seed on ties), optionally of one training
    rotation."""
    pool = [
        rc
        for rc in candidates
        if rotate_train is None or rc[0]["data"].get("rotate_train") == rotate_train
    ]
    if not pool:
        return None
    return max(pool, key=lambda rc: (rc[0]["data"].get("n_train") or 0, -(rc[0].get("seed") or 0)))


def pick_sample_records(
    records: Sequence[Mapping[str, Any]], runs_dir: Path
) -> tuple[dict[str, tuple[Mapping[str, Any], Path]], str]:
    """Records for the sample figure: an S2CNN (NR-trained preferred) and the CNNs trained R and
    NR, in one segmentation setting, each at its largest N with a checkpoint on disk.

    Returns ``{role: (record, checkpoint)}`` (roles ``s2cnn``, ``cnn_r``, ``cnn_nr``) and a reason
    when it is empty.
    """
    seg = [r for r in records if (r.get("data") or {}).get("task") == "segmentation"]
    if not seg:
        return {}, "no segmentation runs"
    by_setting: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in seg:
        d = r["data"]
        key = (
            d.get("dataset") != "mnist",
            d.get("n_items") or 1,
            d.get("dataset"),
            d.get("bandwidth"),
            d.get("grid"),
        )
        by_setting.setdefault(key, []).append(r)
    reason = "no segmentation setting has both an S2CNN and a CNN with a checkpoint on disk"
    for key in sorted(by_setting, key=str):
        pool = [(r, _checkpoint(r, runs_dir)) for r in by_setting[key]]
        missing = sum(c is None for _, c in pool)
        pool = [(r, c) for r, c in pool if c is not None]
        s2 = [rc for rc in pool if _record_family(rc[0]) == "s2cnn"]
        cnn = [rc for rc in pool if _record_family(rc[0]) == "cnn"]
        picks = {
            "s2cnn": _largest_n(s2, "none") or _largest_n(s2),
            "cnn_r": _largest_n(cnn, "random"),
            "cnn_nr": _largest_n(cnn, "none"),
        }
        picks = {k: v for k, v in picks.items() if v is not None}
        if "s2cnn" in picks and len(picks) > 1:
            return picks, ""
        if missing:
            reason += f" ({missing} checkpoint(s) missing)"
    return {}, reason


def figure_samples(
    records: Sequence[Mapping[str, Any]], runs_dir: Path, path: Path, index: int = 0
) -> tuple[Path | None, str]:
    """Input, ground truth and predictions of the picked models on one rotated test sphere, in
    equirectangular and Mollweide views. Returns ``(path or None, note)``."""
    picks, reason = pick_sample_records(records, runs_dir)
    if not picks:
        return None, f"Sample predictions skipped: {reason}."
    import torch

    from sphere_bench.data.preview import MASK_COLORS, equirectangular, mask_cmap

    data_record = picks["s2cnn"][0]
    try:
        data_cfg = dict(data_record["config"]["data"])
        data_cfg["progress"] = False
        dm = safe_instantiate(data_cfg, "data", data_record.get("_path", "record"))
        if "r" not in dm.test_set_names:
            return None, "Sample predictions skipped: the runs have no rotated (R) test set."
        dm.test_specs = {"r": dm.test_specs["r"]}  # generate / load only the R test set
        dm.setup("test")
        loader = dm.test_dataloader()[dm.test_set_names.index("r")]
        x, y = dm.on_after_batch_transfer(next(iter(loader)), 0)
        index = min(index, x.shape[0] - 1)
        x, y = x[index : index + 1], y[index]
        columns: list[tuple[str, np.ndarray]] = [
            ("input (R test sample)", x[0, 0].numpy()),
            ("ground truth", y.numpy()),
        ]
        titles = {"s2cnn": "S2CNN", "cnn_r": "CNN", "cnn_nr": "CNN"}
        with torch.no_grad():
            for role in ("s2cnn", "cnn_r", "cnn_nr"):
                if role not in picks:
                    continue
                record, ckpt = picks[role]
                net = load_net(record, ckpt)
                pred = net(x).argmax(1)[0].numpy()
                miou = _sample_miou(pred, y.numpy())
                columns.append(
                    (
                        f"{titles[role]} {record['model']['name']} "
                        f"(train {ROTATION_LABEL.get(record['data'].get('rotate_train'), '?')}, "
                        f"N = {fmt_n(record['data'].get('n_train') or 0)})\nthis sample: mIoU "
                        f"{miou:.0f} %",
                        pred,
                    )
                )
    except Exception as err:  # noqa: BLE001 - any failure here only drops one figure
        log.warning("sample predictions skipped: %s: %s", type(err).__name__, err)
        return None, f"Sample predictions skipped: {type(err).__name__}: {err}."
    plt = pyplot()
    cmap = mask_cmap()
    grid = dm.grid
    fig = plt.figure(figsize=(3.3 * len(columns), 4.6))
    for c, (title, values) in enumerate(columns):
        raster = equirectangular(np.asarray(values, dtype=float).reshape(-1), grid)
        is_mask = c > 0
        style = (
            {"cmap": cmap, "vmin": -0.5, "vmax": len(MASK_COLORS) - 0.5}
            if is_mask
            else {"cmap": "gray"}
        )
        ax = fig.add_subplot(2, len(columns), c + 1)
        ax.imshow(raster, extent=(-180, 180, -90, 90), interpolation="nearest", **style)
        ax.set_title(title, fontsize=7)
        ax.set_xlabel("longitude (°)", fontsize=7)
        if c == 0:
            ax.set_ylabel("equirectangular\nlatitude (°)", fontsize=7)
        ax.tick_params(labelsize=6)
        ax = fig.add_subplot(2, len(columns), len(columns) + c + 1, projection="mollweide")
        lat = np.linspace(np.pi / 2, -np.pi / 2, raster.shape[0] + 1)
        lon = np.linspace(-np.pi, np.pi, raster.shape[1] + 1)
        ax.pcolormesh(lon, lat, raster, **style)
        ax.set_xticklabels([])
        ax.set_yticklabels([])
        ax.grid(True, alpha=0.3)
        if c == 0:
            ax.set_ylabel("Mollweide", fontsize=7)
    names = ", ".join(f"{k}={n}" for k, n in enumerate(dm.class_names))
    fig.suptitle(f"Predictions on rotated test sphere #{index} [{names}]", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path), (
        f"Rotated test sample #{index} of {data_record['data'].get('dataset')} "
        f"(B = {data_record['data'].get('bandwidth')}); models at their largest N."
    )

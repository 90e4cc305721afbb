"""Lightning callbacks of the training script (``conf/callbacks/default.yaml``).

* :class:`NonFiniteLossGuard` turns a NaN/inf training loss into an exception, so the job is
  recorded as failed instead of training on garbage.
* :class:`EpochTimer` measures every training epoch (with its validation) and remembers the
  monitored metric per epoch; its state is saved in checkpoints, so a resumed run keeps the times.
* :class:`FitStopMemory` keeps in every checkpoint whether fit had been told to stop (early
  stopping), so a job resumed from its last checkpoint after losing its record ends exactly as
  the uninterrupted one did instead of training further.
* :class:`PredictionImages` logs a small grid of input / target / prediction per test set at the
  end of testing (PNG in the run dir, and to every W&B logger).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import WandbLogger

log = logging.getLogger(__name__)

__all__ = ["EpochTimer", "FitStopMemory", "NonFiniteLossGuard", "PredictionImages"]


class NonFiniteLossGuard(Callback):
    """Raise :class:`FloatingPointError` as soon as a training loss is NaN or infinite."""

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and not torch.isfinite(loss).all():
            raise FloatingPointError(
                f"non-finite training loss {loss.detach().float().item()} at epoch "
                f"{trainer.current_epoch}, batch {batch_idx} (global step {trainer.global_step}); "
                "lower the learning rate (lit.lr) or use precision=32-true"
            )


class FitStopMemory(Callback):
    """Store ``trainer.should_stop`` in every checkpoint; restore it when fit resumes.

    Lightning does not save the stop decision: a run that early stopping ended at epoch e, resumed
    from the ``last.ckpt`` written at that epoch (e.g. because the job was killed while testing),
    would start epoch e + 1 and train on. Checkpoint callbacks run last at the end of an epoch,
    after :class:`~pytorch_lightning.callbacks.EarlyStopping` has decided, so the flag saved here is
    the decision of that epoch. On resume, :meth:`on_train_start` (called after the restore, before
    the first epoch) sets ``trainer.should_stop`` again and fit ends at once; the epoch counter,
    the best checkpoint and the callback states are the uninterrupted run's.
    """

    def __init__(self) -> None:
        self.stopped = False
        self._trainer: pl.Trainer | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        return {"should_stop": bool(self._trainer is not None and self._trainer.should_stop)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.stopped = bool(state_dict.get("should_stop", False))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Checkpoints written before this callback existed: early stopping's restored state.
        from pytorch_lightning.callbacks import EarlyStopping

        for callback in trainer.callbacks:  # type: ignore[attr-defined]
            if isinstance(callback, EarlyStopping) and callback.stopped_epoch > 0:
                self.stopped = True
        if self.stopped:
            log.info(
                "the checkpoint was written after fit had stopped (early stopping at epoch %d): "
                "not training further", trainer.current_epoch,
            )
            trainer.should_stop = True


class EpochTimer(Callback):
    """Wall time of each training epoch (including its validation) and the monitored value.

    Parameters
    ----------
    monitor : str, optional
        Metric read from ``trainer.callback_metrics`` after each epoch's validation (filled in by
        the training script from the LitModule, e.g. ``val/miou``); None: times only.

    Attributes
    ----------
    epochs : dict of int to dict
        ``{epoch: {"seconds": float, "value": float | None}}`` for every finished epoch.
    """

    def __init__(self, monitor: str | None = None) -> None:
        self.monitor = monitor
        self.epochs: dict[int, dict[str, float | None]] = {}
        self._start: float | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def _record(self, trainer: pl.Trainer) -> None:
        epoch = trainer.current_epoch
        if self._start is None or epoch in self.epochs:
            return
        value = None
        if self.monitor is not None and self.monitor in trainer.callback_metrics:
            value = float(trainer.callback_metrics[self.monitor])
        self.epochs[epoch] = {"seconds": time.perf_counter() - self._start, "value": value}

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Runs before ModelCheckpoint saves (Lightning calls checkpoint callbacks last), so the
        # epoch is already in the state stored in last.ckpt.
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._record(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._record(trainer)  # epochs without validation

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": {int(k): dict(v) for k, v in self.epochs.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epochs = {int(k): dict(v) for k, v in state_dict.get("epochs", {}).items()}

    # ------------------------------------------------------------------ summaries
    @property
    def epoch_seconds(self) -> list[float]:
        return [float(self.epochs[k]["seconds"]) for k in sorted(self.epochs)]

    @property
    def best_epoch(self) -> int | None:
        """First epoch with the highest finite monitored value (as ModelCheckpoint, mode=max)."""
        best, best_value = None, -math.inf
        for epoch in sorted(self.epochs):
            value = self.epochs[epoch]["value"]
            if value is not None and math.isfinite(value) and value > best_value:
                best, best_value = epoch, value
        return best

    def summary(self) -> dict[str, Any]:
        """Plain dict for the result record."""
        seconds = self.epoch_seconds
        best = self.best_epoch
        to_best = None
        if best is not None:
            to_best = sum(float(v["seconds"]) for k, v in self.epochs.items() if k <= best)
        return {
            "train_seconds": sum(seconds),
            "epoch_seconds": seconds,
            "mean_epoch_seconds": sum(seconds) / len(seconds) if seconds else None,
            "best_epoch": best,
            "seconds_to_best_epoch": to_best,
        }


class PredictionImages(Callback):
    """Input / target / prediction of the first ``n_samples`` of every test set, as a PNG grid.

    Written to ``<trainer.default_root_dir>/predictions/<test set>.png`` and logged to W&B as
    ``test_<set>/predictions``. Segmentation: one row per sample (input, target mask, predicted
    mask; background black). Classification: the inputs titled with target and prediction.
    """

    def __init__(self, n_samples: int = 4) -> None:
        self.n_samples = int(n_samples)
        self._batches: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._batches = {}

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.n_samples <= 0 or dataloader_idx in self._batches:
            return
        x, y = batch[0][: self.n_samples], batch[1][: self.n_samples]
        with torch.no_grad():
            pred = pl_module(x).argmax(dim=1)
        self._batches[dataloader_idx] = (x.cpu().float(), y.cpu(), pred.cpu())

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._batches or trainer.sanity_checking:
            return
        names = getattr(pl_module, "test_set_names", None)
        out_dir = Path(trainer.default_root_dir) / "predictions"
        out_dir.mkdir(parents=True, exist_ok=True)
        for idx, (x, y, pred) in sorted(self._batches.items()):
            name = names[idx] if names else "test"
            prefix = f"test_{name}" if names else "test"
            path = out_dir / f"{prefix}.png"
            try:
                self._plot(x, y, pred, getattr(pl_module, "task", "segmentation"), path, prefix)
            except Exception as err:  # a figure must never fail a finished run
                log.warning("could not draw prediction images for %s: %s", prefix, err)
                continue
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    logger.log_image(key=f"{prefix}/predictions", images=[str(path)])
        self._batches = {}

    @staticmethod
    def _plot(
        x: torch.Tensor, y: torch.Tensor, pred: torch.Tensor, task: str, path: Path, title: str
    ) -> None:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        n = x.shape[0]
        images = x[:, 0].numpy()
        if task == "segmentation":
            from sphere_bench.data.preview import mask_cmap

            cmap = mask_cmap()
            fig, axes = plt.subplots(n, 3, figsize=(6, 2 * n), squeeze=False)
            for i in range(n):
                panels = ((images[i], "gray", "input"), (y[i].numpy(), cmap, "target"),
                          (pred[i].numpy(), cmap, "prediction"))  # fmt: skip
                for ax, (img, cm, label) in zip(axes[i], panels, strict=True):
                    if cm == "gray":
                        ax.imshow(img, cmap=cm)
                    else:
                        ax.imshow(img, cmap=cm, vmin=-0.5, vmax=10.5, interpolation="nearest")
                    ax.set_axis_off()
                    if i == 0:
                        ax.set_title(label, fontsize=9)
        else:
            fig, axes = plt.subplots(1, n, figsize=(2 * n, 2.3), squeeze=False)
            for i, ax in enumerate(axes[0]):
                ax.imshow(images[i], cmap="gray")
                ax.set_title(f"y={int(y[i])} pred={int(pred[i])}", fontsize=8)
                ax.set_axis_off()
        fig.suptitle(f"{title} (axes: beta down, alpha right)", fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)

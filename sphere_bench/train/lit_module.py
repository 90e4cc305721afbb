"""One LightningModule for spherical classification and segmentation.

Batches are ``(x, y)``: ``x`` float32 ``[N, 1, H, W]`` (``H = W = 2B``, axes ``[beta, alpha]``),
``y`` int64 ``[N]`` (classification, digits 0…9) or ``[N, H, W]`` (segmentation, 0 = background,
1…10 = digit + 1). The net returns logits ``[N, C]`` or ``[N, C, H, W]``.

Logged names (all per epoch; metrics are fractions in [0, 1], from one confusion matrix over the
whole set, see :mod:`sphere_bench.train.metrics`):

* ``train/loss``, ``train/{acc|miou}``; ``val/loss``, ``val/{acc|miou}``, ``val/{acc|miou}_best``
  (segmentation also ``val/miou_all``, ``val/pixel_acc``);
* per test dataloader ``k`` named ``test_set_names[k]`` (e.g. ``nr``, ``r``): ``test_nr/loss``,
  ``test_nr/acc`` or ``test_nr/miou``, ``test_nr/miou_all``, ``test_nr/pixel_acc``,
  ``test_nr/iou_0`` … ``test_nr/iou_10`` — logged with ``add_dataloader_idx=False``; with no
  names and a single test loader the prefix is plain ``test``. The same numbers stay in
  :attr:`SphericalLitModule.test_results` for the run's result record.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning import LightningModule
from torch import nn
from torchmetrics import MaxMetric, MeanMetric

from sphere_bench.schema import MAIN_METRIC, check_task
from sphere_bench.train.checks import Needs, check_pairing, model_needs
from sphere_bench.train.equivariance_loss import equivariance_penalty
from sphere_bench.train.metrics import ConfusionMetrics

__all__ = ["SphericalLitModule"]

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]


class SphericalLitModule(LightningModule):
    """Cross-entropy training of any ``net`` for classification or per-pixel segmentation.

    Parameters
    ----------
    net : nn.Module
        ``[N, 1, H, W] → [N, C]`` (classification) or ``[N, C, H, W]`` (segmentation) logits. If
        it has ``task`` / ``num_classes`` attributes they must agree with the arguments below.
    task : {"classification", "segmentation"}
        Decides the metrics and the expected target shape.
    num_classes : int
        ``C`` (10 for classification, 11 for segmentation).
    optimizer : callable, optional
        Factory called as ``optimizer(params=...)``, e.g. the ``functools.partial`` that Hydra
        builds from ``{_target_: torch.optim.Adam, _partial_: true, lr: 1e-3}``. If given it
        overrides ``lr`` and ``weight_decay``. Default: ``Adam(lr, weight_decay)`` (paper: Adam,
        lr 1e-3, default betas, no weight decay).
    lr, weight_decay : float
        Used only when ``optimizer`` is None.
    scheduler : callable, optional
        Factory called as ``scheduler(optimizer=...)``; stepped per epoch, monitoring
        :attr:`monitor`. The paper used none.
    class_weights : sequence of float, optional
        Per-class cross-entropy weights (length ``num_classes``). Default: unweighted (paper).
    test_set_names : sequence of str, optional
        Name of each test dataloader, in order (e.g. ``["nr", "r"]``); metrics are logged as
        ``test_<name>/<metric>``. Without names only one test dataloader is allowed (``test/…``).
    background : int
        Background class for the non-background mIoU (segmentation).
    equivariance_weight : float
        Weight ``λ ≥ 0`` of the soft-equivariance penalty added to the training loss,
        ``CE + λ P`` (:func:`sphere_bench.train.equivariance_loss.equivariance_penalty`, logged as
        ``train/equivariance_penalty``); 0 (default) turns it off.

    Attributes
    ----------
    monitor : str
        ``"val/acc"`` or ``"val/miou"`` — the metric to maximise for checkpointing/early stopping.
    test_results : dict of str to dict of str to float
        After ``trainer.test``: per test set (key = its name, or ``"test"``) every metric of
        :func:`sphere_bench.train.metrics.metrics_from_confmat` plus ``"loss"``.
    """

    def __init__(
        self,
        net: nn.Module,
        task: str,
        num_classes: int,
        optimizer: OptimizerFactory | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        scheduler: SchedulerFactory | None = None,
        class_weights: Sequence[float] | torch.Tensor | None = None,
        test_set_names: Sequence[str] | None = None,
        background: int = 0,
        equivariance_weight: float = 0.0,
    ) -> None:
        super().__init__()
        check_task(task)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        check_pairing(model_needs(net), Needs(task=task), type(net).__name__)
        net_classes = getattr(net, "num_classes", None)
        if isinstance(net_classes, int) and net_classes != num_classes:
            raise ValueError(
                f"num_classes={num_classes} but the net {type(net).__name__} outputs {net_classes}"
            )
        if optimizer is not None and not callable(optimizer):
            raise ValueError(
                "optimizer must be a callable optimizer(params=...) (e.g. Hydra `_partial_: true`) "
                f"or None for Adam(lr, weight_decay), got {optimizer!r}"
            )
        if scheduler is not None and not callable(scheduler):
            raise ValueError(
                f"scheduler must be a callable scheduler(optimizer=...), got {scheduler!r}"
            )
        if not (isinstance(equivariance_weight, int | float) and equivariance_weight >= 0):
            raise ValueError(
                f"equivariance_weight must be a number >= 0 (0 = off), got {equivariance_weight!r}"
            )
        names = None if test_set_names is None else [str(n) for n in test_set_names]
        if names is not None and (len(set(names)) != len(names) or "" in names):
            raise ValueError(f"test_set_names must be distinct non-empty names, got {names!r}")

        # Plain Python values only (Hydra passes ListConfig), so checkpoints load with
        # torch.load(weights_only=True); net/optimizer/scheduler come from the config.
        self.save_hyperparameters(
            {
                "task": task,
                "num_classes": int(num_classes),
                "lr": float(lr),
                "weight_decay": float(weight_decay),
                "test_set_names": names,
                "background": int(background),
                "equivariance_weight": float(equivariance_weight),
            },
            logger=False,
        )
        self.net = net
        self.task = task
        self.num_classes = num_classes
        self.background = background
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.test_set_names = names
        self.equivariance_weight = float(equivariance_weight)

        self.class_weights: torch.Tensor | None
        if class_weights is None:
            self.class_weights = None
        else:
            weights = torch.as_tensor(list(class_weights), dtype=torch.float32)
            if weights.shape != (num_classes,):
                raise ValueError(
                    f"class_weights must have num_classes={num_classes} entries, got "
                    f"{list(weights.shape)}"
                )
            self.register_buffer("class_weights", weights, persistent=False)

        self.main_metric = MAIN_METRIC[task]
        self.monitor = f"val/{self.main_metric}"

        def make() -> ConfusionMetrics:
            return ConfusionMetrics(num_classes, task, background)

        self.train_metrics, self.val_metrics = make(), make()
        self.train_loss, self.val_loss = MeanMetric(), MeanMetric()
        self.val_best = MaxMetric()
        self.test_metrics = nn.ModuleDict()
        self.test_loss = nn.ModuleDict()
        for name in names or ["test"]:
            self.test_metrics[name], self.test_loss[name] = make(), MeanMetric()
        self._tested: list[str] = []
        self.test_results: dict[str, dict[str, float]] = {}

    # ----------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``net`` for ``x`` ``[N, 1, H, W]``."""
        return self.net(x)

    def _shared_step(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y = batch
        logits = self(x)
        if self.task == "classification":
            ok = logits.dim() == 2 and y.dim() == 1
        else:
            # [N, C, *grid] logits for [N, *grid] masks: grid = (H, W), or (npix,) on HEALPix
            ok = logits.dim() == y.dim() + 1 >= 3 and logits.shape[2:] == y.shape[1:]
        if not ok or logits.shape[0] != y.shape[0] or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"{self.task}: expected logits [N, {self.num_classes}"
                f"{'' if self.task == 'classification' else ', *grid'}] and targets "
                f"[N{'' if self.task == 'classification' else ', *grid'}], got logits "
                f"{list(logits.shape)} and targets {list(y.shape)}"
            )
        loss = F.cross_entropy(logits, y, weight=self.class_weights)
        return loss, logits.detach(), y

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, logits, y = self._shared_step(batch)
        self.train_loss.update(loss.detach(), weight=y.shape[0])
        self.train_metrics.update(logits, y)
        if self.equivariance_weight > 0:
            penalty = equivariance_penalty(self.net, batch[0], self.task)
            self.log("train/equivariance_penalty", penalty.detach(), on_step=False, on_epoch=True)
            loss = loss + self.equivariance_weight * penalty
        return loss

    def on_train_start(self) -> None:
        # The sanity-check validation must not count towards the best value.
        self.val_best.reset()

    def on_train_epoch_end(self) -> None:
        self.log("train/loss", self.train_loss.compute(), prog_bar=True)
        metrics = self.train_metrics.compute()
        self.log(f"train/{self.main_metric}", metrics[self.main_metric])
        self.train_loss.reset()
        self.train_metrics.reset()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        loss, logits, y = self._shared_step(batch)
        self.val_loss.update(loss, weight=y.shape[0])
        self.val_metrics.update(logits, y)

    def on_validation_epoch_end(self) -> None:
        metrics = self.val_metrics.compute()
        main = metrics[self.main_metric]
        self.log("val/loss", self.val_loss.compute(), prog_bar=True)
        self.log(self.monitor, main, prog_bar=True)
        if self.task == "segmentation":
            self.log("val/miou_all", metrics["miou_all"])
            self.log("val/pixel_acc", metrics["pixel_acc"])
        if main == main:  # NaN (empty set) must not become the best value
            self.val_best.update(torch.tensor(main))
        if self.val_best.update_called:
            self.log(f"{self.monitor}_best", self.val_best.compute())
        self.val_loss.reset()
        self.val_metrics.reset()

    # ----------------------------------------------------------------------------------------
    def _test_name(self, dataloader_idx: int) -> str:
        if self.test_set_names is None:
            if dataloader_idx != 0:
                raise ValueError(
                    "several test dataloaders but no test_set_names; pass one name per test "
                    "dataloader, e.g. test_set_names=['nr', 'r']"
                )
            return "test"
        if dataloader_idx >= len(self.test_set_names):
            raise ValueError(
                f"test dataloader {dataloader_idx} has no name: test_set_names="
                f"{self.test_set_names} names only {len(self.test_set_names)} test set(s)"
            )
        return self.test_set_names[dataloader_idx]

    def _test_prefix(self, name: str) -> str:
        return "test" if self.test_set_names is None else f"test_{name}"

    def on_test_epoch_start(self) -> None:
        self._tested = []
        for name in self.test_metrics:
            self.test_metrics[name].reset()
            self.test_loss[name].reset()

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        name = self._test_name(dataloader_idx)
        loss, logits, y = self._shared_step(batch)
        self.test_loss[name].update(loss, weight=y.shape[0])
        self.test_metrics[name].update(logits, y)
        if name not in self._tested:
            self._tested.append(name)

    def on_test_epoch_end(self) -> None:
        for name in self._tested:
            results = dict(self.test_metrics[name].compute())
            results["loss"] = float(self.test_loss[name].compute())
            self.test_results[name] = results
            prefix = self._test_prefix(name)
            for key, value in results.items():
                self.log(f"{prefix}/{key}", value, add_dataloader_idx=False)
            self.test_metrics[name].reset()
            self.test_loss[name].reset()

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """Logits for ``batch`` (``(x, y)`` or ``x``)."""
        x = batch[0] if isinstance(batch, list | tuple) else batch
        return self(x)

    # ----------------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        """Adam(lr, weight_decay) by default, or ``optimizer(params=...)``; optional scheduler."""
        params = self.parameters()
        if self.optimizer_factory is None:
            optimizer = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        else:
            optimizer = self.optimizer_factory(params=params)
        if self.scheduler_factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": self.scheduler_factory(optimizer=optimizer),
                "monitor": self.monitor,
                "interval": "epoch",
                "frequency": 1,
            },
        }

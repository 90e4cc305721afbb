"""Dataset-level metrics from one confusion matrix accumulated over a whole set.

Conventions
-----------
* The confusion matrix is torchmetrics' ``CM[target, pred]`` (rows = true class, columns =
  predicted class), accumulated over **every** sample (classification) or **every pixel**
  (segmentation) of a set; metrics are computed once from it, never averaged over batches. The
  paper's ``evaluate.py`` uses the transpose ``CM[pred, true]``; every metric below is symmetric
  under that transpose or uses only the trace, so the numbers are the same.
* ``IoU_c = CM[c, c] / (row_c + col_c − CM[c, c])`` = TP/(TP+FN+FP) (docs/paper_protocol.md §5)
* **Absent classes:** a class with no target *and* no predicted pixel (``row_c + col_c = 0``) has
  an undefined IoU, reported as ``NaN`` and **excluded** from every mean (``nanmean``). A class that
  is predicted but never present (or present but never predicted) has IoU 0 and is included. If
  every class of a mean is absent, the mean is ``NaN``.
* ``miou`` = mean IoU over the non-background classes ``1 … C−1`` (the paper's "mIoU
  (non-background)", the figure plotted in Figs. 5/7/9); ``miou_all`` = mean over all ``C``
  classes; ``pixel_acc`` = trace / total; ``acc`` (classification) = trace / total.
* All values are fractions in ``[0, 1]`` (the paper plots percent).
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from sphere_bench.schema import CLASSIFICATION, TASKS, check_task

__all__ = [
    "TASKS",
    "ConfusionMetrics",
    "accuracy",
    "iou_per_class",
    "mean_iou",
    "metrics_from_confmat",
    "pixel_accuracy",
]


def _check_confmat(confmat: torch.Tensor) -> torch.Tensor:
    if confmat.dim() != 2 or confmat.shape[0] != confmat.shape[1]:
        raise ValueError(f"confmat must be a square [C, C] matrix, got shape {list(confmat.shape)}")
    return confmat.to(torch.float64)


def iou_per_class(confmat: torch.Tensor) -> torch.Tensor:
    """Per-class intersection over union of a confusion matrix.

    Parameters
    ----------
    confmat : torch.Tensor
        ``[C, C]`` counts, ``CM[target, pred]`` (the transpose gives the same result).

    Returns
    -------
    torch.Tensor
        ``[C]`` float64, ``IoU_c = CM[c, c] / (row_c + col_c − CM[c, c])``; ``NaN`` for a class
        absent from both target and prediction.
    """
    cm = _check_confmat(confmat)
    tp = cm.diagonal()
    union = cm.sum(0) + cm.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp_min(1e-300), torch.full_like(tp, float("nan")))


def mean_iou(confmat: torch.Tensor, ignore_background: bool = True, background: int = 0) -> float:
    """Mean IoU over the classes present in target or prediction (absent classes, NaN, skipped).

    Parameters
    ----------
    confmat : torch.Tensor
        ``[C, C]`` counts.
    ignore_background : bool
        ``True`` (the paper's figure): mean over all classes except ``background``.
    background : int
        Index of the background class.

    Returns
    -------
    float
        The mean, or ``NaN`` if no class in the mean is present.
    """
    iou = iou_per_class(confmat)
    if ignore_background:
        keep = torch.ones_like(iou, dtype=torch.bool)
        keep[background] = False
        iou = iou[keep]
    return float(iou.nanmean()) if iou.numel() else float("nan")


def accuracy(confmat: torch.Tensor) -> float:
    """Fraction of correct predictions, ``trace / total`` (``NaN`` for an empty matrix)."""
    cm = _check_confmat(confmat)
    total = cm.sum()
    return float(cm.trace() / total) if total > 0 else float("nan")


def pixel_accuracy(confmat: torch.Tensor) -> float:
    """Fraction of correctly labelled pixels over all pixels (same formula as :func:`accuracy`)."""
    return accuracy(confmat)


def metrics_from_confmat(confmat: torch.Tensor, task: str, background: int = 0) -> dict[str, float]:
    """All metrics of a task from one dataset-level confusion matrix.

    Parameters
    ----------
    confmat : torch.Tensor
        ``[C, C]`` counts, ``CM[target, pred]``.
    task : {"classification", "segmentation"}
        Which metrics to compute.
    background : int
        Background class index (segmentation).

    Returns
    -------
    dict of str to float
        classification: ``{"acc"}``; segmentation: ``{"miou", "miou_all", "pixel_acc",
        "iou_0", …, "iou_{C−1}"}`` (per-class IoUs may be NaN, see the module docstring).
    """
    if check_task(task) == CLASSIFICATION:
        return {"acc": accuracy(confmat)}
    out = {
        "miou": mean_iou(confmat, ignore_background=True, background=background),
        "miou_all": mean_iou(confmat, ignore_background=False),
        "pixel_acc": pixel_accuracy(confmat),
    }
    out.update({f"iou_{c}": float(v) for c, v in enumerate(iou_per_class(confmat))})
    return out


class ConfusionMetrics(MulticlassConfusionMatrix):
    """A torchmetrics confusion matrix over a whole set whose ``compute`` returns the task metrics.

    ``update(preds, target)`` takes logits ``[N, C]`` / ``[N, C, H, W]`` (argmax over ``C``) or
    labels ``[N]`` / ``[N, H, W]``, with int64 targets ``[N]`` / ``[N, H, W]``; counts are summed
    (also across processes, ``dist_reduce_fx="sum"``). ``compute()`` returns
    :func:`metrics_from_confmat` of the accumulated matrix; :attr:`confmat` holds the raw counts.

    Parameters
    ----------
    num_classes : int
        ``C``.
    task : {"classification", "segmentation"}
        Which metrics :meth:`compute` returns.
    background : int
        Background class index (segmentation).
    **kwargs
        Passed to :class:`torchmetrics.classification.MulticlassConfusionMatrix`.
    """

    def __init__(self, num_classes: int, task: str, background: int = 0, **kwargs: Any) -> None:
        check_task(task)
        kwargs.setdefault("validate_args", False)
        super().__init__(num_classes=num_classes, normalize=None, **kwargs)
        self.task = task
        self.background = background

    def compute(self) -> dict[str, float]:  # type: ignore[override]
        """Metrics of the accumulated set (see :func:`metrics_from_confmat`)."""
        return metrics_from_confmat(self.confmat, self.task, self.background)

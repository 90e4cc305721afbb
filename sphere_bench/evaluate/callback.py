"""The evaluation step of every training job, as a Lightning callback.

``conf/callbacks/default.yaml`` adds :class:`EvaluationCallback` to the trainer (wired by config,
so the training code never imports this layer). After ``trainer.test`` (i.e. with the best
checkpoint's weights) it measures

* ``latency``: forward latency and throughput at the configured batch sizes
  (:func:`sphere_bench.evaluate.latency.measure_latency`; CUDA events on a GPU);
* ``equivariance``: the equivariance/invariance errors on the first test samples: on the SOFT grid
  :func:`sphere_bench.evaluate.equivariance.equivariance_errors`, on every grid with an analysis
  (SOFT, HEALPix, torch-harmonics) the cross-grid comparable
  :func:`sphere_bench.evaluate.equivariance.grid_equivariance_errors` (``spectral_*`` keys, and
  on the other grids also their exact half-turns and Haar invariance);
* ``train_peak_memory_mb``: the peak memory of the job up to the end of training (CUDA max
  allocated, or the process's peak RSS);
* ``device``: device name, torch version, threads.

The training job puts :meth:`EvaluationCallback.record_entries` into its result record under
``evaluation``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from sphere_bench.data.planar_source import load_planar_split
from sphere_bench.data.spherical_dataset import render_samples
from sphere_bench.evaluate.equivariance import equivariance_errors, grid_equivariance_errors
from sphere_bench.evaluate.latency import device_description, measure_latency
from sphere_bench.system_info import peak_rss_mb

log = logging.getLogger(__name__)


class EvaluationCallback(Callback):
    """Latency, equivariance error and peak memory of the tested model (see module docstring).

    Args:
        latency_batch_sizes: batch sizes to time (forward pass).
        latency_warmup, latency_repeats: untimed and timed calls per batch size.
        equivariance_samples: test samples used for the equivariance error (0 disables it).
        haar_draws: Haar rotations per sample.
        spectral_lmax: common band limit ``L`` of the spectral comparison on every grid (clamped
            to what the grid's analysis resolves).
        seed: seeds the Haar rotations.
        enabled: ``False`` turns the callback into a no-op.
    """

    def __init__(
        self,
        latency_batch_sizes: Sequence[int] = (1, 32),
        latency_warmup: int = 2,
        latency_repeats: int = 5,
        equivariance_samples: int = 8,
        haar_draws: int = 2,
        spectral_lmax: int = 16,
        seed: int = 0,
        enabled: bool = True,
    ) -> None:
        super().__init__()
        self.latency_batch_sizes = [int(b) for b in latency_batch_sizes]
        self.latency_warmup = latency_warmup
        self.latency_repeats = latency_repeats
        self.equivariance_samples = equivariance_samples
        self.haar_draws = haar_draws
        self.spectral_lmax = int(spectral_lmax)
        self.seed = seed
        self.enabled = enabled
        self.results: dict[str, Any] = {}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled:
            return
        if pl_module.device.type == "cuda":
            peak, kind = torch.cuda.max_memory_allocated(pl_module.device) / 2**20, "cuda"
        else:
            peak, kind = peak_rss_mb(), "cpu_peak_rss"
        self.results["train_peak_memory_mb"] = peak
        self.results["train_peak_memory_kind"] = kind

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled or trainer.sanity_checking:
            return
        net = getattr(pl_module, "net", pl_module)
        datamodule = trainer.datamodule
        device = pl_module.device
        self.results["device"] = device_description(device)
        with torch.inference_mode(False), torch.no_grad():
            self.results["latency"] = [
                measure_latency(
                    net, datamodule.input_shape, batch_size, device,
                    warmup=self.latency_warmup, repeats=self.latency_repeats,
                ).as_dict()
                for batch_size in self.latency_batch_sizes
            ]  # fmt: skip
            equivariance = self._equivariance(net, datamodule, device)
        if equivariance is not None:
            self.results["equivariance"] = equivariance
        log.info("evaluation: %s", {k: v for k, v in self.results.items() if k != "device"})

    def _equivariance(
        self, net: torch.nn.Module, datamodule: Any, device: torch.device
    ) -> dict[str, Any] | None:
        if self.equivariance_samples <= 0:
            return None
        grid = getattr(datamodule, "grid", None)
        if grid is None or grid.name == "paper":
            log.info("equivariance error skipped: no exact grid analysis on the paper grid")
            return None
        name, dataset = next(iter(datamodule.test_sets.items()))
        spec = datamodule.test_specs[name]
        tensors = dataset.tensors
        n = min(self.equivariance_samples, len(tensors))
        ids = torch.arange(n)
        inputs = tensors.inputs[:n].to(torch.float32).unsqueeze(1).to(device)
        source = load_planar_split(spec.dataset, "test", datamodule.root, datamodule.download_root)
        own = tensors.rotations[:n].to(torch.float32)

        def rerender(extra: torch.Tensor) -> torch.Tensor:
            x, _ = render_samples(spec, source, ids, extra.to(torch.float32) @ own)
            return x.to(torch.float32).unsqueeze(1)

        def generator() -> torch.Generator:
            return torch.Generator().manual_seed(self.seed)

        spectral = grid_equivariance_errors(
            net, inputs, datamodule.task, grid, rerender, n_haar=self.haar_draws,
            generator=generator(), lmax=self.spectral_lmax,
        )  # fmt: skip
        if grid.name == "soft":
            errors = equivariance_errors(
                net, inputs, datamodule.task, rerender, n_haar=self.haar_draws,
                generator=generator(),
            )  # fmt: skip
            errors.update({k: v for k, v in spectral.items() if k.startswith("spectral_")})
        else:
            errors = spectral
        return {**errors, "n_samples": n, "test_set": name, "grid": grid.name}

    def record_entries(self) -> dict[str, Any]:
        """What the training job stores in its result record."""
        return {"evaluation": dict(self.results)} if self.results else {}

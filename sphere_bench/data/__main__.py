"""``python -m sphere_bench.data data=<name> [overrides]``: generate, cache and preview a dataset.

Every split of the chosen ``conf/data`` entry is generated (or found in the cache) and the
preview figures of a few test samples are written to ``results/figures/``. With
``preview_only=true`` only the figures are made.
"""

from __future__ import annotations

import logging
import time

import hydra
from omegaconf import DictConfig

from sphere_bench.data.preview import write_previews

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../../conf", config_name="prepare_data")
def main(cfg: DictConfig) -> None:
    datamodule = hydra.utils.instantiate(cfg.data)
    if not cfg.preview_only:
        start = time.perf_counter()
        datamodule.prepare_data()
        log.info("all splits ready in %.1f s (cache: %s)", time.perf_counter() - start,
                 datamodule.cache_dir)  # fmt: skip
    for path in write_previews(datamodule, cfg.n_samples, cfg.out_dir):
        print(path)


if __name__ == "__main__":
    main()

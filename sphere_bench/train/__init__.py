"""Training: Lightning modules, metrics and the Hydra entry point ``python -m sphere_bench.train``."""

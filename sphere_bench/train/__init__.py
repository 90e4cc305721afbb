"""Training: Lightning modules, metrics and the Hydra entry point.

Run as ``python -m sphere_bench.train``.
"""

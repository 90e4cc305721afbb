"""sphere_bench: equivariance (S2CNN) versus augmentation (CNN) on spherical images.

Layers, lowest first; a module only imports from its own layer or lower ones:

* :mod:`sphere_bench.data` — grids, rotations, projection of planar images onto S², datasets.
* :mod:`sphere_bench.models` — harmonic transforms, S2CNN layers, the S2CNN and CNN zoos.
* :mod:`sphere_bench.train` — Lightning modules, metrics, the Hydra training entry point.
* :mod:`sphere_bench.evaluate` / :mod:`sphere_bench.report` — evaluation records and the report.
"""

__version__ = "0.1.0"

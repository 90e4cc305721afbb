"""The harmonic mathematics every other package stands on.

``data/`` (projection onto a grid, rotated datasets), ``models/`` (S2CNN layers, frame averaging)
and ``evaluate/`` (equivariance error) all import from here; this package imports from none of
them (only :mod:`sphere_bench.io` for its table cache). One module per object:

* :mod:`.grids` — sampling grids (SOFT / Driscoll–Healy, the paper's grid, HEALPix and
  torch-harmonics names), their angles and quadrature weights;
* :mod:`.rotations` — the ZYZ Euler convention, rotation matrices, Haar sampling;
* :mod:`.wigner` — Wigner-d / Wigner-D tables (cached as verified files);
* :mod:`.s2_fft`, :mod:`.so3_fft` — the exact forward / inverse transforms on S² and SO(3);
* :mod:`.paper_upsampling` — the paper code's aliased SO(3) analysis for up-sampling layers;
* :mod:`.signal_rotation` — rotating band-limited signals exactly in the spectral domain;
* :mod:`.kernel_grids` — the s2cnn near-identity kernel grids on S² and SO(3).
"""

"""Wigner-d/D functions: closed form, s2fft, unitarity, symmetries, disk cache."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sphere_bench.harmonic import wigner
from sphere_bench.harmonic.grids import soft_betas
from sphere_bench.harmonic.rotations import euler_zyz_to_matrix, haar_rotations
from sphere_bench.harmonic.signal_rotation import wigner_D_for_matrix
from sphere_bench.io import temp_beside


def _d_closed_form(j: int, mp: int, m: int, beta: float) -> float:
    """Wigner's explicit sum for d^j_{m'm}(β) (standard convention)."""
    f = math.factorial
    total = 0.0
    for s in range(2 * j + 1):
        if j + m - s < 0 or mp - m + s < 0 or j - mp - s < 0:
            continue
        total += ((-1) ** (mp - m + s) * math.cos(beta / 2) ** (2 * j + m - mp - 2 * s)
                  * math.sin(beta / 2) ** (mp - m + 2 * s)
                  / (f(j + m - s) * f(s) * f(mp - m + s) * f(j - mp - s)))
    return math.sqrt(f(j + mp) * f(j - mp) * f(j + m) * f(j - m)) * total


def test_matches_closed_form() -> None:
    betas = np.array([0.0, 0.3, 1.1, np.pi / 2, 2.5, np.pi])
    for l in range(7):
        d = wigner.wigner_d(l, betas)
        ref = np.array([[[_d_closed_form(l, m, n, b) for b in betas] for n in range(-l, l + 1)]
                        for m in range(-l, l + 1)])
        np.testing.assert_allclose(d, ref, atol=1e-13)


def test_matches_s2fft() -> None:
    turok = pytest.importorskip("s2fft.recursions.turok")
    L = 24
    for el in (1, 7, 23):
        for beta in (0.4, 2.0):
            ref = turok.compute_full(beta, el, L)[L - 1 - el : L + el, L - 1 - el : L + el]
            np.testing.assert_allclose(wigner.wigner_d(el, np.array([beta]))[..., 0], ref,
                                       atol=1e-12)


def test_orthogonal_at_high_degree_and_symmetries() -> None:
    l = 90
    d = wigner.wigner_d(l, np.array([0.7]))[..., 0]
    assert np.abs(d @ d.T - np.eye(2 * l + 1)).max() < 1e-12
    m = np.arange(-l, l + 1)
    sign = (-1.0) ** (m[:, None] - m[None, :])
    np.testing.assert_allclose(d[::-1, ::-1], sign * d, atol=1e-13)  # d_{-m,-n} = (-1)^{m-n} d_mn
    np.testing.assert_allclose(d.T, sign * d, atol=1e-13)  # d_nm = (-1)^{m-n} d_mn


def test_wigner_D_is_a_representation() -> None:
    rots = haar_rotations(2, torch.Generator().manual_seed(3))
    L = 6
    d1, d2 = wigner_D_for_matrix(rots[0], L), wigner_D_for_matrix(rots[1], L)
    d12 = wigner_D_for_matrix(rots[0] @ rots[1], L)
    assert (d1 @ d2 - d12).abs().max() < 1e-12
    # l = 1 block is the rotation matrix in the spherical basis (up to a unitary change)
    rz = euler_zyz_to_matrix(torch.tensor(0.4), torch.tensor(0.0), torch.tensor(0.0))
    dz = wigner_D_for_matrix(rz, 2)[1]
    np.testing.assert_allclose(torch.diagonal(dz).numpy(), np.exp(-1j * 0.4 * np.arange(-1, 2)))


def test_soft_table_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SPHERE_BENCH_CACHE", str(tmp_path))
    wigner.clear_memory_cache()
    b = 12
    t0 = time.perf_counter()
    compact = wigner.soft_wigner_d_compact(b)
    assert time.perf_counter() - t0 < 10
    files = list((tmp_path / "wigner").glob("*.pt"))
    assert len(files) == 1 and not list((tmp_path / "wigner").glob("*.tmp"))
    wigner.soft_wigner_d_compact.cache_clear()
    again = wigner.soft_wigner_d_compact(b)
    np.testing.assert_array_equal(compact, again)
    offsets = wigner.compact_offsets(b)
    l, m, n = 7, 3, -5
    row = offsets[l] + m * (2 * l + 1) + n + l
    np.testing.assert_allclose(compact[row], wigner.wigner_d(l, soft_betas(b))[m + l, n + l],
                               atol=1e-14)
    table = wigner.so3_pair_table(b, 9, torch.float64, "cpu")  # [(m n), l, j]
    assert table.shape == (9 * 17, 9, 2 * b)
    np.testing.assert_allclose(table.view(9, 17, 9, 2 * b)[m, n + 8, l].numpy(), compact[row])
    assert float(table.view(9, 17, 9, 2 * b)[m, n + 8, 4].abs().max()) == 0.0  # l < |n|
    wigner.clear_memory_cache()


def test_soft_table_cache_detects_corruption_and_cleans_temp_files(tmp_path, monkeypatch) -> None:
    """A table file with flipped bytes (right size) is reported and rebuilt, never used; the
    temporary file a killed writer left beside it is removed by the next reader."""
    monkeypatch.setenv("SPHERE_BENCH_CACHE", str(tmp_path))
    wigner.clear_memory_cache()
    b = 6
    good = wigner.soft_wigner_d_compact(b)
    (path,) = (tmp_path / "wigner").glob("*.pt")
    raw = bytearray(path.read_bytes())
    raw[-200] ^= 0xFF  # inside the tensor data: the file still loads, with one wrong value
    path.write_bytes(bytes(raw))
    live = Path(temp_beside(path))  # named as a writer of this process would name it
    orphan = live.with_name(live.name.replace(f"-{os.getpid()}.", "-999999999."))  # a dead pid
    live.rename(orphan)
    orphan.write_bytes(b"partial")
    wigner.soft_wigner_d_compact.cache_clear()
    again = wigner.soft_wigner_d_compact(b)
    np.testing.assert_array_equal(again, good)
    assert not orphan.exists()
    wigner.soft_wigner_d_compact.cache_clear()
    np.testing.assert_array_equal(wigner.soft_wigner_d_compact(b), good)  # the rebuilt entry
    wigner.clear_memory_cache()

"""Process-wide runtime settings of a training or benchmark process (imports nothing from
sphere_bench): how much freed memory glibc's allocator keeps instead of returning it to the
kernel.

Why. PyTorch's CPU tensors come from the C library's ``malloc`` (c10 ``alloc_cpu``; PyTorch keeps
no caching allocator on the CPU). With glibc's defaults, a freed block above the mmap threshold
(128 KiB, adapting up to 32 MiB) is unmapped, and memory freed at the top of the heap beyond the
trim threshold is handed back; the next step's tensors of the same size then fault it in
again, page by page, zero-filled. An S2CNN step allocates and frees grid-sized buffers in every
layer: ``s2cnn_cls_150k`` at batch 32 (fwd+bwd, one thread) takes ~14,000 minor page faults per
step with the defaults, a few hundred with :func:`keep_freed_heap`, and runs ~1.3–1.5× faster
(``scripts/bench_models.py``, columns "ours" and "ours, glibc default"; results/bench_models.md).
Peak resident memory does not grow: kept memory is reused by the next step, not added to it.
PyTorch's CPU performance guide gets the same effect by preloading jemalloc or tcmalloc; this
needs no preload.

:func:`keep_freed_heap` sets three ``mallopt(3)`` parameters (glibc ``<malloc.h>``):
``M_MMAP_THRESHOLD`` = 32 MiB (glibc's maximum: blocks up to that size come from the heap, as
the adaptive threshold would eventually choose), ``M_TRIM_THRESHOLD`` and ``M_TOP_PAD`` = the
amount to keep (the heap top is trimmed only beyond it). Only glibc (Linux) has ``mallopt``;
elsewhere it changes nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

#: ``mallopt`` parameter numbers of glibc's ``<malloc.h>``.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
#: glibc's largest mmap threshold on 64-bit systems (``HEAP_MAX_SIZE / 2``), bytes.
MMAP_THRESHOLD_MAX = 32 << 20
#: Default of the training entry point (``heap_keep_mb``) and the benchmarks, MiB.
DEFAULT_KEEP_MB = 1024
#: Largest amount, MiB: ``mallopt`` takes a C ``int`` of bytes.
MAX_KEEP_MB = 2047

_applied: int | None = None


def _libc() -> ctypes.CDLL | None:
    """glibc, or None for another C library (no ``mallopt`` / ``gnu_get_libc_version``)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None


def keep_freed_heap(megabytes: int | None = DEFAULT_KEEP_MB) -> bool:
    """Let glibc keep up to ``megabytes`` MiB of freed heap memory for reuse (module docstring).

    Args:
        megabytes: MiB to keep, an integer in ``[0, 2047]`` (``mallopt`` takes a C ``int`` of
            bytes); ``None`` or 0 leaves glibc's defaults (nothing is changed).

    Returns:
        True when the settings were applied (glibc), False when nothing was changed (``None``
        or 0, or a C library without ``mallopt``, e.g. macOS or musl).

    Raises:
        ValueError: ``megabytes`` is not an integer in ``[0, 2047]``.

    Process-wide and lasting for the process (a later call sets another amount). Results do not
    depend on it, only where freed memory goes and how many page faults a step takes.
    """
    global _applied
    if isinstance(megabytes, bool) or not (
        megabytes is None or (isinstance(megabytes, int) and 0 <= megabytes <= MAX_KEEP_MB)
    ):
        raise ValueError(
            f"heap_keep_mb must be an integer number of MiB in [0, {MAX_KEEP_MB}], got "
            f"{megabytes!r}; use 0 or null to keep the C library's defaults"
        )
    if not megabytes:
        return False
    if _applied == megabytes:
        return True
    libc = _libc()
    if libc is None:
        log.info("heap_keep_mb=%d ignored: the C library is not glibc", megabytes)
        return False
    keep = megabytes << 20
    for param, value in ((M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX), (M_TRIM_THRESHOLD, keep),
                         (M_TOP_PAD, keep)):
        if libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) != 1:
            log.warning("mallopt(%d, %d) was refused by glibc; heap_keep_mb not applied",
                        param, value)
            return False
    _applied = megabytes
    return True

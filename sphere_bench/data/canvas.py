"""Planar canvases holding one or several items (digits, clothes) before projection.

This is sphere_bench's own rule for the paper's multi-digit spheres (docs/paper_protocol.md §1.6;
the paper's
code for it was never released): ``n_items`` items of 28×28 are tiled on a square canvas of
``tiles × tiles`` cells of 28×28 pixels (four digits: a 2×2 tiling into 56×56), item ``j`` in cell
``(j // tiles, j % tiles)``, each moved by an optional random integer offset of at most ``jitter``
pixels per axis (kept inside the canvas). Where items overlap, a later item's non-zero pixels
overwrite the earlier items' pixels. The canvas always fills the same plane window
``[−1.5, 1.5]²`` (:mod:`sphere_bench.data.projection`), so more tiles mean smaller items on the
sphere.

A canvas is kept as per-item **layers** ``[n, n_items, H, W]``: layer ``j`` holds the pixels of
item ``j`` that stay visible. Their sum is the canvas image, and after projection the layer with
the largest value at a sphere point tells which item (and so which class) the point belongs to.
"""

from __future__ import annotations

import math

import torch

ITEM_SIZE = 28


def default_tiles(n_items: int) -> int:
    """The smallest square tiling that holds ``n_items`` items."""
    return max(1, math.isqrt(n_items - 1) + 1) if n_items > 0 else 1


def check_canvas(n_items: int, tiles: int, jitter: int) -> None:
    """Raise ``ValueError`` naming the bad key when the canvas cannot hold the items."""
    if isinstance(n_items, bool) or not isinstance(n_items, int) or n_items < 1:
        raise ValueError(f"data.n_items must be an integer >= 1, got {n_items!r}")
    if isinstance(tiles, bool) or not isinstance(tiles, int) or tiles < 1:
        raise ValueError(f"data.canvas_tiles must be an integer >= 1 (or null), got {tiles!r}")
    if n_items > tiles * tiles:
        raise ValueError(
            f"data.n_items={n_items} does not fit a {tiles}x{tiles} canvas (at most "
            f"{tiles * tiles} items); raise data.canvas_tiles to >= {default_tiles(n_items)} "
            "or set it to null"
        )
    if isinstance(jitter, bool) or not isinstance(jitter, int) or jitter < 0:
        raise ValueError(f"data.jitter must be an integer >= 0 (pixels), got {jitter!r}")


def compose_layers(
    items: torch.Tensor, tiles: int, offsets: torch.Tensor | None = None
) -> torch.Tensor:
    """Tile items onto a canvas and resolve overlaps.

    Args:
        items: ``[n, k, 28, 28]`` item images (any dtype; 0 = empty).
        tiles: cells per canvas side; the canvas is ``28·tiles`` pixels square.
        offsets: optional ``[n, k, 2]`` integer (row, column) offsets of each item from its cell.

    Returns:
        ``[n, k, 28·tiles, 28·tiles]`` layers: item ``j`` where it is visible, else 0.
    """
    n, k = items.shape[:2]
    if k > tiles * tiles:
        raise ValueError(f"{k} items do not fit a {tiles}x{tiles} canvas")
    if tiles == 1 and offsets is None:
        return items.clone()
    size = ITEM_SIZE * tiles
    layers = torch.zeros(n, k, size, size, dtype=items.dtype)
    rows = torch.arange(ITEM_SIZE)
    for j in range(k):
        top = torch.full((n,), ITEM_SIZE * (j // tiles), dtype=torch.long)
        left = torch.full((n,), ITEM_SIZE * (j % tiles), dtype=torch.long)
        if offsets is not None:
            top = (top + offsets[:, j, 0]).clamp(0, size - ITEM_SIZE)
            left = (left + offsets[:, j, 1]).clamp(0, size - ITEM_SIZE)
        r = (top[:, None] + rows[None, :])[:, :, None].expand(n, ITEM_SIZE, ITEM_SIZE)
        c = (left[:, None] + rows[None, :])[:, None, :].expand(n, ITEM_SIZE, ITEM_SIZE)
        batch = torch.arange(n)[:, None, None].expand(n, ITEM_SIZE, ITEM_SIZE)
        layers[batch, j, r, c] = items[:, j]
    # Later items overwrite earlier ones where they have ink.
    covered = torch.zeros(n, size, size, dtype=torch.bool)
    for j in reversed(range(k)):
        layers[:, j].masked_fill_(covered, 0)
        covered |= layers[:, j] > 0
    return layers

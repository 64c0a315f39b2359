"""Covering a sequence longer than a model's context with full-length windows."""
from __future__ import annotations

import math

import numpy as np


def tile_starts(n: int, width: int) -> list[int]:
    """Starts of windows of ``width`` covering [0, n): consecutive tiles, the last one right-aligned
    (so every window is full length, the last may overlap its neighbour). One window at 0 when n <= width."""
    if n <= width:
        return [0]
    starts = list(range(0, n - width, width))
    return starts + [n - width]


def spread_starts(n: int, width: int) -> list[int]:
    """Starts of the fewest windows of ``width`` covering [0, n), spread evenly (equal overlaps)."""
    if n <= width:
        return [0]
    k = math.ceil(n / width)
    return [int(s) for s in np.round(np.linspace(0, n - width, k)).astype(int)]

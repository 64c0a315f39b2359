"""How much of a block stays masked after each unmasking step.

After step i of ``steps`` (i = 0 .. steps - 1) the masked fraction of the block's free positions is

    r_i = end_ratio + (start_ratio - end_ratio) * shape((i + 1) / steps)   for i < steps - 1,
    r_{steps - 1} = 0                                                       (nothing is left masked),

with shape(0) = 1 and shape(1) = 0, so the schedule runs from ``start_ratio`` (where it would stand
before the first step; the sampler itself starts from all masked) towards ``end_ratio``. With the
defaults start 1, end 0 and the linear shape this is MDLM's / LLaDA's schedule: each step reveals
1/steps of the block. Shapes:

* ``linear``: 1 - p.
* ``cosine``: cos(pi p / 2) (MaskGIT): few tokens early, many late.
* ``exponential``: (exp(-k p) - exp(-k)) / (1 - exp(-k)) with k = 4: many tokens early, few late.
* ``custom``: the list itself, one masked fraction per step (its last entry must be 0).

Counts are ``round(r_i * n)`` for a block of n free positions. Unlike the earlier research
sampler, a custom list is used from its first entry.
"""
from __future__ import annotations

import math

EXPONENTIAL_RATE = 4.0


def _shape(kind: str, p: float) -> float:
    if kind == "linear":
        return 1.0 - p
    if kind == "cosine":
        return math.cos(math.pi * p / 2.0)
    if kind == "exponential":
        k = EXPONENTIAL_RATE
        return (math.exp(-k * p) - math.exp(-k)) / (1.0 - math.exp(-k))
    raise ValueError(f"unknown schedule {kind!r}")


def masked_fractions(kind: str, steps: int, *, start_ratio: float = 1.0, end_ratio: float = 0.0,
                     custom: list | None = None) -> list[float]:
    """The masked fraction after each of ``steps`` steps (the last one 0.0)."""
    if kind == "custom":
        ratios = [float(r) for r in (custom or [])]
        if len(ratios) != steps or not ratios or ratios[-1] != 0.0:
            raise ValueError("a custom schedule needs one fraction per step, the last 0.0")
        return ratios
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    out = [end_ratio + (start_ratio - end_ratio) * _shape(kind, (i + 1) / steps) for i in range(steps - 1)]
    return [min(1.0, max(0.0, r)) for r in out] + [0.0]


def masked_counts(fractions: list[float], n: int) -> list[int]:
    """Positions left masked after each step for a block of ``n`` free positions."""
    return [min(n, max(0, round(r * n))) for r in fractions]

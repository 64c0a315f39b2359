"""Learning-rate schedule: linear warmup, then cosine decay to ``min_lr``.

The schedule is a pure function of the iteration, so a resumed run needs no scheduler state;
the trainer sets ``group["lr"] = lr_at(it) * group["lr_scale"]`` on every step, which keeps a
per-group multiplier (the unfrozen trunk's) from ever being overwritten.
"""
from __future__ import annotations

import math


def lr_at(it: int, *, learning_rate: float, min_lr: float, warmup_iters: int, lr_decay_iters: int,
          decay_lr: bool = True) -> float:
    """Learning rate of (0-based) step ``it``."""
    if not decay_lr:
        return learning_rate
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it >= lr_decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / max(1, lr_decay_iters - warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))  # 1 -> 0
    return min_lr + coeff * (learning_rate - min_lr)


def schedule_from_config(optim, max_iters: int):
    """``it -> lr`` for an ``[optim]`` table (``lr_decay_iters=0`` means ``max_iters``)."""
    decay_iters = optim.lr_decay_iters or max_iters
    return lambda it: lr_at(it, learning_rate=optim.learning_rate, min_lr=optim.min_lr,
                            warmup_iters=optim.warmup_iters, lr_decay_iters=decay_iters, decay_lr=optim.decay_lr)

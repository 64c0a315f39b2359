"""Where every random number of a run comes from.

Each purpose has its own stream id; a generator is keyed by (seed, rank, counter, stream), so a
resumed run, a prefetched batch and every DDP rank draw exactly what an uninterrupted single
process would have drawn for the same key.
"""
from __future__ import annotations

import numpy as np

# Stream ids of np.random.default_rng([seed, rank, counter, STREAM]); one per purpose.
STREAM_BATCH = 1
STREAM_VAL = 2
STREAM_DROPOUT = 3
STREAM_SAMPLE = 4


def rng_for(seed: int, rank: int, counter: int, stream: int) -> np.random.Generator:
    """The numpy generator of one (seed, rank, counter, stream) key."""
    return np.random.default_rng([seed, rank, counter, stream])


def seed_for(*key: int) -> int:
    """A 62-bit integer seed (for torch generators) derived from the same kind of key."""
    return int(np.random.default_rng(list(key)).integers(0, 2**62))

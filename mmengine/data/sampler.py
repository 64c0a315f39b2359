"""Epoch-based sampling of window starts, disjoint across ranks and exactly resumable.

nanoGPT's ``get_batch`` draws with replacement, replays the same order after every resume
and lets DDP ranks overlap. ``EpochSampler`` fixes all three: each epoch is a permutation of
``range(num_items)`` derived from ``(seed, epoch)`` alone, rank r takes every
``world_size``-th item of it, and the whole state is two integers (epoch, position).
Items are indices into whatever the caller samples from (paragraph starts, every valid
window offset, documents).

The permutation is never materialised: ``num_items`` may be every offset of a multi-GB token
file (``rng.permutation`` of 10**9 items would take 8 GB per rank and seconds per epoch).
Instead ``perm(i)`` is computed for the indices needed, with a keyed Feistel network
(:class:`_IndexPermutation`), a few thousand at a time.
"""
from __future__ import annotations

import numpy as np

__all__ = ["EpochSampler"]

# Stream id in the RNG key, so that the permutation stream never coincides with another
# purpose's stream derived from the same seed.
_PERMUTATION_STREAM = 7
_CHUNK = 1 << 14  # share positions computed at once (amortises numpy's per-call overhead)


class _IndexPermutation:
    """A pseudo-random bijection of ``range(n)`` keyed by ``key``, evaluated index by index.

    Algorithm: write ``i < 4**h`` (the smallest such power, so ``4**h < 4n``) as two h-bit
    halves (L, R) and apply ``_ROUNDS`` Feistel rounds ``(L, R) -> (R, L ^ F_k(R))``, F_k a
    keyed splitmix64 mix truncated to h bits; each round is invertible, so this is a bijection
    of ``range(4**h)``. Cycle walking restricts it to ``range(n)``: an output >= n is fed
    through again until it lands below n (it must, as the cycle through i returns to i < n),
    fewer than 4 passes on average. Memory is O(len(indices)), whatever n is.
    """

    _ROUNDS = 6
    _M1 = np.uint64(0xBF58476D1CE4E5B9)
    _M2 = np.uint64(0x94D049BB133111EB)

    def __init__(self, n: int, key: list[int]):
        self.n = n
        self.h = max(1, (max(n - 1, 1).bit_length() + 1) // 2)  # 4**h >= n
        self.mask = np.uint64((1 << self.h) - 1)
        self.keys = np.random.SeedSequence(key).generate_state(self._ROUNDS, dtype=np.uint64)

    def _mix(self, z: np.ndarray) -> np.ndarray:
        z = (z ^ (z >> np.uint64(30))) * self._M1
        z = (z ^ (z >> np.uint64(27))) * self._M2
        return z ^ (z >> np.uint64(31))

    def _feistel(self, x: np.ndarray) -> np.ndarray:
        h = np.uint64(self.h)
        left, right = x >> h, x & self.mask
        for k in self.keys:
            left, right = right, left ^ (self._mix(right ^ k) & self.mask)
        return (left << h) | right

    def __call__(self, indices: np.ndarray) -> np.ndarray:
        y = self._feistel(indices.astype(np.uint64))
        out = y >= self.n
        while out.any():
            y[out] = self._feistel(y[out])
            out = y >= self.n
        return y.astype(np.int64)


class EpochSampler:
    """Draws item indices for one rank, without replacement within an epoch.

    Each epoch e is a permutation ``perm`` of ``range(num_items)`` keyed by
    ``(seed, e, STREAM)`` (the identity when ``shuffle`` is false); rank r's share is
    ``perm[r::world_size]`` truncated to ``num_items // world_size`` items, so shares are
    disjoint and equally long (up to ``world_size - 1`` items per epoch are left out).
    ``next_batch`` continues into the next epoch seamlessly when the current one runs out.

    The state (``epoch``, ``position``) is the same on every rank, so one rank's
    ``state_dict()`` restores all of them.
    """

    def __init__(
        self,
        num_items: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
    ):
        if world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {world_size}")
        if seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        if num_items < world_size:
            raise ValueError(
                f"num_items ({num_items}) must be at least world_size ({world_size}) so every rank gets items"
            )
        self.num_items = int(num_items)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.shuffle = bool(shuffle)
        self.per_rank = self.num_items // self.world_size  # items per rank per epoch
        self._epoch = 0
        self._position = 0
        self._chunk_key: tuple[int, int] | None = None  # (epoch, chunk) held in self._chunk
        self._chunk = np.zeros(0, dtype=np.int64)

    @property
    def epoch(self) -> int:
        """Index of the epoch the next item comes from."""
        return self._epoch

    @property
    def position(self) -> int:
        """Number of this rank's items of the current epoch already handed out."""
        return self._position

    def _items(self, epoch: int, begin: int, end: int) -> np.ndarray:
        """This rank's items at share positions [begin, end) of ``epoch``: perm[rank + world_size * j]."""
        idx = self.rank + self.world_size * np.arange(begin, end, dtype=np.int64)
        if not self.shuffle:
            return idx
        return _IndexPermutation(self.num_items, [self.seed, epoch, _PERMUTATION_STREAM])(idx)

    def epoch_items(self, epoch: int) -> np.ndarray:
        """This rank's items (int64) for ``epoch``, in the order they are handed out.

        Materialises the whole share (for inspection and tests); ``next_batch`` never does.
        """
        return self._items(epoch, 0, self.per_rank)

    def next_batch(self, batch_size: int) -> np.ndarray:
        """The next ``batch_size`` item indices for this rank (int64), crossing epochs if needed."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        parts = []
        need = batch_size
        while need:
            c, lo = divmod(self._position, _CHUNK)
            if self._chunk_key != (self._epoch, c):
                self._chunk = self._items(self._epoch, c * _CHUNK, min((c + 1) * _CHUNK, self.per_rank))
                self._chunk_key = (self._epoch, c)
            take = min(need, len(self._chunk) - lo)
            parts.append(self._chunk[lo : lo + take])
            self._position += take
            need -= take
            if self._position == self.per_rank:
                self._epoch += 1
                self._position = 0
        return parts[0].copy() if len(parts) == 1 else np.concatenate(parts)

    def state_dict(self) -> dict:
        """Plain ints: where the sampler is, plus what it must be resumed with."""
        return {
            "epoch": self._epoch,
            "position": self._position,
            "seed": self.seed,
            "num_items": self.num_items,
            "world_size": self.world_size,
            "shuffle": int(self.shuffle),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly where ``state`` was taken; refuses a state from a different setup.

        A different ``world_size`` (or seed, item count, shuffle) is a ValueError rather than
        a best-effort remap: the position counts this rank's items of an epoch, which means
        something else once the shares are cut differently, so a remap could neither repeat
        nor skip items correctly.
        """
        missing = [k for k in ("epoch", "position") if k not in state]
        if missing:
            raise ValueError(f"sampler state lacks {', '.join(missing)} (got keys {sorted(state)})")
        for key in ("seed", "num_items", "world_size"):
            if key in state and int(state[key]) != getattr(self, key):
                raise ValueError(
                    f"sampler state has {key}={state[key]} but this sampler has {key}={getattr(self, key)}; "
                    "resume with the same data and world size"
                )
        if "shuffle" in state and bool(state["shuffle"]) != self.shuffle:
            raise ValueError(f"sampler state has shuffle={bool(state['shuffle'])} but this sampler has "
                             f"shuffle={self.shuffle}")
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position < self.per_rank:
            raise ValueError(f"sampler state epoch={epoch}, position={position} is out of range")
        self._epoch, self._position = epoch, position

    def __repr__(self) -> str:
        return (
            f"EpochSampler(num_items={self.num_items}, seed={self.seed}, rank={self.rank}, "
            f"world_size={self.world_size}, epoch={self._epoch}, position={self._position})"
        )

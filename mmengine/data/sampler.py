"""Epoch-based sampling of window starts, disjoint across ranks and exactly resumable.

nanoGPT's ``get_batch`` draws with replacement, replays the same order after every resume
and lets DDP ranks overlap. ``EpochSampler`` fixes all three: each epoch is a permutation of
``range(num_items)`` derived from ``(seed, epoch)`` alone, rank r takes every
``world_size``-th item of it, and the whole state is two integers (epoch, position).
Items are indices into whatever the caller samples from (paragraph starts, every valid
window offset, documents).
"""
from __future__ import annotations

import numpy as np

__all__ = ["EpochSampler"]

# Stream id in the RNG key, so that the permutation stream never coincides with another
# purpose's stream derived from the same seed.
_PERMUTATION_STREAM = 7


class EpochSampler:
    """Draws item indices for one rank, without replacement within an epoch.

    Each epoch e is ``perm = permutation(num_items)`` from ``default_rng([seed, e, STREAM])``
    (or ``arange`` when ``shuffle`` is false); rank r's share is ``perm[r::world_size]``
    truncated to ``num_items // world_size`` items, so shares are disjoint and equally long
    (up to ``world_size - 1`` items per epoch are left out). ``next_batch`` continues into the
    next epoch seamlessly when the current one runs out.

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
        self._share: np.ndarray | None = None  # this rank's items for self._epoch

    @property
    def epoch(self) -> int:
        """Index of the epoch the next item comes from."""
        return self._epoch

    @property
    def position(self) -> int:
        """Number of this rank's items of the current epoch already handed out."""
        return self._position

    def epoch_items(self, epoch: int) -> np.ndarray:
        """This rank's items (int64) for ``epoch``, in the order they are handed out."""
        if self.shuffle:
            rng = np.random.default_rng([self.seed, epoch, _PERMUTATION_STREAM])
            perm = rng.permutation(self.num_items)
        else:
            perm = np.arange(self.num_items)
        return perm[self.rank :: self.world_size][: self.per_rank].astype(np.int64, copy=False)

    def next_batch(self, batch_size: int) -> np.ndarray:
        """The next ``batch_size`` item indices for this rank (int64), crossing epochs if needed."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        parts = []
        need = batch_size
        while need:
            if self._share is None:
                self._share = self.epoch_items(self._epoch)
            take = min(need, self.per_rank - self._position)
            parts.append(self._share[self._position : self._position + take])
            self._position += take
            need -= take
            if self._position == self.per_rank:
                self._epoch += 1
                self._position = 0
                self._share = None
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
        """Continue exactly where ``state`` was taken; refuses a state from a different setup."""
        for key in ("seed", "num_items", "world_size"):
            if key in state and int(state[key]) != getattr(self, key):
                raise ValueError(
                    f"sampler state has {key}={state[key]} but this sampler has {key}={getattr(self, key)}; "
                    "resume with the same data and world size"
                )
        if "shuffle" in state and bool(state["shuffle"]) != self.shuffle:
            raise ValueError(f"sampler state has shuffle={bool(state['shuffle'])} but this sampler has shuffle={self.shuffle}")
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position < self.per_rank:
            raise ValueError(f"sampler state epoch={epoch}, position={position} is out of range")
        self._epoch, self._position, self._share = epoch, position, None

    def __repr__(self) -> str:
        return (
            f"EpochSampler(num_items={self.num_items}, seed={self.seed}, rank={self.rank}, "
            f"world_size={self.world_size}, epoch={self._epoch}, position={self._position})"
        )

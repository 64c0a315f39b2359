"""A run's data: opening its data dir, and the training batch stream of one rank with a checkpointable position.

Shared by ``train`` and ``evaluate`` (entry points never import each other).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmengine.errors import UserError
from mmengine.rng import STREAM_BATCH, rng_for


def data_dir_path(cfg) -> Path:
    """``data.dir``, or the bundled corpus prepared on first use."""
    from mmengine.data.preparation import default_data_dir

    return Path(cfg.data.dir or default_data_dir())


def open_data(cfg):
    """The run's :class:`~mmengine.data.dataset.DataDir` (UserError naming the dir when it cannot be opened)."""
    from mmengine.data.dataset import DataDir

    path = data_dir_path(cfg)
    try:
        return DataDir.open(path)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot open data dir '{path}': {str(e).rstrip('.')}.") from None


def check_mode_data(mode, cfg) -> None:
    """What the mode will cut from the data, checked when the run opens it (one sentence, not a loader error later).

    The window the mode leaves for text (``data.block_size`` minus the positions it reserves, e.g. ``[CLS]``)
    holds at least one token; ``data.separator`` is text the data dir's tokenizer can encode; both splits
    hold at least one item (a window, or a document of "scores" data).
    """
    from mmengine.errors import DataError

    length = mode.window_length()
    if length < 1:
        reserved = cfg.data.block_size - length
        raise UserError(f"data.block_size={cfg.data.block_size} leaves no room for text: train.training_type="
                        f"'{cfg.train.training_type}' reserves {reserved} position(s) of each window; set "
                        f"data.block_size to at least {reserved + 1}.")
    if cfg.data.separator:
        try:
            mode.separator_ids()
        except DataError as e:  # a tokenizer error: a character outside a char vocabulary
            raise UserError(f"data.separator {cfg.data.separator!r} cannot be encoded by the data dir's tokenizer: "
                            f"{str(e).rstrip('.')}.") from None
    for split in ("train", "val"):
        if mode.num_items(split) < 1:
            raise UserError(f"the {split} split of data dir '{data_dir_path(cfg)}' holds nothing to train or "
                            f"evaluate on (no documents or windows for {mode.describe()}); "
                            f"prepare it with {split} data.")


def to_device(batch: dict, device: str) -> dict:
    """numpy batch -> tensors on ``device`` (non-blocking copies off the CPU)."""
    out = {}
    for k, v in batch.items():
        t = torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v
        out[k] = t.to(device, non_blocking=True) if device != "cpu" else t
    return out


class BatchStream:
    """Training batches for one rank, assembled ahead of time, with a checkpointable position.

    The position is the sampler's state plus ``counter`` (micro-batches produced), which also
    keys the per-batch RNG; :meth:`state_dict` describes what was *consumed*, not prefetched.
    """

    def __init__(self, mode, cfg, info, state: dict | None, batch_state: Any):
        from mmengine.data.sampler import EpochSampler

        self.mode = mode
        self.cfg = cfg
        self.info = info
        self.batch_state = batch_state
        self.accum = cfg.train.gradient_accumulation_steps
        self.sampler = EpochSampler(mode.num_items("train"), seed=cfg.run.seed, rank=info.rank,
                                    world_size=info.world_size, shuffle=True)
        self.counter = 0
        if state:
            self.load_state_dict(state)
        self._state = self.state_dict_now()
        self._prefetcher = None
        depth = cfg.data.prefetch_depth
        if depth > 0:
            from mmengine.data.prefetch import Prefetcher

            self._prefetcher = Prefetcher(self._produce, device=info.device, depth=depth, state_fn=self.state_dict_now)

    @staticmethod
    def check_state(mode, cfg, info, state: dict) -> None:
        """Raise ValueError when ``state`` was written for other data, batch size or rank count."""
        from mmengine.data.sampler import EpochSampler

        EpochSampler(mode.num_items("train"), seed=cfg.run.seed, rank=info.rank,
                     world_size=info.world_size).load_state_dict(state["sampler"])

    def state_dict_now(self) -> dict:
        """The position after the last batch *produced* (the prefetcher's snapshot of each batch)."""
        return {"sampler": self.sampler.state_dict(), "counter": self.counter}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self.counter = int(state["counter"])

    def _produce(self) -> dict:
        idx = self.sampler.next_batch(self.cfg.data.batch_size)
        rng = rng_for(self.cfg.run.seed, self.info.rank, self.counter, STREAM_BATCH)
        batch = self.mode.train_batch(idx, rng, self.counter // self.accum, self.batch_state)
        self.counter += 1
        return batch

    def __next__(self) -> dict:
        if self._prefetcher is not None:
            batch = next(self._prefetcher)
            self._state = self._prefetcher.state_dict() or self._state
            return batch
        batch = self._produce()
        self._state = self.state_dict_now()
        return to_device(batch, self.info.device)

    def state_dict(self) -> dict:
        """The position after the last batch *consumed*."""
        return self._state

    def close(self) -> None:
        if self._prefetcher is not None:
            self._prefetcher.close()
            self._prefetcher = None

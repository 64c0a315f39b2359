"""Background batch prefetching: overlap batch assembly with the training step.

A daemon thread calls ``produce()`` ahead of time (the C++ loader releases the GIL, so this
really runs in parallel with the step) and queues up to ``depth`` batches. ``next()`` hands
them out in order as torch tensors, pinned and copied with ``non_blocking=True`` when the
device is CUDA.

Exact resume: ``state_fn()`` (typically the sampler's ``state_dict``) is called in the
producer thread right after each ``produce()`` and travels with that batch, so
``state_dict()`` describes the position just after the last batch *handed out*, never the
position of batches that were prefetched but not consumed.
"""
from __future__ import annotations

import copy
import logging
import queue
import threading
from collections.abc import Callable

import numpy as np
import torch

__all__ = ["Prefetcher"]

logger = logging.getLogger(__name__)

_BATCH, _ERROR, _END = 0, 1, 2
_POLL_S = 0.05  # how often blocked queue operations look at the stop flag


def _put(q: queue.Queue, stop: threading.Event, item) -> bool:
    """Blocks until there is room, unless stop is set meanwhile."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _produce_loop(produce, state_fn, pin: bool, q: queue.Queue, stop: threading.Event) -> None:
    """The producer thread: batch, state snapshot, tensors (pinned for CUDA), in order."""
    while not stop.is_set():
        try:
            batch = produce()
            state = copy.deepcopy(state_fn()) if state_fn is not None else None
            tensors = {}
            for name, arr in batch.items():
                t = torch.from_numpy(np.ascontiguousarray(arr))
                tensors[name] = t.pin_memory() if pin else t
        except StopIteration:
            _put(q, stop, (_END, None, None))
            return
        except BaseException as exc:  # handed to the consumer, which re-raises it
            _put(q, stop, (_ERROR, exc, None))
            return
        if not _put(q, stop, (_BATCH, tensors, state)):
            return


class Prefetcher:
    """Iterator over ``produce()``'s batches, assembled in a background thread.

    Args:
        produce: returns one batch as ``dict[str, np.ndarray]``; raising ``StopIteration`` ends
            the stream, any other exception is re-raised by ``next()`` in the consumer thread.
        device: where tensors are delivered ("cpu", "cuda", "cuda:1", a ``torch.device``).
        depth: how many batches may wait in the queue (>= 1).
        state_fn: snapshot of the producer's position (e.g. ``sampler.state_dict``), taken
            right after each ``produce()``; see :meth:`state_dict`.
    """

    def __init__(
        self,
        produce: Callable[[], dict[str, np.ndarray]],
        *,
        device="cpu",
        depth: int = 2,
        state_fn: Callable[[], dict] | None = None,
    ):
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._device = torch.device(device)
        self._pin = self._device.type == "cuda"
        # Before anything is consumed, the resumable position is the initial one.
        self._state = copy.deepcopy(state_fn()) if state_fn is not None else None
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished: tuple | None = None  # sticky (_ERROR, exc) or (_END, None)
        # The thread gets what it needs, not `self`: an abandoned Prefetcher can then be
        # garbage-collected, and __del__ stops its thread (unless produce itself refers back
        # to the Prefetcher; close() is the reliable way).
        self._thread = threading.Thread(
            target=_produce_loop,
            args=(produce, state_fn, self._pin, self._queue, self._stop),
            name="mmengine-prefetch",
            daemon=True,
        )
        self._thread.start()

    def __iter__(self) -> "Prefetcher":
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if self._finished is None and self._stop.is_set():
            raise RuntimeError("Prefetcher is closed")
        if self._finished is not None:
            kind, payload = self._finished
            if kind == _ERROR:
                raise payload
            raise StopIteration
        while True:  # poll, so that a close() from another thread cannot leave us waiting forever
            try:
                kind, payload, state = self._queue.get(timeout=_POLL_S)
                break
            except queue.Empty:
                if self._stop.is_set():
                    raise RuntimeError("Prefetcher is closed") from None
        if kind == _ERROR:
            self._finished = (kind, payload)
            raise payload
        if kind == _END:
            self._finished = (kind, None)
            raise StopIteration
        self._state = state
        if self._device.type == "cpu":
            return payload
        return {k: v.to(self._device, non_blocking=self._pin) for k, v in payload.items()}

    def state_dict(self) -> dict | None:
        """``state_fn()``'s snapshot for the last batch handed out (initial state before any)."""
        return copy.deepcopy(self._state)

    def close(self, timeout: float = 5.0) -> None:
        """Stops the producer thread and drops queued batches; safe to call more than once.

        Waits at most ``timeout`` seconds for a ``produce()`` call in progress to return; a
        producer stuck beyond that is left behind (a daemon thread, it ends with the process)
        with a warning, so close() never hangs.
        """
        self._stop.set()
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=timeout)
            if self._thread.is_alive():
                logger.warning("prefetch thread is still inside produce() after close(); leaving it (daemon)")

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._stop.set()
        except AttributeError:
            pass

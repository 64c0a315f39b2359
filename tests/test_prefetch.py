"""Prefetcher: order, exceptions, close, and the state snapshot used for exact resume."""
from __future__ import annotations

import gc
import threading
import time

import numpy as np
import pytest
import torch

from mmengine.data.prefetch import Prefetcher
from mmengine.data.sampler import EpochSampler


def counter_producer(limit=None):
    state = {"i": 0}

    def produce():
        if limit is not None and state["i"] >= limit:
            raise StopIteration
        i = state["i"]
        state["i"] += 1
        return {"x": np.full((2, 3), i, dtype=np.int64), "y": np.arange(3, dtype=np.int32) + i}

    return produce, state


def test_order_types_and_end_of_stream():
    produce, _ = counter_producer(limit=5)
    with Prefetcher(produce, depth=2) as pf:
        batches = list(pf)
    assert [int(b["x"][0, 0]) for b in batches] == [0, 1, 2, 3, 4]
    assert isinstance(batches[0]["x"], torch.Tensor) and batches[0]["x"].dtype == torch.int64
    assert batches[0]["y"].dtype == torch.int32 and batches[0]["y"].device.type == "cpu"


def test_exception_in_produce_is_reraised_in_order():
    calls = {"n": 0}

    def produce():
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyError("boom in produce")
        return {"x": np.zeros(1)}

    with Prefetcher(produce) as pf:
        next(pf), next(pf)
        with pytest.raises(KeyError, match="boom"):
            next(pf)
        with pytest.raises(KeyError):  # stays failed
            next(pf)


def test_state_dict_belongs_to_last_consumed_batch():
    sampler = EpochSampler(1000, seed=0)
    produce = lambda: {"idx": sampler.next_batch(4)}  # noqa: E731
    pf = Prefetcher(produce, depth=3, state_fn=sampler.state_dict)
    try:
        assert pf.state_dict()["position"] == 0  # nothing consumed yet
        consumed = [next(pf)["idx"].numpy() for _ in range(5)]
        time.sleep(0.05)  # let the producer run ahead
        assert sampler.position > 5 * 4  # it really prefetched further
        state = pf.state_dict()
        assert state["position"] == 5 * 4
    finally:
        pf.close()
    # resume from the consumed position: exactly the batches an uninterrupted run sees
    resumed = EpochSampler(1000, seed=0)
    resumed.load_state_dict(state)
    reference = EpochSampler(1000, seed=0)
    expected = [reference.next_batch(4) for _ in range(8)]
    for got, exp in zip(consumed + [resumed.next_batch(4) for _ in range(3)], expected):
        np.testing.assert_array_equal(got, exp)


def test_state_snapshot_is_a_copy():
    state = {"pos": 0, "nested": {"a": 0}}

    def produce():
        state["pos"] += 1
        state["nested"]["a"] += 1
        return {"x": np.zeros(1)}

    with Prefetcher(produce, depth=1, state_fn=lambda: state) as pf:
        next(pf)
        snap = pf.state_dict()
        time.sleep(0.02)
        assert snap == {"pos": 1, "nested": {"a": 1}}


def test_close_stops_a_blocked_producer():
    produce, state = counter_producer()
    pf = Prefetcher(produce, depth=1)
    next(pf)
    time.sleep(0.02)
    pf.close()
    assert not pf._thread.is_alive()
    n = state["i"]
    time.sleep(0.05)
    assert state["i"] == n  # nothing produced after close
    with pytest.raises(RuntimeError, match="closed"):
        next(pf)
    pf.close()  # idempotent


def test_assembly_overlaps_the_consumer_step():
    """Batch 1 is produced while the consumer is still busy with batch 0 (no timing involved:
    the consumer's "step" waits for produce() of batch 1, which would deadlock without overlap)."""
    second_started = threading.Event()
    calls = {"n": 0}

    def produce():
        calls["n"] += 1
        if calls["n"] == 2:
            second_started.set()
        return {"x": np.zeros(1)}

    with Prefetcher(produce, depth=1) as pf:
        next(pf)
        assert second_started.wait(timeout=10), "produce() did not run during the consumer's step"


def test_close_returns_even_if_produce_blocks(caplog):
    release = threading.Event()
    entered = threading.Event()

    def produce():
        entered.set()
        release.wait()  # stuck, e.g. on I/O
        return {"x": np.zeros(1)}

    pf = Prefetcher(produce)
    assert entered.wait(timeout=10)
    with caplog.at_level("WARNING", logger="mmengine.data.prefetch"):
        pf.close(timeout=0.1)
    assert "still inside produce()" in caplog.text
    release.set()
    pf._thread.join(timeout=5)
    assert not pf._thread.is_alive()  # it notices the stop flag once produce() returns


def test_consumer_blocked_in_next_is_released_by_close_from_another_thread():
    release = threading.Event()

    def produce():
        release.wait()
        raise StopIteration

    pf = Prefetcher(produce)
    threading.Timer(0.1, pf.close, kwargs={"timeout": 0.1}).start()
    with pytest.raises(RuntimeError, match="closed"):
        next(pf)
    release.set()


def test_abandoned_prefetcher_stops_its_thread():
    """A consumer that stops early and drops the Prefetcher without close() leaks no thread."""
    produce, _ = counter_producer()
    pf = Prefetcher(produce, depth=1)
    next(pf)
    thread = pf._thread
    del pf
    gc.collect()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_runs_in_background_thread():
    seen = []

    def produce():
        seen.append(threading.current_thread().name)
        return {"x": np.zeros(1)}

    with Prefetcher(produce) as pf:
        next(pf)
    assert seen and all(name == "mmengine-prefetch" for name in seen)


def test_bad_depth():
    with pytest.raises(ValueError, match="depth"):
        Prefetcher(lambda: {}, depth=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_delivery_is_pinned_and_on_device():
    produce, _ = counter_producer(limit=3)
    with Prefetcher(produce, device="cuda") as pf:
        batches = list(pf)
    torch.cuda.synchronize()
    assert [int(b["x"][0, 0]) for b in batches] == [0, 1, 2]
    assert all(b["x"].is_cuda and b["y"].is_cuda for b in batches)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_staging_tensors_are_pinned(monkeypatch):
    """The host copies are pinned and the device copy is non_blocking."""
    seen = []
    real_to = torch.Tensor.to

    def spy_to(self, *args, **kwargs):
        seen.append((self.is_pinned(), kwargs.get("non_blocking")))
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", spy_to)
    produce, _ = counter_producer(limit=2)
    with Prefetcher(produce, device="cuda") as pf:
        list(pf)
    assert seen and all(pinned and nb for pinned, nb in seen), seen

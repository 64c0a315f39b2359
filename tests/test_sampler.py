"""EpochSampler: disjoint rank shares, no replacement, determinism, exact resume."""
from __future__ import annotations

import numpy as np
import pytest

from mmengine.data.sampler import EpochSampler


def take(sampler, batch_size, n_batches):
    return [sampler.next_batch(batch_size) for _ in range(n_batches)]


@pytest.mark.parametrize("num_items, world_size", [(10, 1), (10, 3), (101, 4), (7, 7)])
def test_rank_shares_are_disjoint_and_equal(num_items, world_size):
    per_rank = num_items // world_size
    shares = []
    for rank in range(world_size):
        s = EpochSampler(num_items, seed=5, rank=rank, world_size=world_size)
        share = s.next_batch(per_rank)
        assert s.epoch == 1 and s.position == 0  # exactly one epoch consumed
        assert len(np.unique(share)) == per_rank  # no replacement within the epoch
        shares.append(share)
    all_items = np.concatenate(shares)
    assert len(np.unique(all_items)) == len(all_items) == per_rank * world_size
    assert all_items.min() >= 0 and all_items.max() < num_items


def test_every_item_once_per_epoch_single_rank():
    s = EpochSampler(50, seed=1)
    items = np.concatenate(take(s, 7, 14))  # 98 items: one full epoch + 48 of the next
    assert sorted(items[:50].tolist()) == list(range(50))
    assert len(np.unique(items[50:])) == 48


def test_deterministic_from_seed_and_epoch_and_epochs_differ():
    a = np.concatenate(take(EpochSampler(100, seed=3), 10, 30))
    b = np.concatenate(take(EpochSampler(100, seed=3), 10, 30))
    c = np.concatenate(take(EpochSampler(100, seed=4), 10, 30))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a[:100], a[100:200])  # a new permutation every epoch
    assert sorted(a[100:200].tolist()) == list(range(100))
    np.testing.assert_array_equal(EpochSampler(100, seed=3).epoch_items(2), a[200:300])


def test_batches_cross_epoch_boundary_seamlessly():
    s = EpochSampler(10, seed=0)
    first = s.next_batch(7)
    second = s.next_batch(7)  # 3 from epoch 0, 4 from epoch 1
    assert s.epoch == 1 and s.position == 4
    ref = EpochSampler(10, seed=0)
    np.testing.assert_array_equal(np.concatenate([first, second]),
                                  np.concatenate([ref.epoch_items(0), ref.epoch_items(1)[:4]]))
    big = EpochSampler(4, seed=0).next_batch(10)  # larger than an epoch
    assert len(big) == 10


def test_no_shuffle_is_strided_order():
    s = EpochSampler(10, seed=0, rank=1, world_size=3, shuffle=False)
    np.testing.assert_array_equal(s.next_batch(4), [1, 4, 7, 1])


@pytest.mark.parametrize("world_size", [1, 2])
def test_state_round_trip_resumes_exactly(world_size):
    for rank in range(world_size):
        uninterrupted = EpochSampler(37, seed=11, rank=rank, world_size=world_size)
        expected = take(uninterrupted, 5, 20)

        first = EpochSampler(37, seed=11, rank=rank, world_size=world_size)
        got = take(first, 5, 9)
        state = first.state_dict()
        assert all(type(v) is int for v in state.values())
        resumed = EpochSampler(37, seed=11, rank=rank, world_size=world_size)
        resumed.load_state_dict(state)
        got += take(resumed, 5, 11)
        for g, e in zip(got, expected):
            np.testing.assert_array_equal(g, e)


def test_state_from_other_rank_restores_this_rank():
    r0 = EpochSampler(40, seed=2, rank=0, world_size=2)
    r1 = EpochSampler(40, seed=2, rank=1, world_size=2)
    take(r0, 3, 5), take(r1, 3, 5)
    fresh = EpochSampler(40, seed=2, rank=1, world_size=2)
    fresh.load_state_dict(r0.state_dict())
    np.testing.assert_array_equal(fresh.next_batch(6), r1.next_batch(6))


def test_bad_arguments_and_states():
    with pytest.raises(ValueError, match="rank"):
        EpochSampler(10, seed=0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="num_items"):
        EpochSampler(1, seed=0, world_size=2)
    with pytest.raises(ValueError, match="world_size"):
        EpochSampler(10, seed=0, world_size=0)
    with pytest.raises(ValueError, match="seed"):
        EpochSampler(10, seed=-1)
    s = EpochSampler(10, seed=0)
    with pytest.raises(ValueError, match="batch_size"):
        s.next_batch(0)
    with pytest.raises(ValueError, match="seed"):
        s.load_state_dict({**s.state_dict(), "seed": 1})
    with pytest.raises(ValueError, match="num_items"):
        s.load_state_dict({**s.state_dict(), "num_items": 11})
    with pytest.raises(ValueError, match="out of range"):
        s.load_state_dict({**s.state_dict(), "position": 10})
    with pytest.raises(ValueError, match="shuffle"):
        s.load_state_dict({**s.state_dict(), "shuffle": 0})
    with pytest.raises(ValueError, match="lacks position"):
        s.load_state_dict({"epoch": 0})


def test_world_size_change_is_rejected_on_load():
    """Resuming on a different number of ranks is one clear error, not a silent reshuffle."""
    two = EpochSampler(40, seed=2, rank=0, world_size=2)
    two.next_batch(3)
    four = EpochSampler(40, seed=2, rank=0, world_size=4)
    with pytest.raises(ValueError, match="world_size=2 but this sampler has world_size=4"):
        four.load_state_dict(two.state_dict())


@pytest.mark.parametrize("world_size", [1, 3])
def test_resume_at_every_point_of_two_epochs(world_size):
    """Save after any number of batches (mid-epoch, exactly on an epoch boundary, just past
    one) and resume: the concatenated stream equals the uninterrupted one on every rank."""
    num_items, batch = 23, 4  # per_rank 23 or 7: boundaries fall inside and between batches
    for rank in range(world_size):
        make = lambda: EpochSampler(num_items, seed=9, rank=rank, world_size=world_size)  # noqa: E731
        expected = np.concatenate(take(make(), batch, 16))
        for cut in range(0, 16):
            first = make()
            got = take(first, batch, cut)
            resumed = make()
            resumed.load_state_dict(first.state_dict())
            got += take(resumed, batch, 16 - cut)
            np.testing.assert_array_equal(np.concatenate(got), expected)
    boundary = EpochSampler(8, seed=0)
    boundary.next_batch(8)
    assert boundary.state_dict()["epoch"] == 1 and boundary.state_dict()["position"] == 0


@pytest.mark.parametrize("num_items", [*range(1, 40), 63, 64, 65, 1000, 4097])
def test_index_permutation_is_a_bijection(num_items):
    from mmengine.data.sampler import _IndexPermutation

    for epoch in range(3):
        perm = _IndexPermutation(num_items, [5, epoch, 7])(np.arange(num_items))
        assert perm.dtype == np.int64
        assert sorted(perm.tolist()) == list(range(num_items))


def test_huge_item_counts_need_no_permutation_array():
    """Every offset of a multi-GB token file: batches come without materialising an epoch."""
    s = EpochSampler(10**12, seed=1, rank=1, world_size=8)
    items = np.concatenate(take(s, 4096, 8))
    assert len(np.unique(items)) == len(items) and items.min() >= 0 and items.max() < 10**12
    state = s.state_dict()
    resumed = EpochSampler(10**12, seed=1, rank=1, world_size=8)
    resumed.load_state_dict(state)
    np.testing.assert_array_equal(resumed.next_batch(100), s.next_batch(100))


def test_shuffle_spreads_every_item_over_every_position():
    """Over many seeds each item lands in each slot about equally often (a smoke test of the
    permutation's quality: a weak mix would favour some positions)."""
    n, seeds = 8, 4000
    counts = np.zeros((n, n))
    for seed in range(seeds):
        counts[np.arange(n), EpochSampler(n, seed=seed).epoch_items(0)] += 1
    expected = seeds / n
    assert np.abs(counts - expected).max() < 0.15 * expected

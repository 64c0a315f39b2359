"""mmengine.data.masking: strategies, BERT replacement, continuous time, curriculum."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmengine.data.masking import (
    MaskingStage,
    StageCurriculum,
    apply_mask,
    continuous_time_mask,
    exact_count_mask,
    make_mask,
    make_mixed_mask,
    nelbo_per_token,
    stage_of_rows,
)


def rng(seed=0):
    return np.random.default_rng(seed)


def runs(row):
    """Lengths of the runs of True in a 1-D bool array."""
    padded = np.concatenate([[False], row, [False]]).astype(np.int8)
    d = np.diff(padded)
    return np.flatnonzero(d == -1) - np.flatnonzero(d == 1)


# ----------------------------------------------------------------------------- stage config


def test_from_dict_defaults_and_roundtrip():
    s = MaskingStage.from_dict({"type": "sticky", "target_masked_ratio": 0.4, "p1": 0.1, "p2": 0.5})
    assert s.type == "sticky" and s.target_masked_ratio == 0.4
    assert MaskingStage.from_dict(s.to_dict()) == s
    assert MaskingStage.from_dict({"type": "random", "max_masked_ratio": 1}).max_masked_ratio == 1.0


@pytest.mark.parametrize(
    "d, exc, msg",
    [
        ({"type": "random", "max_mask_ratio": 0.5}, ValueError,
         r"unknown masking stage key.*max_mask_ratio.*valid keys"),
        ({"type": "blocky"}, ValueError, "must be one of random, sticky, span"),
        ({"type": 3}, TypeError, "type must be a string"),
        ({"type": "random", "max_masked_ratio": 0.0}, ValueError, r"max_masked_ratio must be in \(0, 1\]"),
        ({"type": "sticky", "target_masked_ratio": 1.5}, ValueError, "target_masked_ratio"),
        ({"type": "sticky", "p1": -0.1}, ValueError, r"p1 must be in \[0, 1\]"),
        ({"type": "sticky", "p2": "high"}, TypeError, "p2 must be a number"),
        ({"type": "sticky", "p2": True}, TypeError, "p2 must be a number"),
        ({"type": "span", "span_length": 0.5}, ValueError, "span_length must be >= 1"),
        ({"type": "random", "max_masked_ratio": float("nan")}, ValueError, "finite"),
        ("random", TypeError, "must be a table"),
    ],
)
def test_from_dict_errors(d, exc, msg):
    with pytest.raises(exc, match=msg):
        MaskingStage.from_dict(d)


# ----------------------------------------------------------------------------- strategies


def test_random_mask_rates_and_at_least_one():
    s = MaskingStage(type="random", max_masked_ratio=0.3)
    m = make_mask(s, (2000, 64), rng())
    per_row = m.mean(axis=1)
    assert m.any(axis=1).all()
    assert per_row.max() <= 0.3 + 0.25  # binomial noise around a rate <= 0.3
    assert abs(m.mean() - 0.15) < 0.01  # E[rate] = max / 2


def test_random_mask_tiny_rate_still_masks_one():
    m = make_mask(MaskingStage(type="random", max_masked_ratio=1e-6), (50, 8), rng())
    assert (m.sum(axis=1) >= 1).all()


@settings(max_examples=60, deadline=None)
@given(
    B=st.integers(1, 6),
    T=st.integers(1, 70),
    ratio=st.floats(0.01, 1.0),
    p1=st.sampled_from([0.0, 0.02, 0.3, 1.0]),
    p2=st.sampled_from([0.0, 0.5, 1.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_sticky_exact_count(B, T, ratio, p1, p2, seed):
    s = MaskingStage(type="sticky", target_masked_ratio=ratio, p1=p1, p2=p2)
    m = make_mask(s, (B, T), rng(seed))
    assert m.shape == (B, T) and m.dtype == bool
    assert (m.sum(axis=1) == min(T, max(1, round(ratio * T)))).all()


@settings(max_examples=60, deadline=None)
@given(
    B=st.integers(1, 6),
    T=st.integers(1, 70),
    ratio=st.floats(0.01, 1.0),
    span=st.floats(1.0, 10.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_span_exact_count(B, T, ratio, span, seed):
    m = make_mask(MaskingStage(type="span", target_masked_ratio=ratio, span_length=span), (B, T), rng(seed))
    assert (m.sum(axis=1) == min(T, max(1, round(ratio * T)))).all()


@pytest.mark.parametrize("p1, p2, ratio", [(0.0, 0.5, 0.5), (0.0, 0.0, 1.0), (0.0, 0.3, 1.0), (1.0, 1.0, 1.0)])
def test_sticky_terminates_in_degenerate_settings(p1, p2, ratio):
    m = make_mask(MaskingStage(type="sticky", target_masked_ratio=ratio, p1=p1, p2=p2), (8, 256), rng())
    assert (m.sum(axis=1) == round(ratio * 256)).all()


def test_sticky_p1_zero_grows_one_run():
    # With p1 = 0 and p2 = 1 the fallback seed grows into a single contiguous run.
    m = make_mask(MaskingStage(type="sticky", target_masked_ratio=0.25, p1=0.0, p2=1.0), (16, 128), rng())
    for row in m:
        assert len(runs(row)) == 1 and runs(row)[0] == 32


def sticky_reference(k, p1, p2, B, T, rng):
    """The issue's definition step by step: every unmasked position joins with p2 next to a masked
    one, p1 otherwise; idle steps simply repeat; an overshooting step keeps a uniform subset."""
    mask = np.zeros((B, T), bool)
    while (mask.sum(1) < k).any():
        need = k - mask.sum(1)
        nb = np.zeros_like(mask)
        nb[:, 1:] |= mask[:, :-1]
        nb[:, :-1] |= mask[:, 1:]
        prob = np.where(nb, p2, p1) * ~mask * (need > 0)[:, None]
        cand = rng.random((B, T)) < prob
        rank = np.argsort(np.argsort(np.where(cand, rng.random((B, T)), 2.0), axis=1), axis=1)
        mask |= cand & (rank < need[:, None])
    return mask


@pytest.mark.parametrize("T, ratio, p1, p2", [(6, 0.5, 0.05, 0.5), (5, 0.6, 0.02, 0.2), (7, 0.43, 0.3, 0.9)])
def test_sticky_matches_the_step_by_step_definition(T, ratio, p1, p2):
    # Distribution of whole mask patterns (2^T of them) against the literal process: total
    # variation distance at the level of two samples of the reference (~0.015 at N = 10^4).
    N = 10_000
    stage = MaskingStage(type="sticky", target_masked_ratio=ratio, p1=p1, p2=p2)
    got = make_mask(stage, (N, T), rng(1))
    ref = sticky_reference(stage.masked_count(T), p1, p2, N, T, rng(2))
    code = 1 << np.arange(T)

    def hist(m):
        return np.bincount(m.astype(np.int64) @ code, minlength=1 << T) / N

    assert 0.5 * np.abs(hist(got) - hist(ref)).sum() < 0.035


def test_sticky_makes_longer_runs_than_random():
    T = 512
    sticky = make_mask(MaskingStage(type="sticky", target_masked_ratio=0.3, p1=0.01, p2=0.7), (32, T), rng(1))
    iid = rng(2).random((32, T)) < 0.3

    def mean_run(m):
        return np.mean(np.concatenate([runs(r) for r in m]))

    assert mean_run(sticky) > 2 * mean_run(iid)


def test_span_mean_length_reasonable():
    m = make_mask(MaskingStage(type="span", target_masked_ratio=0.15, span_length=5.0), (64, 512), rng(3))
    mean_run = np.mean(np.concatenate([runs(r) for r in m]))
    assert 3.0 < mean_run < 9.0


@pytest.mark.parametrize("stage", [
    MaskingStage(type="random", max_masked_ratio=0.5),
    MaskingStage(type="sticky", target_masked_ratio=0.4),
    MaskingStage(type="span", target_masked_ratio=0.4),
])
def test_masks_deterministic_from_rng(stage):
    a = make_mask(stage, (4, 100), np.random.default_rng([7, 0, 3, 1]))
    b = make_mask(stage, (4, 100), np.random.default_rng([7, 0, 3, 1]))
    c = make_mask(stage, (4, 100), np.random.default_rng([7, 0, 4, 1]))
    assert (a == b).all() and not (a == c).all()


def test_empty_batch_shapes():
    for t in ("random", "sticky", "span"):
        assert make_mask(MaskingStage(type=t), (0, 10), rng()).shape == (0, 10)
        assert make_mask(MaskingStage(type=t), (3, 0), rng()).shape == (3, 0)


# ----------------------------------------------------------------------------- apply_mask


def test_apply_mask_plain():
    x = np.arange(12).reshape(2, 6) % 5
    mask = np.zeros((2, 6), bool)
    mask[0, 1] = mask[1, 5] = True
    inp, tgt = apply_mask(x, mask, mask_id=9, vocab_size=5, rng=rng(), bert_replacement=False)
    assert inp.dtype == np.int64 and tgt.dtype == np.int64
    assert inp[0, 1] == 9 and inp[1, 5] == 9
    assert (inp[~mask] == x[~mask]).all()
    assert tgt[0, 1] == x[0, 1] and tgt[1, 5] == x[1, 5] and (tgt[~mask] == -1).all()
    assert x[0, 1] == 1  # input untouched


def test_apply_mask_bert_split_and_no_specials():
    V, mask_id = 50, 50
    x = rng(1).integers(0, V, (200, 200))
    mask = np.ones_like(x, dtype=bool)
    inp, tgt = apply_mask(x, mask, mask_id=mask_id, vocab_size=V, rng=rng(2))
    is_mask = inp == mask_id
    same = inp == x
    assert abs(is_mask.mean() - 0.8) < 0.01
    # 10% random (1/V of which coincide with the original) + 10% kept
    assert abs(same.mean() - (0.1 + 0.1 / V)) < 0.01
    assert inp.max() <= mask_id and (inp[~is_mask] < V).all()
    assert (tgt == x).all()


def test_apply_mask_custom_split_and_errors():
    x = np.zeros((4, 8), dtype=np.uint16)
    m = np.ones((4, 8), bool)
    inp, _ = apply_mask(x, m, mask_id=10, vocab_size=10, rng=rng(), bert_replacement=(0.0, 0.0, 1.0))
    assert (inp == 0).all()
    with pytest.raises(ValueError, match="text vocabulary size"):
        apply_mask(x, m, mask_id=10, vocab_size=14, rng=rng())
    with pytest.raises(ValueError, match="sum to 1"):
        apply_mask(x, m, mask_id=10, vocab_size=10, rng=rng(), bert_replacement=(0.5, 0.1, 0.1))
    with pytest.raises(ValueError, match="shape"):
        apply_mask(x, m[:, :3], mask_id=10, vocab_size=10, rng=rng())


# ----------------------------------------------------------------------------- continuous time


def test_continuous_time_stratified():
    B = 16
    mask, t = continuous_time_mask((B, 4096), rng(5), eps=1e-3)
    assert t.dtype == np.float32 and t.shape == (B,)
    assert ((t > 1e-3 - 1e-7) & (t <= 1.0)).all()
    # One t per stratum of width (1 - eps) / B.
    strata = np.floor((t - 1e-3) / (1 - 1e-3) * B).astype(int)
    assert sorted(strata.tolist()) == list(range(B))
    assert np.allclose(mask.mean(axis=1), t, atol=0.03)


def test_continuous_time_step_and_determinism():
    m1, t1 = continuous_time_mask((4, 10), rng(1), step=3)
    m2, t2 = continuous_time_mask((4, 10), rng(1), step=3)
    _, t3 = continuous_time_mask((4, 10), rng(1), step=4)
    assert (m1 == m2).all() and (t1 == t2).all() and not np.allclose(np.sort(t1), np.sort(t3))
    _, t0 = continuous_time_mask((4, 10), rng(1), eps=0.0, step=0)
    assert (t0 > 0).all()


def test_nelbo_is_nll_for_a_uniform_model():
    # A model that predicts uniformly over V tokens has NLL log V at every masked position;
    # E_t[(1/t) * #masked] = T, so the NELBO per token estimates log V (exactly, in expectation).
    V, B, T = 7, 256, 256
    mask, t = continuous_time_mask((B, T), rng(0), eps=1e-3)
    est = nelbo_per_token(np.full((B, T), math.log(V)), mask, t)
    assert est == pytest.approx(math.log(V), rel=0.05)


def test_nelbo_is_tight_for_exact_conditionals_and_above_for_a_worse_model():
    # Source: a row is one token c ~ U(V) repeated T times, so -log p(x) / T = log(V) / T.
    # Exact conditionals: a masked token costs 0 when any token is visible, log V when all are
    # masked, so NELBO / T = log V * E[t^(T - 1)] = log(V) / T (up to O(eps)): the bound is tight.
    V, B, T = 5, 16384, 4
    mask, t = continuous_time_mask((B, T), rng(3), eps=1e-3)
    all_masked = mask.all(axis=1, keepdims=True)
    exact = nelbo_per_token(np.where(all_masked, math.log(V), 0.0) * np.ones((B, T)), mask, t)
    assert exact == pytest.approx(math.log(V) / T, rel=0.05)
    # A model that ignores the visible tokens (uniform guess) pays log V everywhere: a looser bound.
    blind = nelbo_per_token(np.full((B, T), math.log(V)), mask, t)
    assert blind == pytest.approx(math.log(V), rel=0.05) and blind > 3 * exact


def test_continuous_time_offsets_fill_strata_across_steps():
    # With step given, the offset inside the strata follows the golden-ratio sequence: 100
    # consecutive batches leave no gap much wider than 1/100 (i.i.d. offsets leave ~5/100).
    B, eps, n = 8, 1e-3, 100
    offsets = np.sort([(continuous_time_mask((B, 1), rng(0), eps=eps, step=k)[1][0] - eps) / (1 - eps) * B
                       for k in range(n)])
    assert np.diff(np.concatenate([offsets, [offsets[0] + 1]])).max() < 3.0 / n


def test_exact_count_mask_masks_exactly_k_stratified_over_1_to_T():
    B, T = 8, 24
    mask, t = exact_count_mask((B, T), rng(4))
    k = mask.sum(axis=1)
    assert t.dtype == np.float32 and np.allclose(t, k / T)
    assert ((k >= 1) & (k <= T)).all()
    # one count per stratum of width T / B of {1..T}
    assert sorted(((k - 1) * B // T).tolist()) == list(range(B))
    again, _ = exact_count_mask((B, T), rng(4))
    assert (again == mask).all()
    m1, t1 = exact_count_mask((B, T), rng(0), step=5)
    m2, t2 = exact_count_mask((B, T), rng(9), step=5)
    assert (t1 == t2).all() and not (m1 == m2).all()  # the counts follow the step, the positions the rng


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**31))
def test_exact_count_positions_are_uniform_subsets(B, T, seed):
    mask, t = exact_count_mask((B, T), rng(seed))
    assert mask.shape == (B, T) and (mask.sum(1) == np.round(t * T)).all() and (mask.sum(1) >= 1).all()


def _estimates(maker, m, B, T, n, seed):
    """NELBO / T estimates of n batches for a model whose masked-token CE is m(#masked in the row)."""
    out = []
    for i in range(n):
        mask, t = maker((B, T), rng(seed + i))
        ce = np.where(mask, m(mask.sum(axis=1))[:, None], 0.0)
        out.append(nelbo_per_token(ce, mask, t))
    return np.array(out)


def test_exact_count_and_bernoulli_estimate_the_same_nelbo():
    # NELBO / T = E_{k ~ U{1..T}} [m(k)] for any m: checked against the closed form for both estimators
    T, B = 16, 32

    def m(k):  # CE grows as context disappears
        return 0.5 + 3.0 * (np.asarray(k) / T) ** 2

    exact = np.mean(m(np.arange(1, T + 1)))
    counts = _estimates(exact_count_mask, m, B, T, 200, 0)
    bern = _estimates(lambda shape, g: continuous_time_mask(shape, g, eps=1e-4), m, B, T, 200, 0)
    assert counts.mean() == pytest.approx(exact, rel=0.01)
    assert bern.mean() == pytest.approx(exact, rel=0.05)
    # the same quantity, far less noise: no 1/t weight on the nearly clean rows
    assert counts.std() < bern.std() / 4


def test_exact_count_nelbo_of_a_uniform_model_is_log_v_exactly():
    V, B, T = 7, 5, 33
    mask, t = exact_count_mask((B, T), rng(1))
    assert nelbo_per_token(np.full((B, T), math.log(V)), mask, t) == pytest.approx(math.log(V), rel=1e-6)


def test_exact_count_nelbo_is_tight_for_exact_conditionals():
    # the repeated-token source of the Bernoulli test: cost log V only when all T tokens are masked
    V, B, T = 5, 4, 4
    est = _estimates(exact_count_mask, lambda k: np.where(np.asarray(k) == T, math.log(V), 0.0), B, T, 400, 3)
    assert est.mean() == pytest.approx(math.log(V) / T, rel=0.02)


def test_nelbo_shape_errors():
    with pytest.raises(ValueError, match="shape"):
        nelbo_per_token(np.zeros((2, 3)), np.zeros((2, 4), bool), np.ones(2))
    with pytest.raises(ValueError, match="shape"):
        nelbo_per_token(np.zeros((2, 3)), np.zeros((2, 3), bool), np.ones(3))


def test_curriculum_resumed_makes_the_same_decisions():
    stages = [MaskingStage(type="random"), MaskingStage(type="span"), MaskingStage(type="sticky")]
    losses = [3.0, 2.9, 2.95, 2.97, 3.5, 3.4, 3.45, 3.41, 3.6, 3.2]
    whole = StageCurriculum(stages, stale_count=2)
    decisions = [whole.update(v) for v in losses]
    for k in range(len(losses)):
        first = StageCurriculum(stages, stale_count=2)
        head = [first.update(v) for v in losses[:k]]
        resumed = StageCurriculum(stages, stale_count=2)
        resumed.load_state_dict(first.state_dict())
        assert head + [resumed.update(v) for v in losses[k:]] == decisions
    assert decisions.count(True) == 2 and whole.index == 2


# ----------------------------------------------------------------------------- curriculum


def test_curriculum_advances_after_stale_evals():
    stages = [{"type": "random", "max_masked_ratio": 0.2}, {"type": "sticky", "target_masked_ratio": 0.5}]
    c = StageCurriculum(stages, stale_count=2)
    assert c.index == 0 and c.stage.type == "random"
    assert c.update(3.0) is False  # first best
    assert c.update(2.5) is False  # improved
    assert c.update(2.6) is False  # stale 1
    assert c.update(float("nan")) is True  # stale 2 -> advance
    assert c.index == 1 and c.is_last and c.best is None and c.stale == 0
    for loss in (5.0, 6.0, 6.0, 6.0):
        assert c.update(loss) is False  # never past the last stage
    assert c.index == 1


def test_curriculum_state_roundtrip_and_errors():
    stages = [MaskingStage(type="random"), MaskingStage(type="span"), MaskingStage(type="sticky")]
    c = StageCurriculum(stages, stale_count=1)
    c.update(1.0)
    c.update(1.5)
    state = c.state_dict()
    assert state == {"index": 1, "best": None, "stale": 0, "num_stages": 3}
    c.update(0.7)
    state = c.state_dict()
    d = StageCurriculum(stages, stale_count=1)
    d.load_state_dict(state)
    assert d.state_dict() == state and d.stage.type == "span"
    assert all(isinstance(v, (int, float, type(None))) for v in state.values())
    with pytest.raises(ValueError, match="3 stages but this run configures 2"):
        StageCurriculum(stages[:2], stale_count=1).load_state_dict(state)
    with pytest.raises(ValueError, match="stale_count"):
        StageCurriculum(stages, stale_count=0)
    with pytest.raises(ValueError, match="at least one"):
        StageCurriculum([], stale_count=1)


# ----------------------------------------------------------------------------- the earlier trainer's stage dicts


def test_earlier_trainer_stage_dicts_read_as_they_are():
    earlier = {"type": "sticky", "target_masked_ratio": 0.4, "p1_probability": 0.15, "p2_probability": 0.3,
               "val_loss_stale_count": 6}
    s = MaskingStage.from_dict(earlier)
    assert (s.p1, s.p2, s.val_loss_stale_count) == (0.15, 0.3, 6)
    assert MaskingStage.from_dict(s.to_dict()) == s and "p1_probability" not in s.to_dict()
    assert MaskingStage.from_dict({"type": "span", "spans_count": 3.0}).spans_count == 3  # a Python config's 3.0
    with pytest.raises(ValueError, match="both p1 and p1_probability"):
        MaskingStage.from_dict({"type": "sticky", "p1": 0.1, "p1_probability": 0.2})
    for bad in ({"type": "span", "spans_count": -1}, {"type": "span", "spans_count": 1.5},
                {"type": "random", "val_loss_stale_count": True}):
        with pytest.raises(ValueError, match="must be an integer >= 0"):
            MaskingStage.from_dict(bad)


def _boundary_spans_reference(u: np.ndarray, T: int) -> np.ndarray:
    """The earlier trainer's span stage written out: floor(u * T) boundaries, sorted, paired, inclusive."""
    B, two_s = u.shape
    mask = np.zeros((B, T), dtype=bool)
    for b in range(B):
        bounds = sorted(int(v * T) for v in u[b])
        for k in range(0, two_s, 2):
            mask[b, bounds[k]:bounds[k + 1] + 1] = True
    return mask


@settings(max_examples=40, deadline=None)
@given(B=st.integers(1, 6), T=st.integers(1, 70), spans=st.integers(1, 6), seed=st.integers(0, 2**32 - 1))
def test_span_stage_with_spans_count_is_the_earlier_trainers(B, T, spans, seed):
    stage = MaskingStage(type="span", spans_count=spans)
    mask = make_mask(stage, (B, T), rng(seed))
    want = _boundary_spans_reference(rng(seed).random((B, 2 * spans)), T)  # the same draws
    np.testing.assert_array_equal(mask, want)
    assert mask.any(axis=1).all()  # an inclusive span is never empty


def test_span_stage_with_spans_count_has_at_most_that_many_runs_and_a_varying_share():
    mask = make_mask(MaskingStage(type="span", spans_count=3), (500, 64), rng(1))
    assert max(len(runs(row)) for row in mask) <= 3
    share = mask.mean(axis=1)
    assert share.std() > 0.05  # unlike the exact-count span stage
    # S spans between 2S sorted uniform points cover S / (2S + 1) of a row on average (3/7), plus the inclusive ends
    assert 3 / 7 < share.mean() < 3 / 7 + 3 / 64 + 0.02


@pytest.mark.parametrize("B, n", [(8, 2), (7, 3), (2, 3), (1, 1), (9, 4)])
def test_mixed_batches_split_rows_evenly_remainder_first(B, n):
    counts = np.bincount(stage_of_rows(n, B, rng(B)), minlength=n)
    want = [B // n + (1 if i < B % n else 0) for i in range(n)]
    assert counts.tolist() == want


def test_mixed_mask_rows_follow_their_stage_and_the_order_is_shuffled():
    stages = [MaskingStage(type="sticky", target_masked_ratio=0.25),
              MaskingStage(type="sticky", target_masked_ratio=0.75)]
    orders = set()
    for seed in range(20):
        mask, stage = make_mixed_mask(stages, (6, 40), rng(seed))
        np.testing.assert_array_equal(mask.sum(axis=1), np.where(stage == 0, 10, 30))
        orders.add(tuple(stage))
    assert len(orders) > 5  # rows of a stage are not always the first ones


def test_curriculum_per_stage_stale_counts():
    stages = [MaskingStage(type="random", val_loss_stale_count=1), MaskingStage(type="random"),
              MaskingStage(type="random", val_loss_stale_count=3)]
    c = StageCurriculum(stages, stale_count=2)
    assert c.limits == [1, 2, 3]
    assert c.update(1.0) is False and c.update(1.0) is True  # stage 0 waits 1 evaluation
    assert c.update(1.0) is False and c.update(1.0) is False and c.update(1.0) is True  # stage 1: the run's 2
    assert c.index == 2 and c.limit == 3

"""The sampler's pieces against plain references: settings, vocabulary, schedules, token choice, remasking."""
import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmengine.config import ConfigError, UserError
from mmengine.generate import SampleConfig, SamplerVocab, remasking
from mmengine.generate.choice import (
    choose_tokens,
    filter_top_k,
    filter_top_p,
    penalize_repeats,
    recent_hits,
    repetition_hits,
)
from mmengine.generate.sampler import plan_blocks
from mmengine.generate.schedule import masked_counts, masked_fractions
from mmengine.generate.windows import spread_starts, tile_starts

# --- SampleConfig -------------------------------------------------------------------


def test_every_field_has_a_help_sentence_and_a_plain_type():
    from dataclasses import MISSING, fields

    for f in fields(SampleConfig):
        assert f.metadata["help"].strip(), f.name
        assert f.type in ("int", "float", "bool", "str", "list"), f.name
        assert f.default is not MISSING or f.default_factory is not MISSING
    pinned = ["num_samples", "length", "steps", "schedule", "custom_schedule", "start_ratio", "end_ratio",
              "temperature", "top_k", "top_p", "repetition_penalty", "repetition_window", "remasking", "randomness",
              "threshold", "min_random", "check_every", "block_length", "best_of", "inspector", "judge",
              "judge_direction", "prompt", "infill", "seed", "out", "device", "progress"]
    assert set(pinned) <= {f.name for f in fields(SampleConfig)}
    assert SampleConfig().validate() is not None


@pytest.mark.parametrize("changes, field", [
    ({"temperature": -0.5}, "temperature"),
    ({"remasking": "sideways"}, "remasking"),
    ({"remasking": "inspector"}, "inspector"),
    ({"remasking": "threshold"}, "inspector"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_k": -1}, "top_k"),
    ({"steps": 0}, "steps"),
    ({"num_samples": 0}, "num_samples"),
    ({"length": 0}, "length"),
    ({"repetition_penalty": 0.0}, "repetition_penalty"),
    ({"randomness": 1.5}, "randomness"),
    ({"threshold": 1.0}, "threshold"),
    ({"min_random": -0.1}, "min_random"),
    ({"start_ratio": 2.0}, "start_ratio"),
    ({"best_of": 3}, "judge"),
    ({"judge_direction": "up"}, "judge_direction"),
    ({"schedule": "custom"}, "custom_schedule"),
    ({"schedule": "custom", "custom_schedule": [0.5, 0.2], "steps": 2}, "custom_schedule"),
    ({"schedule": "custom", "custom_schedule": [0.5, 1.2, 0.0], "steps": 3}, "custom_schedule[1]"),
    ({"schedule": "custom", "custom_schedule": [0.5, 0.0]}, "steps"),
    ({"custom_schedule": [0.5, 0.0]}, "custom_schedule"),
    ({"steps": 2.5}, "steps"),
    ({"progress": "yes"}, "progress"),
    ({"temperature": float("nan")}, "temperature"),
    ({"device": "tpu"}, "device"),
    ({"prompt": "a", "infill": "b__c"}, "prompt"),
])
def test_validate_names_the_bad_field_in_one_sentence(changes, field):
    cfg = SampleConfig(**changes)
    with pytest.raises(ValueError) as info:
        cfg.validate()
    assert isinstance(info.value, ConfigError)
    message = str(info.value)
    assert f"sample.{field}" in message and "\n" not in message


def test_validate_accepts_what_it_should():
    SampleConfig(schedule="custom", custom_schedule=[0.8, 0.3, 0], steps=3).validate()
    SampleConfig(remasking="mixed", inspector="insp.pt", best_of=4, judge="j.pt", temperature=0, top_p=1).validate()
    cfg = SampleConfig(temperature=1, remasking="inspector").validate(check_paths=False)
    assert isinstance(cfg.temperature, float)  # a TOML integer for a float field is taken as a float


# --- SamplerVocab -----------------------------------------------------------------


def test_vocab_from_meta_and_checks():
    from mmengine.data.dataset import DataMeta

    chars = ["\n", " ", "a", "b"]
    meta = DataMeta.for_vocab(4, tokenizer="char", tokenizer_config={"type": "char", "chars": chars})
    v = SamplerVocab.from_meta(meta)
    assert (v.text_vocab_size, v.vocab_size, v.mask_id, v.cls_id, v.pad_id, v.newline_id) == (4, 8, 4, 5, 6, 0)
    assert v.is_special(4) and not v.is_special(3)
    with pytest.raises(ValueError, match="mask_id"):
        SamplerVocab(text_vocab_size=4, vocab_size=8, mask_id=2)  # a text id cannot be special
    with pytest.raises(ValueError, match="vocab_size"):
        SamplerVocab(text_vocab_size=4, vocab_size=3)
    assert SamplerVocab.from_meta(DataMeta.for_vocab(3, tokenizer="unknown")).newline_id is None
    assert SamplerVocab.from_meta(DataMeta.for_vocab(3, tokenizer="unknown", separator_ids=[1, 1])).newline_id == 1


# --- schedules ------------------------------------------------------------------------


def test_linear_schedule_is_mdlm_and_the_last_step_unmasks_everything():
    assert masked_fractions("linear", 4) == pytest.approx([0.75, 0.5, 0.25, 0.0])
    assert masked_fractions("linear", 1) == [0.0]
    assert masked_fractions("linear", 3, start_ratio=0.9, end_ratio=0.3) == pytest.approx([0.7, 0.5, 0.0])
    assert masked_counts([0.75, 0.5, 0.25, 0.0], 10) == [8, 5, 2, 0]  # round(7.5) = 8, round(2.5) = 2


@pytest.mark.parametrize("kind", ["linear", "cosine", "exponential"])
@pytest.mark.parametrize("steps", [1, 2, 7, 64])
def test_shapes_run_from_start_to_end_monotonically(kind, steps):
    r = masked_fractions(kind, steps, start_ratio=1.0, end_ratio=0.0)
    assert len(r) == steps and r[-1] == 0.0
    assert all(a >= b for a, b in itertools.pairwise(r))
    assert all(0.0 <= x <= 1.0 for x in r)


def test_shapes_differ_as_documented():
    lin, cos, exp = (masked_fractions(k, 10) for k in ("linear", "cosine", "exponential"))
    assert cos[0] == pytest.approx(math.cos(math.pi * 0.1 / 2)) and cos[0] > lin[0]  # cosine reveals few early
    assert exp[0] < lin[0]  # exponential reveals many early
    k = 4.0
    assert exp[4] == pytest.approx((math.exp(-k * 0.5) - math.exp(-k)) / (1 - math.exp(-k)))


def test_custom_schedule_is_used_from_its_first_entry():
    assert masked_fractions("custom", 3, custom=[0.6, 0.9, 0.0]) == [0.6, 0.9, 0.0]
    with pytest.raises(ValueError):
        masked_fractions("custom", 2, custom=[0.6, 0.9, 0.0])


# --- token choice -------------------------------------------------------------------------


def _top_p_reference(logits: np.ndarray, p: float) -> np.ndarray:
    """Kept tokens, one row at a time: the most probable first until their mass reaches p."""
    keep = np.zeros(logits.shape, dtype=bool)
    for r, row in enumerate(logits):
        probs = np.exp(row - row.max())
        probs /= probs.sum()
        mass = 0.0
        for v in np.argsort(-probs, kind="stable"):
            keep[r, v] = True
            mass += probs[v]
            if mass >= p:
                break
    return keep


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5), st.integers(2, 40), st.floats(0.05, 0.999), st.integers(0, 2**31 - 1))
def test_top_p_keeps_the_nucleus(rows, V, p, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, V, generator=g, dtype=torch.float64) * 3
    kept = torch.isfinite(filter_top_p(logits, p)).numpy()
    ref = _top_p_reference(logits.numpy(), p)
    # float sums may differ in the last bit exactly at the boundary; allow that one token
    diff = kept != ref
    assert diff.sum() <= 1 and kept.sum(axis=1).min() >= 1


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(2, 30), st.integers(0, 40), st.integers(0, 2**31 - 1))
def test_top_k_keeps_the_k_highest(rows, V, k, seed):
    logits = torch.randn(rows, V, generator=torch.Generator().manual_seed(seed))
    kept = torch.isfinite(filter_top_k(logits, k))
    expected = min(k, V) if k > 0 else V
    assert (kept.sum(dim=-1) == expected).all()
    if 0 < k < V:
        assert (logits[kept].min() >= logits.topk(k, dim=-1).values[:, -1].min())


def test_repetition_penalty_lowers_positive_and_negative_logits():
    logits = torch.tensor([[[2.0, -2.0, 0.5, -0.5]]])
    hits = torch.tensor([[[True, True, False, False]]])
    out = penalize_repeats(logits, hits, 2.0)
    assert out.tolist() == [[[1.0, -4.0, 0.5, -0.5]]]  # the earlier code turned -2 into -1 (a boost)
    probs = torch.softmax(out, -1)[0, 0]
    base = torch.softmax(logits, -1)[0, 0]
    assert probs[0] < base[0] and probs[1] < base[1]


def test_repetition_hits_match_a_loop():
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 9, (3, 17), generator=g)
    revealed = torch.rand(3, 17, generator=g) > 0.3
    for window in (1, 2, 5):
        hits = repetition_hits(x, revealed, window, 9, slice(4, 15))
        ref = torch.zeros(3, 11, 9, dtype=torch.bool)
        for b in range(3):
            for j in range(4, 15):
                for d in range(-window, window + 1):
                    if d and 0 <= j + d < 17 and revealed[b, j + d]:
                        ref[b, j - 4, x[b, j + d]] = True
        assert torch.equal(hits, ref)
    assert recent_hits(torch.tensor([[1, 1, 3]]), 5).tolist() == [[[False, True, False, True, False]]]


def test_choice_never_picks_special_ids_even_when_they_dominate():
    logits = torch.zeros(2, 50, 10)
    logits[..., 7:] = 100.0  # specials (ids >= 7) hold nearly all the mass
    for kw in ({}, {"top_p": 0.5}, {"top_k": 2}, {"temperature": 0.0}, {"temperature": 5.0}):
        ids, log_p = choose_tokens(logits, text_vocab_size=7, generator=torch.Generator().manual_seed(0), **kw)
        assert ids.max() < 7, kw
        assert torch.allclose(log_p, torch.tensor(math.log(1 / 7)))  # P among text ids only


def test_choice_follows_the_filtered_distribution():
    torch.manual_seed(0)
    row = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, 3.0])
    n = 40000
    logits = row.expand(1, n, -1)
    g = torch.Generator().manual_seed(1)
    ids, _ = choose_tokens(logits, text_vocab_size=5, temperature=0.7, top_k=3, generator=g)  # id 5 is special
    freq = torch.bincount(ids[0], minlength=6).double() / n
    expected = torch.zeros(6, dtype=torch.float64)
    expected[:3] = torch.softmax(row[:3].double() / 0.7, -1)
    assert (freq - expected).abs().max() < 0.01  # ~4 standard errors at n = 40000
    ids, _ = choose_tokens(logits, text_vocab_size=5, top_p=0.8, generator=g)
    freq = torch.bincount(ids[0], minlength=6).double() / n
    probs = torch.softmax(row[:5].double(), -1)  # 0.53, 0.19, 0.12, 0.07, 0.03 (+ the special id 5, cut)
    expected = torch.zeros(6, dtype=torch.float64)
    expected[:3] = probs[:3] / probs[:3].sum()  # 0.53 + 0.19 < 0.8 <= 0.53 + 0.19 + 0.12
    assert (freq - expected).abs().max() < 0.01
    greedy, _ = choose_tokens(logits[:, :3], text_vocab_size=5, temperature=0.0)
    assert (greedy == 0).all()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.0, 5.0), min_size=1, max_size=12), st.integers(0, 2**31 - 1))
def test_inverse_cdf_draws_never_pick_a_zero_probability_token(weights, seed):
    from mmengine.generate.choice import sample_from

    probs = torch.tensor(weights)
    if probs.sum() == 0:
        probs[0] = 1.0
    ids = sample_from(probs.expand(500, -1), torch.Generator().manual_seed(seed))
    assert (probs[ids] > 0).all()


@pytest.mark.parametrize("candidates", [None, 8])
def test_nucleus_draws_follow_the_nucleus_whether_or_not_it_fits_the_candidates(candidates):
    from mmengine.generate.choice import nucleus_sample

    V, n, p = 100, 30000, 0.9
    peaked = torch.full((V,), -4.0)
    peaked[[3, 50, 7]] = torch.tensor([5.0, 4.0, 3.0])  # the nucleus is 3 tokens: inside 8 candidates
    flat = torch.linspace(0.0, 1.0, V)  # the nucleus is ~85 tokens: beyond 8 candidates
    logits = torch.stack([peaked, flat])[:, None, :].expand(2, n, V)
    ids = nucleus_sample(logits, p, torch.Generator().manual_seed(0), candidates=candidates)
    for row, row_logits in enumerate((peaked, flat)):
        keep = _top_p_reference(row_logits[None].double().numpy(), p)[0]
        expected = torch.softmax(row_logits.double(), -1) * torch.from_numpy(keep)
        expected /= expected.sum()
        freq = torch.bincount(ids[row], minlength=V).double() / n
        assert (freq[~torch.from_numpy(keep)] == 0).all()  # nothing outside the nucleus
        assert (freq - expected).abs().max() < 0.012


def test_choice_is_reproducible_with_a_seeded_generator():
    logits = torch.randn(4, 9, 11, generator=torch.Generator().manual_seed(0))
    a, _ = choose_tokens(logits, text_vocab_size=11, top_p=0.9, generator=torch.Generator().manual_seed(5))
    b, _ = choose_tokens(logits, text_vocab_size=11, top_p=0.9, generator=torch.Generator().manual_seed(5))
    c, _ = choose_tokens(logits, text_vocab_size=11, top_p=0.9, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


# --- remasking ------------------------------------------------------------------------


def test_top_m_never_picks_a_given_position():
    score = torch.tensor([[9.0, 0.1, 0.5, 0.3], [9.0, 0.7, 0.2, 0.9]])
    free = torch.tensor([[False, True, True, True]] * 2)
    assert remasking.top_m(score, free, 2).tolist() == [[False, False, True, True], [False, True, False, True]]
    assert not remasking.top_m(score, free, 0).any()


def test_fresh_first_ranks_this_steps_tokens_above_older_ones():
    score = torch.tensor([[0.9, 0.1, 0.2, 0.95]])
    new = torch.tensor([[False, True, True, False]])
    chosen = remasking.top_m(remasking.fresh_first(score, new), torch.ones(1, 4, dtype=torch.bool), 2)
    assert chosen.tolist() == [[False, True, True, False]]
    chosen = remasking.top_m(remasking.fresh_first(score, new), torch.ones(1, 4, dtype=torch.bool), 3)
    assert chosen.tolist() == [[False, True, True, True]]  # more than were new: the highest older one next


def test_mixed_takes_inspector_candidates_up_to_its_share_and_the_rest_at_random():
    L = 12
    p_wrong = torch.zeros(3, L)
    p_wrong[:, [1, 4, 7]] = torch.tensor([0.9, 0.8, 0.7])  # three candidates above tau = 0.5
    p_wrong[:, 9] = 0.4  # below tau: not a candidate
    free = torch.ones(3, L, dtype=torch.bool)
    uniform = torch.rand(3, L, generator=torch.Generator().manual_seed(0))
    # m = 5, min_random = 0.2: q = 4 >= 3 candidates, so all three + 2 random
    chosen = remasking.top_m(remasking.mixed_scores(p_wrong, uniform, free, 5, 0.5, 0.2), free, 5)
    assert chosen.sum(-1).tolist() == [5, 5, 5] and chosen[:, [1, 4, 7]].all()
    # m = 5, min_random = 0.6: q = 2, so the two most wrong + 3 random
    chosen = remasking.top_m(remasking.mixed_scores(p_wrong, uniform, free, 5, 0.5, 0.6), free, 5)
    assert chosen[:, [1, 4]].all()
    rest = uniform.clone()
    rest[:, [1, 4]] = -1
    assert torch.equal(chosen & ~torch.isin(torch.arange(L), torch.tensor([1, 4])),
                       remasking.top_m(rest, free, 3))
    # min_random = 1: purely random
    assert torch.equal(remasking.mixed_scores(p_wrong, uniform, free, 5, 0.5, 1.0), uniform)


def test_threshold_and_inspector_scores():
    p = torch.tensor([[0.2, 0.6, 0.9]])
    free = torch.tensor([[True, True, False]])
    assert remasking.threshold_mask(p, free, 0.5).tolist() == [[False, True, False]]
    u = torch.tensor([[1.0, 0.0, 0.5]])
    assert torch.allclose(remasking.mix_inspector(p, u, 0.25), 0.25 * u + 0.75 * p)


# --- windows and blocks -------------------------------------------------------------------


@pytest.mark.parametrize("n, w", [(5, 8), (8, 8), (9, 8), (33, 8), (100, 7)])
def test_windows_cover_with_full_length(n, w):
    for starts in (tile_starts(n, w), spread_starts(n, w)):
        covered = np.zeros(n, dtype=bool)
        for s in starts:
            assert 0 <= s and (s + w <= n or (s == 0 and n <= w))
            covered[s:s + w] = True
        assert covered.all()
    assert len(spread_starts(n, w)) == max(1, math.ceil(n / w))


def test_plan_blocks():
    free = np.array([False] * 3 + [True] * 10)
    assert plan_blocks(free, 13, 4) == [(3, 7), (7, 11), (11, 13)]
    assert plan_blocks(free, 13, 0) == [(3, 13)]
    long = np.array([False] * 5 + [True] * 40)
    assert plan_blocks(long, 16, 0) == [(5, 16), (16, 24), (24, 32), (32, 40), (40, 45)]  # then 8 = 16 - 16 // 2 each
    holes = np.array([True, False, False, False, True, True, False, False, False, False])
    assert plan_blocks(holes, 10, 2) == [(0, 2), (4, 6)]  # blocks without free positions are skipped
    assert plan_blocks(np.zeros(4, dtype=bool), 4, 0) == []


def test_errors_are_user_errors():
    assert issubclass(UserError, ValueError) and issubclass(ConfigError, ValueError)

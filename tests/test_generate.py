"""The batched sampler end to end: starts, schedules, blocks, strategies, inspector, judge, causal models."""
import itertools

import numpy as np
import pytest
import torch

from mmengine.config import UserError
from mmengine.generate import Inspector, Judge, SampleConfig, SamplerVocab, generate, self_confidence
from mmengine.model import GPT, GPTConfig

TEXT, ROWS = 16, 20  # 16 text ids; [MASK] 16, [CLS] 17, [PAD] 18, [SEP] 19
VOCAB = SamplerVocab(text_vocab_size=TEXT, vocab_size=ROWS, mask_id=16, cls_id=17, pad_id=18, newline_id=0)


def gpt(mode="language_model", seed=0, **kw):
    base = {"block_size": 32, "vocab_size": ROWS, "n_layer": 1, "n_head": 2, "n_embd": 16, "dropout": 0.0, "mode": mode,
            "attention_backend": "torch", "loss_backend": "torch"}
    base.update(kw)
    torch.manual_seed(seed)
    return GPT(GPTConfig(**base)).eval()


def peaky(model, scale=30.0):
    """The same model with sharp (low-entropy) predictions: repeats become likely."""
    with torch.no_grad():
        model.transformer.ln_f.weight.mul_(scale)
    return model


def cfg(**kw):
    kw.setdefault("progress", False)
    kw.setdefault("length", 24)
    kw.setdefault("steps", 8)
    return SampleConfig(**kw)


class Recorder(torch.nn.Module):
    """Wraps an LM and keeps every input it is given."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.config = inner.config
        self.inputs = []

    def forward(self, idx, targets=None, *, lengths=None):
        self.inputs.append(idx.clone())
        return self.inner(idx, targets, lengths=lengths)

    def encode(self, idx, lengths=None):
        return self.inner.encode(idx, lengths)

    @property
    def lm_head(self):
        return self.inner.lm_head


class StubInspector:
    """P(wrong) from a rule on the ids (and a record of what it was shown)."""

    def __init__(self, rule):
        self.rule = rule
        self.seen = []

    def p_wrong(self, x):
        self.seen.append(x.clone())
        return self.rule(x).float()


def masks_per_input(rec, n=None):
    return [int((x == VOCAB.mask_id).sum(-1).max()) for x in rec.inputs[:n]]


# --- counts, starts, reproducibility ---------------------------------------------------


def test_eight_requested_samples_give_eight_text_only_outputs():
    out = generate(gpt(), cfg(num_samples=8), VOCAB)
    assert len(out) == 8
    for s in out:
        assert len(s.ids) == 24 and max(s.ids) < TEXT and min(s.ids) >= 0
        assert s.judge_score is None and s.steps == 8 and s.seconds > 0 and np.isfinite(s.self_confidence)


def test_seeded_and_reproducible():
    lm = gpt()
    a = [s.ids for s in generate(lm, cfg(num_samples=3, seed=4), VOCAB)]
    assert a == [s.ids for s in generate(lm, cfg(num_samples=3, seed=4), VOCAB)]
    assert a != [s.ids for s in generate(lm, cfg(num_samples=3, seed=5), VOCAB)]
    assert len({tuple(x) for x in a}) == 3  # the rows of one call differ


@pytest.mark.parametrize("remasking", ["random", "low_confidence", "self_surprise", "inspector", "threshold", "mixed"])
def test_prompt_and_infilled_ids_never_change(remasking):
    lm = gpt()
    inspector = StubInspector(lambda x: x % 3 == 0) if remasking in ("inspector", "threshold", "mixed") else None
    prompt = [3, 1, 4, 1, 5, 9, 2, 6]
    out = generate(lm, cfg(num_samples=4, remasking=remasking, check_every=1), VOCAB, inspector=inspector,
                   prompt_ids=prompt)
    assert all(s.ids[:8] == prompt and len(s.ids) == 8 + 24 and max(s.ids) < TEXT for s in out)
    rng = np.random.default_rng(0)
    template = [int(i) if rng.random() < 0.5 else None for i in rng.integers(0, TEXT, 40)]  # longer than the context
    for block_length in (0, 8):
        out = generate(lm, cfg(num_samples=3, remasking=remasking, block_length=block_length), VOCAB,
                       inspector=inspector, template=template)
        for s in out:
            assert len(s.ids) == 40 and max(s.ids) < TEXT
            assert all(t is None or t == i for t, i in zip(template, s.ids))


def test_the_schedule_sets_how_many_stay_masked_and_a_custom_list_starts_at_its_first_entry():
    rec = Recorder(gpt())
    generate(rec, cfg(length=8, steps=4), VOCAB)
    assert masks_per_input(rec, 4) == [8, 6, 4, 2]  # linear: 8 * (1, 3/4, 1/2, 1/4)
    rec = Recorder(gpt())
    generate(rec, cfg(length=10, steps=3, schedule="custom", custom_schedule=[0.5, 0.8, 0.0]), VOCAB)
    assert masks_per_input(rec, 3) == [10, 5, 8]
    # a rising schedule masks revealed tokens again: 3 of the 8 masked before step 2 were kept after step 1
    before, after = rec.inputs[1], rec.inputs[2]
    again = (before != VOCAB.mask_id) & (after == VOCAB.mask_id)
    assert (again.sum(-1) == 3).all()


def test_random_and_low_confidence_keep_older_tokens_while_the_schedule_falls():
    for remasking in ("random", "low_confidence"):
        rec = Recorder(gpt())
        generate(rec, cfg(length=16, steps=8, remasking=remasking, num_samples=3), VOCAB)
        steps = rec.inputs[:8]
        for before, after in itertools.pairwise(steps):
            revealed = before != VOCAB.mask_id
            assert torch.equal(after[revealed], before[revealed])  # MDLM / LLaDA: revealed tokens stay


def test_low_confidence_remasks_the_least_probable_new_tokens():
    rec = Recorder(peaky(gpt(seed=3), 5.0))
    template = [None, None, 3, None, None, 7, 1, None] * 4  # 20 free positions; given ids make positions differ
    free = torch.tensor([t is None for t in template])
    generate(rec, cfg(steps=4, remasking="low_confidence", temperature=0.0, num_samples=2), VOCAB, template=template)
    first, second = rec.inputs[0], rec.inputs[1]
    with torch.no_grad():
        probs = torch.softmax(rec.inner(first.clone())[0].float()[..., :TEXT], -1)  # step 0's own forward
    best_p, best_id = probs.max(-1)  # greedy: the chosen token is the most probable one
    kept = (second != VOCAB.mask_id) & free  # 20 - round(0.75 * 20) = 5 kept per row
    expected = torch.zeros_like(kept).scatter_(1, best_p.masked_fill(~free, -1).topk(5, dim=-1).indices, True)
    assert torch.equal(kept, expected) and torch.equal(second[kept], best_id[kept])


def test_blocks_go_left_to_right_and_see_later_positions_as_masks():
    rec = Recorder(gpt())
    out = generate(rec, cfg(length=12, steps=2, block_length=4), VOCAB, prompt_ids=[1, 2])
    # two steps per block; the first forward of block k sees its 4 + the later 8 - 4k positions masked
    assert masks_per_input(rec, 6) == [12, 10, 8, 6, 4, 2]
    for k in range(3):
        first = rec.inputs[2 * k][0]
        assert (first[2 + 4 * k:] == VOCAB.mask_id).all() and (first[:2 + 4 * k] != VOCAB.mask_id).all()
    assert out[0].steps == 6


def test_texts_longer_than_the_context_continue_on_the_last_part_of_the_window():
    rec = Recorder(gpt())
    out = generate(rec, cfg(length=80, steps=2, num_samples=2), VOCAB, prompt_ids=[5])
    assert all(len(s.ids) == 81 and s.ids[0] == 5 for s in out)
    assert max(x.shape[1] for x in rec.inputs) == 32
    # after the first window, each block keeps the last half window (16 ids) as context: 16 known, 16 masked
    assert masks_per_input(rec)[2] == 16 and (rec.inputs[2][:, :16] != VOCAB.mask_id).all()


# --- remasking strategies with an inspector -------------------------------------------------


def test_inspector_remasks_what_it_points_at_and_revealed_tokens_are_rewritten():
    even = StubInspector(lambda x: (torch.arange(x.shape[1]) % 2 == 0).expand_as(x))
    rec = Recorder(gpt())
    # randomness 0.5: an even position (P(wrong) = 1) always outranks an odd one (P(wrong) = 0)
    generate(rec, cfg(length=16, steps=6, remasking="inspector", randomness=0.5, start_ratio=0.5, num_samples=2),
             VOCAB, inspector=even)
    for after in rec.inputs[1:6]:
        assert not (after == VOCAB.mask_id)[:, 1::2].any()  # odd positions are never pointed at
    remasked_later = [((b != VOCAB.mask_id) & (a == VOCAB.mask_id)).any()
                      for b, a in zip(rec.inputs[1:5], rec.inputs[2:6])]
    assert any(remasked_later)  # tokens revealed in an earlier step were masked again
    assert all(x.shape[1] == 16 and (x != VOCAB.mask_id).all() for x in even.seen)  # the inspector never sees [MASK]


def test_threshold_stops_early_when_nothing_looks_wrong_and_runs_on_while_everything_does():
    lm = gpt()
    calm = generate(lm, cfg(remasking="threshold", check_every=1, num_samples=2), VOCAB,
                    inspector=StubInspector(lambda x: torch.zeros_like(x)))
    assert [s.steps for s in calm] == [1, 1]
    busy = generate(lm, cfg(remasking="threshold", check_every=3, num_samples=2), VOCAB,
                    inspector=StubInspector(lambda x: torch.ones_like(x)))
    assert [s.steps for s in busy] == [8, 8] and all(max(s.ids) < TEXT for s in busy)


def test_threshold_rewrites_the_tokens_the_inspector_rejects():
    lm = gpt()
    low = StubInspector(lambda x: x < 8)  # ids 0..7 "look wrong"
    plain = generate(lm, cfg(num_samples=8, length=32, steps=8), VOCAB)
    guided = generate(lm, cfg(num_samples=8, length=32, steps=8, remasking="threshold", check_every=2), VOCAB,
                      inspector=low)
    def share(samples):
        return np.mean([np.mean(np.array(s.ids) < 8) for s in samples])

    assert share(plain) > 0.3 and share(guided) < share(plain) / 3


def test_mixed_runs_and_min_random_one_ignores_the_inspector():
    lm = gpt()
    never = StubInspector(lambda x: torch.ones_like(x))
    a = generate(lm, cfg(remasking="mixed", min_random=1.0, num_samples=2), VOCAB, inspector=never)
    b = generate(lm, cfg(remasking="mixed", min_random=1.0, num_samples=2), VOCAB,
                 inspector=StubInspector(lambda x: torch.zeros_like(x)))
    assert [s.ids for s in a] == [s.ids for s in b]
    c = generate(lm, cfg(remasking="mixed", min_random=0.0, num_samples=2), VOCAB,
                 inspector=StubInspector(lambda x: x < 8))
    assert [s.ids for s in c] != [s.ids for s in b]


# --- token choice end to end ------------------------------------------------------------------


def _repeats(ids, window=3):
    ids = np.array(ids)
    return sum(int((ids[max(0, j - window):j] == ids[j]).any()) for j in range(len(ids)))


def test_repetition_penalty_lowers_repeats():
    lm = peaky(gpt(seed=1))
    base = {"num_samples": 8, "length": 32, "steps": 8, "repetition_window": 3}
    plain = sum(_repeats(s.ids) for s in generate(lm, cfg(**base), VOCAB))
    penalised = sum(_repeats(s.ids) for s in generate(lm, cfg(repetition_penalty=4.0, **base), VOCAB))
    assert plain > 40 and penalised < plain * 0.7
    causal = peaky(gpt(seed=1, attention_type="causal"))
    plain = sum(_repeats(s.ids) for s in generate(causal, cfg(**base), VOCAB))
    penalised = sum(_repeats(s.ids) for s in generate(causal, cfg(repetition_penalty=4.0, **base), VOCAB))
    assert plain > 40 and penalised < plain * 0.7


def test_greedy_ignores_the_seed_and_top_k_one_is_greedy():
    lm = peaky(gpt(seed=2))
    greedy = [s.ids for s in generate(lm, cfg(temperature=0.0, remasking="low_confidence", seed=1), VOCAB)]
    assert greedy == [s.ids for s in generate(lm, cfg(temperature=0.0, remasking="low_confidence", seed=9), VOCAB)]
    top1 = [s.ids for s in generate(lm, cfg(top_k=1, remasking="low_confidence", seed=3), VOCAB)]
    assert top1 == greedy


# --- causal models ---------------------------------------------------------------------------


def test_a_causal_model_samples_without_a_prompt_from_the_newline():
    nanogpt = SamplerVocab(text_vocab_size=TEXT, vocab_size=TEXT, newline_id=0)  # no [MASK] at all
    rec = Recorder(gpt(attention_type="causal", vocab_size=TEXT))
    out = generate(rec, cfg(num_samples=3, length=40), nanogpt)
    assert len(out) == 3 and all(len(s.ids) == 40 and max(s.ids) < TEXT and s.steps == 40 for s in out)
    assert (rec.inputs[0] == 0).all() and rec.inputs[0].shape == (3, 1)  # started from "\n"
    assert max(x.shape[1] for x in rec.inputs) == 32  # the last block_size ids once the text is longer
    with pytest.raises(UserError, match="prompt"):
        generate(rec, cfg(), SamplerVocab(text_vocab_size=TEXT, vocab_size=TEXT))
    kept = generate(rec, cfg(num_samples=2), nanogpt, prompt_ids=[7, 8, 9])
    assert all(s.ids[:3] == [7, 8, 9] and len(s.ids) == 27 for s in kept)


def test_what_a_causal_model_cannot_do_is_refused():
    lm = gpt(attention_type="causal")
    with pytest.raises(UserError, match="causal"):
        generate(lm, cfg(), VOCAB, template=[1, None, 2])
    with pytest.raises(UserError, match="causal"):
        generate(lm, cfg(remasking="inspector"), VOCAB, inspector=StubInspector(lambda x: x > 0))


# --- judge and best_of -------------------------------------------------------------------------


def scorer(seed=0):
    model = gpt("sequence_scorer", seed=seed, cls_token_id=17)
    with torch.no_grad():
        model.sequence_head[0].weight.mul_(300)  # spread the untrained scores out of sigmoid's flat middle
    return model


@pytest.mark.parametrize("higher", [True, False])
def test_best_of_keeps_the_judges_best(higher):
    lm, judge = gpt(), Judge(scorer(), VOCAB, higher_is_better=higher)
    every = generate(lm, cfg(num_samples=8, seed=2), VOCAB, judge=judge)  # the same 8 rows best_of=4 makes
    scores = np.array([s.judge_score for s in every])
    assert np.ptp(scores) > 1e-3
    best = generate(lm, cfg(num_samples=2, best_of=4, seed=2), VOCAB, judge=judge)
    assert len(best) == 2
    for j, s in enumerate(best):
        group = scores[4 * j:4 * j + 4]
        pick = 4 * j + int(np.argmax(group) if higher else np.argmin(group))
        assert s.ids == every[pick].ids and s.judge_score == pytest.approx(every[pick].judge_score)


def test_best_of_needs_a_judge():
    with pytest.raises(UserError, match="judge"):
        generate(gpt(), cfg(best_of=2), VOCAB)


def test_judge_scores_long_texts_in_windows_and_ignores_padding():
    model = scorer()
    doc_long = list(np.random.default_rng(0).integers(0, TEXT, 70))  # 31 tokens per window: 3 windows
    doc_short = [3, 4, 5]
    judge = Judge(model, VOCAB, higher_is_better=True)

    def alone(tokens):
        with torch.no_grad():
            return float(model(torch.tensor([[17] + [int(t) for t in tokens]]))[0])

    starts = [0, 20, 39]  # evenly spread full windows over 70 tokens
    windows = [alone(doc_long[s:s + 31]) for s in starts]
    for aggregate, reduce in (("mean", np.mean), ("min", np.min), ("max", np.max)):
        got = Judge(model, VOCAB, True, aggregate=aggregate).score([doc_short, doc_long])
        assert got[1] == pytest.approx(reduce(windows), abs=1e-5)
        assert got[0] == pytest.approx(alone(doc_short), abs=1e-5)  # padded next to longer rows, same score
    with pytest.raises(UserError, match="empty"):
        judge.score([[]])


def test_judge_direction_comes_from_the_checkpoint(tmp_path):
    from mmengine.checkpoint import save_checkpoint
    from mmengine.generate.judge import direction_from_checkpoint

    model = scorer()
    for source, higher in (("synthetic", False), ("documents", True)):
        path = save_checkpoint(tmp_path / f"{source}.pt", model, config={"sequence_scoring": {"score_source": source}})
        assert Judge.from_checkpoint(path, VOCAB).higher_is_better is higher
        assert Judge.from_checkpoint(path, VOCAB, direction="higher").higher_is_better is True
    bare = save_checkpoint(tmp_path / "bare.pt", model)
    with pytest.raises(UserError, match="'higher' or 'lower'"):
        Judge.from_checkpoint(bare, VOCAB)
    assert direction_from_checkpoint({"config": {"sequence_scoring": {"score_source": "documents"}}}) is True
    with pytest.raises(UserError, match="not a sequence_scorer"):
        Judge.from_checkpoint(save_checkpoint(tmp_path / "lm.pt", gpt()), VOCAB)


# --- the inspector's vocabulary ---------------------------------------------------------------------


def test_a_mismatched_inspector_is_refused_in_one_sentence(tmp_path):
    from mmengine.checkpoint import save_checkpoint

    with pytest.raises(UserError, match="rows") as info:
        Inspector(gpt("token_classifier", vocab_size=30), VOCAB)
    assert "\n" not in str(info.value)
    other = save_checkpoint(tmp_path / "other.pt", gpt("token_classifier"),
                            trainer={"data_meta": {"text_vocab_size": 12}})
    with pytest.raises(UserError, match="text vocabulary of 12 tokens"):
        Inspector.from_checkpoint(other, VOCAB)
    with pytest.raises(UserError, match="not a token_classifier"):
        Inspector.from_checkpoint(save_checkpoint(tmp_path / "lm.pt", gpt()), VOCAB)
    same = save_checkpoint(tmp_path / "same.pt", gpt("token_classifier"),
                           trainer={"data_meta": {"text_vocab_size": 16}})
    assert Inspector.from_checkpoint(same, VOCAB).p_wrong(torch.zeros(2, 5, dtype=torch.long)).shape == (2, 5)


def test_the_earlier_trainers_remasking_binary_file_is_an_inspector():
    from pathlib import Path

    path = Path(__file__).resolve().parent / "fixtures/upstream/e0abd98/ckpt_remasking_binary_20.pt"
    chars65 = SamplerVocab(text_vocab_size=65, vocab_size=69, mask_id=65, cls_id=66, pad_id=67)
    inspector = Inspector.from_checkpoint(path, chars65)  # 80 rows = 65 characters + 15 reserved ids
    p = inspector.p_wrong(torch.randint(0, 65, (2, 60), generator=torch.Generator().manual_seed(0)))  # > its 48 context
    assert p.shape == (2, 60) and ((p >= 0) & (p <= 1)).all()
    lm = gpt(vocab_size=69, block_size=24)
    out = generate(lm, cfg(remasking="inspector", length=30, num_samples=2), chars65, inspector=inspector)
    assert all(len(s.ids) == 30 and max(s.ids) < 65 for s in out)
    with pytest.raises(UserError):
        Inspector.from_checkpoint(path, VOCAB)  # 80 rows do not fit a 16-token vocabulary


# --- mistakes -------------------------------------------------------------------------------------


def test_mistakes_are_one_sentence_user_errors():
    lm = gpt()
    cases = [
        (lambda: generate(lm, cfg(), SamplerVocab(text_vocab_size=TEXT, vocab_size=ROWS)), "[MASK]"),
        (lambda: generate(lm, cfg(block_length=64), VOCAB), "block_length"),
        (lambda: generate(lm, cfg(), VOCAB, prompt_ids=[3, 17]), "prompt_ids[1]"),
        (lambda: generate(lm, cfg(), VOCAB, template=[1, 2]), "no position"),
        (lambda: generate(lm, cfg(remasking="threshold"), VOCAB), "inspector"),
        (lambda: generate(gpt("token_classifier"), cfg(), VOCAB), "language model"),
        (lambda: generate(lm, cfg(prompt="hi"), VOCAB), "encode"),
        (lambda: generate(lm, cfg(), VOCAB, prompt_ids=[1], template=[None]), "either"),
        (lambda: generate(gpt(vocab_size=12), cfg(), SamplerVocab(text_vocab_size=TEXT, vocab_size=ROWS, mask_id=16)),
         "fewer"),
    ]
    for call, words in cases:
        with pytest.raises(UserError) as info:
            call()
        assert words in str(info.value) and "\n" not in str(info.value)


# --- the step loop stays on the device --------------------------------------------------------------


@pytest.mark.parametrize("remasking", ["random", "low_confidence", "self_surprise", "inspector", "mixed"])
def test_host_reads_do_not_grow_with_the_number_of_steps(monkeypatch, remasking):
    """Every way a tensor's value reaches Python is counted: the count must not depend on steps."""
    counter = {"n": 0}
    for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, **k):
            counter["n"] += 1
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    lm = gpt()
    inspector = StubInspector(lambda x: x % 2 == 0) if remasking in ("inspector", "mixed") else None
    counts = []
    for steps in (4, 16):
        counter["n"] = 0
        generate(lm, cfg(steps=steps, remasking=remasking, length=30), VOCAB, inspector=inspector)
        counts.append(counter["n"])
    assert counts[0] == counts[1]


def test_progress_bar_on_request(capsys):
    generate(gpt(), cfg(progress=True), VOCAB, progress=True)
    assert "sampling" in capsys.readouterr().err
    generate(gpt(), cfg(progress=True), VOCAB, progress=False)
    assert "sampling" not in capsys.readouterr().err


def test_models_keep_their_train_mode_and_stay_trainable():
    lm = gpt().train()
    generate(lm, cfg(), VOCAB, device="cpu")
    assert lm.training
    _, loss = lm(torch.zeros(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long))
    loss.backward()  # no inference tensors left in the model


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_reproducible_and_without_syncs_per_step():
    lm = gpt()
    a = generate(lm, cfg(num_samples=4, device="cuda"), VOCAB)
    assert [s.ids for s in a] == [s.ids for s in generate(lm, cfg(num_samples=4, device="cuda"), VOCAB)]
    import warnings

    counts = []
    for steps in (4, 16):
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                generate(lm, cfg(steps=steps, device="cuda", remasking="self_surprise"), VOCAB)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        counts.append(sum("synchroniz" in str(w.message) for w in caught))
    assert counts[0] == counts[1]


# --- self-confidence ---------------------------------------------------------------------------


def test_self_confidence_matches_a_loop_over_interleaved_masks():
    from mmengine.generate.sampler import CONFIDENCE_PASSES

    lm = gpt(seed=5)
    x = torch.randint(0, TEXT, (3, 20), generator=torch.Generator().manual_seed(1))
    generated = np.arange(20) >= 6  # a 6-id prompt is context, not scored
    expected = torch.zeros(3)
    for j in range(6, 20):
        hide = [i for i in range(6, 20) if i % CONFIDENCE_PASSES == j % CONFIDENCE_PASSES]
        inp = x.clone()
        inp[:, hide] = VOCAB.mask_id
        expected += torch.log_softmax(lm(inp)[0][:, j, :TEXT], -1).gather(-1, x[:, j:j + 1]).squeeze(-1)
    got = self_confidence(lm, x, generated, VOCAB.mask_id, TEXT)
    assert torch.allclose(got, expected / 14, atol=1e-5)
    causal = gpt(seed=5, attention_type="causal")
    logits = causal.lm_head(causal.encode(x))
    ref = torch.log_softmax(logits[:, 5:19, :TEXT], -1).gather(-1, x[:, 6:20].unsqueeze(-1)).squeeze(-1).mean(-1)
    assert torch.allclose(self_confidence(causal, x, generated, None, TEXT), ref, atol=1e-5)
    long = torch.randint(0, TEXT, (2, 70), generator=torch.Generator().manual_seed(2))  # windows of 32
    assert torch.isfinite(self_confidence(lm, long, np.ones(70, dtype=bool), VOCAB.mask_id, TEXT)).all()
    # a causal text longer than the context: each token is read after as much context as a window gives it
    ref = torch.zeros(2)
    for j in range(1, 70):
        s = 32 * ((j - 1) // 32)
        s = 69 - 32 if s + 32 > 69 else s
        logits = causal.lm_head(causal.encode(long[:, s:j]))[:, -1, :TEXT]
        ref += torch.log_softmax(logits, -1).gather(-1, long[:, j:j + 1]).squeeze(-1)
    assert torch.allclose(self_confidence(causal, long, np.ones(70, dtype=bool), None, TEXT), ref / 69, atol=1e-5)

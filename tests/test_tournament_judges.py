"""mmengine.judges: the self-confidence judge against an eager reference, the scorer judge, judges from checkpoints."""
import numpy as np
import pytest
import torch

from mmengine.checkpoint import save_checkpoint
from mmengine.config import UserError
from mmengine.data.dataset import DataMeta
from mmengine.judges import (
    Judge,
    PerplexityJudge,
    ScorerJudge,
    SelfConfidenceJudge,
    load_judge,
)
from mmengine.model import GPT, GPTConfig

TEXT = 13  # text ids 0..12; [MASK] 13, [CLS] 14, [PAD] 15, [SEP] 16
META = DataMeta.for_vocab(TEXT, tokenizer="char", tokenizer_config={"type": "char", "chars": list("abcdefghijklm")})


def tiny(mode="language_model", attention_type="bidirectional", vocab_size=META.vocab_size, block_size=8, seed=0,
         **kw):
    torch.manual_seed(seed)
    model = GPT(GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=1, n_head=2, n_embd=16, mode=mode,
                          attention_type=attention_type, attention_backend="torch", loss_backend="torch", **kw))
    with torch.no_grad():
        model.transformer.wte.weight.mul_(20.0)  # spread the predictions so that scores differ
    return model.eval()


def samples_of(lengths, seed=0, vocab=TEXT):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, size=n).tolist() for n in lengths]


# ----------------------------------------------------------------------------- self-confidence


def reference_bidirectional(model, ids, passes=2):
    """Mean log P(x_j | x with every position of j's parity class hidden), one sample, one window (len <= context)."""
    x = torch.tensor([ids])
    total = 0.0
    for k in range(passes):
        hide = torch.tensor([j % passes == k for j in range(len(ids))])
        inp = torch.where(hide, torch.full_like(x, META.mask_id), x)
        with torch.no_grad():
            logits, _ = model(inp)
        lp = torch.log_softmax(logits[0, :, :TEXT].double(), dim=-1)
        total += sum(lp[j, ids[j]].item() for j in range(len(ids)) if hide[j])
    return total / len(ids)


def reference_causal(model, ids):
    """Mean next-token log P over the text ids of tokens 1..L-1 (len <= context)."""
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids]), all_positions=True)
    lp = torch.log_softmax(logits[0, :, :TEXT].double(), dim=-1)
    return sum(lp[t - 1, ids[t]].item() for t in range(1, len(ids))) / (len(ids) - 1)


def test_self_confidence_judge_matches_an_eager_reference_bidirectional():
    model = tiny()
    samples = samples_of([1, 2, 5, 7, 8, 3, 5])  # odd lengths up to the context of 8, two of length 5
    judge = SelfConfidenceJudge(model, text_vocab_size=TEXT, mask_id=META.mask_id, batch_size=2)
    got = judge.score(samples)
    assert got.dtype == np.float64 and got.shape == (7,)
    assert got == pytest.approx([reference_bidirectional(model, s) for s in samples], abs=1e-5)
    assert np.ptp(got) > 0.5 and judge.higher_is_better and isinstance(judge, Judge)


def test_self_confidence_judge_matches_an_eager_reference_causal_and_the_perplexity_judge():
    model = tiny(attention_type="causal", vocab_size=TEXT)  # no special ids: both judges use the same softmax
    samples = samples_of([2, 3, 8, 6, 2])
    got = SelfConfidenceJudge(model, text_vocab_size=TEXT, mask_id=None, batch_size=3).score(samples)
    assert got == pytest.approx([reference_causal(model, s) for s in samples], abs=1e-5)
    # within one context, mean next-token log P is -log(perplexity)
    assert np.exp(-got) == pytest.approx(PerplexityJudge(model).score(samples), rel=1e-5)


@pytest.mark.parametrize("attention_type", ["bidirectional", "causal"])
def test_self_confidence_judge_scores_do_not_depend_on_grouping_batching_or_order(attention_type):
    from mmengine.generate import self_confidence

    model = tiny(attention_type=attention_type)
    samples = samples_of([3, 17, 9, 17, 4, 9, 30, 3, 17])  # longer than the context of 8: several windows
    alone = [self_confidence(model, torch.tensor([s]), np.ones(len(s), bool), META.mask_id, TEXT).item()
             for s in samples]
    for batch_size in (1, 2, 16):
        judge = SelfConfidenceJudge(model, text_vocab_size=TEXT, mask_id=META.mask_id, batch_size=batch_size)
        assert judge.score(samples) == pytest.approx(alone, abs=1e-5)
        order = np.random.default_rng(batch_size).permutation(len(samples))
        assert judge.score([samples[i] for i in order]) == pytest.approx(np.asarray(alone)[order], abs=1e-5)
    assert not model.training


def test_a_model_scores_its_own_greedy_text_above_random_text():
    model = tiny(attention_type="causal")
    text = [3]
    with torch.no_grad():
        for _ in range(7):
            logits, _ = model(torch.tensor([text]))
            text.append(int(logits[0, -1, :TEXT].argmax()))
    judge = SelfConfidenceJudge(model, text_vocab_size=TEXT, mask_id=None)
    own, random_text = judge.score([text, samples_of([8], seed=5)[0]])
    assert own > random_text


def test_self_confidence_judge_refusals():
    with pytest.raises(UserError, match="needs a language model; this one is a sequence_scorer"):
        SelfConfidenceJudge(tiny("sequence_scorer", cls_token_id=14), text_vocab_size=TEXT, mask_id=13)
    with pytest.raises(UserError, match=r"without a \[MASK\] embedding"):
        SelfConfidenceJudge(tiny(vocab_size=TEXT), text_vocab_size=TEXT, mask_id=None)
    with pytest.raises(UserError, match="fewer than the 13 text tokens"):
        SelfConfidenceJudge(tiny(vocab_size=10, attention_type="causal"), text_vocab_size=TEXT, mask_id=None)
    judge = SelfConfidenceJudge(tiny(attention_type="causal"), text_vocab_size=TEXT, mask_id=None)
    with pytest.raises(UserError, match="at least 2 tokens; sample 1 has 1"):
        judge.score([[1, 2], [3]])
    with pytest.raises(UserError, match="sample 0 holds token id 13, outside the judge's vocabulary of 13 ids"):
        judge.score([[1, 13]])  # [MASK] is not text
    bidirectional = SelfConfidenceJudge(tiny(), text_vocab_size=TEXT, mask_id=META.mask_id)
    assert bidirectional.score([[4]]).shape == (1,)  # one token is enough when the rest can be hidden
    with pytest.raises(UserError, match="at least 1 token; sample 0 has 0"):
        bidirectional.score([[]])


# ----------------------------------------------------------------------------- scorer


def test_scorer_judge_is_the_sequence_scorer_under_a_name():
    from mmengine.generate import Judge as SequenceScorer
    from mmengine.generate import SamplerVocab

    scorer = SequenceScorer(tiny("sequence_scorer", cls_token_id=META.cls_id), SamplerVocab.from_meta(META), False)
    judge = ScorerJudge(scorer, name="s")
    samples = samples_of([1, 4, 7, 20])  # the last is longer than the context: windows
    assert judge.score(samples) == pytest.approx(scorer.score(samples))
    assert judge.name == "s" and judge.higher_is_better is False and isinstance(judge, Judge)
    with pytest.raises(UserError, match="outside the judge's vocabulary of 13 ids"):
        judge.score([[2, 14]])


# ----------------------------------------------------------------------------- from checkpoints


def save(tmp_path, name, model, **state):
    return save_checkpoint(tmp_path / f"{name}.pt", model, trainer={"data_meta": META.to_dict()}, **state)


def test_load_judge_picks_the_kind_from_the_checkpoint(tmp_path):
    scorer = save(tmp_path, "scorer", tiny("sequence_scorer", cls_token_id=META.cls_id),
                  config={"sequence_scoring": {"score_source": "synthetic"}})
    ar = save(tmp_path, "ar", tiny(attention_type="causal"))
    mdlm = save(tmp_path, "mdlm", tiny())
    got = load_judge(scorer)
    assert got.kind == "scorer" and got.judge.higher_is_better is False  # synthetic: the corrupted fraction
    assert got.judge.name == f"scorer:{scorer}" and got.meta.text_vocab_size == TEXT
    assert load_judge(scorer, direction="higher").judge.higher_is_better is True
    got = load_judge(ar)
    assert got.kind == "perplexity" and isinstance(got.judge, PerplexityJudge) and not got.judge.higher_is_better
    assert load_judge(ar, "self_confidence").kind == "self_confidence"
    got = load_judge(mdlm)
    assert got.kind == "self_confidence" and got.judge.higher_is_better
    samples = samples_of([5, 8])
    assert got.judge.score(samples) == pytest.approx(
        SelfConfidenceJudge(tiny(), text_vocab_size=TEXT, mask_id=META.mask_id).score(samples), abs=1e-6)


def test_load_judge_refusals(tmp_path):
    mdlm = save(tmp_path, "mdlm", tiny())
    ar = save(tmp_path, "ar", tiny(attention_type="causal"))
    scorer = save(tmp_path, "scorer", tiny("sequence_scorer", cls_token_id=META.cls_id))  # no score_source stored
    classifier = save(tmp_path, "clf", tiny("token_classifier", num_token_classes=2))
    cases = [
        (lambda: load_judge(tmp_path / "missing.pt"), "does not exist"),
        (lambda: load_judge(mdlm, "perplexity"), "needs an autoregressive .causal. language model"),
        (lambda: load_judge(ar, "scorer"), "needs a sequence-scorer checkpoint"),
        (lambda: load_judge(scorer, "self_confidence"), "is a sequence scorer; judge_kind 'self_confidence'"),
        (lambda: load_judge(scorer), "does not record whether a high score is good; set tournament.judge_direction"),
        (lambda: load_judge(classifier), "is a token classifier, which rates tokens"),
        (lambda: load_judge(mdlm, "best"), "judge_kind must be one of"),
    ]
    for call, message in cases:
        with pytest.raises(UserError, match=message) as info:
            call()
        assert "\n" not in str(info.value)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="^judge: checkpoint .*cannot be read"):
        load_judge(bad)


def test_a_nanogpt_judge_reads_the_vocabulary_of_a_nanogpt_data_dir(tmp_path):
    import pickle

    args = {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 8, "bias": True, "vocab_size": TEXT, "dropout": 0.0}
    torch.manual_seed(0)
    model = GPT(GPTConfig(**args, attention_type="causal", use_rope=False))
    path = tmp_path / "nano.pt"
    torch.save({"model": model.state_dict(), "model_args": args, "iter_num": 0, "config": {"dataset": "x"}}, path)
    with pytest.raises(UserError, match="holds no data description"):
        load_judge(path)
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "val"):
        np.arange(40, dtype=np.uint16).__mod__(TEXT).astype(np.uint16).tofile(data / f"{split}.bin")
    chars = list("abcdefghijklm")
    with open(data / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": TEXT, "itos": dict(enumerate(chars)), "stoi": {c: i for i, c in enumerate(chars)}},
                    f)
    got = load_judge(path, data_dir=str(data))
    assert got.kind == "perplexity" and got.meta.text_vocab_size == TEXT
    assert got.judge.score(samples_of([6])).shape == (1,)

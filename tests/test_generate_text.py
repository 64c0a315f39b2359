"""Text-level calls on a briefly trained LM: sample_texts, self-confidence, score_texts, classify_texts."""
import json

import numpy as np
import pytest
import torch

from mmengine.config import UserError
from mmengine.generate import (
    SampleConfig,
    classify_texts,
    parse_infill,
    render_classified,
    sample_texts,
    score_texts,
    self_confidence,
)
from mmengine.model import GPT, GPTConfig


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A character LM trained for 150 steps on 30k characters of the bundled corpus (~10 s on 2 cores)."""
    from mmengine.config import load_config
    from mmengine.data.dataset import DataDir, bundled_corpus_path
    from mmengine.data.preparation import prepare_text
    from mmengine.generate.load import load_for_inference
    from mmengine.train import train

    root = tmp_path_factory.mktemp("generate")
    src = root / "small.txt"
    src.write_text(bundled_corpus_path().read_text(encoding="utf-8")[:30_000], encoding="utf-8")
    prepare_text([src], root / "d", val_fraction=0.1)
    res = train(load_config([f"--data.dir={root / 'd'}", f"--run.out_dir={root / 'out'}", "--model.n_layer=1",
                             "--model.n_embd=32", "--model.n_head=2", "--data.block_size=32", "--data.batch_size=16",
                             "--train.max_iters=150", "--train.eval_interval=150", "--train.eval_iters=1",
                             "--optim.warmup_iters=10", "--log.sample_tokens=0", "--log.progress=false"]))
    loaded = load_for_inference(res.checkpoint, "language_model")
    lm, meta, tok = loaded.model, loaded.meta, loaded.tokenizer
    return lm, meta, tok, DataDir.open(root / "d"), root


def other_mode(meta, mode, **kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=16, vocab_size=meta.vocab_size, n_layer=1, n_head=2, n_embd=16, mode=mode,
                         attention_backend="torch", loss_backend="torch", **kw)).eval()


def test_self_confidence_ranks_real_text_above_corrupted_text(trained):
    lm, meta, _tok, data, _ = trained
    val = np.asarray(data.tokens("val"))
    T = lm.config.block_size
    starts = np.random.default_rng(0).integers(0, len(val) - T, 32)
    x = torch.from_numpy(np.stack([val[s:s + T] for s in starts]).astype(np.int64))
    g = torch.Generator().manual_seed(0)
    corrupt = torch.rand(x.shape, generator=g) < 0.3
    xc = torch.where(corrupt, torch.randint(0, meta.text_vocab_size, x.shape, generator=g), x)
    everything = np.ones(T, dtype=bool)
    real = self_confidence(lm, x, everything, meta.mask_id, meta.text_vocab_size)
    bad = self_confidence(lm, xc, everything, meta.mask_id, meta.text_vocab_size)
    assert (real > bad).float().mean() >= 0.9 and real.mean() > bad.mean() + 0.3


def test_sample_texts_keeps_the_prompt_and_the_infilled_characters(trained):
    lm, meta, tok, _, _ = trained
    out = sample_texts(lm, meta, tok, SampleConfig(num_samples=3, length=50, steps=8, prompt="ROMEO:", progress=False))
    assert len(out) == 3
    for item in out:
        assert set(item) == {"text", "self_confidence", "judge_score", "steps", "seconds"}
        assert item["text"].startswith("ROMEO:") and len(item["text"]) == 56 and item["judge_score"] is None
    json.dumps(out)  # plain data
    infill = "First Citizen:\nWe are ____ poor [MASK]itizens, the ______ good."
    out = sample_texts(lm, meta, tok, SampleConfig(num_samples=2, steps=6, infill=infill, progress=False))
    for item in out:
        text = item["text"]
        assert len(text) == len(infill) - len("[MASK]") + 1
        assert text.startswith("First Citizen:\nWe are ") and text.endswith(" good.") and "itizens, the " in text
        assert text[22:26] != "____"


def test_infill_templates():
    from mmengine.data.tokenizer import CharTokenizer

    tok = CharTokenizer(list("ab _"))
    assert parse_infill("a__b[MASK]_a", tok) == [0, None, None, 1, None, 3, 0]  # a single "_" is text
    with pytest.raises(UserError, match="no masked span"):
        parse_infill("ab_a", tok)
    with pytest.raises(UserError, match="sample.infill"):
        parse_infill("x__", tok)


def test_sample_texts_loads_the_inspector_and_judge_it_is_told_to(trained, tmp_path):
    from mmengine.checkpoint import save_checkpoint

    lm, meta, tok, _, _ = trained
    data_meta = {"data_meta": meta.to_dict()}
    inspector = save_checkpoint(tmp_path / "insp.pt", other_mode(meta, "token_classifier"), trainer=data_meta)
    judge = save_checkpoint(tmp_path / "judge.pt", other_mode(meta, "sequence_scorer", cls_token_id=meta.cls_id),
                            trainer=data_meta, config={"sequence_scoring": {"score_source": "synthetic"}})
    cfg = SampleConfig(num_samples=2, best_of=2, length=40, steps=4, remasking="mixed", inspector=str(inspector),
                       judge=str(judge), progress=False)
    out = sample_texts(lm, meta, tok, cfg)
    assert len(out) == 2 and all(0.0 <= item["judge_score"] <= 1.0 and len(item["text"]) == 40 for item in out)
    with pytest.raises(UserError, match="not in the tokenizer"):
        sample_texts(lm, meta, tok, SampleConfig(prompt="\u00e9t\u00e9", progress=False))
    with pytest.raises(UserError, match="tokenizer"):
        sample_texts(lm, meta, None, SampleConfig(progress=False))


def test_score_texts(trained):
    _, meta, tok, _, _ = trained
    scorer = other_mode(meta, "sequence_scorer", cls_token_id=meta.cls_id)
    texts = ["To be, or not to be", "the " * 10]  # the second is longer than the 15-token window
    out = score_texts(scorer, meta, tok, texts)
    assert [o["text"] for o in out] == texts and [o["tokens"] for o in out] == [19, 40]
    assert [o["windows"] for o in out] == [2, 3]
    assert all(0.0 <= o["score"] <= 1.0 for o in out)
    alone = score_texts(scorer, meta, tok, texts[:1])[0]["score"]
    assert alone == pytest.approx(out[0]["score"], abs=1e-6)
    low = score_texts(scorer, meta, tok, texts[1:], aggregate="min")[0]["score"]
    high = score_texts(scorer, meta, tok, texts[1:], aggregate="max")[0]["score"]
    assert low <= out[1]["score"] <= high
    with pytest.raises(UserError, match="empty"):
        score_texts(scorer, meta, tok, ["fine", ""])


def test_classify_texts_and_their_terminal_rendering(trained):
    _, meta, tok, _, _ = trained
    classifier = other_mode(meta, "token_classifier", num_token_classes=3)
    texts = ["Wherefore art thou", "A much longer line than the sixteen-token context of this classifier."]
    out = classify_texts(classifier, meta, tok, texts)
    assert [o["text"] for o in out] == texts
    for o, text in zip(out, texts):
        assert "".join(t["text"] for t in o["tokens"]) == text
        for t in o["tokens"]:
            assert len(t["probs"]) == 3 and sum(t["probs"]) == pytest.approx(1.0, abs=1e-5)
            assert t["class"] == int(np.argmax(t["probs"]))
    json.dumps(out)
    result = {"text": "abc",
              "tokens": [{"text": "a", "class": 0}, {"text": "b", "class": 1}, {"text": "c", "class": 2}]}
    shown = render_classified(result)
    assert shown == "a\033[31mb\033[0m\033[33mc\033[0m"
    assert render_classified(result, colour=False) == "abc"
    with pytest.raises(UserError, match="not a token classifier|token classifier"):
        classify_texts(other_mode(meta, "sequence_scorer", cls_token_id=meta.cls_id), meta, tok, texts)


def test_a_nanogpt_checkpoint_samples_without_a_prompt(tmp_path):
    """The nanoGPT case: a 65-row causal model, a meta.pkl vocabulary without [MASK]; it starts from "\\n"."""
    import pickle

    from mmengine.data.dataset import DataDir, bundled_corpus_path

    text = bundled_corpus_path().read_text(encoding="utf-8")[:20_000]
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = np.array([stoi[c] for c in text], dtype=np.uint16)
    ids[:18_000].tofile(tmp_path / "train.bin")
    ids[18_000:].tofile(tmp_path / "val.bin")
    with open(tmp_path / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi}, f)
    data = DataDir.open(tmp_path)
    torch.manual_seed(0)
    nanogpt = GPT(GPTConfig(block_size=16, vocab_size=len(chars), n_layer=1, n_head=2, n_embd=16, bias=True,
                            attention_type="causal", use_rope=False)).eval()
    out = sample_texts(nanogpt, data.meta, data.tokenizer, SampleConfig(num_samples=2, length=30, progress=False))
    assert len(out) == 2 and all(len(o["text"]) == 30 and o["steps"] == 30 for o in out)

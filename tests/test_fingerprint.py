"""The tokenizer fingerprint: stored in every checkpoint, a data dir of another vocabulary refused in one sentence."""
import logging

import pytest
import torch

from mmengine.config import load_config
from mmengine.data.dataset import DataDir
from mmengine.data.preparation import prepare_text
from mmengine.errors import UserError
from mmengine.fingerprint import FINGERPRINT_KEY, check_fingerprint, stored_fingerprint, tokenizer_fingerprint
from mmengine.train import train

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n" * 20


def make(tmp_path, name: str, text: str, **kwargs) -> DataDir:
    src = tmp_path / f"{name}.txt"
    src.write_text(text, encoding="utf-8")
    prepare_text([src], tmp_path / name, progress=False, **kwargs)
    return DataDir.open(tmp_path / name)


def test_the_same_vocabulary_matches_whatever_the_text(tmp_path):
    a = make(tmp_path, "a", TEXT)
    b = make(tmp_path, "b", TEXT[::-1])  # the same characters, another text
    assert tokenizer_fingerprint(a) == tokenizer_fingerprint(b)
    check_fingerprint({FINGERPRINT_KEY: tokenizer_fingerprint(a)}, b, "cannot resume from x")


@pytest.mark.parametrize("other, detail", [
    (TEXT + "Zounds!", "the model's has 30 text tokens, the data dir's 32"),
    (TEXT.replace("y", "Y"), "both have 30 text tokens, but not the same ones"),
])
def test_another_character_vocabulary_is_refused_in_one_sentence(tmp_path, other, detail):
    a, b = make(tmp_path, "a", TEXT), make(tmp_path, "b", other)
    with pytest.raises(UserError) as info:
        check_fingerprint({FINGERPRINT_KEY: tokenizer_fingerprint(a)}, b, "cannot evaluate ckpt.pt")
    message = str(info.value)
    assert message.startswith(f"cannot evaluate ckpt.pt: data dir {b.path} has another vocabulary than the")
    assert detail in message and "\n" not in message


def test_bpe_vocabularies_are_compared_token_by_token(tmp_path):
    pytest.importorskip("tokenizers")
    a = make(tmp_path, "a", TEXT, tokenizer="bpe", vocab_size=300)
    b = make(tmp_path, "b", TEXT.upper() + TEXT, tokenizer="bpe", vocab_size=300)
    same = make(tmp_path, "same", TEXT, tokenizer="bpe", vocab_size=300)
    char = make(tmp_path, "char", TEXT)
    fp = {FINGERPRINT_KEY: tokenizer_fingerprint(a)}
    assert a.meta.text_vocab_size == b.meta.text_vocab_size  # same size: only the tokens tell them apart
    check_fingerprint(fp, same, "x")
    with pytest.raises(UserError, match="but not the same ones"):
        check_fingerprint(fp, b, "x")
    with pytest.raises(UserError, match="the model's tokenizer is bpe, the data dir's char"):
        check_fingerprint(fp, char, "x")
    # a DataMeta alone (no folder to read tokenizer.json from): sizes and special ids only
    check_fingerprint(fp, b.meta, "x")


def test_special_ids_are_part_of_it(tmp_path):
    a = make(tmp_path, "a", TEXT)
    fp = tokenizer_fingerprint(a)
    fp["special_ids"] = {**fp["special_ids"], "[CLS]": fp["special_ids"]["[SEP]"]}
    with pytest.raises(UserError, match="special ids"):
        check_fingerprint({FINGERPRINT_KEY: fp}, a, "x")


def test_a_nanogpt_dir_with_the_same_characters_matches(tmp_path, nanogpt_char_dir):
    from mmengine.data.dataset import bundled_corpus_path

    ours = make(tmp_path, "ours", bundled_corpus_path().read_text(encoding="utf-8"))
    assert tokenizer_fingerprint(DataDir.open(nanogpt_char_dir)) == tokenizer_fingerprint(ours)


def test_older_checkpoints_are_compared_on_what_they_store_or_said_once_to_be_unchecked(tmp_path, caplog):
    a, b = make(tmp_path, "a", TEXT), make(tmp_path, "b", TEXT + "Zounds!")
    older = {"model": {}, "trainer": {"data_meta": a.meta.to_dict()}}  # before the fingerprint: its data_meta
    assert stored_fingerprint(older)["vocabulary"] == tokenizer_fingerprint(a)["vocabulary"]
    check_fingerprint(older, a, "x")
    with pytest.raises(UserError, match="30 text tokens, the data dir's 32"):
        check_fingerprint(older, b, "x")
    oldest = {"model": {}}  # nothing to compare: never refused, said once
    caplog.set_level(logging.WARNING, logger="mmengine")
    for _ in range(3):
        check_fingerprint(oldest, b, "cannot evaluate oldest.pt")
    said = [r.getMessage() for r in caplog.records if "cannot be checked" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("cannot evaluate oldest.pt: ")


def tiny(data_dir, out_dir, *extra):
    return [f"--data.dir={data_dir}", f"--run.out_dir={out_dir}", "--model.n_layer=1", "--model.n_embd=16",
            "--model.n_head=2", "--data.block_size=16", "--data.batch_size=2", "--train.eval_iters=1",
            "--log.sample_tokens=0", "--log.progress=false", *extra]


def test_every_checkpoint_holds_it_and_resume_refuses_another_vocabulary(tmp_path):
    a, b = make(tmp_path, "a", TEXT), make(tmp_path, "b", TEXT + "Zounds!")
    same = make(tmp_path, "same", TEXT[::-1])
    out = tmp_path / "run"
    train(load_config(tiny(a.path, out, "--train.max_iters=2", "--train.eval_interval=2")))
    for name in ("ckpt.pt", "best.pt"):
        assert torch.load(out / name, weights_only=True)[FINGERPRINT_KEY] == tokenizer_fingerprint(a)
    before = (out / "ckpt.pt").read_bytes()
    refused = f"cannot resume from {out / 'ckpt.pt'}: data dir {b.path} has another vocabulary"
    with pytest.raises(UserError, match=refused):
        train(load_config(tiny(b.path, out, "--train.max_iters=4", "--run.init_from=resume")))
    assert (out / "ckpt.pt").read_bytes() == before  # not overwritten by a model trained on two vocabularies
    # other text in the same vocabulary is a legitimate resume (more data, a cleaned corpus)
    res = train(load_config(tiny(same.path, out, "--train.max_iters=3", "--train.eval_interval=3",
                                 "--run.init_from=resume")))
    assert res.iter_num == 3

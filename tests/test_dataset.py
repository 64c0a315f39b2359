"""mmengine.data.dataset: DataMeta, DataDir (mmengine and nanoGPT dirs), default_data_dir, tokenizers."""
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmengine.data.dataset import (
    SPECIAL_TOKENS,
    DataDir,
    DataError,
    DataMeta,
    bundled_corpus_path,
)
from mmengine.data.preparation import cache_root, default_data_dir, prepare_text
from mmengine.data.tokenizer import (
    CharTokenizer,
    TokenizerError,
    load_tokenizer,
    separator_ids,
)

REPO = Path(__file__).resolve().parents[1]


def make_nanogpt_dir(path: Path, text: str, with_pkl: bool = True) -> list[str]:
    path.mkdir()
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = np.array([stoi[c] for c in text], dtype=np.uint16)
    n = int(0.9 * len(ids))
    ids[:n].tofile(path / "train.bin")
    ids[n:].tofile(path / "val.bin")
    if with_pkl:
        with open(path / "meta.pkl", "wb") as f:
            pickle.dump({"vocab_size": len(chars), "itos": {i: c for i, c in enumerate(chars)}, "stoi": stoi}, f)
    return chars


# ----------------------------------------------------------------------------- DataMeta


def test_datameta_roundtrip_and_specials():
    m = DataMeta.for_vocab(65, tokenizer="char", separator_ids=[0, 0])
    assert m.vocab_size == 69 and (m.mask_id, m.cls_id, m.pad_id, m.sep_id) == (65, 66, 67, 68)
    assert list(m.special_ids) == list(SPECIAL_TOKENS)
    d = json.loads(json.dumps(m.to_dict()))
    assert DataMeta.from_dict(d) == m
    d["future_field"] = 1  # newer writers may add keys
    assert DataMeta.from_dict(d) == m


@pytest.mark.parametrize(
    "change, msg",
    [
        ({"token_dtype": "int8"}, "token_dtype"),
        ({"kind": "images"}, "kind"),
        ({"special_ids": {"[MASK]": 3, "[CLS]": 66, "[PAD]": 67, "[SEP]": 68}}, r"\[MASK\].*outside"),
        ({"special_ids": {"[MASK]": 65}}, "lacks"),
        ({"kind": "spans"}, "num_token_classes"),
        ({"vocab_size": 70000, "special_ids": {"[MASK]": 65, "[CLS]": 66, "[PAD]": 67, "[SEP]": 68}}, "uint16"),
    ],
)
def test_datameta_rejects_inconsistent(change, msg):
    d = DataMeta.for_vocab(65, tokenizer="char").to_dict()
    d.update(change)
    with pytest.raises(DataError, match=msg):
        DataMeta.from_dict(d)


def test_datameta_missing_keys():
    with pytest.raises(DataError, match="lacks the keys"):
        DataMeta.from_dict({"vocab_size": 3})


# ----------------------------------------------------------------------------- DataDir


def test_open_missing_dir_and_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        DataDir.open(tmp_path / "nope")
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match="not a directory"):
        DataDir.open(tmp_path / "f")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a data dir"):
        DataDir.open(tmp_path / "empty")
    prepare_text([_txt(tmp_path, "hello there")], tmp_path / "d")
    os.remove(tmp_path / "d" / "val.bin")
    with pytest.raises(DataError, match="no val.bin"):
        DataDir.open(tmp_path / "d")


def _txt(tmp_path, text, name="in.txt"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_bad_meta_json(tmp_path):
    prepare_text([_txt(tmp_path, "hello there")], tmp_path / "d")
    (tmp_path / "d" / "meta.json").write_text("{not json")
    with pytest.raises(DataError, match="meta.json is not valid JSON"):
        DataDir.open(tmp_path / "d")


def test_split_name_and_truncated_file(tmp_path):
    prepare_text([_txt(tmp_path, "hello there")], tmp_path / "d")
    dd = DataDir.open(tmp_path / "d")
    with pytest.raises(ValueError, match="split must be"):
        dd.tokens("test")
    with open(tmp_path / "d" / "train.bin", "ab") as f:
        f.write(b"\x00")
    with pytest.raises(DataError, match="not a multiple"):
        dd.tokens("train")


def test_tokens_are_memmaps(tmp_path):
    prepare_text([_txt(tmp_path, "hello there, general kenobi")], tmp_path / "d")
    dd = DataDir.open(tmp_path / "d")
    t = dd.tokens("train")
    assert isinstance(t, np.memmap) and t.dtype == np.uint16 and not t.flags.writeable
    assert dd.labels("train") is None and dd.documents("train") is None


def test_nanogpt_dir_with_meta_pkl(tmp_path):
    text = "To be, or not to be:\n\nthat is the question.\n" * 5
    chars = make_nanogpt_dir(tmp_path / "ng", text)
    dd = DataDir.open(tmp_path / "ng")
    m = dd.meta
    assert m.source == "nanogpt" and m.token_dtype == "uint16"
    assert m.text_vocab_size == len(chars) and m.vocab_size == len(chars) + 4
    assert m.mask_id == len(chars)
    assert m.separator_ids == [chars.index("\n")] * 2
    assert dd.tokenizer.decode(np.concatenate([dd.tokens("train"), dd.tokens("val")])) == text


def test_nanogpt_dir_trains_as_it_is(tmp_path):
    # The promise end to end: a nanoGPT dir (no meta.json) goes straight into the trainer.
    pytest.importorskip("torch")
    from mmengine.config import load_config
    from mmengine.train import train

    text = "To be, or not to be:\n\nthat is the question.\n" * 40
    make_nanogpt_dir(tmp_path / "ng", text)
    train(load_config([
        f"--data.dir={tmp_path / 'ng'}", f"--run.out_dir={tmp_path / 'run'}", "--model.n_layer=1",
        "--model.n_embd=16", "--model.n_head=2", "--data.block_size=16", "--data.batch_size=2",
        "--train.max_iters=2", "--train.eval_interval=2", "--train.eval_iters=1", "--log.sample_tokens=0",
        "--log.progress=false",
    ]))
    assert (tmp_path / "run" / "ckpt.pt").is_file()
    assert not (tmp_path / "ng" / "meta.json").exists()


def test_nanogpt_dir_without_meta_pkl_needs_vocab_size(tmp_path):
    make_nanogpt_dir(tmp_path / "ng", "abcabc" * 10, with_pkl=False)
    with pytest.raises(DataError, match="neither meta.json nor meta.pkl.*vocab_size=50257"):
        DataDir.open(tmp_path / "ng")
    dd = DataDir.open(tmp_path / "ng", vocab_size=50257)
    assert dd.meta.vocab_size == 50261 and dd.meta.mask_id == 50257 and dd.tokenizer is None
    assert dd.meta.tokenizer == "unknown"


def test_meta_pkl_with_code_is_refused(tmp_path):
    make_nanogpt_dir(tmp_path / "ng", "abc" * 10, with_pkl=False)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(tmp_path / "ng" / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": 3, "x": Evil()}, f)
    with pytest.raises(DataError, match="only plain"):
        DataDir.open(tmp_path / "ng")


def test_prepared_dir_also_reads_as_nanogpt(tmp_path):
    # The meta.pkl written for nanoGPT tools describes the same vocabulary.
    prepare_text([_txt(tmp_path, "abc\n\ndef")], tmp_path / "d")
    os.rename(tmp_path / "d" / "meta.json", tmp_path / "meta.json.bak")
    dd = DataDir.open(tmp_path / "d")
    assert dd.meta.source == "nanogpt" and dd.meta.text_vocab_size == 7
    assert dd.tokenizer.decode(dd.tokens("train")).startswith("abc")


def test_scores_dir_documents_checked(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_text("\n".join(json.dumps({"text": t, "score": 0.5}) for t in ["aa", "bbb", "c", "dd"]))
    from mmengine.data.preparation import prepare_jsonl

    prepare_jsonl([p], tmp_path / "d")
    dd = DataDir.open(tmp_path / "d")
    _, offs, scores = dd.documents("train")
    assert len(offs) == len(scores) + 1
    good_offs, good_scores = offs.copy(), scores.copy()
    np.save(tmp_path / "d" / "train_scores.npy", np.zeros(1, dtype=np.float32))
    with pytest.raises(DataError, match="do not match"):
        dd.documents("train")
    np.save(tmp_path / "d" / "train_scores.npy", np.where(np.arange(len(good_scores)) == 0, np.nan, good_scores))
    with pytest.raises(DataError, match=r"outside \[0, 1\]"):
        dd.documents("train")
    np.save(tmp_path / "d" / "train_scores.npy", good_scores)
    np.save(tmp_path / "d" / "train_offsets.npy", good_offs[[0, 2, 1, 3]] if len(good_offs) == 4 else good_offs[::-1])
    with pytest.raises(DataError, match="never decrease"):
        dd.documents("train")
    os.remove(tmp_path / "d" / "train_offsets.npy")
    with pytest.raises(DataError, match="no train_offsets.npy"):
        dd.documents("train")


# ----------------------------------------------------------------------------- checks at open time


def _prepared(tmp_path, text="hello there\n\ngeneral kenobi\n\n" * 4):
    prepare_text([_txt(tmp_path, text)], tmp_path / "d")
    return tmp_path / "d", json.loads((tmp_path / "d" / "meta.json").read_text())


def _poke(path: Path, dtype, position: int, value: int) -> None:
    tokens = np.fromfile(path, dtype=dtype)
    tokens[position] = value
    tokens.tofile(path)


@pytest.mark.parametrize("split", ["train", "val"])
def test_open_names_a_token_id_beyond_the_vocabulary(tmp_path, split):
    d, meta = _prepared(tmp_path)
    tv = meta["text_vocab_size"]
    _poke(d / f"{split}.bin", np.uint16, 3, tv + 20)
    with pytest.raises(DataError, match=rf"{split}.bin holds token id {tv + 20} \(token 3\): outside the {tv} text ids "
                       rf"\(0 to {tv - 1}\) that meta.json declares"):
        DataDir.open(d)
    DataDir.open(d, verify=False)  # the caller's choice: metadata only


def test_open_names_a_special_id_inside_a_token_file(tmp_path):
    d, meta = _prepared(tmp_path)
    _poke(d / "train.bin", np.uint16, 0, meta["special_ids"]["[MASK]"])
    with pytest.raises(DataError, match=r"the id of \[MASK\], which token files never hold"):
        DataDir.open(d)


def test_open_checks_the_last_token_of_a_large_file(tmp_path, monkeypatch):
    # the position is found in the slice that fails, also past the first slice
    from mmengine.data import dataset

    monkeypatch.setattr(dataset, "_CHECK_SLICE", 7)
    d, meta = _prepared(tmp_path)
    n = meta["counts"]["train_tokens"]
    _poke(d / "train.bin", np.uint16, n - 1, 65535)
    with pytest.raises(DataError, match=rf"token id 65535 \(token {n - 1}\)"):
        DataDir.open(d)


def test_open_refuses_an_odd_sized_or_truncated_token_file(tmp_path):
    d, _ = _prepared(tmp_path)
    with open(d / "train.bin", "ab") as f:
        f.write(b"\x00")
    with pytest.raises(DataError, match=r"train.bin has \d+ bytes, not a multiple of the uint16 item size 2"):
        DataDir.open(d)
    data = (d / "train.bin").read_bytes()
    (d / "train.bin").write_bytes(data[:-3])  # whole tokens again, two fewer than meta.json counts
    with pytest.raises(DataError, match=r"train.bin holds \d+ tokens but meta.json counts \d+: the file was truncated"):
        DataDir.open(d)


def test_open_refuses_separator_ids_outside_the_vocabulary(tmp_path):
    d, meta = _prepared(tmp_path)
    tv = meta["text_vocab_size"]
    for bad, message in [
        ([0, tv], rf"meta.json: separator id {tv} is outside the text vocabulary \[0, {tv}\)"),
        ([-1], r"separator id -1 is outside"),
        ([meta["special_ids"]["[SEP]"]], "is outside the text vocabulary"),
        (["\n"], "separator_ids must be a list of token ids"),
        ([True], "separator_ids must be a list of token ids"),
        ("\n\n", "separator_ids must be a list of token ids"),
    ]:
        meta["separator_ids"] = bad
        (d / "meta.json").write_text(json.dumps(meta))
        with pytest.raises(DataError, match=message):
            DataDir.open(d)


def test_nanogpt_dir_ids_and_separator_checked_against_meta_pkl(tmp_path):
    chars = make_nanogpt_dir(tmp_path / "ng", "abc\nabc" * 10)
    _poke(tmp_path / "ng" / "val.bin", np.uint16, 1, len(chars))
    with pytest.raises(DataError, match=rf"val.bin holds token id {len(chars)} .* that meta.pkl declares"):
        DataDir.open(tmp_path / "ng")
    with open(tmp_path / "ng" / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(chars), "stoi": {"\n": 99}}, f)
    with pytest.raises(DataError, match=r"meta.pkl maps '\\n' to 99, not a text id in \[0, 4\)"):
        DataDir.open(tmp_path / "ng")


def test_dir_without_metadata_checked_against_the_given_vocab_size(tmp_path):
    make_nanogpt_dir(tmp_path / "ng", "abcd" * 10, with_pkl=False)
    DataDir.open(tmp_path / "ng", vocab_size=4)
    with pytest.raises(DataError, match=r"holds token id 3 .* that vocab_size=3 declares"):
        DataDir.open(tmp_path / "ng", vocab_size=3)  # the wrong size is caught, not an embedding IndexError


@pytest.mark.parametrize("label, shown", [(2, 2), (-2, -2), (32767, 32767)])
def test_open_refuses_labels_outside_the_classes(tmp_path, label, shown):
    from mmengine.data.preparation import prepare_jsonl

    p = tmp_path / "s.jsonl"
    p.write_text("\n".join(json.dumps({"text": t, "spans": [[0, 1, 1]]}) for t in ["aa", "bbb", "cc", "dd"]))
    prepare_jsonl([p], tmp_path / "d")
    DataDir.open(tmp_path / "d")
    _poke(tmp_path / "d" / "train_labels.bin", np.int16, 1, label)
    with pytest.raises(DataError, match=rf"train_labels.bin holds label {shown} \(token 1\): .* \[0, 2\)"):
        DataDir.open(tmp_path / "d")
    os.remove(tmp_path / "d" / "train_labels.bin")
    with pytest.raises(DataError, match="no train_labels.bin"):
        DataDir.open(tmp_path / "d")


def test_open_checks_documents_of_scores_data(tmp_path):
    from mmengine.data.preparation import prepare_jsonl

    p = tmp_path / "s.jsonl"
    p.write_text("\n".join(json.dumps({"text": t, "score": 0.5}) for t in ["aa", "bbb", "c", "dd"]))
    prepare_jsonl([p], tmp_path / "d")
    np.save(tmp_path / "d" / "val_scores.npy", np.full(1, 2.0, dtype=np.float32))
    with pytest.raises(DataError, match=r"val_scores.npy .* outside \[0, 1\]"):
        DataDir.open(tmp_path / "d")


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.integers(-3, 12), max_size=40),
    low=st.integers(-2, 1),
    high=st.integers(0, 11),
    dtype=st.sampled_from([np.int16, np.int64]),
    slice_size=st.integers(1, 9),
)
def test_first_outside_matches_a_plain_search(values, low, high, dtype, slice_size):
    from mmengine.data import dataset

    a = np.asarray(values, dtype=dtype)
    expected = next(((i, v) for i, v in enumerate(values) if not low <= v < high), None)
    old = dataset._CHECK_SLICE
    dataset._CHECK_SLICE = slice_size
    try:
        assert dataset._first_outside(a, low, high) == expected
        u = np.asarray([v for v in values if v >= 0], dtype=np.uint16)
        expected_u = next(((i, int(v)) for i, v in enumerate(u) if not low <= v < high), None)
        assert dataset._first_outside(u, low, high) == expected_u
    finally:
        dataset._CHECK_SLICE = old


# ----------------------------------------------------------------------------- tokenizers


@settings(max_examples=50, deadline=None)
@given(st.text(min_size=1, max_size=200))
def test_char_tokenizer_roundtrip(text):
    tok = CharTokenizer.from_text(text)
    assert tok.itos == sorted(set(text))
    ids = tok.encode(text)
    assert tok.decode(ids) == text and max(ids) < tok.vocab_size
    assert CharTokenizer.from_meta(tok.to_meta()).encode(text) == ids


def test_char_tokenizer_errors():
    tok = CharTokenizer.from_text("abc")
    # Below, inside and beyond the code-point range of the vocabulary; the first bad one is named.
    for text, bad in (("abz", "z"), ("aAb", "A"), ("a\U0010ffffz", "\U0010ffff")):
        with pytest.raises(TokenizerError, match=re.escape(f"{bad!r} is not in")):
            tok.encode(text)
    with pytest.raises(TokenizerError, match="'a' is not in"):
        CharTokenizer([]).encode("a")
    assert CharTokenizer([]).encode("") == []
    with pytest.raises(TokenizerError, match="outside"):
        tok.decode([3])
    with pytest.raises(TokenizerError, match="duplicates"):
        CharTokenizer(["a", "a"])
    assert tok.encode("") == []
    assert separator_ids(tok) == []


def test_load_tokenizer_unknown_type(tmp_path):
    with pytest.raises(TokenizerError, match="unknown tokenizer type"):
        load_tokenizer({"type": "wordpiece"}, tmp_path)
    assert load_tokenizer({"tokenizer_config": {}}, tmp_path) is None


def test_bpe_tokenizer_offsets_and_missing_file(tmp_path):
    pytest.importorskip("tokenizers")
    from mmengine.data.tokenizer import BPETokenizer

    text = "héllo wörld, hello world\n\nagain"
    tok = BPETokenizer.train([text * 5], 270)
    ids, offs = tok.encode_with_offsets(text)
    assert offs.shape == (len(ids), 2) and offs[-1, 1] == len(text)
    assert tok.decode(ids) == text
    with pytest.raises(TokenizerError, match="does not exist"):
        BPETokenizer.load(tmp_path / "tokenizer.json")


def test_bpe_without_tokenizers_package_says_how_to_install(tmp_path, monkeypatch):
    from mmengine.data.tokenizer import BPETokenizer

    monkeypatch.setitem(sys.modules, "tokenizers", None)  # makes `import tokenizers` fail
    with pytest.raises(TokenizerError, match=r"needs the 'tokenizers' package.*pip install"):
        BPETokenizer.train(["some text"], 300)
    with pytest.raises(TokenizerError, match=r"needs the 'tokenizers' package"):
        load_tokenizer({"type": "bpe", "file": "tokenizer.json"}, tmp_path)


# ----------------------------------------------------------------------------- default data dir


def test_bundled_corpus_path():
    p = bundled_corpus_path()
    assert p.is_file() and p.stat().st_size > 1_000_000


def test_cache_root_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("MMENGINE_CACHE", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("MMENGINE_CACHE")
    assert cache_root() == Path.home() / ".cache" / "mmengine"


def test_default_data_dir_prepares_once(tmp_path):
    d = default_data_dir(tmp_path)
    assert d == tmp_path / "tinyshakespeare-char"
    dd = DataDir.open(d)
    # nanoGPT's shakespeare_char numbers.
    assert dd.meta.text_vocab_size == 65 and len(dd.tokens("train")) == 1_003_854 and len(dd.tokens("val")) == 111_540
    mtime = (d / "meta.json").stat().st_mtime_ns
    assert default_data_dir(tmp_path) == d
    assert (d / "meta.json").stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == ["tinyshakespeare-char"]


def test_default_data_dir_two_processes_race(tmp_path):
    code = (
        "import sys; from mmengine.data.dataset import DataDir; "
        "from mmengine.data.preparation import default_data_dir; "
        "d = default_data_dir(sys.argv[1]); print(len(DataDir.open(d).tokens('train')))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert out.strip() == "1003854"
    # The losers' temp dirs are gone; only the prepared dir remains.
    assert [p.name for p in tmp_path.iterdir()] == ["tinyshakespeare-char"]


def test_default_data_dir_broken_target(tmp_path):
    (tmp_path / "tinyshakespeare-char").mkdir()
    (tmp_path / "tinyshakespeare-char" / "junk").write_text("x")
    with pytest.raises(DataError, match="delete it"):
        default_data_dir(tmp_path)


def test_numpy_only_imports():
    code = (
        "import sys; import mmengine.prepare, mmengine.data.dataset, mmengine.data.masking, "
        "mmengine.data.corruption, mmengine.metrics, mmengine.data.tokenizer; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr

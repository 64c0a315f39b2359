"""mmengine.prepare: text and JSONL preparation, the CLI, atomic output, bad-input messages."""
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmengine.data.dataset import DataDir
from mmengine.data.preparation import (
    PrepareError,
    _token_labels,
    prepare,
    prepare_jsonl,
    prepare_text,
)
from mmengine.data.tokenizer import CharTokenizer
from mmengine.prepare import main

REPO = Path(__file__).resolve().parents[1]


def write(p: Path, text: str) -> Path:
    p.write_text(text, encoding="utf-8")
    return p


def write_jsonl(p: Path, records) -> Path:
    p.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return p


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "mmengine.prepare", *map(str, args)],
        check=False, capture_output=True, text=True, cwd=cwd or REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


# ----------------------------------------------------------------------------- plain text


def test_char_text_roundtrip_and_nanogpt_split(tmp_path):
    text = "First Citizen:\nBefore we proceed.\n\nAll:\nSpeak, speak.\n" * 20
    src = write(tmp_path / "a.txt", text)
    meta = prepare_text([src], tmp_path / "out")
    dd = DataDir.open(tmp_path / "out")
    assert meta.tokenizer == "char" and meta.kind == "text"
    chars = sorted(set(text))
    assert meta.text_vocab_size == len(chars)
    assert meta.vocab_size == len(chars) + 4
    assert meta.special_ids == {"[MASK]": len(chars), "[CLS]": len(chars) + 1, "[PAD]": len(chars) + 2,
                                "[SEP]": len(chars) + 3}
    assert meta.token_dtype == "uint16"
    n_train = int(len(text) * 0.9)  # nanoGPT's split
    tok = dd.tokenizer
    assert tok.decode(dd.tokens("train")) == text[:n_train]
    assert tok.decode(dd.tokens("val")) == text[n_train:]
    assert meta.separator_ids == [tok.stoi["\n"]] * 2
    assert meta.counts["train_tokens"] == n_train
    # meta.pkl for nanoGPT tools
    with open(tmp_path / "out" / "meta.pkl", "rb") as f:
        pk = pickle.load(f)
    assert pk["vocab_size"] == len(chars)
    assert pk["itos"][0] == chars[0] and pk["stoi"][chars[-1]] == len(chars) - 1
    # meta.json is plain JSON with the same content
    d = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert d["special_ids"]["[MASK]"] == len(chars) and d["tokenizer_config"]["chars"] == chars


def test_multiple_inputs_joined_with_blank_line(tmp_path):
    a, b = write(tmp_path / "a.txt", "abc"), write(tmp_path / "b.txt", "xyz")
    prepare_text([a, b], tmp_path / "out", val_fraction=0.0)
    dd = DataDir.open(tmp_path / "out")
    assert dd.tokenizer.decode(dd.tokens("train")) == "abc\n\nxyz"
    assert len(dd.tokens("val")) == 0


def test_empty_input_is_an_error_naming_the_file(tmp_path):
    src = write(tmp_path / "empty.txt", "")
    with pytest.raises(PrepareError, match="empty.txt.*empty"):
        prepare_text([src], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["empty.txt"]  # no temp dir left behind


def test_single_character_input(tmp_path):
    src = write(tmp_path / "one.txt", "x")
    meta = prepare_text([src], tmp_path / "out")
    dd = DataDir.open(tmp_path / "out")
    assert meta.text_vocab_size == 1 and list(dd.tokens("train")) == [0] and len(dd.tokens("val")) == 0
    assert meta.separator_ids == []  # no "\n" in the vocabulary


def test_two_characters_give_one_each(tmp_path):
    prepare_text([write(tmp_path / "t.txt", "ab")], tmp_path / "out", val_fraction=0.1)
    dd = DataDir.open(tmp_path / "out")
    assert len(dd.tokens("train")) == 1 and len(dd.tokens("val")) == 1


def test_non_utf8_input_names_file_and_line(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_bytes(b"line one\nline two\nbad \xff byte\n")
    with pytest.raises(PrepareError, match=r"bad\.txt:3: not valid UTF-8"):
        prepare_text([p], tmp_path / "out")


def test_missing_input_file(tmp_path):
    with pytest.raises(PrepareError, match="does not exist"):
        prepare_text([tmp_path / "nope.txt"], tmp_path / "out")


def test_large_vocabulary_uses_uint32(tmp_path):
    # > 65536 distinct characters -> ids above 65535 -> uint32 token files.
    codepoints = [c for c in range(0x100, 0x100 + 70_000 + 2048) if not 0xD800 <= c <= 0xDFFF][:70_000]
    text = "".join(map(chr, codepoints))
    meta = prepare_text([write(tmp_path / "big.txt", text)], tmp_path / "out")
    assert meta.token_dtype == "uint32" and meta.vocab_size == 70_004
    dd = DataDir.open(tmp_path / "out")
    toks = dd.tokens("val")
    assert toks.dtype == np.uint32 and int(toks.max()) == 69_999
    assert os.path.getsize(tmp_path / "out" / "val.bin") == 4 * len(toks)
    assert dd.tokenizer.decode(np.concatenate([dd.tokens("train"), toks])) == text


def test_vocab_exactly_65536_stays_uint16(tmp_path):
    meta = prepare_text.__globals__["DataMeta"].for_vocab(65532, tokenizer="char")
    assert meta.vocab_size == 65536 and meta.token_dtype == "uint16"


def test_bad_val_fraction_and_vocab_size_with_char(tmp_path):
    src = write(tmp_path / "t.txt", "hello")
    with pytest.raises(PrepareError, match="val-fraction"):
        prepare_text([src], tmp_path / "o1", val_fraction=1.0)
    with pytest.raises(PrepareError, match="vocab-size applies only"):
        prepare_text([src], tmp_path / "o2", vocab_size=100)


# ----------------------------------------------------------------------------- atomic output


def test_refuses_non_empty_out_and_keeps_it(tmp_path):
    src = write(tmp_path / "t.txt", "hello world")
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious").write_text("keep me")
    with pytest.raises(PrepareError, match="not empty.*--force"):
        prepare_text([src], out)
    assert (out / "precious").read_text() == "keep me"


def test_empty_existing_out_is_fine_and_force_replaces(tmp_path):
    src = write(tmp_path / "t.txt", "hello world")
    out = tmp_path / "out"
    out.mkdir()
    prepare_text([src], out)
    prepare_text([write(tmp_path / "u.txt", "zzz qqq")], out, force=True)
    dd = DataDir.open(out)
    assert "z" in dd.tokenizer.stoi and "h" not in dd.tokenizer.stoi
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "t.txt", "u.txt"]


def test_force_refuses_to_delete_an_input_inside_out(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    src = write(out / "corpus.txt", "my only copy")
    with pytest.raises(PrepareError, match="lies inside --out.*--force would delete"):
        prepare_text([src], out, force=True)
    assert src.read_text() == "my only copy"


def test_failure_never_destroys_existing_dir(tmp_path):
    src = write(tmp_path / "t.txt", "hello world")
    out = tmp_path / "out"
    prepare_text([src], out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xfe\xfe")
    with pytest.raises(PrepareError):
        prepare_text([bad], out, force=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt", "out", "t.txt"]


def test_ctrl_c_keeps_the_old_dir_and_leaves_no_temp_dir(tmp_path, monkeypatch, capsys):
    import mmengine.data.preparation as prep

    src = write(tmp_path / "t.txt", "hello world")
    out = tmp_path / "out"
    prepare_text([src], out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prep, "_write_meta", interrupted)
    assert main([str(src), "--out", str(out), "--force"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "t.txt"]


def test_cli_write_failure_is_one_line(tmp_path, monkeypatch, capsys):
    import mmengine.data.preparation as prep

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(prep, "_write_meta", disk_full)
    assert main([str(write(tmp_path / "t.txt", "abc")), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device; nothing was written" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]


def test_interrupt_between_the_renames_restores_the_old_dir(tmp_path, monkeypatch):
    import mmengine.data.preparation as prep

    src = write(tmp_path / "t.txt", "hello world")
    out = tmp_path / "out"
    prepare_text([src], out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_rename, calls = os.rename, []

    def rename(a, b):  # old dir moved aside, then Ctrl-C before the new one is moved in
        calls.append((a, b))
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_rename(a, b)

    monkeypatch.setattr(prep.os, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        prepare_text([write(tmp_path / "u.txt", "other")], out, force=True)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "t.txt", "u.txt"]


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize(
    "files, shown",
    [
        ({"thesis.tex": "chapter 1", "figures/plot.pdf": "%PDF"}, r"it holds figures/, thesis.tex"),  # the case
        ({"input.txt": "abc", "prepare.py": "#", "train.bin": "ab", "val.bin": "ab", "meta.pkl": "x"},
         r"it holds input.txt, prepare.py"),  # nanoGPT's own data folder, with its script and source text
        ({"train.bin": "ab", "val.bin": "ab", "meta.json": "{}", "notes.md": "mine"}, r"it holds notes.md"),
        ({"train.bin": "ab", "val.bin": "ab", "ckpt/": None}, r"it holds ckpt/"),
        ({"meta.json": "{}"}, r"it has no train.bin or val.bin"),
        ({"a": "1", "b": "2", "c": "3", "d": "4"}, r"it holds a, b, c, \.\.\."),
    ],
)
def test_force_replaces_only_a_data_dir(tmp_path, files, shown):
    src = write(tmp_path / "t.txt", "hello world")
    out = tmp_path / "out"
    for name, text in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).mkdir() if text is None else (out / name).write_text(text)
    before = _snapshot(tmp_path)
    with pytest.raises(PrepareError, match=r"--force replaces only a data dir or an empty folder, and .*out is neither "
                       rf"\({shown}\); nothing was deleted"):
        prepare_text([src], out, force=True)
    assert _snapshot(tmp_path) == before  # no temp dir left either


def test_force_replaces_a_nanogpt_dir_and_a_prepared_one(tmp_path):
    src = write(tmp_path / "t.txt", "hello world")
    out = tmp_path / "out"
    out.mkdir()
    for name in ("train.bin", "val.bin", "meta.pkl"):
        (out / name).write_bytes(b"\0\0")
    prepare_text([src], out, force=True)
    prepare_jsonl([write_jsonl(tmp_path / "s.jsonl", [{"text": "ab", "score": 0.5}, {"text": "cd", "score": 1}])], out,
                  force=True)
    assert DataDir.open(out).meta.kind == "scores"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "s.jsonl", "t.txt"]


def test_force_refuses_a_symlink_to_a_data_dir(tmp_path):
    src = write(tmp_path / "t.txt", "hello world")
    prepare_text([src], tmp_path / "real")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    before = _snapshot(tmp_path / "real")
    with pytest.raises(PrepareError, match="is a symbolic link"):
        prepare_text([src], tmp_path / "link", force=True)
    assert _snapshot(tmp_path / "real") == before and (tmp_path / "link").is_symlink()


@pytest.mark.parametrize("seed", [-1, 1.5, True, "0"])
def test_bad_seed_is_one_sentence(tmp_path, seed):
    src = write(tmp_path / "t.txt", "hello world")
    jsonl = write_jsonl(tmp_path / "s.jsonl", [{"text": "ab", "score": 0.5}, {"text": "cd", "score": 1}])
    for call in (lambda: prepare_text([src], tmp_path / "o", seed=seed),
                 lambda: prepare_jsonl([jsonl], tmp_path / "o", seed=seed)):
        with pytest.raises(PrepareError, match=rf"--seed must be a non-negative integer, got {seed!r}"):
            call()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.jsonl", "t.txt"]


# ----------------------------------------------------------------------------- BPE


def test_bpe_roundtrip(tmp_path):
    pytest.importorskip("tokenizers")
    text = ("the quick brown fox jumps over the lazy dog.\n\nThe end, said the fox — ünïcödé.\n") * 30
    meta = prepare_text([write(tmp_path / "t.txt", text)], tmp_path / "out", tokenizer="bpe", vocab_size=300)
    assert (tmp_path / "out" / "tokenizer.json").is_file()
    assert meta.tokenizer == "bpe" and 256 < meta.text_vocab_size <= 300
    dd = DataDir.open(tmp_path / "out")
    tok = dd.tokenizer
    decoded = tok.decode(np.concatenate([dd.tokens("train"), dd.tokens("val")]))
    assert decoded == text
    # The separator ids are what "\n\n" becomes in running text.
    ids = tok.encode("word.\n\nNext")
    sep = meta.separator_ids
    assert any(ids[i : i + len(sep)] == sep for i in range(len(ids)))
    assert meta.special_ids["[MASK]"] == meta.text_vocab_size
    # meta.pkl for nanoGPT tools: the text vocabulary, each id's text, so joining itos decodes.
    with open(tmp_path / "out" / "meta.pkl", "rb") as f:
        pk = pickle.load(f)
    assert pk["vocab_size"] == meta.text_vocab_size == len(pk["itos"])
    sentence = "the lazy dog said the end.\n"
    assert "".join(pk["itos"][i] for i in tok.encode(sentence)) == sentence
    assert all(pk["itos"][i] == ch for ch, i in pk["stoi"].items() if len(ch) == 1 and ch.isascii())


@pytest.mark.parametrize("tokenizer", ["char", "bpe"])
def test_encoding_in_pieces_gives_the_same_files(tmp_path, monkeypatch, tokenizer):
    if tokenizer == "bpe":
        pytest.importorskip("tokenizers")
    import mmengine.data.preparation as prep

    src = write(tmp_path / "t.txt", TRICKY_TEXT * 3)
    kw = {"tokenizer": tokenizer, "vocab_size": 300 if tokenizer == "bpe" else None}
    prepare_text([src], tmp_path / "whole", **kw)
    monkeypatch.setattr(prep, "_CHUNK_CHARS", 7)
    prepare_text([src], tmp_path / "pieces", progress=True, **kw)
    for name in ("train.bin", "val.bin", "meta.json"):
        assert (tmp_path / "whole" / name).read_bytes() == (tmp_path / "pieces" / name).read_bytes()


def test_bpe_vocab_too_small(tmp_path):
    pytest.importorskip("tokenizers")
    with pytest.raises(PrepareError, match="257"):
        prepare_text([write(tmp_path / "t.txt", "abc")], tmp_path / "out", tokenizer="bpe", vocab_size=100)


@pytest.mark.parametrize("vocab_size", [10**9, 2**20 + 1, 2**40, 256, True, 300.0])
def test_bpe_vocab_size_is_bounded_before_anything_is_written(tmp_path, vocab_size):
    """--vocab-size 1000000000 used to abort the process inside the tokenizers library (SIGABRT on a
    70.9 GB allocation) and leave a temp dir; now it is refused before a temp dir exists."""
    from mmengine.data.tokenizer import BPETokenizer, TokenizerError

    src = write(tmp_path / "t.txt", "abc")
    message = rf"BPE vocab size must be an integer from 257 .* to 1048576 \(2\*\*20\), got {vocab_size!r}"
    with pytest.raises(PrepareError, match=message):
        prepare_text([src], tmp_path / "out", tokenizer="bpe", vocab_size=vocab_size)
    with pytest.raises(PrepareError, match=message):
        prepare_jsonl([write_jsonl(tmp_path / "s.jsonl", [{"text": "ab", "score": 0.5}])], tmp_path / "out",
                      tokenizer="bpe", vocab_size=vocab_size)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.jsonl", "t.txt"]
    with pytest.raises(TokenizerError, match=message):
        BPETokenizer.train(["abc"], vocab_size)


def test_bpe_vocab_size_at_the_bound_trains(tmp_path):
    pytest.importorskip("tokenizers")
    from mmengine.data.tokenizer import MAX_BPE_VOCAB

    meta = prepare_text([write(tmp_path / "t.txt", "hello world " * 5)], tmp_path / "out", tokenizer="bpe",
                        vocab_size=MAX_BPE_VOCAB)
    assert 256 < meta.text_vocab_size < 300  # as many merges as the text has, far below the bound


TRICKY_TEXT = "Alpha beta.\n  Gamma\n\ndelta\n\n\n epsilon\nzeta  eta's  x\t\tb 12 cd,e f \u00e9t\u00e9 \u3000g h\n" * 8


@pytest.fixture(scope="module")
def bpe_tok():
    pytest.importorskip("tokenizers")
    from mmengine.data.tokenizer import BPETokenizer

    return BPETokenizer.train([TRICKY_TEXT * 4], 320)


@pytest.mark.parametrize("chunk_chars", [1, 5, 37, 100, 10_000])
def test_bpe_pieces_preserve_tokenisation(bpe_tok, chunk_chars):
    # encode_with_offsets encodes the whole string at once: the reference for the pieces.
    whole = bpe_tok.encode_with_offsets(TRICKY_TEXT)[0].tolist()
    pieces = list(bpe_tok.pieces(TRICKY_TEXT, chunk_chars))
    assert "".join(pieces) == TRICKY_TEXT
    assert len(pieces) > 1 or chunk_chars >= len(TRICKY_TEXT)
    assert [i for p in pieces for i in bpe_tok.encode_with_offsets(p)[0].tolist()] == whole
    assert bpe_tok.encode(TRICKY_TEXT) == whole  # long texts are encoded in pieces


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet="ab \n\t.'s1\u00e9\u3000", max_size=80))
def test_bpe_pieces_any_text(bpe_tok, text):
    pieces = list(bpe_tok.pieces(text, 1))
    assert "".join(pieces) == text
    assert ([i for p in pieces for i in bpe_tok.encode_with_offsets(p)[0].tolist()]
            == bpe_tok.encode_with_offsets(text)[0].tolist())


# ----------------------------------------------------------------------------- JSONL scores


def test_jsonl_scores(tmp_path):
    recs = [{"text": f"doc number {i} " + "x" * i, "score": i / 9} for i in range(10)]
    src = write_jsonl(tmp_path / "s.jsonl", recs)
    meta = prepare_jsonl([src], tmp_path / "out", val_fraction=0.2, seed=3)
    assert meta.kind == "scores"
    dd = DataDir.open(tmp_path / "out")
    seen = {}
    for split in ("train", "val"):
        toks, offs, scores = dd.documents(split)
        assert offs.dtype == np.int64 and scores.dtype == np.float32 and offs[0] == 0 and offs[-1] == len(toks)
        for d in range(len(scores)):
            seen[dd.tokenizer.decode(toks[offs[d] : offs[d + 1]])] = (split, float(scores[d]))
    assert len(seen) == 10
    assert sum(v[0] == "val" for v in seen.values()) == 2
    for r in recs:
        assert seen[r["text"]][1] == pytest.approx(r["score"])
    assert dd.labels("train") is None
    # Same seed -> same split; another seed -> (very likely) another one.
    prepare_jsonl([src], tmp_path / "out2", val_fraction=0.2, seed=3)
    assert (DataDir.open(tmp_path / "out2").documents("val")[2] == dd.documents("val")[2]).all()


def test_jsonl_split_at_least_one_each(tmp_path):
    src = write_jsonl(tmp_path / "s.jsonl", [{"text": "a", "score": 0.0}, {"text": "b", "score": 1.0}])
    meta = prepare_jsonl([src], tmp_path / "out", val_fraction=0.01)
    assert meta.counts["train_docs"] == 1 and meta.counts["val_docs"] == 1


@pytest.mark.parametrize(
    "line, msg",
    [
        ('{"text": "a", "score": 1.5}', "score.*in \\[0, 1\\]"),
        ('{"text": "a", "score": -0.1}', "score"),
        ('{"text": "a", "score": "high"}', "score"),
        ('{"text": "a", "score": true}', "score"),
        ('{"text": "a", "score": NaN}', "score"),
        ('{"text": "a"', "invalid JSON"),
        ('[1, 2]', "expected a JSON object"),
        ('{"score": 0.5}', "'text' must be a string"),
        ('{"text": "", "score": 0.5}', "empty"),
        ('{"text": "a", "score": 0.5, "spans": []}', "exactly one"),
        ('{"text": "abc", "spans": [[0, 4, 1]]}', "out of range"),
        ('{"text": "abc", "spans": [[-1, 2, 1]]}', "out of range"),
        ('{"text": "abc", "spans": [[2, 2, 1]]}', "out of range"),
        ('{"text": "abc", "spans": [[0, 2, 1], [1, 3, 2]]}', "overlap"),
        ('{"text": "abc", "spans": [[0, 2, 0]]}', "labels start at 1"),
        ('{"text": "abc", "spans": [[0, 2]]}', "start, end, label"),
        ('{"text": "abc", "spans": [[0.5, 2, 1]]}', "start, end, label"),
        ('{"text": "abc", "spans": "0-2"}', "list"),
        ('{"text": "abc", "spans": [[0, 1, 1]]}', "mixes"),
        ('{"text": "ab\\ud800c", "score": 0.5}', "lone surrogate"),
    ],
)
def test_jsonl_bad_lines_name_file_and_line(tmp_path, line, msg):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"text": "fine", "score": 0.5}\n\n' + line + "\n", encoding="utf-8")
    if "spans" in line and "mixes" not in msg:
        src.write_text('{"text": "fine", "spans": []}\n\n' + line + "\n", encoding="utf-8")
    with pytest.raises(PrepareError, match=msg) as e:
        prepare_jsonl([src], tmp_path / "out")
    assert str(e.value).startswith(f"{src}:3:")
    assert not (tmp_path / "out").exists()


def test_jsonl_non_utf8(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_bytes(b'{"text": "ok", "score": 0.1}\n{"text": "\xc3\x28", "score": 0.2}\n')
    with pytest.raises(PrepareError, match=r"bad\.jsonl:2: not valid UTF-8"):
        prepare_jsonl([src], tmp_path / "out")


def test_jsonl_without_records(tmp_path):
    src = write(tmp_path / "e.jsonl", "\n\n")
    with pytest.raises(PrepareError, match="no records"):
        prepare_jsonl([src], tmp_path / "out")


# ----------------------------------------------------------------------------- JSONL spans


def test_jsonl_spans_char_labels_aligned(tmp_path):
    recs = [
        {"text": "hello world", "spans": [[0, 5, 1]]},  # span at the start
        {"text": "abcdef", "spans": [[4, 6, 2], [0, 1, 1]]},  # span at the end, unsorted
        {"text": "plain", "spans": []},
    ]
    src = write_jsonl(tmp_path / "s.jsonl", recs)
    meta = prepare_jsonl([src], tmp_path / "out", val_fraction=0.0)
    assert meta.kind == "spans" and meta.num_token_classes == 3 and meta.label_dtype == "int16"
    dd = DataDir.open(tmp_path / "out")
    toks, labs = dd.tokens("train"), dd.labels("train")
    assert labs.dtype == np.int16 and len(labs) == len(toks)
    text = dd.tokenizer.decode(toks)
    assert text == "hello world\n\nabcdef\n\nplain"
    expected = [1] * 5 + [0] * 6 + [-1, -1] + [1, 0, 0, 0, 2, 2] + [-1, -1] + [0] * 5
    assert labs.tolist() == expected
    assert meta.counts["train_label_counts"] == [14, 6, 2]


def test_jsonl_spans_num_classes_override_and_error(tmp_path):
    src = write_jsonl(tmp_path / "s.jsonl", [{"text": "abc", "spans": [[0, 1, 2]]}, {"text": "de", "spans": []}])
    assert prepare_jsonl([src], tmp_path / "o1", num_classes=5).num_token_classes == 5
    with pytest.raises(PrepareError, match=r"s\.jsonl:1: .*label 2 >= the number of classes 2"):
        prepare_jsonl([src], tmp_path / "o2", num_classes=2)


def test_jsonl_spans_bpe_offsets(tmp_path):
    pytest.importorskip("tokenizers")
    text = "the cat sat on the mat and the dog ate the hat"
    recs = [{"text": text, "spans": [[4, 7, 1], [19, 22, 1]]}] * 20  # "cat", "mat"
    src = write_jsonl(tmp_path / "s.jsonl", recs)
    prepare_jsonl([src], tmp_path / "out", tokenizer="bpe", vocab_size=280, val_fraction=0.0)
    dd = DataDir.open(tmp_path / "out")
    toks, labs = np.asarray(dd.tokens("train")), np.asarray(dd.labels("train"))
    tok = dd.tokenizer
    labelled = tok.decode(toks[labs == 1])
    assert "cat" in labelled and "mat" in labelled and "dog" not in labelled
    # Every doc's tokens decode to its text and the separators are labelled -1.
    assert (labs == -1).sum() == 19 * len(dd.meta.separator_ids)


def test_token_labels_majority_rule():
    char_labels = np.array([0, 0, 1, 1, 1, 2, 2, 0], dtype=np.int16)
    offsets = np.array([[0, 2], [1, 3], [1, 4], [4, 7], [7, 8], [3, 3]])
    # [0,0] -> 0 ; [0,1] tie -> 1 ; [0,1,1] -> 1 ; [1,2,2] -> 2 ; [0] -> 0 ; empty -> its start char (1)
    assert _token_labels(char_labels, offsets, 3).tolist() == [0, 1, 1, 2, 0, 1]


def test_prepare_dispatch_rejects_mixed_inputs(tmp_path):
    a = write(tmp_path / "a.txt", "x")
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": "y", "score": 0.1}])
    with pytest.raises(PrepareError, match="mixing"):
        prepare([a, b], tmp_path / "out")
    with pytest.raises(PrepareError, match="num-classes"):
        prepare([a], tmp_path / "out", num_classes=3)


# ----------------------------------------------------------------------------- CLI


def test_cli_in_process(tmp_path, capsys):
    src = write(tmp_path / "t.txt", "to be or not to be\n\nthat is the question\n")
    assert main([str(src), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main([str(src), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def test_cli_subprocess_bad_jsonl_exit_2_no_traceback(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"text": "ok", "score": 0.2}\n{"text": "x", "score": 7}\n', encoding="utf-8")
    r = run_cli(src, "--out", tmp_path / "out")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert f"{src}:2:" in r.stderr and "score" in r.stderr
    assert not (tmp_path / "out").exists()


def test_cli_subprocess_ok(tmp_path):
    src = write(tmp_path / "t.txt", "some text for the cli\n" * 10)
    r = run_cli(src, "--out", tmp_path / "out", "--val-fraction", "0.2")
    assert r.returncode == 0, r.stderr
    dd = DataDir.open(tmp_path / "out")
    assert isinstance(dd.tokenizer, CharTokenizer) and dd.meta.counts["val_tokens"] == 44


def test_progress_bar_by_default_only_for_large_inputs_on_a_terminal(monkeypatch):
    from mmengine.data.preparation import PROGRESS_MIN_CHARS, _show_progress

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert _show_progress(None, PROGRESS_MIN_CHARS) and not _show_progress(None, PROGRESS_MIN_CHARS - 1)
    assert _show_progress(True, 1) and not _show_progress(False, 10**9)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert not _show_progress(None, 10**9)


def test_progress_bar_goes_to_stderr(tmp_path, capfd):
    src = write(tmp_path / "t.txt", "progress bar text\n" * 100)
    prepare_text([src], tmp_path / "out", progress=True)
    out, err = capfd.readouterr()
    assert out == "" and "encode" in err and "100%" in err


def test_input_is_directory_and_out_is_file(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(PrepareError, match="is a directory"):
        prepare_text([tmp_path / "d"], tmp_path / "out")
    src = write(tmp_path / "t.txt", "abc")
    (tmp_path / "f").write_text("x")
    with pytest.raises(PrepareError, match="not a directory"):
        prepare_text([src], tmp_path / "f")


def test_jsonl_unicode_line_separator_inside_text(tmp_path):
    # U+2028 is a line break for str.splitlines but legal inside a JSON string.
    src = write_jsonl(tmp_path / "s.jsonl", [{"text": "a\u2028b", "score": 0.5}, {"text": "c", "score": 0.1}])
    src.write_text(src.read_text().replace("\\u2028", "\u2028"), encoding="utf-8")
    meta = prepare_jsonl([src], tmp_path / "out")
    assert meta.counts["train_docs"] + meta.counts["val_docs"] == 2

"""Turn text files or labelled JSONL into an mmengine data dir (the library behind ``python -m mmengine.prepare``).

Every data dir gets ``meta.json`` (see :class:`~mmengine.data.dataset.DataMeta`) and nanoGPT's
``meta.pkl`` (``vocab_size``, ``stoi``, ``itos`` of the text vocabulary); a BPE dir also gets the
trained ``tokenizer.json``. Inputs of 8M characters or more show a progress bar on a terminal.

Plain text (any extension but .jsonl): the files are joined with a blank line between them and
split like nanoGPT: the first ``1 - val_fraction`` of the characters train, the rest validate
(at least one character each when there are two or more). ``--seed`` does not affect text data.

JSONL (every INPUT ends in .jsonl), one JSON object per line, all lines of one kind:

* ``{"text": str, "score": float in [0, 1]}`` -> "scores" data: each document's tokens kept whole,
  ``{split}.bin`` + ``{split}_offsets.npy`` (int64, n_docs + 1) + ``{split}_scores.npy`` (float32).
* ``{"text": str, "spans": [[start, end, label], ...]}`` (character offsets, end exclusive,
  label >= 1, spans may not overlap; characters outside every span are class 0) -> "spans" data:
  ``{split}.bin`` + ``{split}_labels.bin`` (int16, one per token). Documents are joined with the
  "\\n\\n" separator tokens, which are labelled -1 (ignored by the loss). A char token's label is its
  character's; a BPE token takes the label covering most of its characters (ties: the higher label).

Documents go to val by a seeded shuffle (``round(n * val_fraction)``, at least one document in each
split when there are two or more and val_fraction > 0). Blank lines are skipped; other keys are ignored.

The output is written into a temp dir next to ``--out`` and renamed into place at the end, so a
failure never leaves a half-written data dir and never damages an existing one. A non-empty
existing ``--out`` is refused unless ``--force``, and then still unless it is a data dir (only the
files a data dir holds, train.bin or val.bin among them) with no input inside it: ``--force``
never deletes anything else. ``--vocab-size`` (BPE) is bounded by ``MAX_BPE_VOCAB`` = 2**20.

Bad input (invalid UTF-8 or JSON, a score outside [0, 1], an overlapping or out-of-range span, a
label >= the number of classes, ...) raises :class:`PrepareError` naming the file and line.
"""
from __future__ import annotations

import errno
import json
import logging
import math
import os
import pickle
import shutil
import sys
import tempfile
import uuid
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Sequence

import numpy as np

from mmengine.errors import UserError

from .dataset import (
    DEFAULT_DATASET_NAME,
    META_FILENAME,
    META_PKL_FILENAME,
    SPLITS,
    DataError,
    DataMeta,
    _make_world_readable,
    bundled_corpus_path,
    foreign_entries,
    is_data_dir,
)
from .tokenizer import (
    BPE_FILENAME,
    BPETokenizer,
    CharTokenizer,
    TokenizerError,
    check_bpe_vocab_size,
    separator_ids,
)

logger = logging.getLogger(__name__)

SEPARATOR = "\n\n"
#: Default BPE vocabulary size when --vocab-size is not given.
DEFAULT_BPE_VOCAB = 4096
#: Inputs above this many characters get a progress bar (when stderr is a terminal).
PROGRESS_MIN_CHARS = 8_000_000
_CHUNK_CHARS = 1 << 20
_DOC_BATCH = 4096


class PrepareError(UserError):
    """Input that cannot be prepared; the message names the file (and line) at fault."""


# ----------------------------------------------------------------------------- reading inputs


def read_text_file(path) -> str:
    """The UTF-8 text of ``path`` (a leading BOM dropped); PrepareError names the line of bad bytes."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PrepareError(f"input file {path} does not exist") from None
    except IsADirectoryError:
        raise PrepareError(f"input {path} is a directory, not a file") from None
    except OSError as e:
        raise PrepareError(f"cannot read input file {path}: {e.strerror}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise PrepareError(f"{path}:{line}: not valid UTF-8 (byte {data[e.start]:#04x} at offset {e.start})") from None


def _show_progress(progress: bool | None, n_chars: int) -> bool:
    if progress is not None:
        return progress
    return n_chars >= PROGRESS_MIN_CHARS and sys.stderr.isatty()


def _tqdm(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="char", unit_scale=True, disable=not enabled, file=sys.stderr)


def _write_encoded(tok, text: str, path: Path, dtype: str, bar) -> int:
    """Encode ``text`` piece by piece straight into the token file ``path``; returns the token count.

    Pieces keep the peak memory at one piece's ids rather than the whole corpus as int64.
    """
    n = 0
    with open(path, "wb") as f:
        for piece in tok.pieces(text, _CHUNK_CHARS):
            ids = tok.encode_array(piece)
            ids.astype(dtype).tofile(f)
            n += len(ids)
            bar.update(len(piece))
    return n


# ----------------------------------------------------------------------------- tokenizer + output


def _build_tokenizer(kind: str, texts: Sequence[str], vocab_size: int | None, show: bool, extra_chars: str = ""):
    if kind == "char":
        if vocab_size is not None:
            raise PrepareError("--vocab-size applies only to --tokenizer bpe "
                               "(a char vocabulary is the set of characters)")
        return CharTokenizer.from_texts([*texts, extra_chars])
    if kind == "bpe":
        vs = DEFAULT_BPE_VOCAB if vocab_size is None else vocab_size
        try:
            return BPETokenizer.train(texts, vs, show_progress=show)
        except TokenizerError as e:
            raise PrepareError(str(e)) from None
    raise PrepareError(f"unknown tokenizer {kind!r}; choose 'char' or 'bpe'")


def _check_val_fraction(val_fraction: float) -> None:
    if not (isinstance(val_fraction, (int, float)) and 0.0 <= val_fraction < 1.0):
        raise PrepareError(f"--val-fraction must be in [0, 1), got {val_fraction!r}")


def _write_meta(out: Path, meta: DataMeta, tok) -> None:
    (out / META_FILENAME).write_text(json.dumps(meta.to_dict(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    if isinstance(tok, BPETokenizer):
        tok.save(out / BPE_FILENAME)
        # nanoGPT decodes by joining itos strings: give each token its text (a token holding part
        # of a multi-byte character reads as U+FFFD there; mmengine decodes through tokenizer.json).
        itos = [tok.decode([i]) for i in range(tok.vocab_size)]
    else:
        itos = tok.itos
    stoi: dict[str, int] = {}
    for i, piece in enumerate(itos):
        stoi.setdefault(piece, i)
    # nanoGPT's meta.pkl: the text vocabulary only (nanoGPT knows no special tokens).
    with open(out / META_PKL_FILENAME, "wb") as f:
        pickle.dump({"vocab_size": tok.vocab_size, "stoi": stoi, "itos": dict(enumerate(itos))}, f)


@contextmanager
def atomic_output_dir(out_dir, *, force: bool = False, keep: Sequence = ()):
    """Yield a temp dir next to ``out_dir``; on success it replaces ``out_dir`` by rename.

    An existing non-empty ``out_dir`` is refused unless ``force``; with ``force`` it must be a data
    dir (only data-dir files, see :func:`~mmengine.data.dataset.is_data_dir`; a symbolic link or any
    other folder is refused, whatever it holds), it is moved aside first and deleted only after the
    new one is in place, and it must not hold any of the ``keep`` paths (the inputs). On any error
    the temp dir is removed and ``out_dir`` is untouched.
    """
    out = Path(out_dir)
    if out.exists():
        if not out.is_dir():
            raise PrepareError(f"--out {out} exists and is not a directory")
        if any(out.iterdir()):
            if not force:
                raise PrepareError(f"output dir {out} already exists and is not empty; pass --force to replace it")
            for p in keep:
                if Path(p).resolve().is_relative_to(out.resolve()):
                    raise PrepareError(f"input {p} lies inside --out {out}, "
                                       "which --force would delete; move it out first")
            if out.is_symlink():
                raise PrepareError(f"--out {out} is a symbolic link; --force replaces only a data dir itself, "
                                   "not a link to one")
            if not is_data_dir(out):
                foreign = foreign_entries(out)
                held = (f"it holds {', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}" if foreign
                        else "it has no train.bin or val.bin")
                raise PrepareError(
                    f"--force replaces only a data dir or an empty folder, and {out} is neither "
                    f"({held}); nothing was deleted"
                )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as e:
        raise PrepareError(f"cannot create the output dir next to {out}: {e.strerror}") from None
    try:
        yield tmp
        _make_world_readable(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    try:
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(out, old)
        os.rename(tmp, out)
    except BaseException:
        if old is not None and not out.exists():
            os.rename(old, out)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------- plain text


def _split_point(n: int, val_fraction: float) -> int:
    """Number of train characters: nanoGPT's int(n * (1 - f)), nudged so train is never empty and val
    is non-empty whenever n >= 2 and f > 0."""
    n_train = max(int(n * (1.0 - val_fraction)), min(n, 1))
    if val_fraction > 0 and n >= 2:
        n_train = min(n_train, n - 1)
    return n_train


def _check_arguments(val_fraction: float, seed, tokenizer: str, vocab_size: int | None) -> None:
    """The arguments every preparation checks first, before a temp dir exists (the BPE trainer aborts the
    process on a huge vocabulary size)."""
    _check_val_fraction(val_fraction)
    if not _is_int(seed) or seed < 0:
        raise PrepareError(f"--seed must be a non-negative integer, got {seed!r}")
    if tokenizer == "bpe" and vocab_size is not None:
        try:
            check_bpe_vocab_size(vocab_size)
        except TokenizerError as e:
            raise PrepareError(str(e)) from None


def write_text_data(
    inputs: Sequence,
    out: Path,
    *,
    tokenizer: str = "char",
    vocab_size: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    progress: bool | None = None,
) -> DataMeta:
    """Write a text data dir into the existing dir ``out`` (no atomicity; see :func:`prepare_text`)."""
    _check_val_fraction(val_fraction)
    if not inputs:
        raise PrepareError("no input files given")
    texts = [read_text_file(p) for p in inputs]
    if not any(texts):
        names = ", ".join(str(p) for p in inputs)
        raise PrepareError(f"the input ({names}) is empty; there is nothing to prepare")
    for p, t in zip(inputs, texts):
        if not t:
            logger.warning("input file %s is empty; skipping it", p)
    n_files = sum(1 for t in texts if t)
    text = SEPARATOR.join(t for t in texts if t)
    del texts  # the joined copy is all we need (a single file is not copied)
    show = _show_progress(progress, len(text))
    tok = _build_tokenizer(tokenizer, [text], vocab_size, show)
    n_train = _split_point(len(text), val_fraction)
    if len(text) - n_train == 0:
        logger.warning("the validation split is empty "
                       "(input of %d characters, val_fraction=%s)", len(text), val_fraction)
    meta = DataMeta.for_vocab(
        tok.vocab_size,
        tokenizer=tok.kind,
        separator_ids=separator_ids(tok, SEPARATOR),
        kind="text",
        tokenizer_config=tok.to_meta(),
    )
    counts = {"input_chars": len(text), "input_files": n_files}
    with _tqdm(len(text), "encode", show) as bar:
        for split, part in (("train", text[:n_train]), ("val", text[n_train:])):
            counts[f"{split}_tokens"] = _write_encoded(tok, part, out / f"{split}.bin", meta.token_dtype, bar)
    meta.counts = counts
    _write_meta(out, meta, tok)
    return meta


def prepare_text(
    inputs: Sequence,
    out_dir,
    *,
    tokenizer: str = "char",
    vocab_size: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    force: bool = False,
    progress: bool | None = None,
) -> DataMeta:
    """Prepare plain text files into ``out_dir`` atomically (see the module docstring). Returns its DataMeta."""
    _check_arguments(val_fraction, seed, tokenizer, vocab_size)
    with atomic_output_dir(out_dir, force=force, keep=inputs) as tmp:
        return write_text_data(
            inputs, tmp, tokenizer=tokenizer, vocab_size=vocab_size, val_fraction=val_fraction, seed=seed,
            progress=progress,
        )


# ----------------------------------------------------------------------------- JSONL


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line of ``path``."""
    text = read_text_file(path)
    records = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise PrepareError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise PrepareError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        records.append((lineno, obj))
    return records


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _validate_record(path: Path, lineno: int, obj: dict) -> tuple[str, str, object]:
    """(kind, text, score | spans) of one JSONL record, or PrepareError naming the line."""
    where = f"{path}:{lineno}"
    text = obj.get("text")
    if not isinstance(text, str):
        raise PrepareError(f"{where}: 'text' must be a string")
    if not text:
        raise PrepareError(f"{where}: 'text' is empty")
    try:
        # JSON escapes can spell a lone surrogate ("\\ud800"), which no UTF-8 file can hold.
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise PrepareError(f"{where}: 'text' holds a lone surrogate {text[e.start]!r} at character {e.start}, "
                           "not valid Unicode") from None
    has_score, has_spans = "score" in obj, "spans" in obj
    if has_score == has_spans:
        raise PrepareError(f"{where}: a record needs exactly one of 'score' or 'spans'")
    if has_score:
        s = obj["score"]
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or not 0.0 <= s <= 1.0:
            raise PrepareError(f"{where}: 'score' must be a number in [0, 1], got {s!r}")
        return "scores", text, float(s)
    spans = obj["spans"]
    if not isinstance(spans, list):
        raise PrepareError(f"{where}: 'spans' must be a list of [start, end, label]")
    parsed = []
    for sp in spans:
        if not (isinstance(sp, list) and len(sp) == 3 and all(_is_int(v) for v in sp)):
            raise PrepareError(f"{where}: each span must be [start, end, label] with integers, got {sp!r}")
        start, end, label = sp
        if not 0 <= start < end <= len(text):
            raise PrepareError(
                f"{where}: span {sp} is out of range for a text of {len(text)} characters "
                "(need 0 <= start < end <= len)"
            )
        if label < 1:
            raise PrepareError(f"{where}: span {sp} has label {label}; span labels start at 1 (0 = unlabelled)")
        parsed.append((start, end, label))
    parsed.sort()
    for a, b in zip(parsed, parsed[1:]):
        if b[0] < a[1]:
            raise PrepareError(f"{where}: spans {list(a)} and {list(b)} overlap")
    return "spans", text, parsed


def _token_labels(char_labels: np.ndarray, offsets: np.ndarray, num_classes: int) -> np.ndarray:
    """Label per token = the class covering most of its characters (ties: the higher class).

    ``offsets`` (n, 2) are [start, end) character ranges; an empty range takes its start character's label.
    """
    n = len(offsets)
    if n == 0:
        return np.zeros(0, dtype=np.int16)
    starts = np.clip(offsets[:, 0], 0, len(char_labels))
    ends = np.clip(np.maximum(offsets[:, 1], starts + 1), 0, len(char_labels))
    counts = np.empty((num_classes, n), dtype=np.int64)  # (C, n_tokens)
    for c in range(num_classes):
        cs = np.concatenate([[0], np.cumsum(char_labels == c)])
        counts[c] = cs[ends] - cs[starts]
    # argmax over the reversed class axis picks the highest class among ties.
    return (num_classes - 1 - np.argmax(counts[::-1], axis=0)).astype(np.int16)


def _char_labels(spans: Sequence[list], lengths: Sequence[int]) -> np.ndarray:
    """int16 class of every character of documents laid end to end (0 outside every span).

    ``spans[i]`` are document i's validated, non-overlapping (start, end, label) triples.
    """
    base = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    rows = np.array([(base[i] + a, base[i] + b, lab) for i, doc in enumerate(spans) for a, b, lab in doc],
                    dtype=np.int64)
    # Spans do not overlap, so +label at each start and -label at each end, summed, is the label.
    diff = np.zeros(base[-1] + 1, dtype=np.int64)
    if len(rows):
        np.add.at(diff, rows[:, 0], rows[:, 2])
        np.add.at(diff, rows[:, 1], -rows[:, 2])
    return np.cumsum(diff[:-1]).astype(np.int16)


def _with_separators(values: np.ndarray, lengths: np.ndarray, sep: np.ndarray, *, lead: bool) -> np.ndarray:
    """``values`` of documents laid end to end (``lengths`` each) with ``sep`` between documents,
    and before the first one too when ``lead`` (a batch that continues a split)."""
    k = len(lengths) - (0 if lead else 1)  # number of separators
    if k <= 0 or len(sep) == 0:
        return values
    doc = np.repeat(np.arange(len(lengths)), lengths)  # document of each value
    pos = np.arange(len(values)) + len(sep) * (doc + (1 if lead else 0))
    out = np.empty(len(values) + k * len(sep), dtype=values.dtype)
    is_sep = np.ones(len(out), dtype=bool)
    is_sep[pos] = False
    out[pos] = values
    out[is_sep] = np.tile(sep, k)
    return out


def _doc_split(n_docs: int, val_fraction: float, seed: int) -> np.ndarray:
    """Boolean (n_docs,) array, True for the documents that go to val."""
    n_val = int(round(n_docs * val_fraction))
    if val_fraction > 0 and n_docs >= 2:
        n_val = min(max(n_val, 1), n_docs - 1)
    perm = np.random.default_rng([seed, 0x5EED]).permutation(n_docs)
    is_val = np.zeros(n_docs, dtype=bool)
    is_val[perm[:n_val]] = True
    return is_val


def _read_records(inputs: Sequence) -> tuple[str, list[str], list, list[str]]:
    """(kind, texts, payloads, "file:line" of each) of all JSONL records, validated, one kind only."""
    kind = None
    texts: list[str] = []
    payloads: list = []
    where: list[str] = []
    for p in inputs:
        p = Path(p)
        for lineno, obj in _read_jsonl(p):
            k, text, payload = _validate_record(p, lineno, obj)
            if kind is None:
                kind = k
            elif k != kind:
                raise PrepareError(f"{p}:{lineno}: mixes '{k}' records into '{kind}' data; use one kind per dataset")
            texts.append(text)
            payloads.append(payload)
            where.append(f"{p}:{lineno}")
    if kind is None:
        raise PrepareError(f"the input ({', '.join(str(p) for p in inputs)}) has no records; "
                           "there is nothing to prepare")
    return kind, texts, payloads, where


def _span_classes(payloads: list, where: list[str], num_classes: int | None) -> int:
    """The number of classes of span data (--num-classes, else max label + 1, at least 2), checked."""
    max_label = max((lab for spans in payloads for _, _, lab in spans), default=0)
    n_classes = num_classes if num_classes is not None else max(2, max_label + 1)
    for spans, w in zip(payloads, where):
        for sp in spans:
            if sp[2] >= n_classes:
                raise PrepareError(f"{w}: span {list(sp)} has label {sp[2]} >= the number of classes {n_classes}")
    if n_classes > np.iinfo(np.int16).max:
        raise PrepareError(f"{n_classes} classes do not fit the int16 label files")
    return n_classes


def write_jsonl_data(
    inputs: Sequence,
    out: Path,
    *,
    tokenizer: str = "char",
    vocab_size: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    num_classes: int | None = None,
    progress: bool | None = None,
) -> DataMeta:
    """Write a "scores" or "spans" data dir into the existing dir ``out`` (see :func:`prepare_jsonl`)."""
    _check_val_fraction(val_fraction)
    if not inputs:
        raise PrepareError("no input files given")
    if num_classes is not None and (not _is_int(num_classes) or num_classes < 2):
        raise PrepareError(f"--num-classes must be an integer >= 2, got {num_classes!r}")
    if not _is_int(seed) or seed < 0:
        raise PrepareError(f"--seed must be a non-negative integer, got {seed!r}")
    kind, texts, payloads, where = _read_records(inputs)
    n_classes = _span_classes(payloads, where, num_classes) if kind == "spans" else None
    total_chars = sum(len(t) for t in texts)
    show = _show_progress(progress, total_chars)
    # The separator's characters join "spans" documents, so they must be in a char vocabulary.
    tok = _build_tokenizer(tokenizer, texts, vocab_size, show, extra_chars=SEPARATOR if kind == "spans" else "")
    meta = DataMeta.for_vocab(
        tok.vocab_size,
        tokenizer=tok.kind,
        separator_ids=separator_ids(tok, SEPARATOR),
        kind=kind,
        num_token_classes=n_classes,
        label_dtype="int16" if kind == "spans" else None,
        tokenizer_config=tok.to_meta(),
    )
    is_val = _doc_split(len(texts), val_fraction, seed)
    counts: dict = {"input_chars": total_chars, "input_files": len(inputs)}
    sep = np.asarray(meta.separator_ids, dtype=np.int64)
    with _tqdm(total_chars, "encode", show) as bar:
        for split in SPLITS:
            idx = np.flatnonzero(is_val if split == "val" else ~is_val)
            lengths = []
            label_counts = np.zeros(n_classes or 0, dtype=np.int64)
            labels_file = open(out / f"{split}_labels.bin", "wb") if kind == "spans" else nullcontext()
            with open(out / f"{split}.bin", "wb") as f_tok, labels_file as f_lab:
                # Batches of documents: parallel BPE, bounded memory, a moving progress bar.
                for b0 in range(0, len(idx), _DOC_BATCH):
                    docs = [texts[d] for d in idx[b0 : b0 + _DOC_BATCH]]
                    ids, offs, lens = tok.encode_documents(docs)
                    lengths.append(lens)
                    if kind == "spans":
                        spans = [payloads[d] for d in idx[b0 : b0 + _DOC_BATCH]]
                        labels = _token_labels(_char_labels(spans, [len(t) for t in docs]), offs, n_classes)
                        label_counts += np.bincount(labels, minlength=n_classes)
                        # "spans" documents are joined by the separator, labelled -1 (no loss).
                        ids = _with_separators(ids, lens, sep, lead=b0 > 0)
                        labels = _with_separators(labels, lens, np.full(len(sep), -1), lead=b0 > 0)
                        labels.astype(np.int16).tofile(f_lab)
                    ids.astype(meta.token_dtype).tofile(f_tok)
                    bar.update(sum(len(t) for t in docs))
            lengths = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
            n_sep = len(sep) * max(len(idx) - 1, 0) if kind == "spans" else 0
            counts[f"{split}_tokens"] = int(lengths.sum()) + n_sep
            counts[f"{split}_docs"] = int(len(idx))
            if kind == "spans":
                counts[f"{split}_label_counts"] = label_counts.tolist()
            else:
                np.save(out / f"{split}_offsets.npy", np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
                np.save(out / f"{split}_scores.npy", np.asarray([payloads[d] for d in idx], dtype=np.float32))
    if counts["val_docs"] == 0:
        logger.warning("the validation split is empty (%d document(s), val_fraction=%s)", len(texts), val_fraction)
    meta.counts = counts
    _write_meta(out, meta, tok)
    return meta


def prepare_jsonl(
    inputs: Sequence,
    out_dir,
    *,
    tokenizer: str = "char",
    vocab_size: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    num_classes: int | None = None,
    force: bool = False,
    progress: bool | None = None,
) -> DataMeta:
    """Prepare labelled JSONL files ({"text", "score"} or {"text", "spans"}) into ``out_dir`` atomically."""
    _check_arguments(val_fraction, seed, tokenizer, vocab_size)
    with atomic_output_dir(out_dir, force=force, keep=inputs) as tmp:
        return write_jsonl_data(
            inputs, tmp, tokenizer=tokenizer, vocab_size=vocab_size, val_fraction=val_fraction, seed=seed,
            num_classes=num_classes, progress=progress,
        )


def is_jsonl(path) -> bool:
    """True for a ``.jsonl`` file name."""
    return str(path).lower().endswith(".jsonl")


def prepare(inputs: Sequence, out_dir, *, num_classes: int | None = None, **kwargs) -> DataMeta:
    """Dispatch on the inputs: all ``.jsonl`` -> :func:`prepare_jsonl`, none -> :func:`prepare_text`."""
    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise PrepareError("no input files given")
    flags = {is_jsonl(p) for p in inputs}
    if len(flags) > 1:
        raise PrepareError("mixing .jsonl and plain text inputs is not supported; prepare them separately")
    if flags == {True}:
        return prepare_jsonl(inputs, out_dir, num_classes=num_classes, **kwargs)
    if num_classes is not None:
        raise PrepareError("--num-classes applies only to JSONL inputs with 'spans'")
    return prepare_text(inputs, out_dir, **kwargs)


# ----------------------------------------------------------------------------- the bundled corpus


def cache_root(cache_dir=None) -> Path:
    """``cache_dir``, else ``$MMENGINE_CACHE``, else ``~/.cache/mmengine``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("MMENGINE_CACHE")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "mmengine"


def default_data_dir(cache_dir=None) -> Path:
    """The bundled tiny-Shakespeare corpus prepared with the char tokenizer, prepared on first use.

    Lives in ``<cache root>/tinyshakespeare-char`` (see :func:`cache_root`). Preparation happens in a
    private temp dir that is renamed into place, so a reader never sees a half-written dir and
    concurrent callers (e.g. DDP ranks) are safe: the loser of the rename race discards its copy.
    """
    root = cache_root(cache_dir)
    target = root / DEFAULT_DATASET_NAME
    if (target / META_FILENAME).is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_DATASET_NAME}.tmp-", dir=root))
    try:
        write_text_data([bundled_corpus_path()], tmp, tokenizer="char", val_fraction=0.1, seed=0, progress=False)
        _make_world_readable(tmp)
        try:
            os.rename(tmp, target)
            logger.info("prepared the bundled corpus into %s", target)
        except OSError as e:
            # Another process won the race (target now a non-empty dir): use its copy.
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY) and not (target / META_FILENAME).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if not (target / META_FILENAME).is_file():
        raise DataError(f"{target} exists but holds no {META_FILENAME}; delete it so it can be prepared again")
    return target

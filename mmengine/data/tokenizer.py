"""Tokenizers for mmengine data dirs: characters, or a byte-level BPE trained locally.

Both map text to ids in ``[0, vocab_size)``; ``vocab_size`` here is the *text* vocabulary only.
The special tokens ([MASK], [CLS], [PAD], [SEP]) are not part of a tokenizer: the data dir puts
them right after the text vocabulary (see :mod:`mmengine.data.dataset`).

numpy only; the BPE tokenizer needs the optional ``tokenizers`` package (``pip install
mmengine-diffusion[bpe]``) and imports it lazily, so the character path works without it.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from mmengine.errors import DataError

logger = logging.getLogger(__name__)

#: Name of the BPE tokenizer file inside a data dir.
BPE_FILENAME = "tokenizer.json"
MAX_CODE_POINT = 0x10FFFF
_SCAN_CHARS = 1 << 22
#: BPE pieces of about 4k characters encode ~2x faster than megabyte pieces (measured, 2 cores).
_BPE_PIECE_CHARS = 1 << 12
_BPE_SAFE_CUT = re.compile(r"(?<=[a-z]) (?=[a-z])")
#: Smallest BPE vocabulary: the 256 byte tokens and one merge.
MIN_BPE_VOCAB = 257
#: Largest BPE vocabulary ``BPETokenizer.train`` accepts: 2**20, four times the largest vocabularies
#: in use (~256k). The HF trainer reserves its whole vocabulary up front, a hash map and a list of
#: about 57 bytes per requested entry (94 MB of address space at 2**20), and aborts the process when that allocation
#: fails: --vocab-size 1000000000 asked for 70.9 GB and died of SIGABRT, leaving its temp dir. Its
#: ids are u32, as are our token files, so no bound above 2**32 could work anyway.
MAX_BPE_VOCAB = 1 << 20


def code_points(text: str) -> np.ndarray:
    """The uint32 code point of every character of ``text`` (``ord`` of each), without a Python loop.

    UTF-32 stores one 4-byte unit per character; "surrogatepass" keeps a lone surrogate (which a
    ``str`` may hold, e.g. from JSON "\\ud800") as its own code point instead of raising.
    """
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


class TokenizerError(DataError):
    """A tokenizer cannot be built, loaded or applied (one sentence saying why)."""


class CharTokenizer:
    """One id per character; the vocabulary is the sorted set of characters of the training text.

    ``encode`` raises :class:`TokenizerError` for a character outside the vocabulary (naming it),
    because silently dropping or remapping characters would misalign span labels.
    """

    kind = "char"

    def __init__(self, chars: Sequence[str]):
        chars = list(chars)
        if any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise TokenizerError("a character vocabulary must be a list of single characters")
        if len(set(chars)) != len(chars):
            raise TokenizerError("a character vocabulary must not contain duplicates")
        self.itos: list[str] = chars
        self.stoi: dict[str, int] = {c: i for i, c in enumerate(chars)}
        # Lookup table code point -> id, so encoding megabytes of text is one gather. -1 marks a
        # character outside the vocabulary; the last entry is such a -1, so a code point beyond the
        # table is clipped onto it and flagged too.
        codes = np.array([ord(c) for c in chars], dtype=np.int64)
        self._lut = np.full(int(codes.max(initial=-1)) + 2, -1, dtype=np.int64)
        self._lut[codes] = np.arange(len(chars))

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """Vocabulary = sorted set of the characters of ``text``."""
        return cls.from_texts([text])

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> CharTokenizer:
        """Vocabulary = the characters of all ``texts``, sorted by code point (as ``sorted(set(...))``)."""
        seen = np.zeros(MAX_CODE_POINT + 1, dtype=bool)
        for text in texts:
            # In slices, so that a 100 MB text never becomes a 400 MB code-point array at once.
            for i in range(0, len(text), _SCAN_CHARS):
                seen[code_points(text[i : i + _SCAN_CHARS])] = True
        return cls([chr(c) for c in np.flatnonzero(seen)])

    @property
    def vocab_size(self) -> int:
        """Number of text tokens (specials excluded)."""
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        """Ids of the characters of ``text`` (a list of ints)."""
        return self.encode_array(text).tolist()

    def encode_array(self, text: str) -> np.ndarray:
        """Like :meth:`encode` but returns an int64 numpy array (fast for megabytes of text)."""
        codes = code_points(text)
        ids = self._lut[np.minimum(codes, len(self._lut) - 1)]
        if ids.size and ids.min() < 0:
            ch = chr(int(codes[int(np.argmax(ids < 0))]))
            raise TokenizerError(f"character {ch!r} is not in the tokenizer's vocabulary")
        return ids

    @staticmethod
    def pieces(text: str, chunk_chars: int) -> Iterator[str]:
        """Consecutive slices of ``text`` of ``chunk_chars`` characters (any cut keeps char ids)."""
        for i in range(0, len(text), chunk_chars):
            yield text[i : i + chunk_chars]

    def encode_with_offsets(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Ids and (n, 2) character offsets [start, end) of each token (one character each)."""
        ids, offsets, _ = self.encode_documents([text])
        return ids, offsets

    def encode_documents(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each text encoded on its own, laid end to end: ``(ids, offsets (n, 2), lengths)``.

        ``offsets`` are [start, end) character ranges into ``"".join(texts)``; ``lengths`` (int64,
        one per text) are the token counts. Characters never merge, so one call encodes them all.
        """
        ids = self.encode_array("".join(texts))
        starts = np.arange(len(ids), dtype=np.int64)
        return ids, np.stack([starts, starts + 1], axis=1), np.array([len(t) for t in texts], dtype=np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        """Text for ``ids``; ids outside the text vocabulary (e.g. specials) raise TokenizerError."""
        out = []
        n = len(self.itos)
        for i in ids:
            i = int(i)
            if not 0 <= i < n:
                raise TokenizerError(f"id {i} is outside the character vocabulary of size {n}")
            out.append(self.itos[i])
        return "".join(out)

    def to_meta(self) -> dict:
        """Plain-JSON description stored in meta.json (``{"type": "char", "chars": [...]}``)."""
        return {"type": "char", "chars": list(self.itos)}

    @classmethod
    def from_meta(cls, meta: dict, data_dir: Path | None = None) -> CharTokenizer:
        """Inverse of :meth:`to_meta`; also accepts nanoGPT's ``{"itos": {id: ch}}`` / ``{"stoi": ...}``."""
        if "chars" in meta:
            return cls(meta["chars"])
        if "itos" in meta:
            itos = meta["itos"]
            if isinstance(itos, dict):
                return cls([itos[i] for i in sorted(itos, key=int)])
            return cls(list(itos))
        if "stoi" in meta:
            stoi = meta["stoi"]
            return cls([c for c, _ in sorted(stoi.items(), key=lambda kv: kv[1])])
        raise TokenizerError("character tokenizer metadata needs 'chars', 'itos' or 'stoi'")


def check_bpe_vocab_size(vocab_size) -> int:
    """``vocab_size`` if it is an integer in [MIN_BPE_VOCAB, MAX_BPE_VOCAB], else TokenizerError saying so."""
    if (isinstance(vocab_size, bool) or not isinstance(vocab_size, int)
            or not MIN_BPE_VOCAB <= vocab_size <= MAX_BPE_VOCAB):
        raise TokenizerError(
            f"BPE vocab size must be an integer from {MIN_BPE_VOCAB} (256 bytes + 1 merge) to {MAX_BPE_VOCAB} (2**20), "
            f"got {vocab_size!r}"
        )
    return vocab_size


def _require_tokenizers():
    try:
        import tokenizers
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise TokenizerError(
            "the BPE tokenizer needs the 'tokenizers' package; install it with "
            "`pip install tokenizers` (or `pip install mmengine-diffusion[bpe]`)"
        ) from e
    return tokenizers


class BPETokenizer:
    """Byte-level BPE (GPT-2 style) from HF ``tokenizers``, trained locally on the input text.

    Every string is encodable (byte fallback), so no input character is ever lost.
    """

    kind = "bpe"

    def __init__(self, tokenizer):
        self._tk = tokenizer

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, *, show_progress: bool = False) -> BPETokenizer:
        """Train a byte-level BPE with at most ``vocab_size`` tokens (see :func:`check_bpe_vocab_size`)."""
        check_bpe_vocab_size(vocab_size)  # before the trainer can abort the process
        _require_tokenizers()
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tk = Tokenizer(models.BPE())
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=[],
            show_progress=show_progress,
        )
        # Pieces instead of whole texts: the same word counts (hence the same merges), about half
        # the time and memory of one multi-megabyte sequence.
        tk.train_from_iterator((p for t in texts for p in cls.pieces(t, _BPE_PIECE_CHARS)), trainer=trainer)
        return cls(tk)

    @classmethod
    def load(cls, path: Path) -> BPETokenizer:
        """Load a ``tokenizer.json`` written by :meth:`save`."""
        _require_tokenizers()
        from tokenizers import Tokenizer

        path = Path(path)
        if not path.is_file():
            raise TokenizerError(f"BPE tokenizer file {path} does not exist")
        try:
            return cls(Tokenizer.from_file(str(path)))
        except Exception as e:  # tokenizers raises a bare Exception on malformed files
            raise TokenizerError(f"cannot read BPE tokenizer file {path}: {e}") from e

    def save(self, path: Path) -> None:
        """Write ``tokenizer.json``."""
        self._tk.save(str(path))

    @property
    def vocab_size(self) -> int:
        """Number of text tokens (specials excluded)."""
        return self._tk.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``."""
        return self.encode_array(text).tolist()

    def encode_array(self, text: str) -> np.ndarray:
        """int64 ids of ``text``; a long text is encoded in pieces, in parallel (Rust threads)."""
        pieces = list(self.pieces(text, _BPE_PIECE_CHARS))
        if len(pieces) <= 1:
            return np.asarray(self._tk.encode(text).ids, dtype=np.int64)
        # encode_batch_fast (tokenizers >= 0.21) skips the offsets we do not need here.
        encode_batch = getattr(self._tk, "encode_batch_fast", self._tk.encode_batch)
        return np.concatenate([np.asarray(e.ids, dtype=np.int64) for e in encode_batch(pieces)])

    @staticmethod
    def pieces(text: str, chunk_chars: int) -> Iterator[str]:
        """Consecutive pieces of ``text`` of about ``chunk_chars`` characters whose encodings,
        concatenated, equal the encoding of ``text``.

        Byte-level BPE encodes each pre-token (GPT-2's regex: words with at most one leading
        space, numbers, punctuation runs, whitespace runs) on its own. A cut right before a space
        that stands between two lowercase ASCII letters ("a|␣b") ends one pre-token and starts the
        next one whatever surrounds it, at the end or start of a string too; a cut inside a
        whitespace run would not be safe ("x\n\n" alone ends in one "\n\n" pre-token, in running
        text in two "\n"). A text without such a place stays whole.
        """
        start = 0
        while len(text) - start > chunk_chars:
            m = _BPE_SAFE_CUT.search(text, start + chunk_chars)
            if m is None:
                break
            yield text[start : m.start()]
            start = m.start()
        if start < len(text):
            yield text[start:]

    def encode_with_offsets(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Ids and (n, 2) character offsets [start, end) of each token into ``text``.

        A character split over several byte tokens gives each of them that character's range.
        """
        ids, offsets, _ = self.encode_documents([text])
        return ids, offsets

    def encode_documents(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each text encoded on its own (in parallel), laid end to end: ``(ids, offsets (n, 2), lengths)``.

        ``offsets`` are [start, end) character ranges into ``"".join(texts)`` (see
        :meth:`encode_with_offsets`); ``lengths`` (int64, one per text) are the token counts.
        """
        encs = self._tk.encode_batch(list(texts))
        lengths = np.array([len(e.ids) for e in encs], dtype=np.int64)
        if not encs or not lengths.sum():
            return np.zeros(0, dtype=np.int64), np.zeros((0, 2), dtype=np.int64), lengths
        ids = np.concatenate([np.asarray(e.ids, dtype=np.int64) for e in encs])
        offsets = np.concatenate([np.asarray(e.offsets, dtype=np.int64).reshape(-1, 2) for e in encs])  # (n, 2)
        char_base = np.concatenate([[0], np.cumsum([len(t) for t in texts])[:-1]]).astype(np.int64)
        return ids, offsets + np.repeat(char_base, lengths)[:, None], lengths

    def decode(self, ids: Iterable[int]) -> str:
        """Text for ``ids`` (ids must be text ids, not specials)."""
        ids = [int(i) for i in ids]
        n = self.vocab_size
        for i in ids:
            if not 0 <= i < n:
                raise TokenizerError(f"id {i} is outside the BPE vocabulary of size {n}")
        return self._tk.decode(ids)

    def to_meta(self) -> dict:
        """Plain-JSON description stored in meta.json; the model itself is in ``tokenizer.json``."""
        return {"type": "bpe", "file": BPE_FILENAME}

    @classmethod
    def from_meta(cls, meta: dict, data_dir: Path) -> BPETokenizer:
        """Load the tokenizer file named in ``meta`` from ``data_dir``."""
        return cls.load(Path(data_dir) / meta.get("file", BPE_FILENAME))


def load_tokenizer(meta: dict, data_dir: Path):
    """Tokenizer described by a data dir's metadata.

    ``meta`` is either the tokenizer entry itself (``{"type": "char", ...}``) or a whole
    meta.json dict (its ``"tokenizer_config"`` entry is used). Returns None for a data dir
    without tokenizer information (e.g. a nanoGPT dir with no meta.pkl).
    """
    if "tokenizer_config" in meta:
        meta = meta["tokenizer_config"]
    if not meta:
        return None
    kind = meta.get("type")
    if kind == "char":
        return CharTokenizer.from_meta(meta, data_dir)
    if kind == "bpe":
        return BPETokenizer.from_meta(meta, data_dir)
    raise TokenizerError(f"unknown tokenizer type {kind!r} in the data dir metadata (expected 'char' or 'bpe')")


def separator_ids(tokenizer, separator: str = "\n\n") -> list[int]:
    """Ids that ``separator`` becomes *in running text*, for paragraph-start detection.

    Byte-level BPE tokenises "\\n\\n" alone as one merged token but "\\n\\nWord" as two "\\n"
    tokens (the pre-tokenizer keeps the last whitespace apart), so the separator is encoded in
    front of a letter and only the tokens inside the separator's characters are kept.
    Returns [] when the separator is not representable (a character tokenizer without "\\n").
    """
    if getattr(tokenizer, "kind", None) == "char":
        try:
            return tokenizer.encode(separator)
        except TokenizerError:
            return []
    probe = separator + "A"
    try:
        ids, offs = tokenizer.encode_with_offsets(probe)
    except TokenizerError:
        return []
    keep = offs[:, 1] <= len(separator)
    return [int(i) for i in ids[keep]]

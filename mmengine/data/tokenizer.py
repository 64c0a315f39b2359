"""Tokenizers for mmengine data dirs: characters, or a byte-level BPE trained locally.

Both map text to ids in ``[0, vocab_size)``; ``vocab_size`` here is the *text* vocabulary only.
The special tokens ([MASK], [CLS], [PAD], [SEP]) are not part of a tokenizer: the data dir puts
them right after the text vocabulary (see :mod:`mmengine.data.dataset`).

numpy only; the BPE tokenizer needs the optional ``tokenizers`` package (``pip install
mmengine[bpe]``) and imports it lazily, so the character path works without it.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

logger = logging.getLogger(__name__)

#: Name of the BPE tokenizer file inside a data dir.
BPE_FILENAME = "tokenizer.json"


class TokenizerError(ValueError):
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
        # Sorted code points + their ids give a vectorised encoder (searchsorted) for big inputs.
        codes = np.array([ord(c) for c in chars], dtype=np.int64)
        order = np.argsort(codes)
        self._sorted_codes = codes[order]
        self._sorted_ids = order.astype(np.int64)

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        """Vocabulary = sorted set of the characters of ``text``."""
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        """Number of text tokens (specials excluded)."""
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        """Ids of the characters of ``text`` (a list of ints)."""
        return self.encode_array(text).tolist()

    def encode_array(self, text: str) -> np.ndarray:
        """Like :meth:`encode` but returns an int64 numpy array (fast for megabytes of text)."""
        if not text:
            return np.zeros(0, dtype=np.int64)
        # utf-32-le gives one uint32 code point per character without a Python loop.
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        if len(self._sorted_codes) == 0:
            raise TokenizerError(f"character {text[0]!r} is not in the (empty) vocabulary")
        pos = np.searchsorted(self._sorted_codes, codes)
        pos_c = np.minimum(pos, len(self._sorted_codes) - 1)
        bad = self._sorted_codes[pos_c] != codes
        if bad.any():
            ch = chr(int(codes[int(np.argmax(bad))]))
            raise TokenizerError(f"character {ch!r} is not in the tokenizer's vocabulary")
        return self._sorted_ids[pos_c]

    def encode_with_offsets(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Ids and (n, 2) character offsets [start, end) of each token (one character each)."""
        ids = self.encode_array(text)
        starts = np.arange(len(ids), dtype=np.int64)
        return ids, np.stack([starts, starts + 1], axis=1)

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
    def from_meta(cls, meta: dict, data_dir: Path | None = None) -> "CharTokenizer":
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


def _require_tokenizers():
    try:
        import tokenizers  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise TokenizerError(
            "the BPE tokenizer needs the 'tokenizers' package; install it with "
            "`pip install tokenizers` (or `pip install mmengine[bpe]`)"
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
    def train(cls, texts: Iterable[str], vocab_size: int, *, show_progress: bool = False) -> "BPETokenizer":
        """Train a byte-level BPE with at most ``vocab_size`` tokens (>= 257: the 256 bytes + 1 merge)."""
        _require_tokenizers()
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        if not isinstance(vocab_size, int) or vocab_size < 257:
            raise TokenizerError(f"BPE vocab size must be an integer >= 257 (256 bytes + merges), got {vocab_size!r}")
        tk = Tokenizer(models.BPE())
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=[],
            show_progress=show_progress,
        )
        tk.train_from_iterator(texts, trainer=trainer)
        return cls(tk)

    @classmethod
    def load(cls, path: Path) -> "BPETokenizer":
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
        return self._tk.encode(text).ids

    def encode_array(self, text: str) -> np.ndarray:
        """int64 ids of ``text``."""
        return np.asarray(self._tk.encode(text).ids, dtype=np.int64)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """Encode many strings in parallel (Rust threads); int64 arrays."""
        return [np.asarray(e.ids, dtype=np.int64) for e in self._tk.encode_batch(texts)]

    def encode_with_offsets(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Ids and (n, 2) character offsets [start, end) of each token into ``text``.

        A character split over several byte tokens gives each of them that character's range.
        """
        enc = self._tk.encode(text)
        ids = np.asarray(enc.ids, dtype=np.int64)
        offs = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)  # (n, 2)
        return ids, offs

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
    def from_meta(cls, meta: dict, data_dir: Path) -> "BPETokenizer":
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

"""Reading a prepared data dir: token files, label files, documents and their metadata.

A data dir written by ``python -m mmengine.prepare`` holds::

    meta.json                  DataMeta.to_dict(): vocabulary sizes, special ids, dtype, counts, ...
    train.bin, val.bin         token ids, flat, uint16 (uint32 when vocab_size > 65536)
    train_labels.bin, ...      "spans" data: int16 class per token, aligned with the tokens (-1 = no label)
    train_offsets.npy, ...     "scores" data: int64 document offsets (n_docs + 1)
    train_scores.npy, ...      "scores" data: float32 score per document, in [0, 1]
    tokenizer.json             BPE data: the trained tokenizer
    meta.pkl                   nanoGPT's {vocab_size, stoi, itos} of the text vocabulary, for nanoGPT tools

A nanoGPT data dir (``train.bin``/``val.bin`` as uint16 + ``meta.pkl``, no ``meta.json``) opens as it
is: the special tokens are appended after its ``vocab_size``. A dir with neither ``meta.json`` nor
``meta.pkl`` (e.g. nanoGPT's GPT-2 BPE datasets) needs the text vocabulary size passed explicitly,
``DataDir.open(path, vocab_size=50257)``: guessing it would silently build a wrong embedding table.

numpy only (no torch import).
"""
from __future__ import annotations

import importlib.resources
import json
import logging
import os
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mmengine.errors import DataError

from .tokenizer import BPE_FILENAME, load_tokenizer

logger = logging.getLogger(__name__)

#: Special tokens, in id order, placed right after the text vocabulary.
SPECIAL_TOKENS = ("[MASK]", "[CLS]", "[PAD]", "[SEP]")
SPLITS = ("train", "val")
META_FILENAME = "meta.json"
META_PKL_FILENAME = "meta.pkl"
#: Version of the meta.json layout written by this module.
META_FORMAT_VERSION = 1
DATA_KINDS = ("text", "scores", "spans")
#: Name of the prepared bundled corpus inside the cache root.
DEFAULT_DATASET_NAME = "tinyshakespeare-char"
#: Every file name a data dir holds: what prepare writes, and nanoGPT's train.bin / val.bin / meta.pkl.
DATA_DIR_FILES = frozenset(
    {META_FILENAME, META_PKL_FILENAME, BPE_FILENAME}
    | {f"{split}{suffix}" for split in SPLITS for suffix in (".bin", "_labels.bin", "_offsets.npy", "_scores.npy")}
)



def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def special_token_ids(text_vocab_size: int) -> dict[str, int]:
    """The special ids for a text vocabulary of ``text_vocab_size`` tokens."""
    return {tok: text_vocab_size + i for i, tok in enumerate(SPECIAL_TOKENS)}


def token_dtype_for(vocab_size: int) -> str:
    """'uint16' when every id (< vocab_size) fits in 16 bits, else 'uint32'."""
    return "uint16" if vocab_size <= 65536 else "uint32"


@dataclass
class DataMeta:
    """Everything the trainer needs to know about a data dir (stored as meta.json).

    Fields:
        vocab_size: text vocabulary + special tokens = the model's embedding size.
        text_vocab_size: number of text tokens; ids [0, text_vocab_size) are text.
        tokenizer: "char", "bpe", or "unknown" (nanoGPT dir without meta.pkl).
        special_ids: {"[MASK]": id, "[CLS]": id, "[PAD]": id, "[SEP]": id}, all >= text_vocab_size.
        token_dtype: "uint16" or "uint32", dtype of the *.bin token files.
        separator_ids: ids of the paragraph separator "\\n\\n" in running text ([] if unknown).
        kind: "text" (plain corpus), "scores" (documents + one score each) or "spans" (per-token labels).
        num_token_classes: number of label classes for "spans" data (None otherwise).
        counts: {"train_tokens", "val_tokens", ...} informational counts.
        tokenizer_config: {"type": "char", "chars": [...]} or {"type": "bpe", "file": "tokenizer.json"}; {} if none.
        label_dtype: dtype of *_labels.bin ("int16") for "spans" data, else None.
        source: "mmengine" or "nanogpt" (read from meta.pkl / raw bins).
    """

    vocab_size: int
    text_vocab_size: int
    tokenizer: str
    special_ids: dict[str, int]
    token_dtype: str
    separator_ids: list[int] = field(default_factory=list)
    kind: str = "text"
    num_token_classes: int | None = None
    counts: dict = field(default_factory=dict)
    tokenizer_config: dict = field(default_factory=dict)
    label_dtype: str | None = None
    source: str = "mmengine"

    def __post_init__(self):
        self.validate()

    @classmethod
    def for_vocab(cls, text_vocab_size: int, **kwargs) -> DataMeta:
        """A DataMeta whose specials, total vocab size and token dtype follow from ``text_vocab_size``."""
        vocab_size = text_vocab_size + len(SPECIAL_TOKENS)
        kwargs.setdefault("token_dtype", token_dtype_for(vocab_size))
        return cls(
            vocab_size=vocab_size,
            text_vocab_size=text_vocab_size,
            special_ids=special_token_ids(text_vocab_size),
            **kwargs,
        )

    def validate(self) -> None:
        """Raise DataError when the fields contradict each other."""
        if not isinstance(self.text_vocab_size, int) or self.text_vocab_size < 1:
            raise DataError(f"text_vocab_size must be a positive integer, got {self.text_vocab_size!r}")
        missing = [t for t in SPECIAL_TOKENS if t not in self.special_ids]
        if missing:
            raise DataError(f"special_ids lacks {missing}")
        for tok, i in self.special_ids.items():
            if not (isinstance(i, int) and self.text_vocab_size <= i < self.vocab_size):
                raise DataError(
                    f"special token {tok} has id {i!r}, outside [text_vocab_size={self.text_vocab_size}, "
                    f"vocab_size={self.vocab_size})"
                )
        if self.token_dtype not in ("uint16", "uint32"):
            raise DataError(f"token_dtype must be 'uint16' or 'uint32', got {self.token_dtype!r}")
        if self.token_dtype == "uint16" and self.vocab_size > 65536:
            raise DataError(f"vocab_size {self.vocab_size} does not fit token_dtype uint16")
        if not isinstance(self.separator_ids, list) or not all(_is_int(i) for i in self.separator_ids):
            raise DataError(f"separator_ids must be a list of token ids, got {self.separator_ids!r}")
        outside = [i for i in self.separator_ids if not 0 <= i < self.text_vocab_size]
        if outside:
            raise DataError(
                f"separator id {outside[0]} is outside the text vocabulary [0, {self.text_vocab_size}) "
                f"(separator_ids {self.separator_ids})"
            )
        if self.kind not in DATA_KINDS:
            raise DataError(f"kind must be one of {DATA_KINDS}, got {self.kind!r}")
        if self.kind == "spans" and (not isinstance(self.num_token_classes, int) or self.num_token_classes < 2):
            raise DataError(f"'spans' data needs num_token_classes >= 2, got {self.num_token_classes!r}")

    @property
    def mask_id(self) -> int:
        return self.special_ids["[MASK]"]

    @property
    def cls_id(self) -> int:
        return self.special_ids["[CLS]"]

    @property
    def pad_id(self) -> int:
        return self.special_ids["[PAD]"]

    @property
    def sep_id(self) -> int:
        return self.special_ids["[SEP]"]

    def to_dict(self) -> dict:
        """Plain JSON-able dict (what meta.json holds), with a format version."""
        d = asdict(self)
        d["format_version"] = META_FORMAT_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DataMeta:
        """Inverse of :meth:`to_dict`; unknown keys (from newer versions) are ignored with a debug log."""
        if not isinstance(d, dict):
            raise DataError("data metadata must be a JSON object")
        names = set(cls.__dataclass_fields__)
        required = {"vocab_size", "text_vocab_size", "tokenizer", "special_ids", "token_dtype"}
        missing = sorted(required - set(d))
        if missing:
            raise DataError(f"data metadata lacks the keys {missing}")
        extra = sorted(set(d) - names - {"format_version"})
        if extra:
            logger.debug("ignoring unknown data metadata keys %s", extra)
        kwargs = {k: v for k, v in d.items() if k in names}
        if isinstance(kwargs.get("special_ids"), dict):
            kwargs["special_ids"] = {str(k): v for k, v in kwargs["special_ids"].items()}
        return cls(**kwargs)


#: Values checked per slice by _first_outside: slices of a few MB keep numpy's reductions at
#: memory speed without a temporary the size of the file.
_CHECK_SLICE = 1 << 24


def _first_outside(values: np.ndarray, low: int, high: int) -> tuple[int, int] | None:
    """``(position, value)`` of the first entry of ``values`` outside ``[low, high)``, else None.

    One min/max reduction per slice; the position is looked for only in the slice that failed.
    """
    unsigned = values.dtype.kind == "u"
    for start in range(0, len(values), _CHECK_SLICE):
        part = values[start : start + _CHECK_SLICE]
        if part.max() >= high or (not (unsigned and low <= 0) and part.min() < low):
            pos = int(np.flatnonzero((part < low) | (part >= high))[0])
            return start + pos, int(part[pos])
    return None


class _PlainUnpickler(pickle.Unpickler):
    """Loads only pickles of plain builtins (dict/list/str/int): nanoGPT's meta.pkl never needs more,
    and refusing globals means a foreign meta.pkl cannot run code."""

    def find_class(self, module, name):
        raise DataError(f"meta.pkl references {module}.{name}; only plain dict/str/int pickles are accepted")


def _read_meta_pkl(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            d = _PlainUnpickler(f).load()
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"cannot read {path}: {e}") from e
    if not isinstance(d, dict) or not isinstance(d.get("vocab_size"), int) or d["vocab_size"] < 1:
        raise DataError(f"{path} must hold a dict with a positive integer 'vocab_size'")
    return d


class DataDir:
    """A prepared data dir. Use :meth:`open`."""

    def __init__(self, path: Path, meta: DataMeta):
        self.path = Path(path)
        self.meta = meta
        self._tokenizer = None
        self._tokenizer_loaded = False

    @classmethod
    def open(cls, path, *, vocab_size: int | None = None, verify: bool = True) -> DataDir:
        """Open a data dir: ``meta.json`` if present, else a nanoGPT dir (``meta.pkl``).

        ``vocab_size`` (text vocabulary size) is required only for a dir with neither file.
        Raises DataError naming the missing dir or file, and (see :meth:`verify`) a file whose
        contents contradict the metadata: at open time, not as an IndexError in the model.
        ``verify=False`` skips the passes over the token and label files, for callers that only
        need the metadata or the tokenizer.
        """
        path = Path(path)
        if not path.exists():
            raise DataError(f"data dir {path} does not exist (prepare one with `python -m mmengine.prepare`)")
        if not path.is_dir():
            raise DataError(f"data dir {path} is not a directory")
        meta_json = path / META_FILENAME
        if meta_json.is_file():
            try:
                d = json.loads(meta_json.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise DataError(f"{meta_json} is not valid JSON: {e}") from e
            try:
                meta = DataMeta.from_dict(d)
            except (DataError, TypeError) as e:
                raise DataError(f"{meta_json}: {e}") from e
        else:
            meta = cls._nanogpt_meta(path, vocab_size)
        dd = cls(path, meta)
        for split in SPLITS:
            if not dd._file(f"{split}.bin").is_file():
                raise DataError(f"data dir {path} has no {split}.bin")
        if verify:
            dd.verify()
        return dd

    def verify(self) -> None:
        """Check every data file against the metadata; DataError names the file and the bad value.

        Token files: whole items of ``token_dtype``, as many tokens as meta.json counts (when it
        does), every id a text id (< ``text_vocab_size``). "spans" data: one label per token, each
        -1 or a class < ``num_token_classes``. "scores" data: offsets and scores (see
        :meth:`documents`). One numpy reduction per file at memory speed (about 10 ms per 100M
        uint16 tokens in the page cache, measured on a 2-core VM); nothing is cached, so a file
        replaced later is checked again at the next open.
        """
        declared_by = self._vocab_source()
        text_vocab = self.meta.text_vocab_size
        names = {i: tok for tok, i in self.meta.special_ids.items()}
        for split in SPLITS:
            tokens = self.tokens(split)
            counted = self.meta.counts.get(f"{split}_tokens") if isinstance(self.meta.counts, dict) else None
            if _is_int(counted) and counted != len(tokens):
                raise DataError(
                    f"{self._file(f'{split}.bin')} holds {len(tokens)} tokens but {META_FILENAME} counts {counted}: "
                    "the file was truncated or replaced; prepare the data dir again"
                )
            bad = _first_outside(tokens, 0, text_vocab)
            if bad is not None:
                pos, value = bad
                what = f", the id of {names[value]}, which token files never hold" if value in names else ""
                raise DataError(
                    f"{self._file(f'{split}.bin')} holds token id {value} (token {pos}){what}: outside the "
                    f"{text_vocab} text ids (0 to {text_vocab - 1}) that {declared_by} declares"
                )
            if self.meta.kind == "spans":
                labels = self.labels(split)
                bad = _first_outside(labels, -1, self.meta.num_token_classes)
                if bad is not None:
                    raise DataError(
                        f"{self._file(f'{split}_labels.bin')} holds label {bad[1]} (token {bad[0]}): labels must "
                        f"be -1 (none) or a class in [0, {self.meta.num_token_classes}) as {META_FILENAME} declares"
                    )
            elif self.meta.kind == "scores":
                self.documents(split)

    def _vocab_source(self) -> str:
        if self._file(META_FILENAME).is_file():
            return META_FILENAME
        if self._file(META_PKL_FILENAME).is_file():
            return META_PKL_FILENAME
        return f"vocab_size={self.meta.text_vocab_size}"

    @staticmethod
    def _nanogpt_meta(path: Path, vocab_size: int | None) -> DataMeta:
        pkl = path / META_PKL_FILENAME
        if pkl.is_file():
            d = _read_meta_pkl(pkl)
            text_vocab = d["vocab_size"]
            tok_cfg: dict = {}
            tokenizer = "unknown"
            if "itos" in d:
                itos = d["itos"]
                chars = [itos[i] for i in sorted(itos)] if isinstance(itos, dict) else list(itos)
                if len(chars) == text_vocab and all(isinstance(c, str) and len(c) == 1 for c in chars):
                    tok_cfg = {"type": "char", "chars": chars}
                    tokenizer = "char"
            sep: list[int] = []
            stoi = d.get("stoi") or {}
            if isinstance(stoi, dict) and "\n" in stoi:
                sep = [stoi["\n"]] * 2
                if not _is_int(sep[0]) or not 0 <= sep[0] < text_vocab:
                    raise DataError(f"{pkl} maps '\\n' to {sep[0]!r}, not a text id in [0, {text_vocab})")
        elif vocab_size is not None:
            if not isinstance(vocab_size, int) or vocab_size < 1:
                raise DataError(f"vocab_size must be a positive integer, got {vocab_size!r}")
            text_vocab, tok_cfg, tokenizer, sep = vocab_size, {}, "unknown", []
        else:
            if not (path / "train.bin").exists() and not (path / "val.bin").exists():
                raise DataError(f"{path} is not a data dir: it has no meta.json, meta.pkl, train.bin or val.bin")
            raise DataError(
                f"data dir {path} has neither meta.json nor meta.pkl, so its vocabulary size is unknown; "
                "pass it explicitly (e.g. vocab_size=50257 for nanoGPT's GPT-2 BPE data)"
            )
        # nanoGPT writes uint16 whatever the vocabulary.
        return DataMeta.for_vocab(
            text_vocab,
            tokenizer=tokenizer,
            token_dtype="uint16",
            separator_ids=sep,
            tokenizer_config=tok_cfg,
            source="nanogpt",
        )

    def _file(self, name: str) -> Path:
        return self.path / name

    @staticmethod
    def _check_split(split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")

    def _memmap(self, name: str, dtype) -> np.ndarray:
        p = self._file(name)
        if not p.is_file():
            raise DataError(f"data dir {self.path} has no {name}")
        dtype = np.dtype(dtype)
        size = p.stat().st_size
        if size % dtype.itemsize:
            raise DataError(f"{p} has {size} bytes, not a multiple of the {dtype} item size {dtype.itemsize}")
        if size == 0:
            # np.memmap cannot map an empty file.
            return np.zeros(0, dtype=dtype)
        return np.memmap(p, dtype=dtype, mode="r")

    def tokens(self, split: str) -> np.ndarray:
        """Token ids of ``split`` as a read-only np.memmap (an empty array for an empty file)."""
        self._check_split(split)
        return self._memmap(f"{split}.bin", self.meta.token_dtype)

    def labels(self, split: str) -> np.ndarray | None:
        """Per-token class ids (int16, -1 = unlabelled) aligned with ``tokens(split)``; None unless "spans" data."""
        self._check_split(split)
        if self.meta.kind != "spans":
            return None
        lab = self._memmap(f"{split}_labels.bin", self.meta.label_dtype or "int16")
        if len(lab) != len(self.tokens(split)):
            raise DataError(f"{split}_labels.bin in {self.path} has {len(lab)} labels "
                            f"for {len(self.tokens(split))} tokens")
        return lab

    def documents(self, split: str):
        """``(tokens, offsets int64 (n_docs + 1,), scores float32 (n_docs,))`` for "scores" data, else None.

        Document d is ``tokens[offsets[d]:offsets[d + 1]]``.
        """
        self._check_split(split)
        if self.meta.kind != "scores":
            return None
        toks = self.tokens(split)
        offsets = self._load_npy(f"{split}_offsets.npy")
        scores = self._load_npy(f"{split}_scores.npy")
        if offsets.ndim != 1 or len(offsets) != len(scores) + 1 or (len(offsets) and offsets[-1] != len(toks)):
            raise DataError(f"{split}_offsets.npy and {split}_scores.npy in {self.path} do not match {split}.bin")
        # A damaged file must not turn into silently wrong documents or targets (n_docs values: cheap).
        if offsets[0] != 0 or (np.diff(offsets) < 0).any():
            raise DataError(f"{split}_offsets.npy in {self.path} must start at 0 and never decrease")
        if not ((scores >= 0) & (scores <= 1)).all():
            raise DataError(f"{split}_scores.npy in {self.path} holds scores outside [0, 1] (or NaN)")
        return toks, offsets.astype(np.int64, copy=False), scores.astype(np.float32, copy=False)

    def _load_npy(self, name: str) -> np.ndarray:
        p = self._file(name)
        if not p.is_file():
            raise DataError(f"data dir {self.path} has no {name}")
        try:
            return np.load(p, allow_pickle=False)
        except ValueError as e:
            raise DataError(f"cannot read {p}: {e}") from e

    @property
    def tokenizer(self):
        """The data dir's tokenizer (CharTokenizer / BPETokenizer), or None when unknown."""
        if not self._tokenizer_loaded:
            self._tokenizer = (load_tokenizer(self.meta.tokenizer_config, self.path) if self.meta.tokenizer_config
                               else None)
            self._tokenizer_loaded = True
        return self._tokenizer

    def __repr__(self) -> str:
        return f"DataDir({str(self.path)!r}, kind={self.meta.kind!r}, vocab_size={self.meta.vocab_size})"


def foreign_entries(path) -> list[str]:
    """Sorted names in the folder ``path`` that no data dir holds: subfolders (shown with a trailing
    '/') and files outside :data:`DATA_DIR_FILES`."""
    return sorted(
        e.name + ("/" if e.is_dir() else "") for e in Path(path).iterdir() if e.is_dir() or e.name not in DATA_DIR_FILES
    )


def is_data_dir(path) -> bool:
    """True for a folder that holds only data-dir files, a token file among them: one that can be
    replaced as a whole (``prepare --force``) without deleting anything else."""
    path = Path(path)
    if not path.is_dir() or foreign_entries(path):
        return False
    return (path / "train.bin").is_file() or (path / "val.bin").is_file()


def bundled_corpus_path() -> Path:
    """Path of the bundled tiny-Shakespeare corpus (``mmengine/assets/tinyshakespeare.txt``)."""
    res = importlib.resources.files("mmengine").joinpath("assets", "tinyshakespeare.txt")
    p = Path(str(res))
    if not p.is_file():
        raise DataError(f"the bundled corpus {p} is missing from the mmengine installation")
    return p


def _make_world_readable(path: Path) -> None:
    # mkdtemp makes 0700 dirs; a data dir should get the usual permissions of the user's umask.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)

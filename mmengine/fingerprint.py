"""The tokenizer a model was trained with, as a fingerprint stored in every checkpoint and checked on use.

A model only makes sense with the vocabulary it was trained on: resuming, evaluating, sampling or scoring
with a data dir of another vocabulary would mix ids silently (a loss is printed, text is decoded, a
checkpoint is overwritten with a model trained on two vocabularies). :func:`tokenizer_fingerprint` sums
up what decides the ids (the tokenizer's kind, the text vocabulary itself, the special ids) and
:func:`check_fingerprint` refuses a mismatch in one sentence.

Checkpoints written before the fingerprint existed are compared on what they do store (the trainer's
``data_meta``: sizes, special ids, a character vocabulary), or, when they store nothing, announced once
as unchecked; they are never refused for lacking it.

No torch here: the data-side tools import this too.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from mmengine.errors import UserError

logger = logging.getLogger(__name__)

__all__ = ["FINGERPRINT_KEY", "check_fingerprint", "stored_fingerprint", "tokenizer_fingerprint"]

#: The checkpoint entry that holds the fingerprint.
FINGERPRINT_KEY = "tokenizer_fingerprint"
_FORMAT = 1
_unchecked_warned: set[str] = set()


def _digest(value) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(value, ensure_ascii=False, sort_keys=True).encode("utf-8")).hexdigest()


def _vocabulary(meta, data_dir: Path | None) -> str | None:
    """A digest of the text vocabulary: the characters of a char tokenizer, the vocabulary and merges of a BPE
    one (read from its tokenizer.json); None when it cannot be known here."""
    config = meta.tokenizer_config or {}
    kind = config.get("type")
    if kind == "char" and isinstance(config.get("chars"), list):
        return _digest(config["chars"])
    if kind == "bpe" and data_dir is not None:
        path = Path(data_dir) / str(config.get("file", "tokenizer.json"))
        try:
            model = json.loads(path.read_text(encoding="utf-8")).get("model") or {}
        except (OSError, ValueError, AttributeError):
            return None
        return _digest({"vocab": model.get("vocab"), "merges": model.get("merges")})
    return None


def _meta_and_dir(data):
    """(DataMeta, data dir path or None) of a DataDir or a DataMeta."""
    if hasattr(data, "meta") and hasattr(data, "path"):
        return data.meta, Path(data.path)
    return data, None


def tokenizer_fingerprint(data) -> dict:
    """What fixes a data dir's token ids: ``{"format", "kind", "text_vocab_size", "vocab_size", "special_ids",
    "vocabulary"}``.

    ``data`` is a :class:`~mmengine.data.dataset.DataDir`, or a :class:`~mmengine.data.dataset.DataMeta` (a BPE
    vocabulary's tokens are then unknown: ``vocabulary`` is None and only its size and special ids count).
    """
    meta, data_dir = _meta_and_dir(data)
    return {
        "format": _FORMAT,
        "kind": str(meta.tokenizer),
        "text_vocab_size": int(meta.text_vocab_size),
        "vocab_size": int(meta.vocab_size),
        "special_ids": {str(k): int(v) for k, v in sorted(meta.special_ids.items())},
        "vocabulary": _vocabulary(meta, data_dir),
    }


def stored_fingerprint(checkpoint: dict) -> dict | None:
    """The checkpoint's fingerprint; for older checkpoints one made from the trainer's ``data_meta``; else None."""
    stored = checkpoint.get(FINGERPRINT_KEY)
    if isinstance(stored, dict) and "text_vocab_size" in stored:
        return stored
    trainer = checkpoint.get("trainer")
    data_meta = trainer.get("data_meta") if isinstance(trainer, dict) else None
    if isinstance(data_meta, dict):
        from mmengine.data.dataset import DataMeta

        try:
            return tokenizer_fingerprint(DataMeta.from_dict(data_meta))
        except (ValueError, TypeError):
            return None
    return None


def _difference(ours: dict, theirs: dict) -> str | None:
    """How the checkpoint's fingerprint (``ours``) differs from the data's (``theirs``), or None."""
    kinds = ours.get("kind"), theirs.get("kind")
    if "unknown" not in kinds and kinds[0] != kinds[1]:
        return f"the model's tokenizer is {kinds[0]}, the data dir's {kinds[1]}"
    if ours.get("text_vocab_size") != theirs.get("text_vocab_size"):
        return (f"the model's has {ours.get('text_vocab_size')} text tokens, "
                f"the data dir's {theirs.get('text_vocab_size')}")
    if ours.get("special_ids") != theirs.get("special_ids"):
        return f"the model's special ids are {ours.get('special_ids')}, the data dir's {theirs.get('special_ids')}"
    if ours.get("vocabulary") and theirs.get("vocabulary") and ours["vocabulary"] != theirs["vocabulary"]:
        return f"both have {ours.get('text_vocab_size')} text tokens, but not the same ones"
    return None


def check_fingerprint(checkpoint: dict, meta, what: str) -> None:
    """Refuse (:class:`UserError`) a data dir whose vocabulary is not the one ``checkpoint`` was trained on.

    ``meta`` is the data's :class:`~mmengine.data.dataset.DataDir` (best: a BPE vocabulary is then compared
    token by token) or :class:`~mmengine.data.dataset.DataMeta`; ``what`` names the use in the message, e.g.
    ``"cannot resume from out/ckpt.pt"``. A checkpoint that stores nothing to compare is said once per
    ``what`` to be unchecked.
    """
    ours = stored_fingerprint(checkpoint)
    if ours is None:
        if what not in _unchecked_warned:
            _unchecked_warned.add(what)
            logger.warning("%s: the checkpoint records no tokenizer or data description (written before they were "
                           "stored), so its vocabulary cannot be checked against the data dir", what)
        return
    difference = _difference(ours, tokenizer_fingerprint(meta))
    if difference is not None:
        data_dir = _meta_and_dir(meta)[1]
        where = f"data dir {data_dir}" if data_dir is not None else "the data dir"
        raise UserError(f"{what}: {where} has another vocabulary than the checkpoint's model ({difference}); give the "
                        "data dir the model was trained on, or one prepared with the same tokenizer.")

"""Checkpoints of the earlier research trainer and of nanoGPT: recognise them, read them into mmengine's
layout, and map their vocabulary onto an mmengine data dir's.

The files and what tells them apart (all hold ``model``, ``optimizer``, ``model_args``, ``iter_num``,
``best_val_loss``, ``config``):

=====================  =====================================================================================
mmengine               ``model_args`` from :meth:`GPTConfig.to_dict` (``attention_backend`` in it), ``trainer``
earlier trainer        ``model_args`` with ``attention_type`` / ``use_rope`` / ``mode`` / ``binary_classification``
                       ..., usually ``training_context`` (curriculum stage, stale count, best loss per stage);
                       ``config`` is the stage dataclass its ``config`` variable held at save time (a name clash
                       in its ``train_run.py``) or a flat dict (``train_remasking_run.py``); ``mode`` a pickled
                       ``model.ModelMode`` Enum (three-mode refactor, e.g. commit 1616e5b) or absent (before it,
                       e.g. 1c9b72c); ``binary_classification=True`` for its 2-class token classifier (e0abd98);
                       a ``cls_embedding`` tensor for scorers from September 2025 on (e.g. 8831f31)
nanoGPT                ``model_args`` with only the GPT-2 architecture keys, ``config`` its flat globals
=====================  =====================================================================================

Vocabulary of the earlier trainer: ``text`` ids, then ``[MASK] = text``, then 14 reserved ids (its
``extended_vocab_size = meta_vocab_size + 15``); the ``[CLS]`` of its sequence scorer is one of the reserved
ids, recorded in ``model_args['cls_token_id']`` (70 = text + 5 in its ``train_run.py``, 66 in its tests,
81 = out of range in its guide). An mmengine data dir for the same text has ``text`` ids and then
``[MASK]``, ``[CLS]``, ``[PAD]``, ``[SEP]`` (:data:`mmengine.data.dataset.SPECIAL_TOKENS`).
:func:`map_vocabulary` moves the rows across so that the mapped model gives the same outputs on text ids.
"""
from __future__ import annotations

import logging
import math
from typing import Any

import torch

from mmengine.errors import CheckpointError
from mmengine.legacy import clean_state_dict, convert_model_args
from mmengine.model import ModelMode
from mmengine.restricted_pickle import (
    InertObject,
    inert_classes,
    restricted_load,
    to_plain,
)

logger = logging.getLogger(__name__)

__all__ = [
    "EARLIER_TRAINER_RESERVED",
    "FORMAT_EARLIER_TRAINER",
    "FORMAT_MMENGINE",
    "FORMAT_NANOGPT",
    "FORMAT_STATE_DICT",
    "map_vocabulary",
    "prepare_for_data",
    "read_refused_checkpoint",
    "recognise_format",
    "to_mmengine_layout",
]

FORMAT_MMENGINE = "mmengine"
FORMAT_EARLIER_TRAINER = "earlier trainer"
FORMAT_NANOGPT = "nanoGPT"
FORMAT_STATE_DICT = "bare state dict"

#: The earlier trainer's embedding: text ids, then [MASK] and 14 reserved ids (``meta_vocab_size + 15``).
EARLIER_TRAINER_RESERVED = 15
#: Where its train_run.py put the [CLS] of a sequence scorer: ``meta_vocab_size + 5``.
EARLIER_TRAINER_CLS_OFFSET = 5
#: nanoGPT's train.py model_args; any other key means the file came from a trainer built on it.
NANOGPT_MODEL_ARGS = frozenset({"n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size", "dropout"})
#: model_args keys only mmengine writes (GPTConfig.to_dict).
MMENGINE_MODEL_ARGS = frozenset({"attention_backend", "loss_backend"})
#: Settings of the earlier trainer's scripts that nanoGPT's train.py does not have (in a stored flat config).
_EARLIER_CONFIG_KEYS = frozenset({"training_type", "attention_type", "use_rope", "unmasking_stages",
                                  "binary_classification", "mask_token_id", "use_paragraph_boundaries"})
_WTE = "transformer.wte.weight"
_LM_HEAD = "lm_head.weight"
_TOP_LEVEL = ("model", "optimizer", "model_args", "iter_num", "best_val_loss", "config", "training_context")


# -----------------------------------------------------------------------------
# Recognising a file


def recognise_format(checkpoint: dict) -> tuple[str, list[str]]:
    """(format, version hints) of a loaded checkpoint dict (inert objects or plain data alike).

    The format is one of :data:`FORMAT_MMENGINE`, :data:`FORMAT_EARLIER_TRAINER`, :data:`FORMAT_NANOGPT`,
    :data:`FORMAT_STATE_DICT`; the hints say which features of the earlier trainer's versions the file has.
    """
    if "upstream" in checkpoint and isinstance(checkpoint["upstream"], dict) and "format" in checkpoint["upstream"]:
        return checkpoint["upstream"]["format"], list(checkpoint["upstream"].get("version_hints", []))
    model_args = checkpoint.get("model_args")
    if not isinstance(model_args, dict):
        return FORMAT_STATE_DICT, []
    if MMENGINE_MODEL_ARGS & model_args.keys() or "trainer" in checkpoint:
        return FORMAT_MMENGINE, []
    state = checkpoint.get("model") if isinstance(checkpoint.get("model"), dict) else {}
    keys = {k.replace("_orig_mod.", "") for k in state}
    config = checkpoint.get("config")
    earlier_config = isinstance(config, InertObject) or (isinstance(config, dict)
                                                         and _EARLIER_CONFIG_KEYS & config.keys())
    if set(model_args) <= NANOGPT_MODEL_ARGS and "training_context" not in checkpoint and not earlier_config:
        return FORMAT_NANOGPT, []
    hints = []
    mode = model_args.get("mode")
    if model_args.get("binary_classification"):
        hints.append("binary_classification flag (before the three-mode refactor, e.g. commit e0abd98)")
    elif "mode" in model_args:
        kind = "pickled model.ModelMode Enum" if isinstance(mode, InertObject) else "mode as a string"
        hints.append(f"mode in model_args: {kind} (three-mode refactor or later, e.g. commit 1616e5b)")
    else:
        hints.append("no mode in model_args (before the three-mode refactor, e.g. commit 1c9b72c)")
    if "training_context" in checkpoint:
        hints.append("training_context (curriculum stage, stale count, best loss of the stage)")
    if isinstance(config, InertObject):
        hints.append(f"config is a pickled {config.name} (the stage its config variable held at save time)")
    elif isinstance(config, dict) and "__class__" in config:
        hints.append(f"config is a {str(config['__class__']).rsplit('.', 1)[-1]} (the stage held at save time)")
    elif isinstance(config, dict):
        hints.append("config is a flat dict of the script's settings")
    if model_args.get("cls_token_id") is not None:
        hints.append(f"cls_token_id {model_args['cls_token_id']}")
    if "cls_embedding" in keys:
        hints.append("dedicated cls_embedding (September 2025 or later, e.g. commit 8831f31)")
    if any(k.startswith("critic_head.") for k in keys):
        hints.append("auxiliary critic_head")
    return FORMAT_EARLIER_TRAINER, hints


def _plain_mode(value: Any) -> Any:
    """The earlier trainer's pickled ``model.ModelMode`` member (inert: its value in args) -> that value."""
    if isinstance(value, InertObject) and value.name.endswith("ModelMode") and len(value.args) == 1:
        return value.args[0]
    if (isinstance(value, dict) and str(value.get("__class__", "")).endswith("ModelMode")
            and len(value.get("args", [])) == 1):
        return value["args"][0]
    return to_plain(value)


def _plain_loss(value: Any) -> float | None:
    value = to_plain(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None  # mmengine stores "no best loss yet" as None (the earlier trainer: inf)


def _vocabulary(fmt: str, model_args: dict, config: Any, state: dict) -> dict:
    """Rows, text ids, special ids and where the [CLS] id was read, as the file's own code laid them out."""
    wte = state.get(_WTE)
    rows = int(wte.shape[0]) if isinstance(wte, torch.Tensor) and wte.dim() == 2 else model_args.get("vocab_size")
    vocab: dict[str, Any] = {"rows": rows, "text": None, "mask": None, "cls": None, "cls_source": None,
                             "cls_embedding": "cls_embedding" in state}
    if fmt == FORMAT_NANOGPT:
        vocab["text"] = rows
    elif fmt == FORMAT_EARLIER_TRAINER and isinstance(rows, int) and rows > EARLIER_TRAINER_RESERVED:
        vocab["text"] = vocab["mask"] = rows - EARLIER_TRAINER_RESERVED
    if fmt == FORMAT_EARLIER_TRAINER:
        for where, table in (("model_args", model_args), ("config", config)):
            if isinstance(table, dict) and isinstance(table.get("cls_token_id"), int):
                vocab["cls"], vocab["cls_source"] = table["cls_token_id"], where
                break
    return vocab


def to_mmengine_layout(checkpoint: dict, source: str = "checkpoint") -> dict:
    """A loaded checkpoint (any format) in mmengine's in-memory layout, every value plain.

    ``model`` (keys cleaned of compile/DDP prefixes), ``optimizer`` (as stored), ``model_args`` (mode as its
    string), ``iter_num``, ``best_val_loss`` (float or None), ``config`` (plain: a pickled stage dataclass
    becomes ``{"__class__": "training_utils.training_config.StickyStageConfig", ...its fields}``) and
    ``upstream``: ``{format, version_hints, training_context, cls_token_id, vocabulary, inert_classes,
    extra, source}``. A dict already in this layout is returned as it is; mmengine's own files keep every
    entry they have.
    """
    if isinstance(checkpoint.get("upstream"), dict) and "format" in checkpoint["upstream"]:
        return checkpoint
    fmt, hints = recognise_format(checkpoint)
    classes = inert_classes({k: v for k, v in checkpoint.items() if k != "model"})
    state = clean_state_dict(checkpoint["model"]) if isinstance(checkpoint.get("model"), dict) else {}
    if fmt == FORMAT_MMENGINE:
        out = dict(checkpoint)
        meta = (checkpoint.get("trainer") or {}).get("data_meta") or {}
        vocab = {"rows": int(state[_WTE].shape[0]) if _WTE in state else None, "text": meta.get("text_vocab_size"),
                 "special_ids": meta.get("special_ids")}
        out["upstream"] = {"format": fmt, "version_hints": hints, "source": source, "vocabulary": vocab,
                           "inert_classes": classes}
        return out
    raw_args = checkpoint.get("model_args")
    model_args = None
    if isinstance(raw_args, dict):
        model_args = {str(k): (_plain_mode(v) if k == "mode" else to_plain(v)) for k, v in raw_args.items()}
    config = to_plain(checkpoint.get("config"))
    vocab = _vocabulary(fmt, model_args or {}, config, state)
    iter_num = to_plain(checkpoint.get("iter_num", 0))
    out = {
        "model": state,
        "optimizer": checkpoint.get("optimizer"),
        "model_args": model_args,
        "iter_num": int(iter_num) if isinstance(iter_num, (int, float)) else 0,
        "best_val_loss": _plain_loss(checkpoint.get("best_val_loss")),
        "config": config if config is not None else {},
        "upstream": {
            "format": fmt,
            "version_hints": hints,
            "source": source,
            "training_context": to_plain(checkpoint.get("training_context")),
            "cls_token_id": vocab["cls"],
            "vocabulary": vocab,
            "inert_classes": classes,
            "extra": {str(k): to_plain(v) for k, v in checkpoint.items() if k not in _TOP_LEVEL},
        },
    }
    return out


# -----------------------------------------------------------------------------
# Loading


def read_refused_checkpoint(path, map_location="cpu", refusal: str | None = None) -> dict:
    """The fallback of :func:`mmengine.checkpoint.load_checkpoint` for a file ``weights_only`` refused.

    Reads it with :func:`mmengine.restricted_pickle.restricted_load` (other code's classes kept as inert
    data; a file whose pickle calls a function is refused with :class:`CheckpointError`). A checkpoint of
    the earlier trainer is returned in mmengine's layout (:func:`to_mmengine_layout`), saying once
    (logger.info) what was kept inert; anything else raises :class:`CheckpointError` with ``refusal``
    (the safe loader's sentence), since only that trainer's files need the fallback.
    """
    raw = restricted_load(path, map_location=map_location)
    fmt = recognise_format(raw)[0] if isinstance(raw, dict) and isinstance(raw.get("model"), dict) else None
    if fmt != FORMAT_EARLIER_TRAINER:
        raise CheckpointError(refusal or f"checkpoint {path} holds objects of other code and is not a checkpoint "
                                         "of the earlier research trainer") from None
    checkpoint = to_mmengine_layout(raw, source=str(path))
    logger.info("checkpoint %s was written by the earlier research trainer: read with %s kept as inert data, "
                "none of its code imported or run", path, ", ".join(checkpoint["upstream"]["inert_classes"]))
    return checkpoint


# -----------------------------------------------------------------------------
# Vocabulary mapping


def _id_ranges(ids: list[int]) -> str:
    """[66, 67, 68, 71] -> '66-68, 71'."""
    parts, ids = [], sorted(ids)
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        parts.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ", ".join(parts)


def _text_rows(fmt: str, vocab: dict, meta, source: str) -> int:
    """How many leading rows of the file are the data dir's text ids (refuses another vocabulary)."""
    file_text, rows = vocab["text"], vocab["rows"]
    target = meta.text_vocab_size
    if file_text == target:
        return target
    # nanoGPT pads its GPT-2 embedding to a multiple of 64 (50257 -> 50304): those rows are not text
    if fmt == FORMAT_NANOGPT and isinstance(file_text, int) and target < file_text == 64 * math.ceil(target / 64):
        return target
    layout = (f"{rows} rows: text, [MASK] and {EARLIER_TRAINER_RESERVED - 1} reserved ids"
              if fmt == FORMAT_EARLIER_TRAINER else f"{rows} rows")
    raise CheckpointError(f"{source} has {file_text} text ids ({layout}) but the data dir has {target}; "
                          "it was trained on another vocabulary")


def _cls_source(mode: ModelMode, vocab: dict, cls_token_id: int | None, source: str) -> tuple[int | None, str]:
    """(row of the file that becomes [CLS], how it was chosen); None when the file has no such row."""
    rows, text, mask = vocab["rows"], vocab["text"], vocab["mask"]
    specials = f"{text + 1}-{rows - 1}" if mask is not None else None
    if cls_token_id is not None:
        if isinstance(cls_token_id, bool) or not isinstance(cls_token_id, int) or specials is None or not (
                mask < cls_token_id < rows):
            where = f"one of its reserved ids {specials}" if specials else "a reserved id, and it has none"
            raise CheckpointError(f"cls_token_id={cls_token_id!r} does not name a [CLS] row of {source}: "
                                  f"it must be {where}")
        return cls_token_id, "given by cls_token_id"
    if vocab["cls"] is not None:
        cls = vocab["cls"]
        if mask is None or not (mask < cls < rows):
            raise CheckpointError(f"{source} records [CLS] id {cls} in its {vocab['cls_source']}, which is not "
                                  f"a reserved row of its {rows}-row embedding; pass --cls_token_id with the row "
                                  "that holds its [CLS]")
        return cls, f"its {vocab['cls_source']}"
    if mode is ModelMode.SEQUENCE_SCORER:
        hint = f" (the earlier trainer used {text + EARLIER_TRAINER_CLS_OFFSET}, its tests {text + 1})" if text else ""
        raise CheckpointError(f"{source} is a sequence scorer that records no [CLS] id; pass --cls_token_id with "
                              f"the id its runs put at position 0{hint}")
    if mask is not None and text + EARLIER_TRAINER_CLS_OFFSET < rows:
        # A language model or token classifier never read [CLS]; the row its trainer gave [CLS] when a
        # scorer later started from this trunk is text + 5, so that row carries over (as that transfer did).
        return text + EARLIER_TRAINER_CLS_OFFSET, "never read by this model; the row the trainer's scorers used"
    return None, "new"


def map_vocabulary(checkpoint: dict, meta, cls_token_id: int | None = None) -> dict:
    """``checkpoint`` with its embedding (and tied LM head) mapped onto the vocabulary of ``meta``.

    ``meta`` is the :class:`mmengine.data.dataset.DataMeta` of the data dir the model will read. Text rows
    and ``[MASK]`` are copied, ``[CLS]`` comes from the id the file used (its model_args or config, its
    ``cls_embedding``, or ``cls_token_id`` when it cannot be told; a scorer without one is refused),
    specials the file never had (``[PAD]``, ``[SEP]``; all four for nanoGPT) get new rows drawn like
    mmengine's initialisation (N(0, 0.02), seed 0), reserved rows are dropped. A language model's LM head
    is the same tensor as its new embedding; classifier and scorer heads are kept. ``model_args`` get the
    new ``vocab_size`` (and ``cls_token_id`` = the data dir's [CLS] for a scorer). The optimizer state
    (its embedding moments no longer fit) moves to ``upstream["optimizer"]`` and ``optimizer`` becomes None.
    One line (logger.info) says what was mapped. The input is not modified.
    """
    checkpoint = to_mmengine_layout(checkpoint)
    up = checkpoint["upstream"]
    fmt, source = up["format"], f"checkpoint {up.get('source', 'checkpoint')}"
    state = dict(checkpoint["model"])
    wte = state.get(_WTE)
    if not isinstance(wte, torch.Tensor) or wte.dim() != 2:
        raise CheckpointError(f"{source} has no token embedding ({_WTE}) to map")
    rows, width = (int(s) for s in wte.shape)
    if fmt == FORMAT_MMENGINE or "vocabulary_map" in up:
        if rows == meta.vocab_size:
            return checkpoint
        raise CheckpointError(f"{source} has a {rows}-row embedding but the data dir's vocabulary has "
                              f"{meta.vocab_size} ids")
    if fmt == FORMAT_STATE_DICT or not isinstance(checkpoint.get("model_args"), dict):
        raise CheckpointError(f"{source} has no model_args, so its vocabulary layout cannot be told")
    vocab = dict(up["vocabulary"], rows=rows)
    mode = ModelMode(convert_model_args(checkpoint["model_args"], state, source)["mode"])
    text = _text_rows(fmt, vocab, meta, source)
    if vocab["cls_embedding"]:
        cls_row, cls_how = None, "cls_embedding"  # its scorer swapped this vector in wherever the input was [CLS]
    else:
        cls_row, cls_how = _cls_source(mode, vocab, cls_token_id, source)

    fresh = torch.randn(meta.vocab_size, width, generator=torch.Generator().manual_seed(0)) * 0.02
    new_wte = fresh.to(wte.dtype)
    new_wte[:text] = wte[:text]
    # row_source[new row] = the file's row it came from, -1 when new (moves optimizer moments the same way)
    row_source = list(range(text)) + [-1] * (meta.vocab_size - text)
    copied, new = [f"text 0-{text - 1}"], []
    for token, target in meta.special_ids.items():
        if token == "[MASK]" and vocab["mask"] is not None:
            new_wte[target] = wte[vocab["mask"]]
            row_source[target] = vocab["mask"]
            copied.append(f"[MASK] {vocab['mask']}->{target}")
        elif token == "[CLS]" and vocab["cls_embedding"]:
            new_wte[target] = state["cls_embedding"].to(wte.dtype)
            copied.append(f"[CLS] cls_embedding->{target}")
        elif token == "[CLS]" and cls_row is not None:
            new_wte[target] = wte[cls_row]
            row_source[target] = cls_row
            copied.append(f"[CLS] {cls_row}->{target} ({cls_how})")
        else:
            new.append(f"{token} {target}")
    used = set(range(text)) | {r for r in (vocab["mask"], cls_row) if r is not None}
    dropped = [r for r in range(rows) if r not in used]
    state.pop("cls_embedding", None)
    state[_WTE] = new_wte

    head = state.get(_LM_HEAD)
    tied = ""
    if mode is ModelMode.LANGUAGE_MODEL and head is not None:
        if tuple(head.shape) != (rows, width) or not torch.equal(head, wte):
            raise CheckpointError(f"{source}: its LM head is not its token embedding, but a language model here "
                                  "ties the two, so it cannot be mapped")
        state[_LM_HEAD] = new_wte  # the same tensor: the head stays tied
        tied = "; the tied LM head follows"

    model_args = dict(checkpoint["model_args"], vocab_size=meta.vocab_size)
    if mode is ModelMode.SEQUENCE_SCORER or model_args.get("cls_token_id") is not None:
        model_args["cls_token_id"] = meta.cls_id
    mapping = {"from_rows": rows, "to_rows": meta.vocab_size, "text": text, "copied": copied, "new": new,
               "dropped": dropped, "cls_row": cls_row, "cls_how": cls_how, "row_source": row_source}
    out = dict(checkpoint, model=state, model_args=model_args, optimizer=None)
    out["upstream"] = dict(up, vocabulary_map=mapping, optimizer=checkpoint.get("optimizer"))
    what = f"{', '.join(copied)} copied"
    if new:
        what += f"; {', '.join(new)} new"
    if dropped:
        what += f"; {len(dropped)} unused rows dropped ({_id_ranges(dropped)})"
    logger.info("%s: vocabulary mapped from %d to %d rows: %s%s", source, rows, meta.vocab_size, what, tied)
    return out


def _embedding_rows(checkpoint: dict) -> int | None:
    state = checkpoint.get("model") if isinstance(checkpoint.get("model"), dict) else {}
    for key in (_WTE, "_orig_mod." + _WTE, "module." + _WTE):
        if isinstance(state.get(key), torch.Tensor) and state[key].dim() == 2:
            return int(state[key].shape[0])
    return None


def ready_for_data(checkpoint: dict, data, what: str, *, cls_token_id: int | None = None,
                   source: str | None = None) -> dict:
    """:func:`prepare_for_data`, with an mmengine file's tokenizer fingerprint checked first (the clearer sentence).

    ``data`` is the data's DataDir (or its DataMeta); ``what`` names the use in a refusal ("cannot evaluate X").
    """
    from mmengine.fingerprint import check_fingerprint

    meta = getattr(data, "meta", data)
    if (recognise_format(checkpoint)[0] not in (FORMAT_EARLIER_TRAINER, FORMAT_NANOGPT)
            and not checkpoint.get("upstream")):
        check_fingerprint(checkpoint, data, what)
    return prepare_for_data(checkpoint, meta, cls_token_id=cls_token_id, source=source)


def prepare_for_data(checkpoint: dict, meta, *, cls_token_id: int | None = None, source: str | None = None) -> dict:
    """``checkpoint`` made ready for a model that reads the data dir whose vocabulary is ``meta``.

    A file of the earlier research trainer or of nanoGPT gets its vocabulary mapped (:func:`map_vocabulary`;
    ``cls_token_id`` names its [CLS] row when the file does not say it). A file already in mmengine's layout
    (written by mmengine, or mapped before) is returned as it is when its embedding has the data dir's
    ``vocab_size`` rows (and, when recorded, its text vocabulary); any other mismatch raises
    :class:`CheckpointError` in one sentence. The input is not modified. For sample, evaluate and resume: the
    one call that makes a foreign file usable with an mmengine data dir.
    """
    name = source or (checkpoint.get("upstream") or {}).get("source") or "checkpoint"
    up = checkpoint.get("upstream") if isinstance(checkpoint.get("upstream"), dict) else {}
    fmt = up.get("format") or recognise_format(checkpoint)[0]
    if fmt in (FORMAT_EARLIER_TRAINER, FORMAT_NANOGPT) and "vocabulary_map" not in up:
        return map_vocabulary(to_mmengine_layout(checkpoint, source=name), meta, cls_token_id=cls_token_id)
    if cls_token_id is not None:
        logger.warning("cls_token_id=%s is not used: checkpoint %s is in mmengine's vocabulary already (its [CLS] is "
                       "the data dir's %d)", cls_token_id, name, meta.cls_id)
    rows = _embedding_rows(checkpoint)
    saved_text = ((checkpoint.get("trainer") or {}).get("data_meta") or {}).get("text_vocab_size")
    if saved_text is not None and saved_text != meta.text_vocab_size:
        raise CheckpointError(f"checkpoint {name} was trained on a text vocabulary of {saved_text} ids but the data "
                              f"dir has {meta.text_vocab_size}; use the data dir it was trained on")
    if rows is not None and rows != meta.vocab_size:
        raise CheckpointError(f"checkpoint {name} has a {rows}-row embedding but the data dir's vocabulary has "
                              f"{meta.vocab_size} ids; use the data dir it was trained on")
    return checkpoint

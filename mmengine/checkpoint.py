"""The checkpoint format: atomic saves, safe loads, legacy conversion and trunk transfer.

A checkpoint is a ``torch.save``d dict of tensors and plain Python values only::

    {"model": state_dict, "optimizer": optimizer state_dict | None,
     "model_args": GPTConfig as plain values (mode as its string), "iter_num": int,
     "best_val_loss": float | None, "config": dict, ...any other trainer state}

which is also the layout nanoGPT and the research codebase before this one wrote, so every load
uses ``torch.load(weights_only=True)``. Older ``model_args`` are converted on load (see
:func:`convert_model_args`).
"""
from __future__ import annotations

import dataclasses
import enum
import logging
import os
import pickle
import re
import tempfile
import zipfile
from collections import OrderedDict
from pathlib import Path, PurePath
from typing import Any

import torch

from mmengine.errors import CheckpointError
from mmengine.model import GPT, GPTConfig, ModelMode

logger = logging.getLogger(__name__)

__all__ = [
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "load_model",
    "model_from_checkpoint",
    "convert_model_args",
    "clean_state_dict",
    "model_state_dict",
    "unwrap_model",
    "upgrade_trainer_state",
]

# prefixes added by torch.compile (_orig_mod.) and DistributedDataParallel (module.)
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")
_CONFIG_FIELDS = {f.name for f in dataclasses.fields(GPTConfig)}
# torch.save's format before PyTorch 1.6 (or with _use_new_zipfile_serialization=False) is a pickle
# stream opening with this magic number (a pickled long; the protocol header comes before it)
_LEGACY_MAGIC = b"\x8a\x0a" + torch.serialization.MAGIC_NUMBER.to_bytes(10, "little")


def _listing(keys: list[str], limit: int = 6) -> str:
    if not keys:
        return ""
    shown = ", ".join(keys[:limit])
    return f" ({shown}{', ...' if len(keys) > limit else ''})"


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The GPT inside DDP (.module) and torch.compile (._orig_mod) wrappers."""
    while True:
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, torch.nn.Module):
            model = model._orig_mod
        else:
            return model


# -----------------------------------------------------------------------------
# Saving


def _plain(value: Any, where: str) -> Any:
    """value converted to what torch.load(weights_only=True) can read back, or TypeError."""
    if isinstance(value, enum.Enum):  # before str: ModelMode is a str subclass
        return _plain(value.value, where)
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor, torch.dtype, torch.device)):
        return value
    if isinstance(value, PurePath):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, where)
    if isinstance(value, (dict, OrderedDict)):
        out = {}
        for k, v in value.items():
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise TypeError(f"checkpoint entry {where} has a key of type {type(k).__name__}; use plain keys")
            out[k] = _plain(v, f"{where}[{k!r}]")
        return type(value)(out) if isinstance(value, OrderedDict) else out
    if isinstance(value, (list, tuple)):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # numpy scalars
        return value.item()
    raise TypeError(
        f"checkpoint entry {where} is a {type(value).__name__}; checkpoints hold only tensors and plain "
        "Python values so they can be loaded with weights_only=True"
    )


def save_checkpoint(path, model, optimizer=None, **state) -> Path:
    """Writes ``{"model", "optimizer", "model_args", "iter_num", "best_val_loss", "config", **state}``.

    The file appears atomically: it is written to a temporary file in the same folder,
    flushed and fsynced, then renamed over ``path``, so a crash mid-save leaves the previous
    checkpoint intact (and no temporary file behind). Returns the path.
    """
    path = Path(path)
    gpt = unwrap_model(model)
    if not isinstance(gpt, GPT):
        raise TypeError(f"save_checkpoint needs a GPT model, got {type(gpt).__name__}")
    if "model_args" in state:
        # load_model rebuilds the architecture from model_args; they must describe these weights
        raise TypeError("save_checkpoint takes model_args from the model's config; do not pass them")
    checkpoint = {
        "model": gpt.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "model_args": gpt.config.to_dict(),
        "iter_num": 0,
        "best_val_loss": None,
        "config": {},
    }
    for key, value in state.items():
        checkpoint[key] = value
    checkpoint = {key: _plain(value, repr(key)) for key, value in checkpoint.items()}

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    logger.debug("saved checkpoint %s", path)
    return path


def _fsync_dir(folder: Path) -> None:
    # makes the rename itself durable; not every platform can open a folder
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def upgrade_trainer_state(trainer: dict | None) -> dict:
    """A checkpoint's ``trainer`` entry in today's layout: one state per trainer component.

    Before the trainer's pieces were components, the entry was flat (``frozen``, ``unfrozen_at``,
    ``rollbacks``, ``mode_state``, ``data_state``, ``log_records``, ``wandb_id``); those files still resume.
    """
    st = dict(trainer or {})
    if "freeze" in st or not st:
        return st
    return {
        "freeze": {"frozen": bool(st.get("frozen", False)), "unfrozen_at": st.get("unfrozen_at")},
        "progress": {"rollbacks": int(st.get("rollbacks", 0) or 0)},
        "mode": st.get("mode_state") or {},
        "data": st.get("data_state") or [],
        "logger": {"records": st.get("log_records"), "wandb_id": st.get("wandb_id")},
        "scaler": st.get("scaler"),
        **{k: st[k] for k in ("data_meta", "data_dir") if k in st},
    }


# -----------------------------------------------------------------------------
# Loading


def load_checkpoint(path, map_location="cpu") -> dict:
    """Reads a checkpoint with ``torch.load(weights_only=True)``.

    A bare state dict (a dict of tensors) is returned as ``{"model": it}``. A missing, truncated,
    corrupt (checksum mismatch), unsafe or foreign file raises :class:`CheckpointError` naming the
    file and the problem.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty")
    is_zip = zipfile.is_zipfile(path)
    if not (is_zip or _is_legacy_format(path)):
        # torch.save writes a zip archive (or, before 1.6, the legacy pickle stream); a zip cut
        # short loses its central directory at the end, so truncation is caught here
        raise CheckpointError(
            f"checkpoint {path} cannot be read; it is truncated, corrupt or not a torch checkpoint "
            "(no complete zip archive in it)"
        )
    damaged = _damaged_member(path) if is_zip else None
    if damaged is not None:
        raise CheckpointError(
            f"checkpoint {path} is corrupt: the bytes of its record {damaged} do not match the checksum saved with them"
        )
    try:
        # The research codebase stored the mode as its enum (module "model"); an Enum is safe to
        # rebuild, so ours is allow-listed under that name too. Nothing else is.
        with torch.serialization.safe_globals([ModelMode, (ModelMode, "model.ModelMode")]):
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses anything but tensors and plain values ("WeightsUnpickler error:
        # Unsupported global ...", "... GLOBAL posix.system whose module posix is blocked")
        lines = [line.strip() for line in str(exc).splitlines() if "WeightsUnpickler error" in line or "GLOBAL" in line]
        detail = lines[0].replace("WeightsUnpickler error: ", "").split(". Please")[0] if lines else _first_sentence(exc)
        # --- earlier-trainer files (mmengine/upstream.py) ---------------------------------------
        # The restricted loader reads the file again, every other class kept as inert data and nothing
        # from the file run: a checkpoint of the earlier trainer comes back in mmengine's layout, a pickle
        # that calls a function is refused, a damaged stream "cannot be read", anything else gets this.
        from mmengine.upstream import read_refused_checkpoint

        checkpoint = read_refused_checkpoint(path, map_location=map_location, refusal=(
            f"checkpoint {path} holds objects other than tensors and plain values and is refused by the "
            f"safe loader (weights_only=True): {detail}"))
        # -------------------------------------------------------------------------------------------
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"checkpoint {path} cannot be read; it is truncated, corrupt or not a torch checkpoint "
            f"({_first_sentence(exc)})"
        ) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(checkpoint).__name__}, not a dict")
    if "model" not in checkpoint:
        if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
            return {"model": checkpoint}
        keys = ", ".join(sorted(map(str, checkpoint))[:8]) or "none"
        raise CheckpointError(f"checkpoint {path} has no 'model' entry (its keys: {keys})")
    if not isinstance(checkpoint["model"], dict):
        raise CheckpointError(f"checkpoint {path}: its 'model' entry is a {type(checkpoint['model']).__name__}, not a state dict")
    return checkpoint


def _is_legacy_format(path: Path) -> bool:
    with open(path, "rb") as f:
        return _LEGACY_MAGIC in f.read(16)


def _damaged_member(path: Path) -> str | None:
    """The first archive record whose CRC-32 does not match its bytes, or None.

    torch.load does not check the CRCs torch.save writes, so a zeroed or flipped byte inside a
    tensor would load silently. Records saved without a CRC (``set_crc32_options(False)``
    writes 0) cannot be checked and are skipped.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.CRC == 0:
                    continue
                try:
                    with archive.open(info) as record:
                        while record.read(1 << 20):  # zipfile compares the CRC at the end
                            pass
                except (zipfile.BadZipFile, OSError, EOFError):
                    return info.filename
    except (zipfile.BadZipFile, OSError):
        return None  # not readable as a zip at all: torch.load's own error says more
    return None


def _first_sentence(exc: BaseException) -> str:
    """The first sentence of a library error (torch appends paragraphs of advice)."""
    # C++ errors open with "[enforce fail at file.cc:123] . "
    text = re.sub(r"^\[enforce fail at [^\]]*\][\s.]*", "", str(exc).strip())
    if not text:
        return type(exc).__name__
    return text.splitlines()[0].split(". ")[0].rstrip(".")


def clean_state_dict(state_dict: dict) -> dict:
    """Strips torch.compile (``_orig_mod.``) and DDP (``module.``) prefixes from the keys."""
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in _WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key = key[len(prefix):]
                    changed = True
        key = key.replace("._orig_mod.", ".")
        out[key] = value
    return out


def _is_derived_buffer(key: str) -> bool:
    # buffers older code saved that this model recomputes: nanoGPT's causal-mask buffer
    # (attn.bias, present when flash attention was unavailable) and RoPE tables
    return key.endswith(".attn.bias") or key.endswith(("inv_freq", "cos_cached", "sin_cached"))


def model_state_dict(checkpoint: dict) -> dict:
    """The checkpoint's weights with wrapper prefixes stripped and derived buffers dropped."""
    return {k: v for k, v in clean_state_dict(checkpoint["model"]).items() if not _is_derived_buffer(k)}


def convert_model_args(model_args: dict, state_dict: dict, source: str = "checkpoint") -> dict:
    """Older ``model_args`` -> keyword arguments for today's :class:`GPTConfig`.

    - ``binary_classification=True`` -> TOKEN_CLASSIFIER with 2 classes;
    - no ``mode`` -> LANGUAGE_MODEL; ``mode`` given as "ModelMode.NAME" or a name is accepted;
    - no ``attention_type`` -> "causal" (the old default) for a language model; classifiers and
      scorers are always "bidirectional" (what the old code ran them as, whatever it stored);
    - no ``use_rope`` -> ``position_encoding == "rotary"`` when that older key exists, otherwise
      inferred from the weights (``transformer.wpe.weight`` present means learned positions);
    - no ``bias`` -> inferred from LayerNorm bias keys;
    - ``mode`` stored as the research codebase's enum (``model.ModelMode``) is read as ours
      (:func:`load_checkpoint` allow-lists that one class for the safe loader);
    - training plans older files kept in ``model_args`` (``init_from_checkpoint``, ``freeze_transformer``,
      ``unfreeze_*``) and other unknown keys (``ignore_index``, ...) are dropped with a debug log: a
      saved model already holds its transferred trunk, and freezing is the trainer's state.
    """
    args = dict(model_args)
    converted = {}
    if args.pop("binary_classification", False):
        converted["mode"] = ModelMode.TOKEN_CLASSIFIER.value
        converted["num_token_classes"] = 2
        args.pop("mode", None)
        args.pop("num_token_classes", None)
    mode = args.pop("mode", ModelMode.LANGUAGE_MODEL.value) if "mode" not in converted else converted["mode"]
    try:
        converted["mode"] = ModelMode.parse(mode).value
    except ValueError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    attention_type = args.pop("attention_type", None) or "causal"
    if converted["mode"] != ModelMode.LANGUAGE_MODEL.value:
        # the old code ran classifiers and scorers bidirectionally whatever attention_type said
        attention_type = "bidirectional"
    converted["attention_type"] = attention_type
    position_encoding = args.pop("position_encoding", None)
    if "use_rope" in args:
        converted["use_rope"] = bool(args.pop("use_rope"))
    elif position_encoding is not None:
        converted["use_rope"] = position_encoding == "rotary"
    else:
        converted["use_rope"] = "transformer.wpe.weight" not in state_dict
    if "bias" in args and args["bias"] is not None:
        converted["bias"] = bool(args.pop("bias"))
    else:
        args.pop("bias", None)
        converted["bias"] = "transformer.ln_f.bias" in state_dict
    for key, value in args.items():
        if key in _CONFIG_FIELDS:
            converted[key] = value
    dropped = sorted(k for k in args if k not in _CONFIG_FIELDS)
    if dropped:
        logger.debug("%s: ignoring model_args the model does not use: %s", source, ", ".join(dropped))
    # fill architecture sizes a very old checkpoint may lack, from the weights
    wte = state_dict.get("transformer.wte.weight")
    if wte is not None and wte.dim() == 2:
        converted.setdefault("vocab_size", int(wte.shape[0]))
        converted.setdefault("n_embd", int(wte.shape[1]))
    if "n_layer" not in converted:
        layers = {k.split(".")[2] for k in state_dict if k.startswith("transformer.h.")}
        if layers:
            converted["n_layer"] = len(layers)
    wpe = state_dict.get("transformer.wpe.weight")
    if wpe is not None and "block_size" not in converted:
        converted["block_size"] = int(wpe.shape[0])
    missing = [k for k in ("vocab_size", "n_embd", "n_layer", "n_head", "block_size") if k not in converted]
    if missing:
        raise CheckpointError(f"{source}: model_args lack {', '.join(missing)} and they cannot be inferred from the weights")
    return converted


def _convert_legacy_weights(state_dict: dict, kwargs: dict, source: str) -> dict:
    """Weights of the research codebase's optional extras, mapped onto today's model.

    - ``cls_embedding`` (a scorer's dedicated [CLS] vector, swapped in wherever the input is
      ``cls_token_id``) becomes row ``cls_token_id`` of the token embedding, which is exactly
      what that swap computed (a scorer's embedding is not tied to any head);
    - ``critic_head.*`` (an auxiliary head of language models) is dropped: the LM head and
      trunk do not depend on it.
    """
    state_dict = dict(state_dict)
    cls_embedding = state_dict.pop("cls_embedding", None)
    if cls_embedding is not None:
        cls_id = kwargs.get("cls_token_id")
        wte = state_dict.get("transformer.wte.weight")
        if cls_id is None or wte is None or not (0 <= int(cls_id) < wte.shape[0]):
            raise CheckpointError(
                f"checkpoint {source} has a cls_embedding but no usable cls_token_id ({cls_id!r}) to place it at"
            )
        wte = wte.clone()
        wte[int(cls_id)] = cls_embedding.to(wte.dtype)
        state_dict["transformer.wte.weight"] = wte
        logger.info("%s: dedicated cls_embedding moved into row %d of the token embedding", source, int(cls_id))
    critic = [k for k in state_dict if k.startswith("critic_head.")]
    if critic:
        for k in critic:
            del state_dict[k]
        logger.info("%s: auxiliary critic_head dropped (not part of this model)", source)
    return state_dict


def _shape_problems(model: torch.nn.Module, state_dict: dict) -> tuple[list[str], list[str], list[str]]:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    return missing, unexpected, mismatched


def load_model(path, map_location="cpu", **overrides) -> GPT:
    """Builds the model a checkpoint describes and loads its weights (legacy formats converted).

    ``overrides`` replace config values (e.g. ``dropout=0.0``, ``attention_backend="torch"``).
    Nothing is frozen: the returned model has every parameter trainable (the trainer re-freezes on resume if it needs).
    Any missing key, unexpected key or shape mismatch raises :class:`CheckpointError` listing
    them; a model is returned only when every tensor loaded.
    """
    checkpoint = load_checkpoint(path, map_location=map_location)
    model = model_from_checkpoint(checkpoint, source=str(path), **overrides)
    if isinstance(map_location, (str, torch.device)):
        model.to(map_location)
    return model


def model_from_checkpoint(checkpoint: dict, source: str = "checkpoint", **overrides) -> GPT:
    """:func:`load_model` for a checkpoint dict already in memory."""
    state_dict = model_state_dict(checkpoint)
    model_args = checkpoint.get("model_args")
    if not isinstance(model_args, dict):
        raise CheckpointError(f"checkpoint {source} has no model_args describing the architecture")
    kwargs = convert_model_args(model_args, state_dict, f"checkpoint {source}")
    unknown = sorted(set(overrides) - _CONFIG_FIELDS)
    if unknown:
        raise ValueError(f"unknown model overrides {', '.join(unknown)}; valid ones: {', '.join(sorted(_CONFIG_FIELDS))}")
    kwargs.update(overrides)
    try:
        config = GPTConfig(**kwargs)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {source} describes an invalid model: {exc}") from None
    state_dict = _convert_legacy_weights(state_dict, kwargs, f"checkpoint {source}")
    model = GPT(config)
    missing, unexpected, mismatched = _shape_problems(model, state_dict)
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys {_listing(missing, 8).strip(' ()')}")
        if unexpected:
            parts.append(f"unexpected keys {_listing(unexpected, 8).strip(' ()')}")
        if mismatched:
            parts.append(f"shape mismatches {'; '.join(mismatched[:8])}")
        raise CheckpointError(f"checkpoint {source} does not fit a {config.mode.value} model: " + "; ".join(parts))
    model.load_state_dict(state_dict, strict=True)
    return model

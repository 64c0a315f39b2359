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
import math
import os
import pickle
import tempfile
import zipfile
from collections import OrderedDict
from pathlib import Path, PurePath
from typing import Any

import torch

from mmengine.errors import CheckpointError, first_sentence
from mmengine.legacy import (
    _convert_legacy_weights,
    clean_state_dict,
    convert_model_args,
    model_state_dict,
    upgrade_trainer_state,
)
from mmengine.model import GPT, GPTConfig, ModelMode
from mmengine.upstream import read_refused_checkpoint, to_mmengine_layout

logger = logging.getLogger(__name__)

__all__ = [
    "CheckpointError",
    "check_optimizer_state",
    "check_resume_state",
    "check_run_state",
    "checkpoint_bytes",
    "checkpoint_config",
    "clean_state_dict",
    "convert_model_args",
    "load_checkpoint",
    "load_model",
    "load_upstream_checkpoint",
    "model_from_checkpoint",
    "model_state_dict",
    "save_checkpoint",
    "unwrap_model",
    "upgrade_trainer_state",
]

# prefixes added by torch.compile (_orig_mod.) and DistributedDataParallel (module.)
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
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        _raise_if_disk_full(exc, path, checkpoint)
        raise
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException as exc:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        _raise_if_disk_full(exc, path, checkpoint)
        raise
    _fsync_dir(path.parent)
    logger.debug("saved checkpoint %s", path)
    return path


def checkpoint_bytes(checkpoint: dict) -> int:
    """About the size of ``checkpoint`` on disk: the bytes of its tensors (storages shared by tied weights once)."""
    seen: set = set()
    total = 0

    def walk(value) -> None:
        nonlocal total
        if isinstance(value, torch.Tensor):
            storage = value.untyped_storage()
            key = (storage.data_ptr(), storage.nbytes())
            if key not in seen:
                seen.add(key)
                total += storage.nbytes()
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)

    walk(checkpoint)
    return total


def _raise_if_disk_full(exc: BaseException, path: Path, checkpoint: dict) -> None:
    from mmengine.run_dir import disk_full, disk_full_error

    if disk_full(exc):
        kept = "the previous checkpoint there is intact" if path.exists() else "nothing was written"
        raise disk_full_error(path, checkpoint_bytes(checkpoint), kept=kept) from None


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
        detail = lines[0].replace("WeightsUnpickler error: ", "").split(". Please")[0] if lines else first_sentence(exc)
        # --- earlier-trainer files (mmengine/upstream.py) ---------------------------------------
        # The restricted loader reads the file again, every other class kept as inert data and nothing
        # from the file run: a checkpoint of the earlier trainer comes back in mmengine's layout, a pickle
        # that calls a function is refused, a damaged stream "cannot be read", anything else gets this.
        checkpoint = read_refused_checkpoint(path, map_location=map_location, refusal=(
            f"checkpoint {path} holds objects other than tensors and plain values and is refused by the "
            f"safe loader (weights_only=True): {detail}"))
        # -------------------------------------------------------------------------------------------
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"checkpoint {path} cannot be read; it is truncated, corrupt or not a torch checkpoint "
            f"({first_sentence(exc)})"
        ) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(checkpoint).__name__}, not a dict")
    if "model" not in checkpoint:
        if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
            return {"model": checkpoint}
        keys = ", ".join(sorted(map(str, checkpoint))[:8]) or "none"
        raise CheckpointError(f"checkpoint {path} has no 'model' entry (its keys: {keys})")
    if not isinstance(checkpoint["model"], dict):
        raise CheckpointError(f"checkpoint {path}: its 'model' entry is a {type(checkpoint['model']).__name__}, "
                              "not a state dict")
    return checkpoint


def load_upstream_checkpoint(path, map_location="cpu") -> dict:
    """A checkpoint of any known format (mmengine, earlier trainer, nanoGPT) in mmengine's layout.

    mmengine's own files are read with ``weights_only=True``; only a file that loader refuses is read
    again with the restricted loader (see :func:`read_refused_checkpoint`). The vocabulary is left as
    the file has it: :func:`map_vocabulary` maps it onto a data dir's.
    """
    return to_mmengine_layout(load_checkpoint(path, map_location=map_location), source=str(path))


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


def _config_and_kwargs(checkpoint: dict, source: str, overrides: dict) -> tuple[GPTConfig, dict, dict]:
    state_dict = model_state_dict(checkpoint)
    model_args = checkpoint.get("model_args")
    if not isinstance(model_args, dict):
        raise CheckpointError(f"checkpoint {source} has no model_args describing the architecture")
    kwargs = convert_model_args(model_args, state_dict, f"checkpoint {source}")
    unknown = sorted(set(overrides) - _CONFIG_FIELDS)
    if unknown:
        raise ValueError(f"unknown model overrides {', '.join(unknown)}; valid ones: "
                         f"{', '.join(sorted(_CONFIG_FIELDS))}")
    kwargs.update(overrides)
    try:
        config = GPTConfig(**kwargs)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {source} describes an invalid model: {exc}") from None
    return config, kwargs, state_dict


def checkpoint_config(checkpoint: dict, source: str = "checkpoint", **overrides) -> GPTConfig:
    """The :class:`GPTConfig` a checkpoint describes (older ``model_args`` converted), nothing allocated."""
    return _config_and_kwargs(checkpoint, source, overrides)[0]


def model_from_checkpoint(checkpoint: dict, source: str = "checkpoint", **overrides) -> GPT:
    """:func:`load_model` for a checkpoint dict already in memory.

    A ``model_args`` that describes a model too large for this machine's memory is refused before
    anything is allocated (see :mod:`mmengine.memory`).
    """
    from mmengine.memory import check_model_fits

    config, kwargs, state_dict = _config_and_kwargs(checkpoint, source, overrides)
    check_model_fits(config, f"checkpoint {source}")
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


# -----------------------------------------------------------------------------
# What a resume reads besides the model


def check_run_state(checkpoint: dict, source: str) -> None:
    """The run's entries besides the weights, as every reader of a trainer checkpoint uses them: ``trainer`` a dict
    (or absent), ``iter_num`` a non-negative integer, ``best_val_loss`` a number or None; :class:`CheckpointError`
    names the bad one."""
    trainer = checkpoint.get("trainer")
    if trainer is not None and not isinstance(trainer, dict):
        raise CheckpointError(f"checkpoint {source}: its trainer entry is a {type(trainer).__name__}, not a dict of "
                              "trainer component states")
    it = checkpoint.get("iter_num", 0)
    if isinstance(it, bool) or not isinstance(it, int) or it < 0:
        raise CheckpointError(f"checkpoint {source}: iter_num must be a non-negative integer, got {it!r}")
    best = checkpoint.get("best_val_loss")
    if isinstance(best, torch.Tensor) and best.numel() == 1:  # nanoGPT and the earlier trainer save a 0-d tensor
        best = best.item()
    if best is not None and (isinstance(best, bool) or not isinstance(best, (int, float)) or math.isnan(best)):
        raise CheckpointError(f"checkpoint {source}: best_val_loss must be a number or None, got {best!r}")


def check_resume_state(checkpoint: dict, source: str) -> None:
    """:func:`check_run_state`, and an ``optimizer`` entry that is an optimizer state dict (``None``: the file holds
    weights only and cannot be resumed), checked before any of them is used."""
    opt = checkpoint.get("optimizer")
    if opt is None:
        raise CheckpointError(f"checkpoint {source} holds no optimizer state (optimizer=None), so it cannot be "
                              "resumed; start a new run from its weights with --transfer.init_from_checkpoint instead")
    if not (isinstance(opt, dict) and isinstance(opt.get("state"), dict) and isinstance(opt.get("param_groups"), list)):
        raise CheckpointError(f"checkpoint {source}: its optimizer entry is a {type(opt).__name__} without 'state' and "
                              "'param_groups', not an optimizer state dict")
    check_run_state(checkpoint, source)


def check_optimizer_state(optimizer: torch.optim.Optimizer, source: str) -> None:
    """After ``optimizer.load_state_dict``: every state tensor of a parameter has the parameter's shape.

    ``load_state_dict`` checks only the group sizes; a moment of another shape would fail at the first step,
    deep inside AdamW.
    """
    for group in optimizer.param_groups:
        for p in group["params"]:
            for name, value in optimizer.state.get(p, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != p.shape:
                    raise CheckpointError(f"checkpoint {source}: its optimizer state '{name}' has shape "
                                          f"{tuple(value.shape)} for a parameter of shape {tuple(p.shape)}")

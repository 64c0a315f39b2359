"""What a checkpoint holds, without building its model: ``python -m mmengine.inspect CKPT [--json]``.

Reads mmengine's own files, the earlier research trainer's (other code's classes kept as inert data,
see :mod:`mmengine.restricted_pickle`) and nanoGPT's, and reports the format (with the earlier trainer's
version features), mode, architecture, vocabulary and special ids, iteration, losses, stored config,
frozen status and file size. :func:`describe_checkpoint` returns it as a dict, :func:`format_description`
as text for the terminal.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from mmengine.checkpoint import load_upstream_checkpoint
from mmengine.config import cli_entry
from mmengine.errors import CheckpointError, UserError
from mmengine.legacy import convert_model_args, is_derived_buffer
from mmengine.upstream import FORMAT_EARLIER_TRAINER, FORMAT_MMENGINE, _id_ranges

__all__ = ["describe_checkpoint", "format_description", "main"]

_ARCHITECTURE = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "bias", "attention_type", "use_rope",
                 "dropout")


def _unique_tensors(state: dict) -> list[torch.Tensor]:
    """The state dict's tensors, a tensor stored under two names (a tied LM head) counted once."""
    seen, out = set(), []
    for key, value in state.items():
        if not isinstance(value, torch.Tensor) or is_derived_buffer(key):
            continue
        ident = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape))
        if ident not in seen:
            seen.add(ident)
            out.append(value)
    return out


def _vocabulary(fmt: str, checkpoint: dict, rows: int | None) -> dict:
    up = checkpoint["upstream"]
    vocab = up.get("vocabulary") or {}
    out: dict[str, Any] = {"rows": rows, "text_ids": vocab.get("text"), "special_ids": {}, "reserved": None}
    if fmt == FORMAT_MMENGINE:
        out["special_ids"] = dict(vocab.get("special_ids") or {})
        cls = (checkpoint.get("model_args") or {}).get("cls_token_id")
        if cls is not None:
            out["special_ids"].setdefault("[CLS]", cls)
    elif fmt == FORMAT_EARLIER_TRAINER and vocab.get("mask") is not None:
        out["special_ids"]["[MASK]"] = vocab["mask"]
        if vocab.get("cls") is not None:
            out["special_ids"]["[CLS]"] = vocab["cls"]
        if vocab.get("cls_embedding"):
            out["special_ids"]["[CLS]"] = f"{vocab.get('cls')} (input vector: cls_embedding)"
        used = {v for v in (vocab["mask"], vocab.get("cls")) if isinstance(v, int)}
        reserved = [i for i in range(vocab["mask"] + 1, rows or 0) if i not in used]
        out["reserved"] = _id_ranges(reserved) if reserved else None
    return out


def _frozen(fmt: str, checkpoint: dict, n_tensors: int) -> dict | None:
    model_args = checkpoint.get("model_args") or {}
    out: dict[str, Any] = {}
    if fmt == FORMAT_MMENGINE:
        trainer = checkpoint.get("trainer") or {}
        if "frozen" in trainer:
            out["frozen_at_save"] = bool(trainer["frozen"])
            out["unfrozen_at"] = trainer.get("unfrozen_at")
    for key in ("freeze_transformer", "unfreeze_at_iteration", "unfreeze_lr_multiplier"):
        if key in model_args:
            out[key] = model_args[key]
    optimizer = checkpoint.get("optimizer")
    if isinstance(optimizer, dict) and isinstance(optimizer.get("param_groups"), list):
        held = sum(len(g.get("params", [])) for g in optimizer["param_groups"] if isinstance(g, dict))
        out["optimizer_parameters"] = f"{held} of {n_tensors}"
    return out or None


def describe_checkpoint(path) -> dict:
    """Everything :func:`format_description` prints, as plain data; :class:`CheckpointError` when unreadable."""
    path = Path(path)
    checkpoint = load_upstream_checkpoint(path)
    up = checkpoint["upstream"]
    fmt = up["format"]
    state = {k.replace("_orig_mod.", ""): v for k, v in checkpoint["model"].items()}
    tensors = _unique_tensors(state)
    wte = state.get("transformer.wte.weight")
    rows = int(wte.shape[0]) if isinstance(wte, torch.Tensor) and wte.dim() == 2 else None
    info: dict[str, Any] = {
        "path": str(path),
        "file_size": path.stat().st_size,
        "format": fmt,
        "version_hints": list(up.get("version_hints") or []),
        "mode": None,
        "architecture": None,
        "parameters": sum(t.numel() for t in tensors),
        "vocabulary": _vocabulary(fmt, checkpoint, rows),
        "iter_num": checkpoint.get("iter_num"),
        "losses": {"best_val_loss": checkpoint.get("best_val_loss")},
        "training_context": up.get("training_context"),
        "config": checkpoint.get("config"),
        "frozen": _frozen(fmt, checkpoint, len(tensors)),
        "inert_classes": list(up.get("inert_classes") or []),
    }
    context = up.get("training_context")
    if isinstance(context, dict) and "best_val_loss_for_stage" in context:
        info["losses"]["best_val_loss_of_stage"] = context["best_val_loss_for_stage"]
    model_args = checkpoint.get("model_args")
    if isinstance(model_args, dict):
        try:
            args = convert_model_args(model_args, state, f"checkpoint {path}")
        except CheckpointError as exc:
            info["architecture"] = {"error": str(exc)}
        else:
            info["mode"] = args["mode"]
            info["architecture"] = {k: args[k] for k in _ARCHITECTURE if k in args}
            if args["mode"] == "token_classifier":
                info["architecture"]["num_token_classes"] = args.get("num_token_classes")
    return info


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def _pairs(values: dict, limit: int = 200) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in values.items())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_description(info: dict) -> str:
    """:func:`describe_checkpoint`'s dict as aligned lines for a terminal."""
    lines: list[tuple[str, str]] = [("checkpoint", f"{info['path']} ({_size(info['file_size'])})"),
                                    ("format", info["format"])]
    lines += [("", f"- {hint}") for hint in info["version_hints"]]
    lines.append(("mode", info["mode"] or "unknown (no model_args)"))
    arch = info["architecture"]
    if arch and "error" in arch:
        lines.append(("architecture", arch["error"]))
    elif arch:
        text = (f"{arch['n_layer']} layers, {arch['n_head']} heads, {arch['n_embd']} wide, block {arch['block_size']}, "
                f"{arch['attention_type']} attention, {'RoPE' if arch['use_rope'] else 'learned positions'}, "
                f"{'bias' if arch['bias'] else 'no bias'}, dropout {arch['dropout']}")
        if "num_token_classes" in arch:
            text += f", {arch['num_token_classes']} token classes"
        lines.append(("architecture", f"{text}; {info['parameters']:,} parameters"))
    vocab = info["vocabulary"]
    text = f"{vocab['rows']} rows" if vocab["rows"] is not None else "no token embedding"
    if vocab["text_ids"] is not None:
        text += f": {vocab['text_ids']} text ids"
    if vocab["special_ids"]:
        text += ", " + ", ".join(f"{tok} {i}" for tok, i in vocab["special_ids"].items())
    if vocab["reserved"]:
        text += f"; reserved {vocab['reserved']}"
    lines.append(("vocabulary", text))
    lines.append(("iteration", str(info["iter_num"])))
    lines.append(("losses", _pairs(info["losses"])))
    frozen = info["frozen"]
    if frozen:
        text = _pairs({k: v for k, v in frozen.items() if k != "optimizer_parameters"})
        if "optimizer_parameters" in frozen:
            held, _, total = frozen["optimizer_parameters"].partition(" of ")
            text += ("; " if text else "") + f"its optimizer holds {held} of {total} parameter tensors"
            if held.isdigit() and total.isdigit() and int(held) < int(total):
                text += " (the others were frozen when it was built)"
        lines.append(("frozen", text))
    else:
        lines.append(("frozen", "not recorded"))
    if info["training_context"]:
        lines.append(("training", _pairs(info["training_context"])))
    config = info["config"]
    if isinstance(config, dict) and config and all(isinstance(v, dict) for v in config.values()):
        lines += [(f"config [{table}]", _pairs(values)) for table, values in config.items()]
    elif isinstance(config, dict) and config:
        name = str(config.get("__class__", "")).rsplit(".", 1)[-1]
        rest = {k: v for k, v in config.items() if k != "__class__"}
        lines.append(("config", (f"{name}: " if name else "") + _pairs(rest, 400)))
    else:
        lines.append(("config", "none stored"))
    if info["inert_classes"]:
        lines.append(("inert data", ", ".join(info["inert_classes"]) + " (read as data, never imported)"))
    width = max(len(label) for label, _ in lines) + 2
    return "\n".join(f"{label:<{width}}{text}" for label, text in lines)


_USAGE = """usage: python -m mmengine.inspect CKPT [--json]

Describe a checkpoint without building its model: format (mmengine, earlier trainer with its version
features, nanoGPT), mode, architecture, vocabulary and special ids, iteration, losses, stored config, frozen
status and file size. Files of the earlier trainer are read with their classes kept as inert data; nothing
in them is run. --json prints the same as JSON."""


def main(argv: list[str] | None = None) -> int:
    """``python -m mmengine.inspect CKPT [--json]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "-h" in args or "--help" in args:
        print(_USAGE)
        return 0

    def _run(args: list[str]) -> int:
        as_json = "--json" in args
        paths = [a for a in args if a != "--json"]
        if len(paths) != 1 or paths[0].startswith("-"):
            raise UserError("give one checkpoint file (python -m mmengine.inspect CKPT [--json]).")
        try:
            info = describe_checkpoint(paths[0])
        except CheckpointError as exc:
            raise UserError(str(exc)) from None
        print(json.dumps(info, indent=2, default=str) if as_json else format_description(info))
        return 0

    return cli_entry(_run, args, "python -m mmengine.inspect")


if __name__ == "__main__":
    sys.exit(main())

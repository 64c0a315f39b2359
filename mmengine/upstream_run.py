"""A checkpoint of the earlier research trainer or of nanoGPT as the start of an mmengine run: resume and evaluate.

- :func:`resume_path`: what ``run.init_from = "resume"`` reads: ``out_dir/ckpt.pt``, else the newest
  iteration-numbered file (the earlier trainer's ``ckpt_unmasking_20.pt``, or mmengine's ``log.keep_every``
  copies), so the earlier trainer's output folder resumes as it is and its files are never overwritten.
- :func:`load_for_resume`: the file in the shape the trainer restores: an mmengine file as it is; a foreign
  one with its vocabulary mapped onto the data dir (:func:`mmengine.upstream.prepare_for_data`, the [CLS] row
  from ``transfer.cls_token_id`` when the file cannot tell), its iteration and best loss, its curriculum
  position (``training_context``), the freeze as the run config says, no data position (the order starts over).
- :func:`restore_optimizer`: an mmengine optimizer state loads as it is; a foreign one (nanoGPT's and the
  earlier trainer's two AdamW groups [decay, no decay] over ``named_parameters()`` in module order, trainable
  parameters only) is mapped onto mmengine's groups by parameter name, the embedding's moments moved with its
  rows; when that cannot be done the optimizer restarts, said in one warning line.
- :func:`run_settings`: for ``evaluate``, the settings a foreign model implies (training type, window length),
  since its stored config is not an mmengine config.
"""
from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any

import torch

from mmengine.checkpoint import load_checkpoint
from mmengine.legacy import clean_state_dict, convert_model_args, is_derived_buffer, model_state_dict
from mmengine.upstream import FORMAT_EARLIER_TRAINER, FORMAT_NANOGPT, prepare_for_data, recognise_format

logger = logging.getLogger(__name__)

__all__ = ["is_foreign", "load_for_resume", "map_optimizer_state", "parameter_order", "restore_optimizer",
           "resume_path", "run_settings"]

_NUMBERED = re.compile(r"ckpt_(?:.+_)?(\d+)\.pt")
_WTE = "transformer.wte.weight"


def resume_path(out_dir) -> Path | None:
    """``out_dir/ckpt.pt``; else the iteration-numbered ``ckpt_<kind>_<iter>.pt`` with the highest iteration;
    else None."""
    out_dir = Path(out_dir)
    if (out_dir / "ckpt.pt").is_file():
        return out_dir / "ckpt.pt"
    numbered = [(int(m.group(1)), p) for p in out_dir.glob("ckpt_*.pt")
                if (m := _NUMBERED.fullmatch(p.name)) and p.is_file()]
    return max(numbered)[1] if numbered else None


def is_foreign(checkpoint: dict) -> bool:
    """Whether ``checkpoint`` was written by the earlier research trainer or nanoGPT."""
    up = checkpoint.get("upstream") if isinstance(checkpoint.get("upstream"), dict) else {}
    fmt = up.get("format") or (recognise_format(checkpoint)[0] if isinstance(checkpoint.get("model"), dict) else None)
    return fmt in (FORMAT_EARLIER_TRAINER, FORMAT_NANOGPT)


def parameter_order(state: dict, model_args: dict, source: str = "checkpoint") -> list[str]:
    """``named_parameters()`` of the model that wrote ``state`` (nanoGPT / the earlier trainer): its keys in
    order, without buffers and without the LM head tied to the embedding (listed once, as the embedding)."""
    mode = convert_model_args(model_args, state, source)["mode"]
    return [k for k in state if not is_derived_buffer(k) and not (mode == "language_model" and k == "lm_head.weight")]


def _curriculum_state(context: Any) -> dict:
    """The earlier trainer's ``training_context`` -> the mode state of mmengine's stage curriculum (empty: none)."""
    if not isinstance(context, dict) or not isinstance(context.get("current_stage"), int):
        return {}
    best = context.get("best_val_loss_for_stage")
    best = (float(best) if isinstance(best, (int, float)) and not isinstance(best, bool) and math.isfinite(best)
            else None)
    return {"curriculum": {"index": int(context["current_stage"]), "best": best,
                           "stale": int(context.get("val_loss_stale_count") or 0)}}


def load_for_resume(path, cfg, meta) -> dict:
    """The checkpoint at ``path`` as :class:`mmengine.train.Trainer` resumes it (see the module docstring)."""
    checkpoint = load_checkpoint(path)
    if not is_foreign(checkpoint):
        return checkpoint
    cls_id = cfg.transfer.cls_token_id if cfg.transfer.cls_token_id >= 0 else None
    layout = prepare_for_data(checkpoint, meta, cls_token_id=cls_id, source=str(path))
    up = dict(layout["upstream"])
    original = clean_state_dict(checkpoint["model"])  # the file's own rows and key order
    up["parameter_order"] = parameter_order(original, checkpoint.get("model_args") or {}, str(path))
    up["parameter_shapes"] = {k: tuple(v.shape) for k, v in original.items() if isinstance(v, torch.Tensor)}
    up["config"] = layout.get("config")
    mode_state = _curriculum_state(up.get("training_context"))
    trainer = {"freeze": {"frozen": bool(cfg.transfer.freeze_transformer), "unfrozen_at": None},
               "mode": mode_state, "progress": {"rollbacks": 0}, "data": []}
    out = dict(layout, upstream=up, config={}, trainer=trainer)
    stage = f", curriculum stage {mode_state['curriculum']['index'] + 1} (its training_context)" if mode_state else ""
    writer = "the earlier research trainer" if up["format"] == FORMAT_EARLIER_TRAINER else up["format"]
    logger.info("resuming from %s, written by %s: its weights with the vocabulary mapped, iteration %d%s; "
                "the data order starts over", path, writer, out["iter_num"], stage)
    return out


def map_optimizer_state(checkpoint: dict, model, optimizer) -> tuple[dict | None, str]:
    """(state dict for ``optimizer``, what was done) from a foreign checkpoint prepared by :func:`load_for_resume`;
    (None, why not) when its optimizer state cannot be told apart parameter by parameter."""
    up = checkpoint.get("upstream") or {}
    foreign = up.get("optimizer")
    names, shapes = up.get("parameter_order"), up.get("parameter_shapes") or {}
    if not isinstance(foreign, dict) or not isinstance(foreign.get("param_groups"), list) or names is None:
        return None, "the file holds no optimizer state"
    groups = foreign["param_groups"]
    if len(groups) != 2:
        return None, (f"its optimizer has {len(groups)} parameter groups, not the two (decay, no decay) of "
                      "nanoGPT's layout")
    sizes = [len(g.get("params", [])) for g in groups]
    by_id: dict[int, str] = {}
    # the trainable parameters when the optimizer was made: all of them, or the head alone (a frozen trunk)
    for candidate in (names, [n for n in names if not n.startswith("transformer.")]):
        decay = [n for n in candidate if len(shapes.get(n, ())) >= 2]
        no_decay = [n for n in candidate if len(shapes.get(n, ())) < 2]
        if [len(decay), len(no_decay)] == sizes:
            by_id = dict(zip([*groups[0]["params"], *groups[1]["params"]], decay + no_decay))
            break
    else:
        return None, (f"its groups hold {sizes[0]} + {sizes[1]} tensors, which matches neither all of the model's "
                      "parameters nor its head alone")
    state_of = {by_id[i]: s for i, s in (foreign.get("state") or {}).items() if i in by_id}
    row_source = (up.get("vocabulary_map") or {}).get("row_source")
    name_of = {id(p): n for n, p in model.named_parameters()}
    new_state, mapped, dropped = {}, 0, sorted(set(state_of) - set(name_of.values()))
    index = 0
    for group in optimizer.param_groups:
        for p in group["params"]:
            name = name_of[id(p)]
            s = state_of.get(name)
            if s is not None:
                moments = {}
                for key in ("exp_avg", "exp_avg_sq"):
                    value = s.get(key)
                    if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(shapes.get(name, ())):
                        return None, f"its state of {name} does not have that parameter's shape"
                    if name == _WTE and row_source is not None:
                        value = _rows(value, row_source)
                    if tuple(value.shape) != tuple(p.shape):
                        return None, f"its state of {name} has shape {tuple(value.shape)}, the model {tuple(p.shape)}"
                    moments[key] = value
                new_state[index] = {"step": s.get("step", 0), **moments}
                mapped += 1
            index += 1
    state = optimizer.state_dict()
    state["state"] = new_state
    what = f"optimizer moments of {mapped} tensors mapped by parameter name"
    if row_source is not None and _WTE in state_of:
        what += " (the embedding's moved with its rows; new rows start at zero)"
    if dropped:
        what += f"; {len(dropped)} of the file's tensors have no place in this model ({', '.join(dropped)})"
    return state, what


def _rows(value: torch.Tensor, row_source: list[int]) -> torch.Tensor:
    """The rows of ``value`` in the mapped vocabulary's order; new rows zero."""
    out = torch.zeros((len(row_source), *value.shape[1:]), dtype=value.dtype, device=value.device)
    src = torch.tensor(row_source)
    keep = src >= 0
    out[keep] = value[src[keep]]
    return out


def restore_optimizer(optimizer, model, checkpoint: dict) -> None:
    """Load the checkpoint's optimizer state: mmengine's as it is, a foreign one mapped by parameter name
    (:func:`map_optimizer_state`) or, when it cannot be mapped, left fresh with one warning line."""
    if not is_foreign(checkpoint):
        optimizer.load_state_dict(checkpoint["optimizer"])
        return
    source = (checkpoint.get("upstream") or {}).get("source", "checkpoint")
    state, what = map_optimizer_state(checkpoint, model, optimizer)
    if state is None:
        logger.warning("the optimizer restarts from zero moments: the optimizer state of %s cannot be mapped onto "
                       "mmengine's parameter groups (%s)", source, what)
        return
    optimizer.load_state_dict(state)
    logger.info("%s: %s", source, what)


def run_settings(checkpoint: dict, source: str = "checkpoint") -> list[tuple[str, Any]]:
    """``[("table.key", value)]`` that a foreign checkpoint's model implies for evaluating it: the training type
    (a causal language model is autoregressive, a bidirectional one unmasking; a 2-class token classifier
    remasking_binary), the token classes, and ``data.block_size`` = the model's context."""
    args = convert_model_args(checkpoint.get("model_args") or {}, model_state_dict(checkpoint), source)
    mode = args["mode"]
    out: list[tuple[str, Any]] = []
    if mode == "language_model":
        out.append(("train.training_type", "autoregressive" if args["attention_type"] == "causal" else "unmasking"))
    elif mode == "token_classifier":
        classes = int(args.get("num_token_classes", 2))
        if classes == 2:
            out.append(("train.training_type", "remasking_binary"))
        else:
            out += [("train.training_type", "token_classification"),
                    ("token_classification.num_token_classes", classes)]
    else:
        out.append(("train.training_type", "sequence_scoring"))
    out.append(("data.block_size", int(args["block_size"])))
    return out

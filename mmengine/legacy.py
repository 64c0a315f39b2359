"""Older files mapped onto today's model: wrapper prefixes, older ``model_args``, optional extra weights,
and the flat trainer state of earlier mmengine checkpoints.

Used by :mod:`mmengine.checkpoint` (which loads files) and :mod:`mmengine.upstream` (files of the
earlier research trainer); imports neither.
"""
from __future__ import annotations

import dataclasses
import logging

from mmengine.errors import CheckpointError
from mmengine.model import GPTConfig, ModelMode

logger = logging.getLogger(__name__)

__all__ = ["clean_state_dict", "model_state_dict", "convert_model_args", "upgrade_trainer_state", "is_derived_buffer"]

# prefixes added by torch.compile (_orig_mod.) and DistributedDataParallel (module.)
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")
_CONFIG_FIELDS = {f.name for f in dataclasses.fields(GPTConfig)}


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


def is_derived_buffer(key: str) -> bool:
    # buffers older code saved that this model recomputes: nanoGPT's causal-mask buffer
    # (attn.bias, present when flash attention was unavailable) and RoPE tables
    return key.endswith(".attn.bias") or key.endswith(("inv_freq", "cos_cached", "sin_cached"))


def model_state_dict(checkpoint: dict) -> dict:
    """The checkpoint's weights with wrapper prefixes stripped and derived buffers dropped."""
    return {k: v for k, v in clean_state_dict(checkpoint["model"]).items() if not is_derived_buffer(k)}


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
        raise CheckpointError(f"{source}: model_args lack {', '.join(missing)} "
                              "and they cannot be inferred from the weights")
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

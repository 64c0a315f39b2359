"""Loading a checkpoint for inference: the model, the vocabulary it reads, and its tokenizer.

What ``sample``, ``score``, ``classify`` and the tournament share: a checkpoint of the wanted head (a
language model, a token classifier, a sequence scorer) is refused in one sentence when it has another
one, holds non-finite weights, or does not fit the data's vocabulary. The data description comes from
``data_dir`` when it is given, else from the one mmengine stored in the checkpoint (files of nanoGPT
and of the earlier trainer store none: they need ``data_dir``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from mmengine.errors import CheckpointError, UserError

ROLES = {"language_model": "language model", "token_classifier": "token classifier",
         "sequence_scorer": "sequence scorer"}


@dataclass
class Loaded:
    """A model ready for inference and what it reads."""

    model: torch.nn.Module
    meta: object  # mmengine.data.dataset.DataMeta
    tokenizer: object | None
    checkpoint: dict
    path: str


def data_of(checkpoint: dict, path, data_dir: str | None = None):
    """(DataMeta, tokenizer) from ``data_dir``, else from the description stored in the checkpoint."""
    from mmengine.data.dataset import DataDir, DataMeta
    from mmengine.data.tokenizer import load_tokenizer

    if data_dir:
        data = DataDir.open(data_dir, verify=False)  # only its vocabulary is read here
        return data.meta, data.tokenizer
    trainer = checkpoint.get("trainer") if isinstance(checkpoint.get("trainer"), dict) else {}
    stored = trainer.get("data_meta")
    if not isinstance(stored, dict):
        raise UserError(f"{path} holds no data description (a nanoGPT or earlier-trainer file?); "
                        "pass --data.dir=DIR with the data it was trained on")
    meta = DataMeta.from_dict(stored)
    tok_cfg = stored.get("tokenizer_config") or {}
    tokenizer = load_tokenizer(tok_cfg, Path(trainer.get("data_dir", "."))) if tok_cfg else None
    return meta, tokenizer


def check_finite(model, path) -> None:
    """Refuse a model whose weights hold NaN or inf (it would generate garbage without a word)."""
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise UserError(f"{path} holds non-finite weights ({name} has NaN or inf); use an earlier checkpoint")


def load_for_inference(path, mode: str, *, data_dir: str | None = None, device="cpu", role: str | None = None,
                       cls_token_id: int | None = None) -> Loaded:
    """The ``mode`` model of checkpoint ``path`` on ``device`` in eval mode, with its data's vocabulary and tokenizer.

    ``mode`` is the head asked for ("language_model", "token_classifier" or "sequence_scorer"); ``role``
    names the model in messages (default: the mode's name).
    """
    from mmengine.checkpoint import load_checkpoint, model_from_checkpoint

    role = role or ROLES.get(mode, mode)
    from mmengine.upstream import ready_for_data

    try:
        checkpoint = load_checkpoint(path)
        meta, tokenizer = data_of(checkpoint, path, data_dir)
        # another trainer's vocabulary mapped onto the data's; an mmengine file of another vocabulary refused
        checkpoint = ready_for_data(checkpoint, meta, f"cannot use {path} with this data", cls_token_id=cls_token_id,
                                    source=str(path))
        model = model_from_checkpoint(checkpoint, source=str(path))
    except CheckpointError as exc:
        raise UserError(f"{role}: {exc}") from None
    have = model.config.mode.value
    if have != mode:
        hint = {"sequence_scorer": " (give it as --sample.judge)",
                "token_classifier": " (give it as --sample.inspector)"}
        raise UserError(f"{path} is a {ROLES.get(have, have)} checkpoint, "
                        f"not a {role}{hint.get(have, '') if mode == 'language_model' else ''}")
    check_finite(model, path)
    if model.config.vocab_size < meta.text_vocab_size:
        raise UserError(f"{path} has {model.config.vocab_size} embedding rows, fewer than the {meta.text_vocab_size} "
                        "text tokens of its data's vocabulary")
    return Loaded(model.to(device).eval(), meta, tokenizer, checkpoint, str(path))

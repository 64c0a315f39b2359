"""The inspector: a token classifier that points at the tokens that look wrong.

Any token-classifier checkpoint with the LM's vocabulary works: mmengine's (any class count) or the
earlier trainer's ``remasking_binary`` files. Class 0 means "keep", so P(wrong) = 1 - P(class 0).
"""
from __future__ import annotations

from pathlib import Path

import torch

from mmengine.errors import UserError
from mmengine.generate.vocab import SamplerVocab
from mmengine.generate.windows import tile_starts


def checkpoint_text_vocab(checkpoint: dict) -> int | None:
    """The text vocabulary size a checkpoint's data description records (None for older files)."""
    meta = (checkpoint.get("trainer") or {}).get("data_meta") or {}
    value = meta.get("text_vocab_size")
    return int(value) if isinstance(value, int) else None


def load_role_model(path, role: str, mode: str, device="cpu", meta=None):
    """(model on ``device`` in eval mode, checkpoint dict); a checkpoint of another mode is refused in one sentence.

    With ``meta`` (the language model's data description) a file of the earlier trainer or of nanoGPT gets its
    vocabulary mapped onto it, and an mmengine file of another vocabulary is refused.
    """
    from mmengine.checkpoint import (
        CheckpointError,
        load_checkpoint,
        model_from_checkpoint,
    )

    try:
        checkpoint = load_checkpoint(path)
        if meta is not None:
            from mmengine.upstream import ready_for_data

            checkpoint = ready_for_data(checkpoint, meta, f"the {role} {path}", source=str(path))
        model = model_from_checkpoint(checkpoint, source=str(path))
    except CheckpointError as exc:
        raise UserError(f"{role} checkpoint: {exc}") from None
    if model.config.mode.value != mode:
        raise UserError(f"the {role} {Path(path)} is a {model.config.mode.value} checkpoint, not a {mode}")
    return model.to(device).eval(), checkpoint


class Inspector:
    """P(wrong) per token from a token classifier: ``p_wrong(x) = 1 - softmax(logits)[..., 0]``."""

    def __init__(self, model, vocab: SamplerVocab, *, text_vocab_size: int | None = None):
        if model.config.mode.value != "token_classifier":
            raise UserError(f"the inspector must be a token classifier, got a {model.config.mode.value} model")
        vocab.check_model(model, "inspector", text_vocab_size=text_vocab_size)
        self.model = model

    @classmethod
    def from_checkpoint(cls, path, vocab: SamplerVocab, *, device="cpu", meta=None) -> Inspector:
        model, checkpoint = load_role_model(path, "inspector", "token_classifier", device, meta)
        return cls(model, vocab, text_vocab_size=checkpoint_text_vocab(checkpoint))

    def p_wrong(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T) float P(wrong); a sequence longer than the context is read in windows."""
        return 1.0 - token_class_probs(self.model, x)[..., 0]


@torch.no_grad()
def token_class_probs(model, x: torch.Tensor) -> torch.Tensor:
    """(B, T) ids -> (B, T, C) class probabilities of a token classifier; a sequence longer than its
    context is read in full-length windows (:func:`tile_starts`; where two overlap, the later one's values stay)."""
    B, T = x.shape
    width = model.config.block_size
    if T <= width:
        return torch.softmax(model(x)[0].float(), dim=-1)
    out = None
    for start in tile_starts(T, width):
        probs = torch.softmax(model(x[:, start:start + width])[0].float(), dim=-1)
        if out is None:
            out = torch.empty(B, T, probs.shape[-1], device=x.device)
        out[:, start:start + width] = probs
    return out

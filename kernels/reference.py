"""Eager PyTorch references for the Triton kernels (used by tests, benchmarks and CPU runs).

RoPE, attention and the balanced class weights are the engine's one eager truth in
:mod:`mmengine.reference` (the model's torch path uses the same functions); this module adds the
cross-entropy reference with the kernel's weight argument resolved.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mmengine.reference import apply_rope, balanced_class_weights, rope_attention_reference, rotate_half

__all__ = [
    "apply_rope",
    "balanced_class_weights",
    "class_weighted_cross_entropy_reference",
    "resolve_class_weight",
    "rope_attention_reference",
    "rotate_half",
]


def resolve_class_weight(weight, targets: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor | None:
    """None, a (C,) tensor or "balanced" -> None or a float32 (C,) tensor on the targets' device."""
    if weight is None:
        return None
    if isinstance(weight, str):
        if weight != "balanced":
            raise ValueError(f'weight must be None, a (C,) tensor or "balanced", got the string {weight!r}.')
        return balanced_class_weights(targets, num_classes, ignore_index)
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f'weight must be None, a (C,) tensor or "balanced", got {type(weight).__name__}.')
    if weight.shape != (num_classes,):
        raise ValueError(f"weight must have shape ({num_classes},) to match the logits, got {tuple(weight.shape)}.")
    return weight.to(device=targets.device, dtype=torch.float32)


def class_weighted_cross_entropy_reference(
    logits: torch.Tensor,
    targets: torch.Tensor,
    weight=None,
    *,
    ignore_index: int = -1,
    reduction: str = "mean",
) -> torch.Tensor:
    """``F.cross_entropy`` with the weights resolved as ``class_weighted_cross_entropy`` does."""
    w = resolve_class_weight(weight, targets, logits.shape[-1], ignore_index)
    if w is not None:
        w = w.to(logits.dtype)
    return F.cross_entropy(logits, targets, weight=w, ignore_index=ignore_index, reduction=reduction)

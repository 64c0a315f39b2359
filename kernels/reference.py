"""Eager PyTorch references for the Triton kernels (used by tests, benchmarks and CPU runs).

Readable rather than fast: the attention reference materialises the (T, T) score matrix and
the cross-entropy reference is ``F.cross_entropy`` with the resolved class weights.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the last dimension, the "rotate half" RoPE layout."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x * cos + rotate_half(x) * sin with cos/sin (T, D) broadcast over (B, H, T, D)."""
    return x * cos + rotate_half(x) * sin


def rope_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    *,
    causal: bool = False,
    lengths: torch.Tensor | None = None,
    sm_scale: float | None = None,
) -> torch.Tensor:
    """RoPE on q and k, then masked softmax attention; same contract as ``rope_attention``.

    q, k, v: (B, H, T, D); cos, sin: (T, D); lengths: (B,) ints or None. Keys at positions
    >= lengths[b] are masked and query rows at those positions output zeros (and so pass no
    gradient). Computed in the inputs' dtype.
    """
    B, H, T, D = q.shape
    scale = 1.0 / math.sqrt(D) if sm_scale is None else sm_scale
    qr, kr = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    scores = (qr @ kr.transpose(-2, -1)) * scale  # (B, H, T, T)
    pos = torch.arange(T, device=q.device)
    allowed = torch.ones(T, T, dtype=torch.bool, device=q.device)
    if causal:
        allowed = torch.tril(allowed)
    allowed = allowed.expand(B, 1, T, T)
    row_valid = torch.ones(B, 1, T, 1, dtype=torch.bool, device=q.device)
    if lengths is not None:
        lengths = lengths.to(q.device)
        allowed = allowed & (pos[None, None, None, :] < lengths[:, None, None, None])
        row_valid = pos[None, None, :, None] < lengths[:, None, None, None]
    scores = scores.masked_fill(~allowed, float("-inf"))
    # Padded rows may have no allowed key at all (length 0): give them finite scores so that
    # softmax and its backward stay NaN-free; their output is zeroed below anyway.
    scores = torch.where(row_valid, scores, torch.zeros((), dtype=scores.dtype, device=q.device))
    probs = torch.softmax(scores, dim=-1)
    return (probs @ v) * row_valid  # (B, H, T, D)


def balanced_class_weights(targets: torch.Tensor, num_classes: int, ignore_index: int = -1) -> torch.Tensor:
    """w_c = N_valid / (C * n_c) for classes present among the valid targets, 0 for absent ones.

    Counted on the targets' device with ``scatter_add_`` (``torch.bincount`` on CUDA reads the
    maximum back to the host), so no host synchronisation. Targets out of [0, C) other than
    ``ignore_index`` are counted nowhere. Returns float32 (C,).
    """
    valid = (targets != ignore_index) & (targets >= 0) & (targets < num_classes)
    # Invalid rows go to an overflow bin C that is dropped afterwards.
    bins = torch.where(valid, targets, torch.full_like(targets, num_classes)).long()
    counts = torch.zeros(num_classes + 1, dtype=torch.float32, device=targets.device)
    counts.scatter_add_(0, bins, torch.ones_like(bins, dtype=torch.float32))
    counts = counts[:num_classes]
    n_valid = counts.sum()
    return torch.where(counts > 0, n_valid / (num_classes * counts.clamp_min(1.0)), torch.zeros_like(counts))


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

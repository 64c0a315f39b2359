"""Eager reference losses used by the model's torch backend (class weights: :mod:`mmengine.reference`).

Every function here is sync-free: nothing reads a value back to the host (no ``.item()``,
no ``torch.unique``, no data-dependent shapes), so a training step on a GPU never stalls on
the loss. Reductions over an empty selection (every target ignored) return 0 with a zero
gradient instead of PyTorch's NaN, so one fully-ignored micro-batch cannot poison a run.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mmengine.reference import balanced_class_weights

__all__ = [
    "class_balanced_weights",
    "class_balanced_cross_entropy",
    "weighted_cross_entropy",
    "position_weights",
    "safe_divide",
    "cross_entropy",
    "soft_cross_entropy",
    "mse",
]


def safe_divide(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den, and num itself where den is 0 (a mean over nothing: every target ignored).

    Branch-free, so nothing is read back to the host; num is 0 in that case, so the answer is 0.
    """
    return num / torch.where(den > 0, den, torch.ones_like(den))


# the class weights are part of the one eager reference shared with the kernels
class_balanced_weights = balanced_class_weights


def position_weights(
    targets: torch.Tensor, weight: torch.Tensor | None = None, ignore_index: int = -1
) -> torch.Tensor:
    """float32 ``w[y_i]`` per position (1 without ``weight``), 0 where ``y_i == ignore_index``.

    Their sum is the denominator of PyTorch's weighted mean cross-entropy.
    """
    valid = targets != ignore_index
    if weight is None:
        return valid.to(torch.float32)
    # ignored positions index class 0 and are then zeroed: gathering with -1 would fail
    safe_targets = torch.where(valid, targets, torch.zeros_like(targets)).long()
    return weight.to(torch.float32)[safe_targets] * valid


def weighted_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int = -1,
) -> torch.Tensor:
    """``F.cross_entropy(logits, targets, weight, ignore_index)`` with a NaN-free empty case.

    logits (..., C), targets (...) with ``ignore_index`` for positions that do not count.
    Mean reduction as PyTorch defines it: ``sum_i w[y_i] * nll_i / sum_i w[y_i]`` over the
    non-ignored positions; 0 (with zero gradient) when that denominator is 0.
    """
    num_classes = logits.size(-1)
    flat_logits = logits.reshape(-1, num_classes)  # (N, C)
    flat_targets = targets.reshape(-1)  # (N,)
    if flat_logits.size(0) != flat_targets.size(0):
        raise ValueError(
            f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} disagree on the number of positions"
        )
    nll = F.cross_entropy(
        flat_logits.float(), flat_targets.long(), ignore_index=ignore_index, reduction="none"
    )  # (N,), 0 at ignored positions
    per_position = position_weights(flat_targets, weight, ignore_index)
    return safe_divide((nll * per_position).sum(), per_position.sum())


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -1) -> torch.Tensor:
    """Mean cross-entropy over non-ignored positions (0 when all are ignored)."""
    return weighted_cross_entropy(logits, targets, None, ignore_index)


def class_balanced_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -1
) -> torch.Tensor:
    """Cross-entropy weighted by :func:`class_balanced_weights` of this batch's targets.

    Equals ``F.cross_entropy(logits.view(-1, C), targets.view(-1), weight=w, ignore_index=...)``
    whenever at least one target is valid; 0 with a zero gradient when none is.
    """
    weight = class_balanced_weights(targets, logits.size(-1), ignore_index)
    return weighted_cross_entropy(logits, targets, weight, ignore_index)


def soft_cross_entropy(logits: torch.Tensor, soft_targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a distribution per position: ``-sum_c p_c log softmax(z)_c``.

    logits and soft_targets are both (..., C). A position whose target row sums to 0 is
    ignored (the soft counterpart of ``ignore_index``); the result is the mean over the other
    positions, 0 when there are none.
    """
    if logits.shape != soft_targets.shape:
        raise ValueError(
            f"soft targets must have the logits' shape {tuple(logits.shape)}, got {tuple(soft_targets.shape)}"
        )
    log_probs = F.log_softmax(logits.float(), dim=-1)
    soft = soft_targets.float()
    per_position = -(soft * log_probs).sum(-1)  # (...)
    valid = (soft.sum(-1) != 0).to(per_position.dtype)
    return safe_divide((per_position * valid).sum(), valid.sum())


def mse(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error between (B,) predictions and (B,) float targets."""
    if predictions.shape != targets.shape:
        raise ValueError(
            f"scores must have shape {tuple(predictions.shape)}, got {tuple(targets.shape)}"
        )
    return F.mse_loss(predictions.float(), targets.float())

"""Fused class-weighted cross-entropy: loss and gradient in one kernel, no softmax buffer.

    loss_i = w[t_i] * (logsumexp(x_i) - x_i[t_i])           for valid rows (t_i != ignore_index)
    grad_i = w[t_i] * (softmax(x_i) - onehot(t_i)) / denom     denom = sum_valid w[t_i] for "mean", else 1

which is exactly ``F.cross_entropy(x, t, weight=w, ignore_index=..., reduction=...)`` and its
gradient. One program handles BLOCK_R rows and sweeps their C logits in BLOCK_C-wide blocks
twice: the first sweep keeps an online max and sum of exponentials (right for C = 2 and for a
50k vocabulary alike), the second writes the gradient straight into a logits-sized buffer, as
Liger-Kernel does. Nothing of size N x C other than that gradient is ever allocated, and the
backward only scales the stored gradient by grad_output in place.

Weights: None (uniform), a (C,) tensor, or "balanced", w_c = N_valid / (C * n_c) for classes
present and 0 for absent ones, counted on the device (``balanced_class_weights``): no host
synchronisation anywhere, so a training step never stalls on the loss. With balanced weights,
sum_valid w[t_i] = N_valid * (#present classes) / C, and the "mean" loss is the average over
present classes of each class's mean NLL.

All rows ignored: like ``F.cross_entropy``, "mean" gives NaN (0 / 0) with a zero gradient,
"sum" gives 0 and "none" gives zeros.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._runtime import check_runnable, interpreting
from .reference import resolve_class_weight

_INTERPRET = interpreting()

_REDUCTIONS = ("mean", "sum", "none")


@triton.jit
def _weighted_ce_kernel(
    X, TARGETS, WEIGHT, DENOM, LOSS, GRAD,
    stride_xn, stride_gn,
    N, C, ignore_index,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
    HAS_WEIGHT: tl.constexpr, COMPUTE_GRAD: tl.constexpr, MEAN: tl.constexpr,
):
    # X (N, C) with unit column stride; LOSS (N,) fp32 gets the weighted, unnormalised row loss;
    # GRAD (N, C) gets the gradient of the reduced loss for grad_output = 1.
    # Invariant of the first sweep, per row: m = max of the logits seen so far,
    # d = sum over them of exp(x - m); hence lse = m + log(d) once every block is seen.
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols0 = tl.arange(0, BLOCK_C)
    row_in = rows < N
    t = tl.load(TARGETS + rows, mask=row_in, other=ignore_index)
    # Out-of-range targets are treated as ignored instead of reading out of bounds (the launcher
    # rejects them: an IndexError on CPU, a device-side assertion on CUDA).
    valid = row_in & (t != ignore_index) & (t >= 0) & (t < C)
    t_safe = tl.where(valid, t, 0)
    if HAS_WEIGHT:
        w = tl.load(WEIGHT + t_safe, mask=valid, other=0.0).to(tl.float32)
    else:
        w = tl.where(valid, 1.0, 0.0)

    X += rows.to(tl.int64)[:, None] * stride_xn
    m = tl.full([BLOCK_R], -1.0e30, dtype=tl.float32)  # finite: padded rows stay NaN-free
    d = tl.zeros([BLOCK_R], dtype=tl.float32)
    for start_c in range(0, C, BLOCK_C):
        cols = start_c + cols0
        mask = row_in[:, None] & (cols[None, :] < C)
        x = tl.load(X + cols[None, :], mask=mask, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, 1))
        d = d * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new[:, None]), 1)
        m = m_new
    # Padded rows (row_in false) keep lse = 0 so the second sweep never exponentiates 1e30.
    lse = tl.where(row_in, m + tl.log(tl.where(d > 0.0, d, 1.0)), 0.0)
    x_t = tl.load(X + t_safe[:, None], mask=valid[:, None], other=0.0).to(tl.float32)
    x_t = tl.sum(x_t, 1)  # (BLOCK_R, 1) -> (BLOCK_R,)
    tl.store(LOSS + rows, tl.where(valid, w * (lse - x_t), 0.0), mask=row_in)

    if COMPUTE_GRAD:
        scale = w
        if MEAN:
            scale = w / tl.load(DENOM)
        scale = tl.where(valid, scale, 0.0)  # ignored rows get exactly 0 even when denom is 0
        GRAD += rows.to(tl.int64)[:, None] * stride_gn
        for start_c in range(0, C, BLOCK_C):
            cols = start_c + cols0
            mask = row_in[:, None] & (cols[None, :] < C)
            x = tl.load(X + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            p = tl.exp(x - lse[:, None])
            g = (p - tl.where(cols[None, :] == t_safe[:, None], 1.0, 0.0)) * scale[:, None]
            tl.store(GRAD + cols[None, :], g.to(GRAD.dtype.element_ty), mask=mask)


# (max C, BLOCK_R, BLOCK_C, num_warps): a few buckets instead of one config per power of two,
# so the set compiled ahead of time (tests/test_kernel_aot.py) stays small. Each tile holds at
# most 4096 logits; narrow C gets many rows per program so small-C launches are not starved.
_CE_CONFIGS = (
    (16, 64, 16, 4),
    (128, 16, 128, 4),
    (1024, 2, 1024, 4),
    (None, 1, 4096, 8),
)


def ce_config(num_classes: int) -> tuple[int, int, int]:
    """(BLOCK_R, BLOCK_C, num_warps) for a given number of classes."""
    for max_c, block_r, block_c, warps in _CE_CONFIGS:
        if max_c is None or num_classes <= max_c:
            return block_r, block_c, warps
    raise AssertionError("unreachable")


def all_ce_configs():
    """Every (BLOCK_R, BLOCK_C, num_warps) the launcher can pick (for AOT checks)."""
    return [cfg[1:] for cfg in _CE_CONFIGS]


def _check_inputs(logits, targets, ignore_index, reduction):
    check_runnable("class_weighted_cross_entropy", logits, targets, interpret=_INTERPRET)
    if logits.dim() != 2:
        raise ValueError(f"class_weighted_cross_entropy needs logits of shape (N, C), got {tuple(logits.shape)}.")
    if targets.shape != logits.shape[:1] or targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise ValueError(
            f"class_weighted_cross_entropy needs integer targets of shape ({logits.shape[0]},), "
            f"got {targets.dtype} {tuple(targets.shape)}."
        )
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}.")
    if logits.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"class_weighted_cross_entropy needs fp16, bf16 or fp32 logits, got {logits.dtype}.")


def _check_target_range(targets, num_classes, ignore_index):
    """Targets outside [0, C) that are not ignore_index are an error, as in ``F.cross_entropy``.

    On CPU the check reads the targets (free there) and raises IndexError. On CUDA reading them
    would be a host sync, so it is a device-side assertion instead, which, like PyTorch's own
    out-of-range check, surfaces at a later synchronisation.
    """
    bad = (targets != ignore_index) & ((targets < 0) | (targets >= num_classes))
    if targets.is_cuda:
        torch._assert_async(~bad.any(), "class_weighted_cross_entropy: a target is out of range for the logits.")
    elif bool(bad.any()):
        raise IndexError(
            f"class_weighted_cross_entropy: target {int(targets[bad][0])} is out of range for "
            f"{num_classes} classes (and is not ignore_index={ignore_index})."
        )


def cross_entropy_forward(logits, targets, weight=None, *, ignore_index=-1, reduction="mean", compute_grad=True):
    """Launch the fused kernel. Returns (loss in logits' dtype, gradient buffer (N, C) or None).

    The gradient buffer holds d(loss)/d(logits) for grad_output = 1 ("none": per-row
    grad_output = 1); ``cross_entropy_backward`` scales it.
    """
    _check_inputs(logits, targets, ignore_index, reduction)
    N, C = logits.shape
    _check_target_range(targets, C, ignore_index)
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    targets = targets.contiguous()
    w = resolve_class_weight(weight, targets, C, ignore_index)
    valid = (targets != ignore_index) & (targets >= 0) & (targets < C)
    mean = reduction == "mean"
    denom = None
    if mean:
        # Device-side scalar (never read on the host): sum of w[t] over the valid rows.
        if w is None:
            denom = valid.sum(dtype=torch.float32)
        else:
            denom = torch.where(valid, w[torch.where(valid, targets, 0)], 0.0).sum()
        denom = denom.reshape(1)
    loss_rows = torch.empty(N, dtype=torch.float32, device=logits.device)
    grad = torch.empty_like(logits, memory_format=torch.contiguous_format) if compute_grad else None
    block_r, block_c, warps = ce_config(C)
    if N > 0:  # Triton rejects empty grids; the reductions below give F.cross_entropy's empty results
        _weighted_ce_kernel[(triton.cdiv(N, block_r),)](
            logits, targets, w if w is not None else loss_rows, denom if denom is not None else loss_rows,
            loss_rows, grad if grad is not None else logits,
            logits.stride(0), grad.stride(0) if grad is not None else 0,
            N, C, ignore_index,
            BLOCK_R=block_r, BLOCK_C=block_c,
            HAS_WEIGHT=w is not None, COMPUTE_GRAD=compute_grad, MEAN=mean,
            num_warps=warps,
        )
    if reduction == "none":
        loss = loss_rows
    elif mean:
        loss = loss_rows.sum() / denom[0]  # 0 / 0 = NaN when every row is ignored, as in PyTorch
    else:
        loss = loss_rows.sum()
    return loss.to(logits.dtype), grad


def cross_entropy_backward(grad, grad_output, reduction):
    """Scale the stored gradient by grad_output, in place (no second N x C buffer)."""
    if reduction == "none":
        return grad.mul_(grad_output.to(grad.dtype)[:, None])
    return grad.mul_(grad_output.to(grad.dtype))


class ClassWeightedCrossEntropyFunction(torch.autograd.Function):
    """Autograd wrapper: forward/backward only call the launchers above."""

    @staticmethod
    def forward(ctx, logits, targets, weight, ignore_index, reduction):
        loss, grad = cross_entropy_forward(logits, targets, weight, ignore_index=ignore_index, reduction=reduction)
        ctx.grad = grad
        ctx.reduction = reduction
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        if ctx.grad is None:
            raise RuntimeError(
                "class_weighted_cross_entropy's backward consumes its stored gradient; "
                "running backward through it twice (retain_graph=True) is not supported."
            )
        grad, ctx.grad = ctx.grad, None
        return cross_entropy_backward(grad, grad_output, ctx.reduction), None, None, None, None


def class_weighted_cross_entropy(logits, targets, weight=None, *, ignore_index=-1, reduction="mean"):
    """Cross-entropy with optional class weights, fused with its gradient.

    Args:
        logits: (N, C) fp16, bf16 or fp32.
        targets: (N,) integer class ids; rows equal to ``ignore_index`` contribute nothing.
        weight: None, a (C,) tensor, or "balanced" (w_c = N_valid / (C * n_c) for present classes,
            0 for absent ones, counted on the device).
        reduction: "mean" (divided by the sum of the valid rows' weights), "sum" or "none".

    Returns:
        The loss in logits' dtype, equal in value and gradient to
        ``F.cross_entropy(logits, targets, weight=w, ignore_index=ignore_index, reduction=reduction)``.
        Use it as the LM loss with ``weight=None``.
    """
    if not (torch.is_grad_enabled() and logits.requires_grad):
        # Evaluation (or logits that need no gradient): skip the logits-sized gradient buffer.
        loss, _ = cross_entropy_forward(
            logits, targets, weight, ignore_index=ignore_index, reduction=reduction, compute_grad=False
        )
        return loss
    return ClassWeightedCrossEntropyFunction.apply(logits, targets, weight, ignore_index, reduction)

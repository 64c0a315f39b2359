"""The one eager truth for RoPE, masked attention and class-balanced weights.

The model's torch path, the losses and the Triton kernels' tests all use these functions, so the
kernels are held to exactly what the model computes on a CPU. Readable rather than fast: the
attention materialises the (T, T) score matrix. Plain torch only (importing this never imports
triton).

One rule for padding, everywhere: with ``lengths`` (B,), keys at positions >= ``lengths[b]`` are
masked out, and query rows at those positions output zeros (so they pass no gradient); a row of
length 0 is all zeros.
"""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F

__all__ = [
    "rope_cos_sin",
    "rotate_half",
    "apply_rope",
    "valid_positions",
    "attention_mask",
    "attention_reference",
    "rope_attention_reference",
    "balanced_class_weights",
]


def rope_cos_sin(seq_len: int, head_dim: int, base: float = 10000.0, device=None):
    """cos, sin tables of shape (seq_len, head_dim) for GPT-NeoX "rotate half" RoPE.

    ``inv_freq_i = 1 / base^(2i/head_dim)``; the table repeats the frequencies
    (``cat(freqs, freqs)``) because rotate_half pairs dimension i with i + head_dim/2.
    """
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    positions = torch.arange(seq_len, device=device, dtype=torch.float32)
    freqs = torch.outer(positions, inv_freq)  # (T, D/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (T, D)
    return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the last dimension split in halves."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates x (B, nh, T, hs) by position; cos/sin (T, hs) are cast to x's dtype."""
    return x * cos.to(x.dtype) + rotate_half(x) * sin.to(x.dtype)


def valid_positions(lengths: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Boolean (B, T): True at positions < lengths[b] (the real tokens of each row)."""
    positions = torch.arange(seq_len, device=lengths.device)
    return positions[None, :] < lengths[:, None]


def attention_mask(causal: bool, lengths: torch.Tensor | None, seq_len: int, device) -> torch.Tensor | None:
    """Boolean (B|1, 1, T, T) mask of the keys each query may attend to, or None when all may.

    Padded rows keep key 0, so that their softmax stays finite without reading the lengths back to
    the host; their outputs are zeroed by the caller (:func:`attention_reference` and the model).
    """
    mask = None
    if lengths is not None:
        keys = valid_positions(lengths.to(device).clamp(min=1), seq_len)  # (B, T)
        mask = keys[:, None, None, :]  # (B, 1, 1, T)
    if causal:
        tril = torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()  # (T, T)
        mask = tril[None, None] if mask is None else mask & tril  # (B, 1, T, T)
    return mask


def attention_reference(q, k, v, *, causal: bool = False, lengths=None, sm_scale: float | None = None,
                        dropout_p: float = 0.0, training: bool = False) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v for (B, nh, T, hs) inputs, padded query rows zeroed."""
    T = q.size(-2)
    scale = 1.0 / math.sqrt(q.size(-1)) if sm_scale is None else sm_scale
    att = (q @ k.transpose(-2, -1)) * scale  # (B, nh, T, T)
    mask = attention_mask(causal, lengths, T, q.device)
    if mask is not None:
        att = att.masked_fill(~mask, float("-inf"))
    att = F.softmax(att, dim=-1)
    att = F.dropout(att, p=dropout_p, training=training)
    y = att @ v  # (B, nh, T, T) x (B, nh, T, hs) -> (B, nh, T, hs)
    if lengths is not None:
        y = y * valid_positions(lengths.to(q.device), T)[:, None, :, None].to(y.dtype)
    return y


def rope_attention_reference(q, k, v, cos, sin, *, causal: bool = False, lengths=None,
                             sm_scale: float | None = None) -> torch.Tensor:
    """RoPE on q and k, then :func:`attention_reference`: the contract of ``mmengine.kernels.rope_attention``.

    q, k, v: (B, H, T, D); cos, sin: (T, D) (at least T rows); lengths: (B,) ints or None.
    """
    T = q.size(-2)
    cos, sin = cos[:T], sin[:T]
    return attention_reference(apply_rope(q, cos, sin), apply_rope(k, cos, sin), v, causal=causal,
                               lengths=lengths, sm_scale=sm_scale)


def balanced_class_weights(targets: torch.Tensor, num_classes: int, ignore_index: int = -1) -> torch.Tensor:
    """``w_c = N_valid / (C * n_c)`` for the classes present among the valid targets, 0 for absent ones.

    Float32 (C,) on the targets' device, no gradient. Targets outside [0, C) other than
    ``ignore_index`` are counted nowhere. The histogram is a ``scatter_add_`` into a fixed (C + 1,)
    buffer rather than ``torch.bincount``, which on CUDA reads the maximum back to the host to size
    its output (a device sync per step).
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    with torch.no_grad():
        flat = targets.reshape(-1)
        valid = (flat != ignore_index) & (flat >= 0) & (flat < num_classes)
        bins = torch.where(valid, flat, torch.full_like(flat, num_classes)).long()  # invalid -> overflow bin C
        counts = torch.zeros(num_classes + 1, dtype=torch.float32, device=targets.device)
        counts.scatter_add_(0, bins, torch.ones_like(bins, dtype=torch.float32))
        counts = counts[:num_classes]
        n_valid = counts.sum()
        return torch.where(counts > 0, n_valid / (num_classes * counts.clamp(min=1.0)), torch.zeros_like(counts))

"""Fused RoPE attention: FlashAttention-2 style forward and backward with the rotation on load.

    o = softmax(sm_scale * rope(q) @ rope(k)^T + mask) @ v,   rope(x) = x * cos + rotate_half(x) * sin

q, k, v are (B, H, T, D) and not yet rotated; cos, sin are (T, D) in the "rotate half" layout
cat(freqs, freqs), so only their first halves c = cos[:, :D/2], s = sin[:, :D/2] are read.
Nothing rotated is ever written to memory: every kernel loads the two halves of q (or k),
x1 = x[..., :D/2] and x2 = x[..., D/2:], and rotates them in registers,

    r1 = x1 * c - x2 * s,        r2 = x2 * c + x1 * s,

so every product with a rotated operand is split into two half-width dots:
q_r @ k_r^T = q_r1 @ k_r1^T + q_r2 @ k_r2^T. The gradient through the rotation is its
transpose (the rotation by -theta), applied to the half tiles g1, g2 of d(rope(x)):

    dx1 = g1 * c + g2 * s,       dx2 = g2 * c - g1 * s

i.e. dx = g * cos - rotate_half(g * sin).

Masking: with ``lengths`` (B,), keys at positions >= lengths[b] get probability 0, query rows
at those positions output zeros, and all of their gradients (dq of padded rows, dk/dv of padded
keys) are zero. ``causal`` adds key <= query. T may be any length: every load and store is
masked at the sequence end, so no multiple of the block size is assumed.

Forward stores the row log-sum-exp (base 2) for the backward, which is three kernels:
delta = rowsum(o * do), then dk/dv (one program per key block, looping over query blocks)
and dq (one program per query block, looping over key blocks), both recomputing the
probabilities from the stored LSE. cos/sin are treated as constants (no gradient).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ._runtime import check_runnable, interpreting

# Decided once, when the kernels below are decorated: that is when Triton reads the variable.
_INTERPRET = interpreting()

SUPPORTED_HEAD_DIMS = (16, 32, 64, 128)
# Scores are kept in log2 units (s * log2(e)) so that the kernels use exp2.
LOG2E = tl.constexpr(1.4426950408889634)


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------


@triton.jit
def _load_rotated(X, offs_t, offs_h, row_mask, stride_xt, COS, SIN, stride_ct, HALF: tl.constexpr):
    """Rotated halves (r1, r2) in fp32 of the rows ``offs_t`` of one (T, D) head; masked rows are 0.

    Reads only the first half of cos/sin: the layout is cat(freqs, freqs), so it equals the second.
    ``offs_h`` spans HALF_PAD >= HALF columns (tl.dot needs 16); the extra columns load as 0.
    """
    mask = row_mask[:, None] & (offs_h[None, :] < HALF)
    x_ptrs = X + offs_t[:, None] * stride_xt + offs_h[None, :]
    cs_offs = offs_t[:, None] * stride_ct + offs_h[None, :]
    x1 = tl.load(x_ptrs, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(x_ptrs + HALF, mask=mask, other=0.0).to(tl.float32)
    c = tl.load(COS + cs_offs, mask=mask, other=0.0).to(tl.float32)
    s = tl.load(SIN + cs_offs, mask=mask, other=0.0).to(tl.float32)
    return x1 * c - x2 * s, x2 * c + x1 * s


@triton.jit
def _store_unrotated(
    DX, g1, g2, offs_t, offs_h, row_mask, stride_xt, COS, SIN, stride_ct, scale, HALF: tl.constexpr
):
    """Store scale * R^T (g1, g2): the gradient w.r.t. the unrotated input, given the one w.r.t. the rotated."""
    mask = row_mask[:, None] & (offs_h[None, :] < HALF)
    cs_offs = offs_t[:, None] * stride_ct + offs_h[None, :]
    c = tl.load(COS + cs_offs, mask=mask, other=0.0).to(tl.float32)
    s = tl.load(SIN + cs_offs, mask=mask, other=0.0).to(tl.float32)
    dx1 = (g1 * c + g2 * s) * scale
    dx2 = (g2 * c - g1 * s) * scale
    dx_ptrs = DX + offs_t[:, None] * stride_xt + offs_h[None, :]
    tl.store(dx_ptrs, dx1.to(DX.dtype.element_ty), mask=mask)
    tl.store(dx_ptrs + HALF, dx2.to(DX.dtype.element_ty), mask=mask)


@triton.jit
def _program_coords(LENGTHS, H, T):
    """(block index, b * H + h, b, h, valid length of sequence b clamped to [0, T]) of this program.

    Every attention kernel runs on a (B * H, T blocks) grid: B * H goes on the first axis, whose
    limit is 2**31 - 1 (the second one's is 65535). pid_bh, b and h are int64 so that the head
    offsets (b * stride_b, pid_bh * T) cannot overflow on tensors of 2**31 elements or more.
    """
    pid_bh = tl.program_id(0).to(tl.int64)
    pid = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    seq_len = tl.minimum(tl.maximum(tl.load(LENGTHS + b), 0), T)
    return pid, pid_bh, b, h, seq_len


@triton.jit
def _attn_fwd(
    Q, K, V, COS, SIN, LENGTHS, OUT, LSE,
    sm_scale,
    stride_qb, stride_qh, stride_qt,
    stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt,
    stride_ob, stride_oh, stride_ot,
    stride_ct,
    H, T,
    HEAD_DIM: tl.constexpr, HALF_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr,
):
    # One program = BLOCK_M query rows of one (b, h). Invariant after each key block:
    # m_i = running row max of the scores (log2 units), l_i = sum of exp2(s - m_i),
    # acc = sum of exp2(s - m_i) * v; so o = acc / l_i and lse = m_i + log2(l_i) at the end.
    pid_m, pid_bh, b, h, seq_len = _program_coords(LENGTHS, H, T)
    HALF: tl.constexpr = HEAD_DIM // 2

    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + h * stride_kh
    V += b * stride_vb + h * stride_vh
    OUT += b * stride_ob + h * stride_oh
    LSE += pid_bh * T

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n0 = tl.arange(0, BLOCK_N)
    offs_h = tl.arange(0, HALF_PAD)
    offs_d = tl.arange(0, HEAD_DIM)
    in_seq = offs_m < T
    row_valid = offs_m < seq_len

    # Fold sm_scale and log2(e) into q once so the inner loop uses exp2 directly.
    qk_scale = sm_scale * LOG2E
    q1, q2 = _load_rotated(Q, offs_m, offs_h, in_seq, stride_qt, COS, SIN, stride_ct, HALF)
    q1 = (q1 * qk_scale).to(Q.dtype.element_ty)
    q2 = (q2 * qk_scale).to(Q.dtype.element_ty)

    # A finite initial max keeps a row with every key masked (length 0) NaN-free: its p are all 0.
    m_i = tl.full([BLOCK_M], -1.0e30, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    hi = seq_len
    if CAUSAL:
        hi = tl.minimum(hi, (pid_m + 1) * BLOCK_M)
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + offs_n0
        key_valid = offs_n < seq_len
        k1, k2 = _load_rotated(K, offs_n, offs_h, key_valid, stride_kt, COS, SIN, stride_ct, HALF)
        qk = tl.dot(q1, tl.trans(k1.to(Q.dtype.element_ty)))
        qk = tl.dot(q2, tl.trans(k2.to(Q.dtype.element_ty)), qk)  # (BLOCK_M, BLOCK_N), log2 units
        allowed = key_valid[None, :]
        if CAUSAL:
            allowed = allowed & (offs_n[None, :] <= offs_m[:, None])
        qk = tl.where(allowed, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        alpha = tl.math.exp2(m_i - m_new)
        p = tl.math.exp2(qk - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(V + offs_n[:, None] * stride_vt + offs_d[None, :], mask=key_valid[:, None], other=0.0)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc)
        m_i = m_new

    l_safe = tl.where(l_i > 0.0, l_i, 1.0)
    o = acc / l_safe[:, None]
    o = tl.where(row_valid[:, None], o, 0.0)
    tl.store(
        OUT + offs_m[:, None] * stride_ot + offs_d[None, :], o.to(OUT.dtype.element_ty), mask=in_seq[:, None]
    )
    tl.store(LSE + offs_m, m_i + tl.math.log2(l_safe), mask=in_seq)


@triton.jit
def _attn_bwd_preprocess(
    OUT, DO, DELTA,
    stride_ob, stride_oh, stride_ot,
    stride_dob, stride_doh, stride_dot,
    H, T,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
):
    # delta_i = sum_d o_id * do_id = sum_j p_ij * dp_ij, the softmax-backward row term.
    # Rows of padded queries have o = 0, hence delta = 0. DELTA is (B*H, T).
    pid_bh = tl.program_id(0).to(tl.int64)  # grid and int64 offsets as in _program_coords
    pid_m = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    mask = offs_m < T
    o = tl.load(OUT + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_ot + offs_d[None, :],
                mask=mask[:, None], other=0.0).to(tl.float32)
    do = tl.load(DO + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_dot + offs_d[None, :],
                 mask=mask[:, None], other=0.0).to(tl.float32)
    tl.store(DELTA + pid_bh * T + offs_m, tl.sum(o * do, axis=1), mask=mask)


@triton.jit
def _attn_bwd_dkdv(
    Q, K, V, COS, SIN, LENGTHS, DO, LSE, DELTA, DK, DV,
    sm_scale,
    stride_qb, stride_qh, stride_qt,
    stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt,
    stride_dob, stride_doh, stride_dot,
    stride_ct,
    stride_dkb, stride_dkh, stride_dkt,
    stride_dvb, stride_dvh, stride_dvt,
    H, T,
    HEAD_DIM: tl.constexpr, HALF_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr,
):
    # One program = BLOCK_N keys of one (b, h); loops over the query blocks that can see them.
    # dv = P^T @ do,  dk_rot = sm_scale * dS^T @ q_rot,  dS = P * (dP - delta),  dP = do @ v^T.
    pid_n, pid_bh, b, h, seq_len = _program_coords(LENGTHS, H, T)
    HALF: tl.constexpr = HEAD_DIM // 2

    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + h * stride_kh
    V += b * stride_vb + h * stride_vh
    DO += b * stride_dob + h * stride_doh
    DK += b * stride_dkb + h * stride_dkh
    DV += b * stride_dvb + h * stride_dvh
    LSE += pid_bh * T
    DELTA += pid_bh * T

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m0 = tl.arange(0, BLOCK_M)
    offs_h = tl.arange(0, HALF_PAD)
    offs_d = tl.arange(0, HEAD_DIM)
    in_seq = offs_n < T
    key_valid = offs_n < seq_len
    qk_scale = sm_scale * LOG2E

    k1, k2 = _load_rotated(K, offs_n, offs_h, key_valid, stride_kt, COS, SIN, stride_ct, HALF)
    k1 = k1.to(K.dtype.element_ty)
    k2 = k2.to(K.dtype.element_ty)
    v = tl.load(V + offs_n[:, None] * stride_vt + offs_d[None, :], mask=key_valid[:, None], other=0.0)

    dk1 = tl.zeros([BLOCK_N, HALF_PAD], dtype=tl.float32)
    dk2 = tl.zeros([BLOCK_N, HALF_PAD], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)

    # Causal: queries before this key block never see it; start at the query block holding key 0 of it.
    lo = 0
    if CAUSAL:
        lo = (pid_n * BLOCK_N // BLOCK_M) * BLOCK_M
    # Padded query rows pass no gradient, so the loop stops at seq_len.
    for start_m in range(lo, seq_len, BLOCK_M):
        offs_m = start_m + offs_m0
        row_valid = offs_m < seq_len
        q1, q2 = _load_rotated(Q, offs_m, offs_h, row_valid, stride_qt, COS, SIN, stride_ct, HALF)
        q1 = q1.to(Q.dtype.element_ty)
        q2 = q2.to(Q.dtype.element_ty)
        qkT = tl.dot(k1, tl.trans(q1))
        qkT = tl.dot(k2, tl.trans(q2), qkT)  # (BLOCK_N, BLOCK_M)
        lse = tl.load(LSE + offs_m, mask=row_valid, other=0.0)
        allowed = key_valid[:, None] & row_valid[None, :]
        if CAUSAL:
            allowed = allowed & (offs_m[None, :] >= offs_n[:, None])
        # where() before any product: exp2 of a masked entry may be inf and must not reach a dot.
        pT = tl.where(allowed, tl.math.exp2(qkT * qk_scale - lse[None, :]), 0.0)
        do = tl.load(DO + offs_m[:, None] * stride_dot + offs_d[None, :], mask=row_valid[:, None], other=0.0)
        dv = tl.dot(pT.to(do.dtype), do, dv)
        delta = tl.load(DELTA + offs_m, mask=row_valid, other=0.0)
        dpT = tl.dot(v, tl.trans(do))  # (BLOCK_N, BLOCK_M)
        dsT = (pT * (dpT - delta[None, :])).to(Q.dtype.element_ty)
        dk1 = tl.dot(dsT, q1, dk1)
        dk2 = tl.dot(dsT, q2, dk2)

    _store_unrotated(DK, dk1, dk2, offs_n, offs_h, in_seq, stride_dkt, COS, SIN, stride_ct, sm_scale, HALF)
    tl.store(DV + offs_n[:, None] * stride_dvt + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=in_seq[:, None])


@triton.jit
def _attn_bwd_dq(
    Q, K, V, COS, SIN, LENGTHS, DO, LSE, DELTA, DQ,
    sm_scale,
    stride_qb, stride_qh, stride_qt,
    stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt,
    stride_dob, stride_doh, stride_dot,
    stride_ct,
    stride_dqb, stride_dqh, stride_dqt,
    H, T,
    HEAD_DIM: tl.constexpr, HALF_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr,
):
    # One program = BLOCK_M query rows of one (b, h); loops over the key blocks they see.
    # dq_rot = sm_scale * dS @ k_rot.
    pid_m, pid_bh, b, h, seq_len = _program_coords(LENGTHS, H, T)
    HALF: tl.constexpr = HEAD_DIM // 2

    Q += b * stride_qb + h * stride_qh
    K += b * stride_kb + h * stride_kh
    V += b * stride_vb + h * stride_vh
    DO += b * stride_dob + h * stride_doh
    DQ += b * stride_dqb + h * stride_dqh
    LSE += pid_bh * T
    DELTA += pid_bh * T

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n0 = tl.arange(0, BLOCK_N)
    offs_h = tl.arange(0, HALF_PAD)
    offs_d = tl.arange(0, HEAD_DIM)
    in_seq = offs_m < T
    row_valid = offs_m < seq_len
    qk_scale = sm_scale * LOG2E

    q1, q2 = _load_rotated(Q, offs_m, offs_h, row_valid, stride_qt, COS, SIN, stride_ct, HALF)
    q1 = q1.to(Q.dtype.element_ty)
    q2 = q2.to(Q.dtype.element_ty)
    do = tl.load(DO + offs_m[:, None] * stride_dot + offs_d[None, :], mask=row_valid[:, None], other=0.0)
    lse = tl.load(LSE + offs_m, mask=row_valid, other=0.0)
    delta = tl.load(DELTA + offs_m, mask=row_valid, other=0.0)

    dq1 = tl.zeros([BLOCK_M, HALF_PAD], dtype=tl.float32)
    dq2 = tl.zeros([BLOCK_M, HALF_PAD], dtype=tl.float32)

    hi = seq_len
    if CAUSAL:
        hi = tl.minimum(hi, (pid_m + 1) * BLOCK_M)
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + offs_n0
        key_valid = offs_n < seq_len
        k1, k2 = _load_rotated(K, offs_n, offs_h, key_valid, stride_kt, COS, SIN, stride_ct, HALF)
        k1 = k1.to(K.dtype.element_ty)
        k2 = k2.to(K.dtype.element_ty)
        qk = tl.dot(q1, tl.trans(k1))
        qk = tl.dot(q2, tl.trans(k2), qk)  # (BLOCK_M, BLOCK_N)
        allowed = row_valid[:, None] & key_valid[None, :]
        if CAUSAL:
            allowed = allowed & (offs_n[None, :] <= offs_m[:, None])
        p = tl.where(allowed, tl.math.exp2(qk * qk_scale - lse[:, None]), 0.0)
        v = tl.load(V + offs_n[:, None] * stride_vt + offs_d[None, :], mask=key_valid[:, None], other=0.0)
        dp = tl.dot(do, tl.trans(v))
        ds = (p * (dp - delta[:, None])).to(K.dtype.element_ty)
        dq1 = tl.dot(ds, k1, dq1)
        dq2 = tl.dot(ds, k2, dq2)

    _store_unrotated(DQ, dq1, dq2, offs_m, offs_h, in_seq, stride_dqt, COS, SIN, stride_ct, sm_scale, HALF)


# --------------------------------------------------------------------------------------------
# Launch configurations
# --------------------------------------------------------------------------------------------

# (BLOCK_M, BLOCK_N, num_warps, num_stages) per kernel, picked by a table rather than
# triton.autotune: the choice depends only on (kernel, head_dim, element size), every entry is
# compiled ahead of time for sm_80 and sm_90, causal and not, by tests/test_kernel_aot.py (no
# spills, shared memory within the limit), and the interpreter needs no benchmark to pick one.
# The entries are the largest tiles found (by compiling candidates) that neither spill registers
# nor exceed shared memory on sm_80 *and* sm_90 in both variants; the backward holds k, v and
# three accumulators per program, so its tiles are smaller than the forward's. (fp32 dkdv at
# D=64 is erratic: (16, 32, 8, 1) spills in the causal variant on sm_80, (32, 32, *, 1) spills
# everywhere, (32, 16, 4, 1) needs 168 registers.)
_CONFIGS = {
    # kernel: {elem_bytes: {head_dim: config}}
    "fwd": {
        2: {16: (128, 64, 4, 3), 32: (128, 64, 4, 3), 64: (128, 64, 4, 3), 128: (128, 32, 8, 2)},
        4: {16: (64, 64, 4, 2), 32: (64, 64, 4, 2), 64: (64, 64, 4, 2), 128: (64, 32, 4, 2)},
    },
    "dkdv": {
        2: {16: (64, 64, 4, 2), 32: (64, 64, 4, 2), 64: (16, 64, 4, 2), 128: (32, 32, 8, 2)},
        4: {16: (32, 64, 4, 2), 32: (32, 64, 8, 2), 64: (32, 16, 4, 1), 128: (32, 32, 8, 1)},
    },
    "dq": {
        2: {16: (64, 64, 4, 2), 32: (64, 64, 4, 2), 64: (64, 32, 4, 2), 128: (32, 32, 4, 2)},
        4: {16: (64, 32, 4, 2), 32: (64, 32, 4, 2), 64: (16, 32, 4, 2), 128: (32, 32, 4, 1)},
    },
}
PREPROCESS_BLOCK_M = 64


def attention_config(kernel: str, head_dim: int, elem_bytes: int) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) for one of "fwd", "dkdv", "dq"."""
    return _CONFIGS[kernel][2 if elem_bytes <= 2 else 4][head_dim]


def all_attention_configs():
    """Every (kernel, head_dim, elem_bytes, config) the launchers can pick (for AOT checks)."""
    for kernel, by_bytes in _CONFIGS.items():
        for elem_bytes, by_dim in by_bytes.items():
            for head_dim, cfg in by_dim.items():
                yield kernel, head_dim, elem_bytes, cfg


def _half_pad(head_dim: int) -> int:
    return max(16, head_dim // 2)  # tl.dot needs K >= 16; D=16 pads its 8-wide halves with zeros


# --------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------


def _check_inputs(q, k, v, cos, sin, lengths):
    check_runnable("rope_attention", q, k, v, cos, sin, lengths, interpret=_INTERPRET)
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(
            f"rope_attention needs q, k, v of one shape (B, H, T, D), got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}."
        )
    B, H, T, D = q.shape
    if D not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"rope_attention supports head dims {SUPPORTED_HEAD_DIMS}, got {D}.")
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32) or k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"rope_attention needs q, k, v all fp16, bf16 or fp32, got {q.dtype}, {k.dtype}, {v.dtype}.")
    if cos.shape != (T, D) or sin.shape != (T, D):
        raise ValueError(f"rope_attention needs cos and sin of shape (T, D) = ({T}, {D}), "
                         f"got {tuple(cos.shape)}, {tuple(sin.shape)}.")
    if lengths is not None and (lengths.shape != (B,) or lengths.dtype.is_floating_point):
        raise ValueError(f"rope_attention needs integer lengths of shape ({B},), "
                         f"got {lengths.dtype} {tuple(lengths.shape)}.")


def _last_dim_contiguous(x):
    return x if x.stride(-1) == 1 else x.contiguous()


def _kernel_operands(q, k, v, cos, sin, lengths, sm_scale):
    """What the kernels index: q, k, v with unit last stride (any other strides), contiguous
    cos/sin, (B,) int32 lengths, and the resolved softmax scale."""
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if sm_scale is None else float(sm_scale)
    q, k, v = (_last_dim_contiguous(x) for x in (q, k, v))
    # Lengths are always passed (T for every sequence when None) rather than switched by a
    # constexpr: that would save one scalar load per program and double the compiled variants.
    B, T = q.shape[0], q.shape[2]
    if lengths is None:
        len32 = torch.full((B,), T, dtype=torch.int32, device=q.device)
    else:
        len32 = lengths.to(device=q.device, dtype=torch.int32).contiguous()
    return q, k, v, cos.contiguous(), sin.contiguous(), len32, sm_scale


def rope_attention_forward(q, k, v, cos, sin, *, causal=False, lengths=None, sm_scale=None):
    """Launch the forward kernel. Returns (o (B, H, T, D) like q, lse (B, H, T) fp32, base 2)."""
    _check_inputs(q, k, v, cos, sin, lengths)
    B, H, T, D = q.shape
    q, k, v, cos, sin, len32, sm_scale = _kernel_operands(q, k, v, cos, sin, lengths, sm_scale)
    # o laid out as (B, T, H, D) and viewed as (B, H, T, D): a model's transpose back to
    # (B, T, H*D) is then a free view instead of a copy.
    o = torch.empty((B, T, H, D), dtype=q.dtype, device=q.device).transpose(1, 2)
    lse = torch.empty((B, H, T), dtype=torch.float32, device=q.device)
    if o.numel() == 0:  # nothing to launch (Triton rejects empty grids)
        return o, lse
    block_m, block_n, warps, stages = attention_config("fwd", D, q.element_size())
    grid = (B * H, triton.cdiv(T, block_m))
    _attn_fwd[grid](
        q, k, v, cos, sin, len32, o, lse,
        sm_scale,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        o.stride(0), o.stride(1), o.stride(2),
        cos.stride(0),
        H, T,
        HEAD_DIM=D, HALF_PAD=_half_pad(D), BLOCK_M=block_m, BLOCK_N=block_n,
        CAUSAL=bool(causal),
        num_warps=warps, num_stages=stages,
    )
    return o, lse


def rope_attention_backward(do, q, k, v, cos, sin, o, lse, *, causal=False, lengths=None, sm_scale=None):
    """Launch the three backward kernels. Returns (dq, dk, dv), shaped like q, k, v."""
    B, H, T, D = q.shape
    if q.numel() == 0:
        return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    q, k, v, cos, sin, len32, sm_scale = _kernel_operands(q, k, v, cos, sin, lengths, sm_scale)
    do = _last_dim_contiguous(do)

    delta = torch.empty_like(lse)  # (B, H, T) fp32
    _attn_bwd_preprocess[(B * H, triton.cdiv(T, PREPROCESS_BLOCK_M))](
        o, do, delta,
        o.stride(0), o.stride(1), o.stride(2),
        do.stride(0), do.stride(1), do.stride(2),
        H, T,
        HEAD_DIM=D, BLOCK_M=PREPROCESS_BLOCK_M,
    )

    # Gradients take their inputs' layout where it is dense (else contiguous); the kernels get
    # their own strides, so any layout works.
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    common = (
        sm_scale,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        do.stride(0), do.stride(1), do.stride(2),
        cos.stride(0),
    )
    flags = dict(HEAD_DIM=D, HALF_PAD=_half_pad(D), CAUSAL=bool(causal))

    block_m, block_n, warps, stages = attention_config("dkdv", D, q.element_size())
    _attn_bwd_dkdv[(B * H, triton.cdiv(T, block_n))](
        q, k, v, cos, sin, len32, do, lse, delta, dk, dv, *common,
        dk.stride(0), dk.stride(1), dk.stride(2),
        dv.stride(0), dv.stride(1), dv.stride(2),
        H, T,
        BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps, num_stages=stages, **flags,
    )
    block_m, block_n, warps, stages = attention_config("dq", D, q.element_size())
    _attn_bwd_dq[(B * H, triton.cdiv(T, block_m))](
        q, k, v, cos, sin, len32, do, lse, delta, dq, *common,
        dq.stride(0), dq.stride(1), dq.stride(2),
        H, T,
        BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps, num_stages=stages, **flags,
    )
    return dq, dk, dv


# --------------------------------------------------------------------------------------------
# Autograd and functional form
# --------------------------------------------------------------------------------------------


class RopeAttentionFunction(torch.autograd.Function):
    """Autograd wrapper: forward/backward only call the launchers above."""

    @staticmethod
    def forward(ctx, q, k, v, cos, sin, lengths, causal, sm_scale):
        o, lse = rope_attention_forward(q, k, v, cos, sin, causal=causal, lengths=lengths, sm_scale=sm_scale)
        ctx.save_for_backward(q, k, v, cos, sin, o, lse, lengths)
        ctx.causal, ctx.sm_scale = causal, sm_scale
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, cos, sin, o, lse, lengths = ctx.saved_tensors
        dq, dk, dv = rope_attention_backward(
            do, q, k, v, cos, sin, o, lse, causal=ctx.causal, lengths=lengths, sm_scale=ctx.sm_scale
        )
        return dq, dk, dv, None, None, None, None, None


def rope_attention(q, k, v, cos, sin, *, causal=False, lengths=None, sm_scale=None):
    """Fused attention with rotary embeddings applied to q and k as they are loaded.

    Args:
        q, k, v: (B, H, T, D) fp16, bf16 or fp32, D in {16, 32, 64, 128}; q and k not yet rotated.
        cos, sin: (T, D) in the "rotate half" layout ``cat(freqs, freqs)`` (only the first half
            is read, the second is assumed equal to it); no gradient flows to them.
        causal: mask keys after the query position.
        lengths: optional (B,) ints; keys >= lengths[b] are masked, query rows >= lengths[b]
            output zeros and receive zero gradient.
        sm_scale: softmax scale, default 1/sqrt(D).

    Returns:
        o: (B, H, T, D) in q's dtype. Accumulation is fp32 throughout; on a GPU, fp32 inputs
        go through TF32 tensor-core dots (Triton's default precision for fp32 ``tl.dot``).
    """
    return RopeAttentionFunction.apply(q, k, v, cos, sin, lengths, bool(causal), sm_scale)

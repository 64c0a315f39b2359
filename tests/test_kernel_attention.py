"""rope_attention (Triton, run by the interpreter on CPU) against the eager reference in float64."""
import math

import numpy as np
import pytest
import torch
from mmengine.kernels import rope_attention, rope_attention_reference

# (atol, rtol) on the float64 reference, relative to the largest reference magnitude.
TOLERANCES = {torch.float32: (1e-4, 1e-4), torch.float16: (3e-3, 5e-3)}


def rope_tables(T, D, base=10000.0, dtype=torch.float32):
    """cos, sin (T, D) in the model's rotate-half layout cat(freqs, freqs)."""
    inv_freq = 1.0 / base ** (torch.arange(0, D, 2, dtype=torch.float64) / D)
    freqs = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)  # (T, D/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (T, D)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def assert_close(actual, expected, dtype, what):
    atol, rtol = TOLERANCES[dtype]
    err = (actual.double() - expected).abs().max().item() if actual.numel() else 0.0
    bound = atol + rtol * (expected.abs().max().item() if expected.numel() else 0.0)
    assert err <= bound, f"{what}: max error {err:.3e} > {bound:.3e}"


def run_case(B, H, T, D, causal, lengths, dtype, *, sm_scale=None, layout="bhtd", seed=0):
    gen = torch.Generator().manual_seed(seed)

    fused = torch.randn(B, T, 3 * H * D, generator=gen).to(dtype).requires_grad_() if layout == "split" else None
    parts = iter(fused.split(H * D, dim=2)) if fused is not None else None

    def make():
        if layout == "split":  # c_attn(x).split(...).view(B, T, H, D).transpose(1, 2): not dense
            return next(parts).view(B, T, H, D).transpose(1, 2)
        if layout == "bthd":  # the model's view: (B, T, H, D) transposed, so T is not the second-last stride
            return torch.randn(B, T, H, D, generator=gen).to(dtype).transpose(1, 2).requires_grad_()
        return torch.randn(B, H, T, D, generator=gen).to(dtype).requires_grad_()

    q, k, v = make(), make(), make()
    cos, sin = rope_tables(T, D)
    lens = torch.tensor(lengths) if lengths is not None else None
    o = rope_attention(q, k, v, cos, sin, causal=causal, lengths=lens, sm_scale=sm_scale)
    do = torch.randn(o.shape, generator=gen).to(dtype)
    grads = torch.autograd.grad(o, (q, k, v), do)

    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    ref = rope_attention_reference(
        q64, k64, v64, cos.double(), sin.double(), causal=causal, lengths=lens, sm_scale=sm_scale
    )
    ref_grads = torch.autograd.grad(ref, (q64, k64, v64), do.double())

    assert o.dtype == dtype and o.shape == (B, H, T, D)
    assert_close(o, ref, dtype, "o")
    for name, g, r in zip(("dq", "dk", "dv"), grads, ref_grads):
        assert g.shape == r.shape and g.dtype == dtype
        assert_close(g, r, dtype, name)
    return o, grads


# Every T in {1, 17, 63, 130}, B and H in {1, 3}, D in {16, 32, 64, 128}, causal or not,
# lengths or not (incl. 1, 0 and full), fp32 and fp16, each covered at least once without the
# full cross product (the interpreter takes ~0.1-1 s per launch).
CASES = [
    # B, H, T, D, causal, lengths, dtype
    (1, 1, 1, 16, False, None, torch.float32),
    (1, 3, 17, 32, True, None, torch.float32),
    (3, 1, 63, 64, False, [63, 1, 30], torch.float32),
    (2, 1, 130, 128, True, [130, 65], torch.float32),
    (3, 1, 130, 64, False, None, torch.float32),
    (2, 1, 17, 16, False, [0, 17], torch.float32),
    (1, 1, 130, 16, False, [1], torch.float16),
    (3, 3, 17, 64, False, [17, 1, 9], torch.float16),
    (1, 1, 63, 128, False, None, torch.float16),
    (2, 3, 130, 32, True, [100, 130], torch.float16),
    (1, 3, 1, 64, True, None, torch.float16),
    (1, 1, 63, 32, True, [40], torch.float16),
    # causal at D=64 over several blocks: the tables there have BLOCK_M > BLOCK_N (fp32 dkdv,
    # fp16 dq), where the causal loop bounds round to the other kernel's block size
    (2, 1, 130, 64, True, [130, 77], torch.float32),
    (1, 2, 130, 64, True, [100], torch.float16),
]


@pytest.mark.parametrize("B,H,T,D,causal,lengths,dtype", CASES, ids=lambda v: str(v).replace("torch.", ""))
def test_matches_reference(B, H, T, D, causal, lengths, dtype):
    run_case(B, H, T, D, causal, lengths, dtype)


def test_strided_inputs_and_custom_scale():
    # (B, T, H, D) tensors viewed as (B, H, T, D), as a model produces them, and a non-default scale.
    run_case(2, 3, 33, 64, False, [33, 20], torch.float32, sm_scale=0.3, layout="bthd")


def test_non_dense_views_of_a_fused_projection():
    # q, k, v sliced out of one (B, T, 3*H*D) tensor, as a model's fused c_attn gives them.
    run_case(2, 2, 19, 32, True, None, torch.float32, layout="split")


def test_padding_gets_exact_zeros():
    B, H, T, D = 2, 1, 40, 32
    o, (dq, dk, dv) = run_case(B, H, T, D, False, [25, 40], torch.float32)
    assert torch.all(o[0, :, 25:] == 0)
    for g in (dq, dk, dv):  # padded query rows pass no gradient; padded keys get none
        assert torch.all(g[0, :, 25:] == 0)
    assert torch.all(o[1] != 0)


def test_rotation_is_applied():
    # With cos = 1, sin = 0 the kernel is plain attention; with real tables it must differ.
    B, H, T, D = 1, 1, 17, 32
    q, k, v = (torch.randn(B, H, T, D) for _ in range(3))
    plain = rope_attention(q, k, v, torch.ones(T, D), torch.zeros(T, D))
    expected = torch.softmax((q @ k.transpose(-2, -1)) / math.sqrt(D), dim=-1) @ v
    torch.testing.assert_close(plain, expected, atol=1e-5, rtol=1e-5)
    cos, sin = rope_tables(T, D)
    assert not torch.allclose(rope_attention(q, k, v, cos, sin), plain, atol=1e-3)


@pytest.mark.parametrize(
    "shape,cos_shape,match",
    [((1, 1, 8, 48), (8, 48), "head dims"), ((1, 1, 8, 32), (9, 32), "cos and sin"), ((8, 32), (8, 32), "one shape")],
)
def test_rejects_unsupported_inputs(shape, cos_shape, match):
    x = torch.randn(*shape)
    with pytest.raises(ValueError, match=match):
        rope_attention(x, x, x, torch.ones(cos_shape), torch.zeros(cos_shape))


def test_empty_sequence():
    q = torch.zeros(2, 1, 0, 16, requires_grad=True)
    o = rope_attention(q, q, q, torch.zeros(0, 16), torch.zeros(0, 16))
    assert o.shape == (2, 1, 0, 16)
    (g,) = torch.autograd.grad(o.sum(), q)
    assert g.shape == q.shape


# --------------------------------------------------------------------------------------------
# Randomised cases against a second, independent float64 reference
# --------------------------------------------------------------------------------------------


def explicit_rotation_attention(q, k, v, theta, causal, lengths, sm_scale):
    """Attention written from scratch, sharing nothing with the package's reference.

    RoPE as an explicit rotation of each pair (i, i + D/2) by theta[t, i]; each sequence is cut
    to its valid length and attended densely, padded rows are left at zero. float64 throughout.
    """
    B, H, T, D = q.shape
    half = D // 2
    c, s = theta.cos(), theta.sin()  # (T, D/2)

    def rotate(x):  # the pair (x_i, x_{i+D/2}) as a 2-vector, turned by theta
        x1, x2 = x[..., :half], x[..., half:]
        return torch.cat((c * x1 - s * x2, s * x1 + c * x2), dim=-1)

    qr, kr = rotate(q), rotate(k)
    rows = []
    for b in range(B):
        n = T if lengths is None else max(0, min(int(lengths[b]), T))
        out = torch.zeros(H, T, D, dtype=q.dtype)
        if n:
            scores = torch.einsum("hid,hjd->hij", qr[b, :, :n], kr[b, :, :n]) * sm_scale  # (H, n, n)
            if causal:
                future = torch.ones(n, n, dtype=torch.bool).triu(1)
                scores = scores.masked_fill(future, float("-inf"))
            out = torch.cat((torch.einsum("hij,hjd->hid", scores.softmax(-1), v[b, :, :n]),
                             torch.zeros(H, T - n, D, dtype=q.dtype)), dim=1)
        rows.append(out)
    return torch.stack(rows)  # (B, H, T, D)


def random_cases(seed, count):
    rng = np.random.default_rng([seed, 5])
    cases = []
    for i in range(count):
        B, H = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        T = int(rng.integers(1, 71))
        D = int(rng.choice([16, 32]))
        causal = bool(rng.integers(0, 2))
        # None, or per-sequence lengths drawn from {1, T, anything in between}
        lengths = None
        if rng.random() < 0.75:
            lengths = [int(rng.choice([1, T, int(rng.integers(1, T + 1))])) for _ in range(B)]
        cases.append((i, B, H, T, D, causal, lengths))
    return cases


@pytest.mark.parametrize("i,B,H,T,D,causal,lengths", random_cases(seed=2024, count=6))
def test_random_cases_against_explicit_rotation(i, B, H, T, D, causal, lengths):
    gen = torch.Generator().manual_seed(100 + i)
    q, k, v = (torch.randn(B, H, T, D, generator=gen, dtype=torch.float64) for _ in range(3))
    # Arbitrary angles (not a RoPE frequency ladder) so that a wrong sign or transpose shows
    # at every position, including t = 0 where real tables are the identity.
    theta = torch.rand(T, D // 2, generator=gen, dtype=torch.float64) * 2 * math.pi
    cos, sin = torch.cat((theta, theta), dim=-1).cos().float(), torch.cat((theta, theta), dim=-1).sin().float()
    do = torch.randn(B, H, T, D, generator=gen, dtype=torch.float64)
    lens = torch.tensor(lengths) if lengths is not None else None
    sm_scale = 1.0 / math.sqrt(D)

    x32 = [x.float().requires_grad_() for x in (q, k, v)]
    o = rope_attention(*x32, cos, sin, causal=causal, lengths=lens)
    grads = torch.autograd.grad(o, x32, do.float())

    x64 = [x.float().double().requires_grad_() for x in (q, k, v)]  # the kernel's exact inputs
    ref = explicit_rotation_attention(*x64, theta.float().double(), causal, lengths, sm_scale)
    ref_grads = torch.autograd.grad(ref, x64, do.float().double())

    assert_close(o, ref, torch.float32, "o")
    for name, g, r in zip(("dq", "dk", "dv"), grads, ref_grads):
        assert_close(g, r, torch.float32, name)

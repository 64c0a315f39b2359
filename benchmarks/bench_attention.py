"""Attention benchmarks: the fused RoPE attention kernel vs eager PyTorch.

Run (the main test run only collects tests/, so this file is only run when named):

    python -m pytest benchmarks/bench_attention.py --benchmark-only --benchmark-json=attention.json
    python benchmarks/bench_attention.py attention.json     # markdown table: ms, TFLOP/s, peak MB

Implementations (non-causal, no padding, q/k/v (B, H, T, D), cos/sin (T, D)):
- ``triton``: ``mmengine.kernels.rope_attention`` (RoPE applied on load, FlashAttention-2 style).
- ``sdpa``: RoPE applied separately (rotated copies of q and k) + ``F.scaled_dot_product_attention``.
- ``eager``: RoPE + plain matmul-softmax-matmul (materialises the (T, T) scores).
Passes: ``fwd`` and ``fwd+bwd``; T in {256, 1024, 4096}, D in {64, 128}.

FLOPs: 4*B*H*T^2*D for the forward, 2.5x that again for the backward. Peak memory is what the
call allocates beyond its inputs: the CUDA allocator's peak on a GPU, a dispatch-level count of
live tensor storage on CPU.

On CUDA: B=4, H=16, bf16. Without CUDA the Triton cases are skipped (the interpreter is a
correctness tool, not a performance path) and the eager baselines run in fp32 with B=1, H=2 so
that the whole file finishes in a few minutes on a small CPU.
"""
from __future__ import annotations

import json
import math
import os
import sys
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
DTYPE = torch.bfloat16 if CUDA else torch.float32
B, H = (4, 16) if CUDA else (1, 2)
SEQ_LENS = (256, 1024, 4096)
HEAD_DIMS = (64, 128)
BWD_FLOP_FACTOR = 2.5


class PeakMemory(TorchDispatchMode):
    """Peak bytes of tensor storage allocated (and still alive) inside the ``with`` block.

    Works on any device: every op's outputs are counted when created and uncounted when their
    storage is freed, which includes autograd's saved tensors and the backward's buffers.
    """

    def __init__(self):
        super().__init__()
        self._live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _free(self, key):
        self.current -= self._live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = id(storage)
                if key not in self._live and storage.nbytes() > 0:
                    self._live[key] = storage.nbytes()
                    self.current += storage.nbytes()
                    self.peak = max(self.peak, self.current)
                    weakref.finalize(storage, self._free, key)
        return out


def peak_memory_mb(fn) -> float:
    """MB allocated by one call of fn beyond what existed before it."""
    if CUDA:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    with PeakMemory() as tracker:
        fn()
    return tracker.peak / 2**20


def triton_skip_reason() -> str | None:
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return "TRITON_INTERPRET is set: the interpreter is a correctness tool, not a performance path"
    if not CUDA:
        return ("no CUDA device: the Triton kernels are timed on GPUs only "
                "(the CPU interpreter is not a performance path)")
    from mmengine.kernels import triton_available

    if not triton_available():
        return "triton is not installed"
    return None


def rope_tables(T, D, device, dtype=torch.float32):
    inv_freq = 1.0 / 10000 ** (torch.arange(0, D, 2, device=device, dtype=torch.float32) / D)
    freqs = torch.outer(torch.arange(T, device=device, dtype=torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)  # (T, D)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _sdpa(q, k, v, cos, sin):
    from mmengine.kernels.reference import apply_rope

    return F.scaled_dot_product_attention(apply_rope(q, cos, sin), apply_rope(k, cos, sin), v)


def _eager(q, k, v, cos, sin):
    from mmengine.kernels.reference import apply_rope

    qr, kr = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    att = (qr @ kr.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))  # (B, H, T, T)
    return att.softmax(dim=-1) @ v


def _triton(q, k, v, cos, sin):
    from mmengine.kernels import rope_attention

    return rope_attention(q, k, v, cos, sin)


IMPLS = {"triton": _triton, "sdpa": _sdpa, "eager": _eager}


def attention_flops(T, D, fwd_bwd: bool) -> float:
    fwd = 4.0 * B * H * T * T * D
    return fwd * (1.0 + BWD_FLOP_FACTOR) if fwd_bwd else fwd


@pytest.mark.parametrize("D", HEAD_DIMS)
@pytest.mark.parametrize("T", SEQ_LENS)
@pytest.mark.parametrize("pass_", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", list(IMPLS))
def test_attention(benchmark, impl, pass_, T, D):
    if impl == "triton" and (reason := triton_skip_reason()):
        pytest.skip(reason)
    benchmark.group = f"attention {pass_} T={T} D={D}"
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    fwd_bwd = pass_ == "fwd+bwd"
    q, k, v = (
        torch.randn(B, H, T, D, device=DEVICE, dtype=DTYPE, generator=gen).requires_grad_(fwd_bwd) for _ in range(3)
    )
    cos, sin = rope_tables(T, D, DEVICE)
    do = torch.randn(B, H, T, D, device=DEVICE, dtype=DTYPE, generator=gen)
    fn = IMPLS[impl]

    def run():
        if fwd_bwd:
            torch.autograd.grad(fn(q, k, v, cos, sin), (q, k, v), do)
        else:
            with torch.no_grad():
                fn(q, k, v, cos, sin)
        if CUDA:
            torch.cuda.synchronize()

    run()  # warm-up (and Triton compilation)
    benchmark.extra_info.update(
        impl=impl, pass_=pass_, T=T, D=D, B=B, H=H, dtype=str(DTYPE).replace("torch.", ""), device=DEVICE,
        flops=attention_flops(T, D, fwd_bwd), peak_mb=round(peak_memory_mb(run), 2),
    )
    rounds = 20 if CUDA else {256: 20, 1024: 8}.get(T, 3)
    benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=1)


def summarize(path: str) -> str:
    """Markdown table from a --benchmark-json file: median ms, TFLOP/s and peak MB per case."""
    data = json.load(open(path))
    lines = ["| impl | pass | T | D | median ms | TFLOP/s | peak MB |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for bench in sorted(data["benchmarks"], key=lambda b: (b["extra_info"]["pass_"], b["extra_info"]["T"],
                                                            b["extra_info"]["D"], b["extra_info"]["impl"])):
        info, median = bench["extra_info"], bench["stats"]["median"]
        lines.append(
            f"| {info['impl']} | {info['pass_']} | {info['T']} | {info['D']} | {median * 1e3:.2f} "
            f"| {info['flops'] / median / 1e12:.3f} | {info['peak_mb']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/bench_attention.py RESULTS.json")
    print(summarize(sys.argv[1]))

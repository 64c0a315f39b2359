"""Cross-entropy benchmarks: the fused class-weighted kernel vs the eager formulas it replaces.

Run (the main test run only collects tests/, so this file is only run when named):

    python -m pytest benchmarks/bench_cross_entropy.py --benchmark-only --benchmark-json=ce.json
    python benchmarks/bench_cross_entropy.py ce.json     # markdown table: ms, peak MB

Implementations, all computing the class-balanced loss (w_c = N_valid / (C * n_c)) and its
gradient (forward + backward) for N = 8*1024 rows, C in {2, 5, 65, 50304}, 10% rows ignored:
- ``triton``: ``mmengine.kernels.class_weighted_cross_entropy(..., weight="balanced")``.
- ``upstream``: the formula of the code this engine replaces: ``torch.unique`` of the valid
  targets, a Python loop over the classes present filling the weights (a host sync per class on
  a GPU), then ``F.cross_entropy``.
- ``bincount``: ``torch.bincount`` counts -> weights -> ``F.cross_entropy`` (vectorised, but
  boolean indexing of the valid targets still syncs on a GPU).

Peak memory is what one forward+backward allocates beyond the logits (CUDA allocator peak on a
GPU, a dispatch-level count of live tensor storage on CPU; see bench_attention.PeakMemory).
On CUDA logits are bf16; on CPU fp32. Without CUDA the Triton cases are skipped.
"""
from __future__ import annotations

import json
import sys

import pytest
import torch
import torch.nn.functional as F

# pytest (prepend import mode) and `python benchmarks/...` both put this folder on sys.path.
from bench_attention import CUDA, DEVICE, peak_memory_mb, triton_skip_reason

N = 8 * 1024
CLASSES = (2, 5, 65, 50304)
DTYPE = torch.bfloat16 if CUDA else torch.float32
IGNORE = -1


def upstream_balanced_ce(logits, targets):
    """The replaced code's formula: torch.unique + a Python loop + F.cross_entropy."""
    num_classes = logits.shape[1]
    valid_targets = targets[targets != IGNORE]
    unique, counts = torch.unique(valid_targets, return_counts=True)
    weights = torch.zeros(num_classes, device=logits.device, dtype=logits.dtype)
    n_valid = valid_targets.numel()
    for cls, count in zip(unique.tolist(), counts.tolist()):
        weights[cls] = n_valid / (num_classes * count)
    return F.cross_entropy(logits, targets, weight=weights, ignore_index=IGNORE)


def bincount_balanced_ce(logits, targets):
    """Vectorised weights from torch.bincount, then F.cross_entropy."""
    num_classes = logits.shape[1]
    valid_targets = targets[targets != IGNORE]
    counts = torch.bincount(valid_targets, minlength=num_classes).to(logits.dtype)
    weights = torch.where(counts > 0, valid_targets.numel() / (num_classes * counts.clamp_min(1)), 0.0)
    return F.cross_entropy(logits, targets, weight=weights.to(logits.dtype), ignore_index=IGNORE)


def triton_balanced_ce(logits, targets):
    from mmengine.kernels import class_weighted_cross_entropy

    return class_weighted_cross_entropy(logits, targets, "balanced", ignore_index=IGNORE)


IMPLS = {"triton": triton_balanced_ce, "upstream": upstream_balanced_ce, "bincount": bincount_balanced_ce}


@pytest.mark.parametrize("C", CLASSES)
@pytest.mark.parametrize("impl", list(IMPLS))
def test_cross_entropy(benchmark, impl, C):
    if impl == "triton" and (reason := triton_skip_reason()):
        pytest.skip(reason)
    benchmark.group = f"cross-entropy C={C}"
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    logits = torch.randn(N, C, device=DEVICE, generator=gen).to(DTYPE).requires_grad_()
    targets = torch.randint(0, C, (N,), device=DEVICE, generator=gen)
    targets[torch.rand(N, device=DEVICE, generator=gen) < 0.1] = IGNORE
    fn = IMPLS[impl]

    def run():
        loss = fn(logits, targets)
        (grad,) = torch.autograd.grad(loss, logits)
        if CUDA:
            torch.cuda.synchronize()
        return grad

    run()
    benchmark.extra_info.update(
        impl=impl, C=C, N=N, dtype=str(DTYPE).replace("torch.", ""), device=DEVICE,
        logits_mb=round(logits.numel() * logits.element_size() / 2**20, 2), peak_mb=round(peak_memory_mb(run), 2),
    )
    rounds = 20 if CUDA else (3 if C > 1000 else 10)
    benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=1)


def summarize(path: str) -> str:
    data = json.load(open(path))
    lines = ["| impl | C | N | median ms | peak MB (logits MB) |", "| --- | ---: | ---: | ---: | ---: |"]
    for bench in sorted(data["benchmarks"], key=lambda b: (b["extra_info"]["C"], b["extra_info"]["impl"])):
        info, median = bench["extra_info"], bench["stats"]["median"]
        lines.append(f"| {info['impl']} | {info['C']} | {info['N']} | {median * 1e3:.2f} "
                     f"| {info['peak_mb']:.1f} ({info['logits_mb']:.1f}) |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/bench_cross_entropy.py RESULTS.json")
    print(summarize(sys.argv[1]))

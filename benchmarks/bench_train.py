"""Training throughput on the CPU: the mmengine trainer against a plain eager loop of the same model.

    python -m pytest benchmarks/bench_train.py --benchmark-only -s

Side by side in one run, the quickstart model (the defaults of ``python -m mmengine.train``) trained
on the bundled tiny-Shakespeare corpus with the masked-diffusion objective:

- ``eager_nanogpt_loop``: nanoGPT-style ``get_batch`` (random offsets with replacement, a Python list
  of slices + ``torch.stack``), masking in torch, eager model, no prefetch, no compile;
- ``mmengine_trainer``: :class:`mmengine.train.Trainer` steps as ``python -m mmengine.train`` runs
  them (epoch sampler, C++ window gather, numpy masking in the background prefetcher), eager;
- ``mmengine_trainer_compiled``: the same with ``--run.compile=true`` (compilation is excluded by
  warm-up steps).

Each benchmark times ``STEPS`` optimizer steps per round. A module fixture then prints tokens/s, the ratio
to the eager loop and the MFU against this machine's measured float32 matmul rate.
"""
from __future__ import annotations

import os
import tempfile
import time

import numpy as np
import pytest
import torch

from mmengine.config import load_config
from mmengine.run_logging import measure_matmul_flops

STEPS = int(os.environ.get("BENCH_TRAIN_STEPS", "40"))
ROUNDS = int(os.environ.get("BENCH_TRAIN_ROUNDS", "3"))
RESULTS: dict[str, float] = {}
LOAD_BEFORE = ", ".join(f"{v:.2f}" for v in os.getloadavg())
FLOPS_PER_TOKEN: dict[str, float] = {}


def _cfg(*extra):
    out = tempfile.mkdtemp(prefix="bench_train_")
    return load_config([f"--run.out_dir={out}", "--run.device=cpu", "--log.progress=false", *extra])


def _record(benchmark, name, tokens_per_round, flops_per_token):
    best = benchmark.stats.stats.min
    RESULTS[name] = tokens_per_round / best
    FLOPS_PER_TOKEN[name] = flops_per_token
    benchmark.extra_info["tokens_per_s"] = round(RESULTS[name])


def test_eager_nanogpt_loop(benchmark):
    """The reference: everything on the training thread, eager PyTorch."""
    from mmengine.data.dataset import DataDir, default_data_dir
    from mmengine.model import GPT, GPTConfig
    from mmengine.schedule import schedule_from_config

    cfg = _cfg()
    data = DataDir.open(default_data_dir())
    tokens = data.tokens("train")
    meta = data.meta
    B, T = cfg.data.batch_size, cfg.data.block_size
    m = cfg.model
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=T, vocab_size=meta.vocab_size, n_layer=m.n_layer, n_head=m.n_head,
                          n_embd=m.n_embd, dropout=m.dropout, bias=m.bias, attention_type=m.attention_type,
                          use_rope=m.use_rope, attention_backend="torch", loss_backend="torch"))
    o = cfg.optim
    optimizer = model.configure_optimizers(o.weight_decay, o.learning_rate, (o.beta1, o.beta2), "cpu")
    lr_of = schedule_from_config(o, cfg.train.max_iters)

    def get_batch():
        ix = torch.randint(len(tokens) - T, (B,))
        x = torch.stack([torch.from_numpy(tokens[i:i + T].astype(np.int64)) for i in ix])
        # the quickstart stage: each row masks a uniformly drawn share of its tokens
        ratio = torch.rand(B, 1)
        mask = torch.rand(B, T) < ratio
        return torch.where(mask, meta.mask_id, x), torch.where(mask, x, -1)

    it = [0]

    def steps():
        for _ in range(STEPS):
            for g in optimizer.param_groups:
                g["lr"] = lr_of(it[0])
            x, y = get_batch()
            _, loss = model(x, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            it[0] += 1

    steps()  # warm-up
    benchmark.pedantic(steps, rounds=ROUNDS, iterations=1)
    _record(benchmark, "eager_nanogpt_loop", STEPS * B * T, model.flops_per_token())


def _trainer_bench(benchmark, name, *extra, warmup_steps=5):
    from mmengine.train import Trainer

    trainer = Trainer(_cfg(*extra))
    stream = trainer.batch_stream()
    trainer.raw_model.train()
    it = [0]

    def steps(n=STEPS):
        for _ in range(n):
            trainer._apply_lr(it[0])
            trainer.forward_backward(it[0], stream)
            trainer.optimizer_step()
            it[0] += 1

    t0 = time.perf_counter()
    steps(warmup_steps)  # includes torch.compile's compilation when it is on
    benchmark.extra_info["warmup_s"] = round(time.perf_counter() - t0, 1)
    try:
        benchmark.pedantic(steps, rounds=ROUNDS, iterations=1)
    finally:
        stream.close()
    cfg = trainer.cfg
    _record(benchmark, name, STEPS * cfg.data.batch_size * cfg.data.block_size, trainer.raw_model.flops_per_token())


def test_mmengine_trainer(benchmark):
    _trainer_bench(benchmark, "mmengine_trainer")


def test_mmengine_trainer_compiled(benchmark):
    _trainer_bench(benchmark, "mmengine_trainer_compiled", "--run.compile=true", warmup_steps=8)


@pytest.fixture(scope="module", autouse=True)
def report():
    """After the benchmarks: tokens/s, ratio to the eager loop and MFU (shown with -s; also written to
    $BENCH_TRAIN_REPORT when set). No assertion on speed: benchmarks measure, tests assert."""
    yield
    if "eager_nanogpt_loop" not in RESULTS:
        return
    peak = measure_matmul_flops("cpu", n=1024, seconds=1.0, trials=5)
    base = RESULTS["eager_nanogpt_loop"]
    lines = [f"float32 matmul rate of this machine (best of 5, 1024^3): {peak / 1e9:.1f} GFLOP/s; "
             f"load average before the run: {LOAD_BEFORE}",
             "", "| loop | tokens/s | vs eager loop | MFU |", "| --- | ---: | ---: | ---: |"]
    for name, tps in RESULTS.items():
        mfu = FLOPS_PER_TOKEN[name] * tps / peak
        lines.append(f"| {name} | {tps:,.0f} | {tps / base:.2f}x | {100 * mfu:.1f}% |")
    text = "\n".join(lines)
    print("\n" + text)
    if os.environ.get("BENCH_TRAIN_REPORT"):
        with open(os.environ["BENCH_TRAIN_REPORT"], "w") as f:
            f.write(text + "\n")

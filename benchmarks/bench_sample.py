"""Sampling speed: the batched sampler (``mmengine.generate``) against a loop like the earlier research sampler.

    python -m pytest benchmarks/bench_sample.py --benchmark-only -s

Workload: 16 samples x 64 tokens x 32 steps from the quickstart LM (4 layers, 128 wide, block 64,
69-id character vocabulary), temperature 1, top-p 0.9; once with random remasking and once with an
inspector (a token classifier of the same size, ``randomness`` 0.5). ``BENCH_SAMPLE_CKPT`` /
``BENCH_SAMPLE_INSPECTOR`` point at trained checkpoints; without them, untrained models of the same
shapes are used (the speed of a forward does not depend on the weights).

``earlier`` mirrors the sampler of JinxCodesAI/nano_gpt at commit 1616e5b (``sample.py`` +
``sample_utils.py``) in structure and cost, written here: each step one batched LM forward (with the
dummy targets it passed, so the loss is computed too), then for each sample in Python: its masked
positions, its logits there, special ids above [MASK] set to -inf on a clone, softmax, a sort of the
whole vocabulary and a cumulative sum for top-p, a ``.min() > 0`` check, ``torch.multinomial``,
a scatter back; then remasking: ``.sum().item()`` checks, per sample an ``.item()`` count,
``torch.where`` for its unmasked positions and ``randperm`` (random) or, with an inspector, one
batched inspector forward and per sample a random/model mix and ``topk``; at the end its
self-confidence (one forward). Nothing is fixed that would change that profile (its bugs, such as
[MASK] left sampleable by top-p, are kept: they cost nothing).

``ours`` is :func:`mmengine.generate.generate` with the same settings (its self-confidence takes 2
forwards, the earlier one 1: counted against us).

Besides tokens/s (generated tokens / seconds per call) the report gives each sampler's *overhead*:
the share of a call spent outside model forwards (forwards timed by a wrapper; CPU calls are
synchronous, so their wall time is their cost). ``test_interleaved`` runs the four variants in
alternation and keeps each one's median round: those are the figures to quote. Measured figures
and how to read them: ``benchmarks/SAMPLING.md`` (on a 2-core CPU: 3-6% of a call outside forwards
for ours, 6-10% for the earlier loop; ~1.0x end to end, the forwards being the shared floor).
"""
from __future__ import annotations

import os
import statistics
import time

import pytest
import torch

from mmengine.generate import Inspector, SampleConfig, SamplerVocab, generate
from mmengine.model import GPT, GPTConfig

SAMPLES, LENGTH, STEPS = 16, 64, 32
TOP_P, TEMPERATURE, RANDOMNESS = 0.9, 1.0, 0.5
ROUNDS = int(os.environ.get("BENCH_SAMPLE_ROUNDS", "5"))
LOAD_BEFORE = ", ".join(f"{v:.2f}" for v in os.getloadavg())
VARIANTS = ("earlier-random", "ours-random", "earlier-inspector", "ours-inspector")
RESULTS: dict[str, dict] = {}


class Timed(torch.nn.Module):
    """A model whose forwards are timed (wall time; on the CPU a forward is synchronous)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.config = inner.config
        self.seconds = 0.0

    def forward(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = self.inner(*args, **kwargs)
        self.seconds += time.perf_counter() - t0
        return out

    def encode(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = self.inner.encode(*args, **kwargs)
        self.seconds += time.perf_counter() - t0
        return out

    @property
    def lm_head(self):
        return self.inner.lm_head


def _quickstart(mode: str) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=64, vocab_size=69, n_layer=4, n_head=4, n_embd=128, dropout=0.0, mode=mode,
                         attention_type="bidirectional", use_rope=True, attention_backend="torch",
                         loss_backend="torch"))


def _load(env: str, mode: str) -> GPT:
    from mmengine.checkpoint import load_model

    path = os.environ.get(env)
    return (load_model(path, attention_backend="torch", loss_backend="torch") if path else _quickstart(mode)).eval()


VOCAB = SamplerVocab(text_vocab_size=65, vocab_size=69, mask_id=65, cls_id=66, pad_id=67, newline_id=0)


# -----------------------------------------------------------------------------
# the earlier sampler's loop (structure and per-sample work of nano_gpt 1616e5b)


def _earlier_nucleus(logits, top_p, temperature, text_vocab):
    if logits.shape[-1] > text_vocab + 1:
        logits = logits.clone()
        logits[..., text_vocab + 1:] = float("-inf")  # [MASK] (= text_vocab) itself stays sampleable
    if temperature != 1.0:
        logits = logits / temperature
    probs = torch.softmax(logits, dim=-1)
    if top_p >= 1.0:
        return torch.multinomial(probs, num_samples=1).squeeze(-1)
    sorted_probs, sorted_idx = torch.sort(probs, dim=-1, descending=True)  # the whole vocabulary
    cut = torch.cumsum(sorted_probs, dim=-1) > top_p
    cut[..., 0] = False
    sorted_probs[cut] = 0.0
    if sorted_probs.sum(dim=-1, keepdim=True).min() > 0:  # a host read per sample
        pick = torch.multinomial(sorted_probs, num_samples=1).squeeze(-1)
        rows = torch.arange(sorted_idx.shape[0]).unsqueeze(-1)
        return sorted_idx[rows, pick.unsqueeze(-1)].squeeze(-1)
    return torch.multinomial(probs, num_samples=1).squeeze(-1)


@torch.no_grad()
def earlier_sampler(lm, inspector, *, samples=SAMPLES, length=LENGTH, steps=STEPS, seed=0):
    torch.manual_seed(seed)
    mask_id, text_vocab = VOCAB.mask_id, VOCAB.text_vocab_size
    tokens = torch.full((samples, length), mask_id, dtype=torch.long)
    for it in range(steps):
        masked = tokens == mask_id
        if masked.sum().item() > 0:
            logits, _ = lm(tokens, torch.zeros_like(tokens))  # dummy targets: the loss is computed too
            for b in range(samples):
                row_masked = masked[b]
                if row_masked.sum() > 0:
                    where = torch.where(row_masked)[0]
                    tokens[b, where] = _earlier_nucleus(logits[b, where], TOP_P, TEMPERATURE, text_vocab)
        prediction = tokens.clone()  # it kept the post-prediction tokens for its display
        if it == steps - 1:
            break
        ratio = 1.0 - (it + 1) / (steps - 1)  # its linear schedule (start 1, end 0) at iteration it + 1
        (prediction == mask_id).sum().item()  # its "masks before" figure, read whether or not it was shown
        target = int(length * ratio)
        extra = torch.clamp(target - (tokens == mask_id).sum(dim=1), min=0)
        if extra.sum() == 0:
            continue
        wrong = None
        if inspector is not None:
            wrong = torch.softmax(inspector(tokens, None)[0], dim=-1)[:, :, 1]
        for b in range(samples):
            n = extra[b].item()
            if n <= 0:
                continue
            open_ = torch.where(tokens[b] != mask_id)[0]
            if len(open_) == 0:
                continue
            k = min(n, len(open_))
            if wrong is None:
                chosen = open_[torch.randperm(len(open_))[:k]]
            else:
                mix = RANDOMNESS * torch.rand(len(open_)) + (1 - RANDOMNESS) * wrong[b, open_]
                chosen = open_[torch.topk(mix, k).indices]
            tokens[b, chosen] = mask_id
    # its self-confidence: one forward, mean log-probability of the final tokens
    log_probs = torch.log_softmax(lm(tokens, torch.zeros_like(tokens))[0], dim=-1)
    confidence = log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).mean(dim=1)
    return tokens, confidence.tolist()


def ours(lm, inspector):
    cfg = SampleConfig(num_samples=SAMPLES, length=LENGTH, steps=STEPS, top_p=TOP_P, temperature=TEMPERATURE,
                       remasking="inspector" if inspector is not None else "random", randomness=RANDOMNESS,
                       device="cpu", progress=False)
    return generate(lm, cfg, VOCAB, inspector=inspector)


# -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def variants():
    lm = Timed(_load("BENCH_SAMPLE_CKPT", "language_model"))
    classifier = Timed(_load("BENCH_SAMPLE_INSPECTOR", "token_classifier"))
    inspector = Inspector(classifier.inner, VOCAB)
    inspector.model = classifier  # the same model, its forwards timed

    def run(name):
        lm.seconds = classifier.seconds = 0.0
        t0 = time.perf_counter()
        if name.startswith("earlier"):
            earlier_sampler(lm, classifier if name.endswith("inspector") else None)
        else:
            ours(lm, inspector if name.endswith("inspector") else None)
        total = time.perf_counter() - t0
        return total, lm.seconds + classifier.seconds

    for name in VARIANTS:  # warm-up
        run(name)
    yield run
    _report()


def _record(name, totals, forwards):
    med = statistics.median(totals)
    RESULTS[name] = {"tokens_per_s": SAMPLES * LENGTH / med, "median_s": med,
                     "overhead": statistics.median(1 - f / t for t, f in zip(totals, forwards))}


@pytest.mark.parametrize("name", VARIANTS)
def test_sampler(benchmark, variants, name):
    totals, forwards = [], []

    def once():
        total, fwd = variants(name)
        totals.append(total)
        forwards.append(fwd)

    benchmark.pedantic(once, rounds=ROUNDS, iterations=1)
    _record(name, totals, forwards)
    benchmark.extra_info.update({k: round(v, 4) for k, v in RESULTS[name].items()})


def test_interleaved(benchmark, variants):
    """The four variants in alternation; each one's median round (robust to busy spells of a shared machine)."""
    runs = {name: ([], []) for name in VARIANTS}

    def cycle():
        for name in VARIANTS:
            total, fwd = variants(name)
            runs[name][0].append(total)
            runs[name][1].append(fwd)

    benchmark.pedantic(cycle, rounds=ROUNDS, iterations=1)
    for name, (totals, forwards) in runs.items():
        _record("interleaved " + name, totals, forwards)


def _report() -> None:
    """tokens/s, speed-up and overhead share. No assertion on speed: benchmarks measure, tests assert."""
    if not RESULTS:
        return
    setup = (f"{SAMPLES} samples x {LENGTH} tokens x {STEPS} steps, top-p {TOP_P}; {ROUNDS} rounds; torch threads "
             f"{torch.get_num_threads()}; load average before the run: {LOAD_BEFORE}; "
             f"weights: {os.environ.get('BENCH_SAMPLE_CKPT') or 'untrained quickstart shape'}")
    lines = [setup, "",
             "| variant | tokens/s | median s/call | ours vs earlier | time outside forwards |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for name, r in RESULTS.items():
        base = RESULTS.get(name.replace("ours", "earlier"))
        ratio = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x" if "ours" in name and base else ""
        lines.append(f"| {name} | {r['tokens_per_s']:,.0f} | {r['median_s']:.3f} | {ratio} | "
                     f"{100 * r['overhead']:.1f}% |")
    text = "\n".join(lines)
    print("\n" + text)
    if os.environ.get("BENCH_SAMPLE_REPORT"):
        with open(os.environ["BENCH_SAMPLE_REPORT"], "w") as f:
            f.write(text + "\n")

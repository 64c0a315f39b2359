"""Sample quality per remasking strategy: one row per strategy, and real validation text for reference.

    python benchmarks/quality_sampling.py LM.pt [--inspector INSP.pt] [--judge JUDGE.pt] [--ar AR.pt]
        [--samples 32] [--length 256] [--steps 64] [--temperature 1.0] [--top-p 1.0] [--seed 0]
        [--data-dir DIR] [--json OUT.json]

Columns (each a mean over the samples, with its standard error where it is a mean of per-sample values):

- ``gen PPL``: generative perplexity under ``--ar`` (any causal GPT with the LM's vocabulary):
  exp of the mean next-token negative log-likelihood of all generated tokens (texts longer than its
  context are read in windows). Lower is more fluent; too low can also mean repetitive text.
- ``unigram H``: entropy in bits of each sample's own token distribution (MDLM's check for
  degenerate, repetitive samples); real text sets the level to expect.
- ``judge``: the judge's score (its direction printed in the header).
- ``self-conf``: the sampler's self-confidence, mean log P_LM(token | rest) (nats).
- ``s/sample``: wall time of the batched call / samples.

The reference row uses random windows of ``--length`` tokens of the validation split (of the data dir
stored in the LM checkpoint, or ``--data-dir``). Strategies that need an inspector are skipped without
one. Every strategy runs with the same seed and settings.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np
import torch

from mmengine.generate import Inspector, Judge, SampleConfig, SamplerVocab, generate, self_confidence
from mmengine.generate.config import INSPECTOR_STRATEGIES, REMASKING


def unigram_entropy(ids) -> float:
    """Entropy (bits) of the token frequencies of one text."""
    _, counts = np.unique(np.asarray(ids), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def mean_sem(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0


@torch.no_grad()
def generative_nll(ar, texts, text_vocab: int) -> np.ndarray:
    """Mean next-token NLL (nats) per text under a causal model."""
    x = torch.tensor(texts, dtype=torch.long, device=next(ar.parameters()).device)
    generated = np.ones(x.shape[1], dtype=bool)
    return -self_confidence(ar, x, generated, None, text_vocab).cpu().numpy()


def measure(name, texts, *, ar, judge, vocab, confidence=None, seconds=None) -> dict:
    row = {"strategy": name}
    if ar is not None:
        row["gen_ppl"] = float(math.exp(generative_nll(ar, texts, vocab.text_vocab_size).mean()))
    row["unigram_entropy"] = mean_sem([unigram_entropy(t) for t in texts])
    if judge is not None:
        row["judge"] = mean_sem(judge.score(texts))
    if confidence is not None:
        row["self_confidence"] = mean_sem(confidence)
    if seconds is not None:
        row["seconds_per_sample"] = seconds / len(texts)
    return row


def main(argv=None) -> int:
    from mmengine.data.dataset import DataDir
    from mmengine.generate.load import load_for_inference

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("lm")
    p.add_argument("--inspector")
    p.add_argument("--judge")
    p.add_argument("--judge-direction", default="auto", choices=("auto", "higher", "lower"))
    p.add_argument("--ar", help="a causal GPT checkpoint with the LM's vocabulary, for generative perplexity")
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--length", type=int, default=256)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--randomness", type=float, default=0.5)
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir")
    p.add_argument("--strategies", default=",".join(REMASKING))
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args(argv)

    loaded = load_for_inference(args.lm, "language_model", data_dir=args.data_dir)
    lm, meta, tokenizer = loaded.model, loaded.meta, loaded.tokenizer
    vocab = SamplerVocab.from_meta(meta, tokenizer)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    lm.to(device).eval()
    inspector = Inspector.from_checkpoint(args.inspector, vocab, device=device) if args.inspector else None
    judge = (Judge.from_checkpoint(args.judge, vocab, direction=args.judge_direction, device=device)
             if args.judge else None)
    ar = None
    if args.ar:
        from mmengine.checkpoint import load_model

        ar = load_model(args.ar, map_location=device).eval()
        if ar.config.attention_type != "causal" or ar.config.vocab_size < vocab.text_vocab_size:
            print(f"error: {args.ar} is not a causal LM with the LM's vocabulary", file=sys.stderr)
            return 2

    rows = []
    try:
        from mmengine.checkpoint import load_checkpoint

        data_dir = args.data_dir or (load_checkpoint(args.lm).get("trainer") or {}).get("data_dir")
        val = np.asarray(DataDir.open(data_dir).tokens("val"))
        starts = np.random.default_rng(args.seed).integers(0, len(val) - args.length, args.samples)
        real = [val[s:s + args.length].astype(np.int64).tolist() for s in starts]
        x = torch.tensor(real, device=device)
        conf = self_confidence(lm, x, np.ones(args.length, dtype=bool), vocab.mask_id, vocab.text_vocab_size)
        rows.append(measure("real validation text", real, ar=ar, judge=judge, vocab=vocab, confidence=conf.tolist()))
    except (OSError, ValueError, TypeError) as exc:
        print(f"(no reference row: {exc})", file=sys.stderr)

    for strategy in args.strategies.split(","):
        if strategy in INSPECTOR_STRATEGIES and inspector is None:
            continue
        cfg = SampleConfig(num_samples=args.samples, length=args.length, steps=args.steps, remasking=strategy,
                           temperature=args.temperature, top_p=args.top_p, randomness=args.randomness,
                           threshold=args.threshold, seed=args.seed, device=str(device), progress=False)
        t0 = time.perf_counter()
        samples = generate(lm, cfg, vocab, inspector=inspector)
        seconds = time.perf_counter() - t0
        rows.append(measure(strategy, [s.ids for s in samples], ar=ar, judge=judge, vocab=vocab,
                            confidence=[s.self_confidence for s in samples], seconds=seconds))
        if tokenizer is not None:
            print(f"--- {strategy}: {tokenizer.decode(samples[0].ids)[:160]!r}", file=sys.stderr)

    direction = "" if judge is None else f" ({'higher' if judge.higher_is_better else 'lower'} is better)"
    print(f"{args.samples} samples x {args.length} tokens, {args.steps} steps, temperature {args.temperature}, "
          f"top-p {args.top_p}, seed {args.seed}, device {device}")
    header = ["strategy"] + (["gen PPL"] if ar is not None else []) + ["unigram H (bits)"] + \
        ([f"judge{direction}"] if judge is not None else []) + ["self-conf (nats)", "s/sample"]
    print("| " + " | ".join(header) + " |")
    print("| --- |" + " ---: |" * (len(header) - 1))
    for r in rows:
        cells = [r["strategy"]]
        if ar is not None:
            cells.append(f"{r['gen_ppl']:.2f}")
        cells.append("{:.3f} ± {:.3f}".format(*r["unigram_entropy"]))
        if judge is not None:
            cells.append("{:.3f} ± {:.3f}".format(*r["judge"]))
        cells.append("{:.3f} ± {:.3f}".format(*r["self_confidence"]) if "self_confidence" in r else "")
        cells.append(f"{r['seconds_per_sample']:.3f}" if "seconds_per_sample" in r else "")
        print("| " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

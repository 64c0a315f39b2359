"""``python -m mmengine.sample CKPT``: generate text from a masked-diffusion LM by iterative unmasking.

A chunk of ``[MASK]`` tokens is appended to the context; at each of ``steps`` steps the model
predicts every masked position, a token is sampled for each, and some of them are revealed (random
positions, the MDLM ancestral sampler, or the most confident ones; a linear schedule: after step s,
s/steps of the chunk is revealed), the rest stay masked.
Texts longer than the context are made chunk by chunk, each conditioned on the last half window.
A causal model is sampled autoregressively instead.
"""
from __future__ import annotations

import argparse
import logging
import sys

from mmengine.sampling import generate, load_for_sampling, sample_text  # noqa: F401 (the API the CLI wraps)

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    from mmengine.checkpoint import CheckpointError
    from mmengine.model import ModelMode

    p = argparse.ArgumentParser(prog="python -m mmengine.sample", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="a language-model checkpoint (out_dir/ckpt.pt or best.pt)")
    p.add_argument("--length", type=int, default=200, help="tokens to generate")
    p.add_argument("--steps", type=int, default=32, help="unmasking steps per chunk (a chunk is half a block of new tokens)")
    p.add_argument("--temperature", type=float, default=0.8, help="softmax temperature")
    p.add_argument("--order", choices=("random", "confidence"), default="random",
                   help="reveal random masked positions (MDLM ancestral sampling) or the most confident first")
    p.add_argument("--prompt", default="", help="text the sample continues")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--data-dir", default=None, help="data dir for the tokenizer (default: the one stored in the checkpoint)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        model, meta, tok = load_for_sampling(args.checkpoint, args.data_dir)
        if model.config.mode is not ModelMode.LANGUAGE_MODEL:
            raise ValueError(f"{args.checkpoint} is a {model.config.mode.value} checkpoint; sampling needs a language model")
        for i in range(args.num_samples):
            print(sample_text(model, meta, tok, length=args.length, steps=args.steps, seed=args.seed + i,
                              temperature=args.temperature, prompt=args.prompt, order=args.order))
            if i + 1 < args.num_samples:
                print("---")
    except (CheckpointError, ValueError, OSError) as e:
        print(f"error: {str(e).rstrip('.')}.", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m mmengine.sample CKPT [sample.toml] [--sample.key=value ...]``: generate text with a language model.

A masked-diffusion LM writes by iterative unmasking (schedules, token choice, remasking strategies,
an inspector that points at wrong tokens, a judge that scores and picks: :mod:`mmengine.generate`);
an autoregressive (or nanoGPT) model writes left to right with the same token-choice settings.
Settings come from the ``[sample]`` table (a file and/or ``--sample.key=value``; the short names
``--steps``, ``--temperature``, ``--seed``, ... work too); ``--data.dir`` gives the vocabulary of a
checkpoint that stores none. Texts go to stdout, separated by ``---``; with ``--sample.out=FILE``
one JSON object per sample: text, self_confidence, judge_score, steps, seconds.
"""
from __future__ import annotations

import sys
from pathlib import Path

from mmengine.config import cli_entry, load_tables, table_help
from mmengine.errors import ConfigError

PROG = "python -m mmengine.sample"


def help_text() -> str:
    from mmengine.config import TABLES

    lines = [f"usage: {PROG} CKPT [sample.toml] [--sample.key=value ...] [--data.dir=DIR]", "",
             __doc__.split("\n\n", 1)[1].strip(), ""]
    lines += table_help("sample", TABLES["sample"])
    lines += ["", "[data]", "  --data.dir=\"\"", "      Data dir whose vocabulary and tokenizer the checkpoint uses "
              "(default: the one stored in the checkpoint)."]
    return "\n".join(lines)


def _run(argv: list[str]) -> int:
    from mmengine.generate import sample_texts
    from mmengine.generate.files import write_jsonl
    from mmengine.generate.load import load_for_inference
    from mmengine.generate.sampler import resolve_device

    cfg, positional = load_tables(list(argv), ("sample", "data"), PROG)
    if len(positional) != 1:
        raise ConfigError(f"give one language-model checkpoint: {PROG} CKPT [sample.toml] [--sample.key=value ...].")
    s = cfg.sample.validate()
    for role in ("inspector", "judge"):
        path = getattr(s, role)
        if path and not Path(path).is_file():
            raise ConfigError(f"sample.{role} '{path}' does not exist.")
    loaded = load_for_inference(positional[0], "language_model", data_dir=cfg.data.dir or None,
                                device=resolve_device(s.device))
    results = sample_texts(loaded.model, loaded.meta, loaded.tokenizer, s)
    if s.out:
        write_jsonl(s.out, results)
        print(f"wrote {len(results)} samples to {s.out}", file=sys.stderr)
        return 0
    print("\n---\n".join(r["text"] for r in results))
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli_entry(_run, argv, PROG, help_text=help_text)


if __name__ == "__main__":
    sys.exit(main())

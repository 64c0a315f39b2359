"""``python -m mmengine.prepare INPUT... --out DIR``: text files or labelled JSONL -> an mmengine data dir.

    python -m mmengine.prepare INPUT... --out DIR [--tokenizer char|bpe] [--vocab-size N]
                               [--val-fraction 0.1] [--seed 0] [--num-classes N] [--force]
                               [--progress | --no-progress]

What the files hold and how they are split: :mod:`mmengine.data.preparation`. Bad input is one line on
stderr and exit 2; a failed write (disk full, permissions) is one line and exit 1, with nothing written.
"""
from __future__ import annotations

import logging
import sys
from typing import Iterable

from mmengine.data.preparation import DEFAULT_BPE_VOCAB, prepare
from mmengine.data.tokenizer import MAX_BPE_VOCAB
from mmengine.errors import ArgumentParser, cli_entry


def _build_parser() -> ArgumentParser:
    ap = ArgumentParser(
        prog="python -m mmengine.prepare",
        description="Tokenize text files (or labelled .jsonl files) into an mmengine data dir.",
    )
    ap.add_argument("inputs", nargs="+", metavar="INPUT",
                    help="text files, or .jsonl files with text+score or text+spans")
    ap.add_argument("--out", required=True, metavar="DIR", help="data dir to create")
    ap.add_argument("--tokenizer", choices=["char", "bpe"], default="char", help="char (default) or byte-level bpe")
    ap.add_argument(
        "--vocab-size", type=int, default=None,
        help=f"BPE vocabulary size, 257 to {MAX_BPE_VOCAB} (default {DEFAULT_BPE_VOCAB})",
    )
    ap.add_argument("--val-fraction", type=float, default=0.1,
                    help="share of text/documents for validation (default 0.1)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the document split for JSONL inputs (default 0)")
    ap.add_argument("--num-classes", type=int, default=None,
                    help="number of label classes for span data (default: max label + 1)")
    ap.add_argument("--force", action="store_true",
                    help="replace an existing data dir at --out (nothing else is ever deleted)")
    bar = ap.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None,
                     help="always show a progress bar")
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="never show a progress bar")
    return ap


def _run(argv: list[str]) -> int:
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        meta = prepare(args.inputs, args.out, tokenizer=args.tokenizer, vocab_size=args.vocab_size,
                       val_fraction=args.val_fraction, seed=args.seed, num_classes=args.num_classes, force=args.force,
                       progress=args.progress)
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        return 130
    except OSError as e:  # writing failed (disk full, permissions): the temp dir is already gone
        print(f"error: cannot write the data dir {args.out}: {e.strerror or e}; nothing was written", file=sys.stderr)
        return 1
    c = meta.counts
    print(
        f"wrote {args.out}: {meta.kind} data, {meta.tokenizer} tokenizer, vocab_size {meta.vocab_size} "
        f"({meta.text_vocab_size} text + {len(meta.special_ids)} special), "
        f"{c.get('train_tokens', 0):,} train / {c.get('val_tokens', 0):,} val tokens ({meta.token_dtype})"
    )
    return 0


def main(argv: Iterable[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 for bad input, 1 when writing fails, 130 on Ctrl-C)."""
    return cli_entry(_run, None if argv is None else list(argv), "python -m mmengine.prepare")


if __name__ == "__main__":
    sys.exit(main())

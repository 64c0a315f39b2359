"""``python -m mmengine.score CKPT FILE... [--out scores.jsonl]``: a sequence scorer (mode 3) on new text.

One score in [0, 1] per document (a whole file, or each line with ``--lines``); ``-`` reads stdin.
A document longer than the scorer's context is scored in evenly spread windows combined by
``--aggregate`` (mean, min or max). Which end is good depends on how the scorer was trained: a
synthetic scorer predicts the corrupted fraction (low is good); the direction is printed. Output:
``score<TAB>name`` lines on stdout, or one JSON object per document with ``--out``.
"""
from __future__ import annotations

import sys

from mmengine.errors import cli_entry

PROG = "python -m mmengine.score"


def _run(argv: list[str]) -> int:
    from mmengine.generate import score_texts
    from mmengine.generate.files import inference_parser, read_documents, write_jsonl
    from mmengine.generate.judge import direction_from_checkpoint
    from mmengine.generate.load import load_for_inference
    from mmengine.generate.sampler import resolve_device

    ap = inference_parser(PROG, __doc__.splitlines()[0])
    ap.add_argument("--aggregate", choices=("mean", "min", "max"), default="mean",
                    help="how the windows of a document longer than the context combine (default mean)")
    ap.add_argument("--cls-token-id", "--cls_token_id", dest="cls_token_id", type=int, default=None,
                    help="the [CLS] id of an earlier-trainer scorer that does not record it")
    args = ap.parse_args(argv)
    docs = read_documents(args.files, args.lines)
    loaded = load_for_inference(args.checkpoint, "sequence_scorer", data_dir=args.data_dir or None,
                                device=resolve_device(args.device), cls_token_id=args.cls_token_id)
    results = score_texts(loaded.model, loaded.meta, loaded.tokenizer, [t for _, t in docs], aggregate=args.aggregate)
    good = "high" if direction_from_checkpoint(loaded.checkpoint, args.checkpoint) else "low"
    for (name, _), r in zip(docs, results):
        r["name"] = name
    if args.out:
        write_jsonl(args.out, [{k: r[k] for k in ("name", "score", "tokens", "windows")} for r in results])
        print(f"wrote {len(results)} scores to {args.out} ({good} is good for this scorer)", file=sys.stderr)
        return 0
    print(f"# {good} is good for this scorer", file=sys.stderr)
    for r in results:
        print(f"{r['score']:.4f}\t{r['name']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli_entry(_run, argv, PROG)


if __name__ == "__main__":
    sys.exit(main())

"""``python -m mmengine.classify CKPT FILE... [--out tokens.jsonl]``: a token classifier (mode 2) on new text.

For every token its text and its class probabilities (class 0 = "looks right"). On a terminal the
text is shown with the tokens of other classes coloured (class 1 red, 2 yellow, ...); ``--out``
writes one JSON object per document: its name and ``tokens`` [{text, probs, class}]. ``-`` reads stdin.
"""
from __future__ import annotations

import sys

from mmengine.errors import cli_entry

PROG = "python -m mmengine.classify"


def _run(argv: list[str]) -> int:
    from mmengine.generate import classify_texts, render_classified
    from mmengine.generate.files import inference_parser, read_documents, write_jsonl
    from mmengine.generate.load import load_for_inference
    from mmengine.generate.sampler import resolve_device

    ap = inference_parser(PROG, __doc__.splitlines()[0])
    ap.add_argument("--colour", choices=("auto", "always", "never"), default="auto",
                    help="colour the tokens of classes other than 0 (auto: on a terminal)")
    args = ap.parse_args(argv)
    docs = read_documents(args.files, args.lines)
    loaded = load_for_inference(args.checkpoint, "token_classifier", data_dir=args.data_dir or None,
                                device=resolve_device(args.device))
    results = classify_texts(loaded.model, loaded.meta, loaded.tokenizer, [t for _, t in docs])
    if args.out:
        write_jsonl(args.out, [{"name": name, "tokens": r["tokens"]} for (name, _), r in zip(docs, results)])
        print(f"wrote {len(results)} classified documents to {args.out}", file=sys.stderr)
        return 0
    colour = args.colour == "always" or (args.colour == "auto" and sys.stdout.isatty())
    for (name, _), r in zip(docs, results):
        flagged = sum(t["class"] != 0 for t in r["tokens"])
        print(f"== {name}: {flagged} of {len(r['tokens'])} tokens not class 0")
        print(render_classified(r, colour=colour))
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli_entry(_run, argv, PROG)


if __name__ == "__main__":
    sys.exit(main())

"""Text in, plain data out: sampling, scoring (mode 3) and classifying (mode 2) new text.

What the CLIs and the end-of-training sample call; every result is a list of dicts of plain
values (str, float, int, lists), ready for JSON.
"""
from __future__ import annotations

import re

import numpy as np
import torch

from mmengine.errors import UserError
from mmengine.generate.config import SampleConfig
from mmengine.generate.inspector import Inspector, token_class_probs
from mmengine.generate.judge import Judge
from mmengine.generate.sampler import generate, resolve_device
from mmengine.generate.vocab import SamplerVocab

#: A masked span of an infill text: "[MASK]" (one token) or a run of two or more "_" (one token each).
INFILL_SPAN = re.compile(r"\[MASK\]|_{2,}")
#: ANSI colours for classes 1, 2, ... (class 0 is left plain).
CLASS_COLOURS = ("\033[31m", "\033[33m", "\033[35m", "\033[36m", "\033[32m", "\033[34m")
ANSI_RESET = "\033[0m"


def _need_tokenizer(tokenizer):
    if tokenizer is None:
        raise UserError("the data has no tokenizer, so text cannot be encoded or decoded")


def _encode(tokenizer, text: str, what: str) -> list[int]:
    try:
        return [int(i) for i in tokenizer.encode(text)]
    except ValueError as exc:  # TokenizerError: a character outside the vocabulary
        raise UserError(f"{what}: {exc}") from None


def parse_infill(text: str, tokenizer) -> list[int | None]:
    """An infill template: the text's given pieces encoded, None for each token of a masked span.

    A span is ``[MASK]`` (one token) or a run of two or more ``_`` (one token per ``_``); a single
    ``_`` is ordinary text.
    """
    template: list[int | None] = []
    pos = 0
    for match in INFILL_SPAN.finditer(text):
        template += _encode(tokenizer, text[pos:match.start()], "sample.infill")
        span = match.group()
        template += [None] * (1 if span == "[MASK]" else len(span))
        pos = match.end()
    template += _encode(tokenizer, text[pos:], "sample.infill")
    if None not in template:
        raise UserError("sample.infill has no masked span; mark the parts to fill with '[MASK]' or a run of '_'")
    return template


def sample_texts(lm, meta, tokenizer, cfg: SampleConfig, *, inspector=None, judge=None) -> list[dict]:
    """``cfg.num_samples`` texts: ``{"text", "self_confidence", "judge_score", "steps", "seconds"}`` each.

    ``cfg.prompt`` or ``cfg.infill`` gives the start. The inspector and judge are loaded from
    ``cfg.inspector`` / ``cfg.judge`` unless given (as :class:`Inspector` / :class:`Judge`).
    """
    _need_tokenizer(tokenizer)
    cfg.validate(check_paths=False)
    vocab = SamplerVocab.from_meta(meta, tokenizer)
    device = resolve_device(cfg.device)
    if inspector is None and cfg.inspector:
        inspector = Inspector.from_checkpoint(cfg.inspector, vocab, device=device, meta=meta)
    if judge is None and cfg.judge:
        judge = Judge.from_checkpoint(cfg.judge, vocab, direction=cfg.judge_direction, aggregate=cfg.judge_aggregate,
                                      meta=meta, device=device)
    prompt_ids = _encode(tokenizer, cfg.prompt, "sample.prompt") if cfg.prompt else None
    template = parse_infill(cfg.infill, tokenizer) if cfg.infill else None
    samples = generate(lm, cfg, vocab, inspector=inspector, judge=judge, prompt_ids=prompt_ids, template=template,
                       device=device)
    return [{"text": tokenizer.decode(s.ids), "self_confidence": s.self_confidence, "judge_score": s.judge_score,
             "steps": s.steps, "seconds": s.seconds} for s in samples]


def _encode_all(tokenizer, texts) -> list[list[int]]:
    _need_tokenizer(tokenizer)
    if isinstance(texts, str):
        raise UserError("pass a list of texts, not a single string")
    out = []
    for i, text in enumerate(texts):
        ids = _encode(tokenizer, text, f"text {i}")
        if not ids:
            raise UserError(f"text {i} is empty")
        out.append(ids)
    return out


def score_texts(scorer_model, meta, tokenizer, texts, *, aggregate: str = "mean") -> list[dict]:
    """One ``{"text", "score", "tokens", "windows"}`` per text from a sequence scorer (see :class:`Judge`
    for windows and ``aggregate``). The score is the scorer's own number; which end is good is its direction."""
    docs = _encode_all(tokenizer, texts)
    # the direction only matters for picking a best; scoring alone does not use it
    judge = Judge(scorer_model, SamplerVocab.from_meta(meta), higher_is_better=True, aggregate=aggregate)
    judge.model.eval()
    scores = judge.score(docs)
    width = judge.width
    return [{"text": t, "score": float(s), "tokens": len(d), "windows": max(1, -(-len(d) // width))}
            for t, s, d in zip(texts, scores, docs)]


@torch.no_grad()
def classify_texts(classifier_model, meta, tokenizer, texts) -> list[dict]:
    """Per text ``{"text", "tokens": [{"text", "probs", "class"}, ...]}`` from a token classifier:
    each token's own text, its class probabilities (class 0 first) and the most probable class."""
    docs = _encode_all(tokenizer, texts)
    Inspector(classifier_model, SamplerVocab.from_meta(meta))  # the same mode and vocabulary checks
    classifier_model.eval()
    device = next(classifier_model.parameters()).device
    out = []
    for text, ids in zip(texts, docs):
        probs = token_class_probs(classifier_model, torch.tensor([ids], device=device))[0].cpu().numpy()
        tokens = [{"text": tokenizer.decode([i]), "probs": [float(p) for p in row], "class": int(np.argmax(row))}
                  for i, row in zip(ids, probs)]
        out.append({"text": text, "tokens": tokens})
    return out


def render_classified(result: dict, *, colour: bool = True) -> str:
    """A classified text (one item of :func:`classify_texts`) for a terminal: tokens of classes other
    than 0 in ANSI colours (class 1 red, 2 yellow, 3 magenta, ...); plain text when ``colour`` is False."""
    parts = []
    for tok in result["tokens"]:
        c = tok["class"]
        if colour and c != 0:
            parts.append(f"{CLASS_COLOURS[(c - 1) % len(CLASS_COLOURS)]}{tok['text']}{ANSI_RESET}")
        else:
            parts.append(tok["text"])
    return "".join(parts)

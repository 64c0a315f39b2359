"""Tournament judges: what scores a finished sample, and how a judge checkpoint becomes one.

Three kinds, one per run (``[tournament] judge_kind``):

* ``scorer`` - a sequence-scorer checkpoint (:class:`mmengine.generate.Judge`: ``[CLS]`` + text,
  long texts in windows); which end is good comes from the scorer's training config (its
  ``score_source``) unless ``judge_direction`` says so;
* ``perplexity`` - generative perplexity under an autoregressive model (:class:`PerplexityJudge`),
  the judge of the diffusion-LM papers; lower is better;
* ``self_confidence`` - LM self-confidence: the mean log-probability of the sample's tokens under
  a given language model, masked-diffusion or autoregressive (:class:`SelfConfidenceJudge`, which
  is :func:`mmengine.generate.self_confidence` over every position); higher is better.

:func:`load_judge` reads a checkpoint and builds the judge (``auto``: a scorer for a sequence
scorer, ``perplexity`` for an autoregressive LM, ``self_confidence`` for a masked-diffusion LM).
Every judge takes token-id lists of any lengths and returns one float per sample. A judge must read
the entrants' tokenizer; that is checked by whoever holds both (:mod:`mmengine.tournament_run`).

Nothing here imports torch at import time (the numpy-only :mod:`mmengine.tournament` re-exports
:class:`Judge` and :class:`PerplexityJudge`); the judges import it when they are built or score.
"""
from __future__ import annotations

import logging
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from mmengine.errors import CheckpointError, UserError

__all__ = [
    "JUDGE_KINDS",
    "Judge",
    "LoadedJudge",
    "PerplexityJudge",
    "ScorerJudge",
    "SelfConfidenceJudge",
    "load_judge",
]

#: ``[tournament] judge_kind`` values; "auto" picks by the checkpoint's head and attention.
JUDGE_KINDS = ("auto", "scorer", "perplexity", "self_confidence")


@runtime_checkable
class Judge(Protocol):
    """Scores finished samples; one judge per tournament, named in the results.

    ``score`` takes token-id lists (any lengths) and returns one finite float per sample;
    ``higher_is_better`` says which way a match goes.
    """

    name: str
    higher_is_better: bool

    def score(self, samples: list[list[int]]) -> np.ndarray: ...


def _checked_samples(samples, vocab: int, min_tokens: int, judge: str) -> list[list[int]]:
    """The samples as lists of Python ints; one sentence for a non-list, a short sample or an id outside ``vocab``."""
    checked = []
    for i, sample in enumerate(samples):
        ids = np.asarray(sample)
        if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
            raise UserError(f"sample {i} must be a list of token ids, got {sample!r:.60}.")
        if ids.size < min_tokens:
            raise UserError(f"the {judge} judge needs samples of at least {min_tokens} "
                            f"token{'s' if min_tokens > 1 else ''}; sample {i} has {ids.size}.")
        if ids.size and (ids.min() < 0 or ids.max() >= vocab):
            bad = int(ids[(ids < 0) | (ids >= vocab)][0])
            raise UserError(
                f"sample {i} holds token id {bad}, outside the judge's vocabulary of {vocab} ids; "
                "the judge must use the entrants' tokenizer."
            )
        checked.append(ids.astype(np.int64).tolist())
    return checked


def _mode_of(config) -> str | None:
    mode = getattr(config, "mode", None)
    return getattr(mode, "value", mode)


# -----------------------------------------------------------------------------
# Generative perplexity


class PerplexityJudge:
    """Generative perplexity under an autoregressive model (a causal :class:`mmengine.model.GPT`); lower is better.

    The score of a sample ``x`` of length L is ``exp(-(1 / (L - 1)) * sum_{t=1}^{L-1} log p(x_t | context))``:
    every token but the first is predicted (the first has no context, and these models have no
    beginning-of-text token). A sample longer than the model's context ``C = block_size`` is cut
    into windows ``[k * stride, k * stride + C)``; token t is scored once, in the first window that
    holds it after its first position and after the end of the previous window, i.e. in window
    ``k = max(0, ceil((t - C + 1) / stride))`` with context ``x[k * stride : t]``. So beyond the
    first window every token sees at least ``C - stride`` tokens of context (default ``stride =
    C // 2``; ``stride = C - 1`` is cheapest, 1 is the exact sliding window).

    Windows of all samples are batched ``batch_size`` at a time (padded on the right, which a causal
    model never looks at); log-probabilities are taken in float32. Samples need at least 2 tokens and
    ids inside the judge's vocabulary (the judge must share the entrants' tokenizer).
    """

    higher_is_better = False

    def __init__(self, ar_model, *, batch_size: int = 8, stride: int | None = None,
                 name: str = "ar-perplexity", progress: bool = False):
        config = getattr(ar_model, "config", None)
        mode = _mode_of(config)
        if config is None or mode != "language_model" or getattr(config, "attention_type", None) != "causal":
            raise UserError(
                "the perplexity judge needs an autoregressive language model (a causal GPT trained with "
                f"training_type 'autoregressive'); this one is a {mode} with "
                f"{getattr(config, 'attention_type', 'unknown')} attention."
            )
        context = int(config.block_size)
        if context < 2:
            raise UserError(f"the perplexity judge needs a context of at least 2 tokens; block_size is {context}.")
        stride = context // 2 if stride is None else stride
        if isinstance(stride, bool) or not isinstance(stride, int) or not 1 <= stride <= context - 1:
            raise UserError(f"the perplexity judge's stride must be an integer in [1, {context - 1}], got {stride!r}.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UserError(f"the perplexity judge's batch_size must be a positive integer, got {batch_size!r}.")
        self.model = ar_model
        self.name = name
        self.context = context
        self.stride = stride
        self.batch_size = batch_size
        self.progress = progress

    def windows(self, length: int) -> list[tuple[int, int, int]]:
        """``(start, end, first)`` per window of a sample of ``length`` tokens: tokens ``first..end-1`` are scored.

        Window k starts at ``k * stride``; it scores from the end of window k-1 (``(k-1) * stride + C``)
        or from 1 for the first window, so every token 1..length-1 is scored exactly once.
        """
        C, S = self.context, self.stride
        last = max(0, -(-(length - C) // S))  # ceil((length - C) / S): the window that reaches the end
        return [(k * S, min(k * S + C, length), 1 if k == 0 else (k - 1) * S + C) for k in range(last + 1)]

    def score(self, samples: list[list[int]]) -> np.ndarray:
        """Perplexity of each sample (float64 array, one per sample)."""
        import torch
        from tqdm import tqdm

        samples = _checked_samples(samples, int(self.model.config.vocab_size), 2, "perplexity")
        model = self.model
        device = next(model.parameters()).device
        jobs = [(s, *w) for s, ids in enumerate(samples) for w in self.windows(len(ids))]
        nll = torch.zeros(len(samples), dtype=torch.float64)
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                for lo in tqdm(range(0, len(jobs), self.batch_size), desc=f"judge {self.name}", unit="batch",
                               disable=not self.progress, file=sys.stderr, leave=False):
                    batch = jobs[lo:lo + self.batch_size]
                    T = max(end - start for _, start, end, _ in batch)
                    idx = torch.zeros(len(batch), T, dtype=torch.long)
                    targets = torch.full((len(batch), T), -1, dtype=torch.long)
                    for row, (s, start, end, first) in enumerate(batch):
                        ids = samples[s]
                        idx[row, :end - start] = torch.tensor(ids[start:end])
                        # position p predicts token start + p + 1; score tokens first..end-1
                        targets[row, first - start - 1:end - start - 1] = torch.tensor(ids[first:end])
                    idx, targets = idx.to(device), targets.to(device)
                    logits = model.lm_head(model.encode(idx)).float()  # (B, T, V)
                    # log p(target) = logit[target] - logsumexp(logits), without a second (B, T, V) tensor
                    picked = logits.gather(-1, targets.clamp(min=0)[..., None])[..., 0] - logits.logsumexp(dim=-1)
                    window_ll = torch.where(targets >= 0, picked, 0.0).sum(dim=1).double().cpu()  # (B,)
                    owners = torch.tensor([s for s, *_ in batch])
                    nll.index_add_(0, owners, -window_ll)
        finally:
            model.train(was_training)
        counts = torch.tensor([len(ids) - 1 for ids in samples], dtype=torch.float64)
        return torch.exp(nll / counts).numpy()


# -----------------------------------------------------------------------------
# LM self-confidence


class SelfConfidenceJudge:
    """LM self-confidence: the mean log-probability of a sample's tokens under a language model; higher is better.

    The score is :func:`mmengine.generate.self_confidence` with every position of the sample
    counted: a masked-diffusion (bidirectional) LM predicts each token from the rest of the sample
    in ``CONFIDENCE_PASSES`` forwards per window, each masking every other position (a visible token
    says little about itself, see :mod:`mmengine.generate.sampler`); an autoregressive LM gives the
    mean next-token log P of tokens 1..L-1 (the first has no context). Log-probabilities are over
    the text vocabulary only. That function takes rows of one length, so samples are grouped by
    length and scored ``batch_size`` rows at a time; the grouping does not change any score.

    Samples need ids inside the text vocabulary and at least 1 token (2 for an autoregressive LM).
    """

    higher_is_better = True

    def __init__(self, lm, *, text_vocab_size: int, mask_id: int | None, batch_size: int = 16,
                 name: str = "self-confidence", progress: bool = False):
        config = getattr(lm, "config", None)
        mode = _mode_of(config)
        if config is None or mode != "language_model":
            raise UserError(f"the self-confidence judge needs a language model; this one is a {mode}.")
        self.causal = config.attention_type == "causal"
        if isinstance(text_vocab_size, bool) or not isinstance(text_vocab_size, int) or text_vocab_size < 1:
            raise UserError("the self-confidence judge's text_vocab_size must be a positive integer, "
                            f"got {text_vocab_size!r}.")
        if int(config.vocab_size) < text_vocab_size:
            raise UserError(f"the self-confidence judge's embedding has {config.vocab_size} rows, fewer than the "
                            f"{text_vocab_size} text tokens of its vocabulary.")
        if not self.causal and (mask_id is None or not text_vocab_size <= mask_id < int(config.vocab_size)):
            raise UserError("the self-confidence judge is a masked-diffusion LM without a [MASK] embedding for its "
                            f"vocabulary (mask id {mask_id}, {config.vocab_size} rows); it cannot predict a hidden "
                            "token.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UserError(f"the self-confidence judge's batch_size must be a positive integer, got {batch_size!r}.")
        self.model = lm
        self.text_vocab_size = text_vocab_size
        self.mask_id = mask_id
        self.batch_size = batch_size
        self.name = name
        self.progress = progress

    def score(self, samples: list[list[int]]) -> np.ndarray:
        """Mean log-probability per token of each sample (float64 array, one per sample)."""
        import torch
        from tqdm import tqdm

        from mmengine.generate import self_confidence

        samples = _checked_samples(samples, self.text_vocab_size, 2 if self.causal else 1, "self-confidence")
        by_length: dict[int, list[int]] = defaultdict(list)
        for i, ids in enumerate(samples):
            by_length[len(ids)].append(i)
        chunks = [(n, rows[lo:lo + self.batch_size]) for n, rows in sorted(by_length.items())
                  for lo in range(0, len(rows), self.batch_size)]
        model = self.model
        device = next(model.parameters()).device
        out = np.empty(len(samples), dtype=np.float64)
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                for n, rows in tqdm(chunks, desc=f"judge {self.name}", unit="batch", disable=not self.progress,
                                    file=sys.stderr, leave=False):
                    x = torch.tensor([samples[r] for r in rows], dtype=torch.long, device=device)  # (R, n)
                    scored = np.ones(n, dtype=bool)  # every position counts as "generated"
                    confidence = self_confidence(model, x, scored, self.mask_id, self.text_vocab_size)  # (R,)
                    out[rows] = confidence.double().cpu().numpy()
        finally:
            model.train(was_training)
        return out


# -----------------------------------------------------------------------------
# Sequence scorer


class ScorerJudge:
    """A sequence scorer (:class:`mmengine.generate.Judge`) under a name; its direction is the scorer's."""

    def __init__(self, scorer, *, name: str = "scorer"):
        self.scorer = scorer
        self.name = name
        self.higher_is_better = bool(scorer.higher_is_better)

    def score(self, samples: list[list[int]]) -> np.ndarray:
        """The scorer's score of each sample (float64 array; long samples in windows, see its class)."""
        samples = _checked_samples(samples, int(self.scorer.text_vocab_size), 1, "scorer")
        return np.asarray(self.scorer.score(samples), dtype=np.float64)


# -----------------------------------------------------------------------------
# From a checkpoint


@dataclass
class LoadedJudge:
    """A judge built from a checkpoint, with the vocabulary it reads.

    Fields:
        judge: the :class:`Judge`.
        kind: "scorer", "perplexity" or "self_confidence" (never "auto").
        meta: the :class:`mmengine.data.dataset.DataMeta` of the judge's vocabulary.
        path: the checkpoint.
    """

    judge: Judge
    kind: str
    meta: object
    path: str


def _head_of(path) -> tuple[str, str]:
    """(mode, attention type) a checkpoint's model has, without building it; one sentence when unreadable."""
    from mmengine.checkpoint import load_checkpoint
    from mmengine.legacy import convert_model_args, model_state_dict

    # the file is read again by load_for_inference, whose notes on an earlier trainer's file are the ones said
    notes = logging.getLogger("mmengine.upstream")
    level = notes.level
    notes.setLevel(logging.WARNING)
    try:
        checkpoint = load_checkpoint(path)
        model_args = checkpoint.get("model_args")
        if not isinstance(model_args, dict):
            raise CheckpointError(f"checkpoint {path} has no model_args describing the architecture")
        kwargs = convert_model_args(model_args, model_state_dict(checkpoint), f"checkpoint {path}")
    except CheckpointError as exc:
        raise UserError(f"judge: {exc}") from None
    finally:
        notes.setLevel(level)
    mode = kwargs.get("mode", "language_model")
    return str(getattr(mode, "value", mode)), str(kwargs.get("attention_type", "bidirectional"))


def _resolve_kind(kind: str, mode: str, attention: str, path) -> str:
    """The judge kind for a checkpoint of ``mode`` / ``attention``; one sentence when it cannot be that judge."""
    if kind not in JUDGE_KINDS:
        raise UserError(f"tournament.judge_kind must be one of {', '.join(map(repr, JUDGE_KINDS))}, got {kind!r}.")
    if mode == "token_classifier":
        raise UserError(f"the judge {path} is a token classifier, which rates tokens, not texts; give a sequence "
                        "scorer or a language model (a token classifier guides an entrant's sampler as "
                        "sample.inspector).")
    if mode == "sequence_scorer":
        if kind not in ("auto", "scorer"):
            raise UserError(f"the judge {path} is a sequence scorer; judge_kind '{kind}' needs a language model "
                            "(use judge_kind 'scorer' or 'auto').")
        return "scorer"
    if kind == "scorer":
        raise UserError(f"judge_kind 'scorer' needs a sequence-scorer checkpoint; {path} is a {attention} "
                        "language model.")
    if kind == "perplexity" and attention != "causal":
        raise UserError(f"judge_kind 'perplexity' needs an autoregressive (causal) language model; {path} is "
                        f"{attention} (a masked-diffusion LM judges by self-confidence: judge_kind 'self_confidence').")
    if kind == "auto":
        return "perplexity" if attention == "causal" else "self_confidence"
    return kind


def load_judge(path, kind: str = "auto", *, data_dir: str | None = None, device="cpu", direction: str = "auto",
               aggregate: str = "mean", progress: bool = False) -> LoadedJudge:
    """The judge of ``kind`` from checkpoint ``path`` on ``device``, in eval mode.

    ``kind`` "auto" takes a sequence scorer as a ``scorer``, an autoregressive LM as ``perplexity``
    and a masked-diffusion LM as ``self_confidence``. ``data_dir`` gives the vocabulary of a file
    that stores none (nanoGPT, the earlier trainer). ``direction`` and ``aggregate`` apply to
    scorers (see :class:`mmengine.generate.Judge`). The judge is named ``"<kind>:<path>"``.
    A checkpoint that cannot be this judge is refused in one sentence.
    """
    from mmengine.generate.load import load_for_inference

    if not Path(path).is_file():
        raise UserError(f"the judge checkpoint '{path}' does not exist.")
    mode, attention = _head_of(path)
    kind = _resolve_kind(kind, mode, attention, path)
    loaded = load_for_inference(path, mode, data_dir=data_dir, device=device, role="judge")
    name = f"{kind}:{path}"
    meta = loaded.meta
    if kind == "scorer":
        from mmengine.generate import Judge as SequenceScorer
        from mmengine.generate import SamplerVocab
        from mmengine.generate.inspector import checkpoint_text_vocab
        from mmengine.generate.judge import direction_from_checkpoint

        if direction == "auto":
            try:
                higher = direction_from_checkpoint(loaded.checkpoint, str(path))
            except UserError:
                raise UserError(f"the judge {path} does not record whether a high score is good; set "
                                "tournament.judge_direction (--judge_direction=higher or lower).") from None
        elif direction in ("higher", "lower"):
            higher = direction == "higher"
        else:
            raise UserError(f"the judge direction must be 'auto', 'higher' or 'lower', got {direction!r}.")
        scorer = SequenceScorer(loaded.model, SamplerVocab.from_meta(meta, loaded.tokenizer), higher,
                                aggregate=aggregate, text_vocab_size=checkpoint_text_vocab(loaded.checkpoint))
        judge: Judge = ScorerJudge(scorer, name=name)
    elif kind == "perplexity":
        judge = PerplexityJudge(loaded.model, name=name, progress=progress)
    else:
        judge = SelfConfidenceJudge(loaded.model, text_vocab_size=int(meta.text_vocab_size),
                                    mask_id=meta.special_ids.get("[MASK]"), name=name, progress=progress)
    return LoadedJudge(judge=judge, kind=kind, meta=meta, path=str(path))

"""The judge: a sequence scorer that rates whole texts.

Each text is read as ``[CLS] + tokens`` padded with ``[PAD]`` to the longest row of its batch, with
``lengths`` so padding is never attended to. A text longer than the scorer's context (block_size - 1
tokens after [CLS]) is scored in the fewest full-length windows that cover it, spread evenly, and
the window scores are combined by ``aggregate``: ``mean`` (default), ``min`` (the worst part
decides) or ``max``.

Which end is good is stored with the scorer: one trained with
``sequence_scoring.score_source = "synthetic"`` predicts the corrupted fraction (low is good), one
trained on scored documents predicts their quality (high is good). :meth:`Judge.from_checkpoint`
reads it with ``direction="auto"``; ``"higher"`` / ``"lower"`` override it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mmengine.errors import UserError
from mmengine.generate.config import AGGREGATES
from mmengine.generate.inspector import checkpoint_text_vocab, load_role_model
from mmengine.generate.vocab import SamplerVocab
from mmengine.generate.windows import spread_starts


def direction_from_checkpoint(checkpoint: dict, source: str = "judge") -> bool:
    """True when a high score is good, from the scorer's training config; one sentence when it is not recorded."""
    config = checkpoint.get("config")
    scoring = config.get("sequence_scoring") if isinstance(config, dict) else None
    score_source = scoring.get("score_source") if isinstance(scoring, dict) else None
    if score_source in ("synthetic", "reconstruction"):
        return False  # predicts the fraction of corrupted (or wrongly reconstructed) tokens
    if score_source == "documents":
        return True  # predicts the documents' own quality scores
    raise UserError(f"the judge {source} does not record what its scores mean; set the judge direction to "
                    "'higher' or 'lower'")


class Judge:
    """Scores texts (lists of ids) with a sequence-scorer ``GPT``; ``higher_is_better`` says which end is good."""

    def __init__(self, model, vocab: SamplerVocab, higher_is_better: bool, *, aggregate: str = "mean",
                 text_vocab_size: int | None = None, batch_size: int = 64):
        if model.config.mode.value != "sequence_scorer":
            raise UserError(f"the judge must be a sequence scorer, got a {model.config.mode.value} model")
        if aggregate not in AGGREGATES:
            raise UserError(f"judge aggregate must be one of {', '.join(AGGREGATES)}, got {aggregate!r}")
        vocab.check_model(model, "judge", text_vocab_size=text_vocab_size)
        rows = model.config.vocab_size
        # the scorer's own [CLS] (stored in its config) wins: the earlier trainer's files put it elsewhere
        cls_id = model.config.cls_token_id if model.config.cls_token_id is not None else vocab.cls_id
        if cls_id is None or not 0 <= cls_id < rows:
            raise UserError("the judge has no [CLS] id inside its embedding to read its score at")
        self.model = model
        self.higher_is_better = bool(higher_is_better)
        self.aggregate = aggregate
        self.cls_id = int(cls_id)
        # padded positions are masked out of attention, so any id inside the table will do
        self.pad_id = vocab.pad_id if vocab.pad_id is not None and vocab.pad_id < rows else self.cls_id
        self.text_vocab_size = vocab.text_vocab_size
        self.batch_size = batch_size

    @classmethod
    def from_checkpoint(cls, path, vocab: SamplerVocab, *, direction: str = "auto", aggregate: str = "mean",
                        device="cpu", meta=None) -> Judge:
        model, checkpoint = load_role_model(path, "judge", "sequence_scorer", device, meta)
        if direction == "auto":
            higher = direction_from_checkpoint(checkpoint, str(Path(path)))
        elif direction in ("higher", "lower"):
            higher = direction == "higher"
        else:
            raise UserError(f"judge direction must be 'auto', 'higher' or 'lower', got {direction!r}")
        return cls(model, vocab, higher, aggregate=aggregate, text_vocab_size=checkpoint_text_vocab(checkpoint))

    @property
    def width(self) -> int:
        """Tokens per window after [CLS]."""
        return self.model.config.block_size - 1

    @torch.no_grad()
    def score(self, docs) -> np.ndarray:
        """One score per document (float64 array), windows batched across documents."""
        docs = [np.asarray(d, dtype=np.int64).reshape(-1) for d in docs]
        rows, owner = [], []
        for i, d in enumerate(docs):
            if d.size == 0:
                raise UserError(f"text {i} is empty; the judge needs at least one token")
            if d.min() < 0 or d.max() >= self.text_vocab_size:
                raise UserError(f"text {i} holds ids outside the text vocabulary [0, {self.text_vocab_size})")
            for start in spread_starts(d.size, self.width):
                rows.append(d[start:start + self.width])
                owner.append(i)
        device = next(self.model.parameters()).device
        window_scores = np.empty(len(rows))
        for lo in range(0, len(rows), self.batch_size):
            chunk = rows[lo:lo + self.batch_size]
            T = 1 + max(r.size for r in chunk)
            x = np.full((len(chunk), T), self.pad_id, dtype=np.int64)
            x[:, 0] = self.cls_id
            for j, r in enumerate(chunk):
                x[j, 1:1 + r.size] = r
            lengths = torch.tensor([1 + r.size for r in chunk], device=device)
            scores, _ = self.model(torch.from_numpy(x).to(device), lengths=lengths)
            window_scores[lo:lo + len(chunk)] = scores.float().cpu().numpy()
        owner = np.asarray(owner)
        reduce = {"mean": np.mean, "min": np.min, "max": np.max}[self.aggregate]
        return np.array([reduce(window_scores[owner == i]) for i in range(len(docs))], dtype=np.float64)

    def best(self, scores: np.ndarray) -> int:
        """Index of the best score under this judge's direction."""
        return int(np.argmax(scores) if self.higher_is_better else np.argmin(scores))

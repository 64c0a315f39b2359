"""``training_type = "sequence_scoring"``: the judge, one score in [0, 1] per sequence.

Input ``[CLS]`` + tokens (+ ``[PAD]``); the score is read at the ``[CLS]`` position. Targets are the
scores of a prepared ``{text, score}`` JSONL data dir, or synthetic: the fraction of tokens a random
corruption changed (so a synthetic scorer predicts "how corrupted": low is good).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmengine.errors import ConfigError, UserError
from mmengine.modes.base import ModeSpec
from mmengine.schema import option


@dataclass
class SequenceScoringConfig:
    """[sequence_scoring] one score in [0, 1] per sequence, read at the [CLS] position."""

    score_source: str = option("synthetic", "'documents' (a data dir prepared from {text, score} JSONL) or 'synthetic' (score = fraction of corrupted tokens, any corpus).",
                               choices=("synthetic", "documents"))
    max_corruption_rate: float = option(0.5, "Synthetic scores: each window is corrupted at a rate drawn uniformly from [0, this].")


class SequenceScoringMode(ModeSpec):
    """[CLS] + tokens (+ padding) -> one score; documents with scores, or synthetic corruption scores."""

    name = "sequence_scoring"
    table = "sequence_scoring"
    settings = SequenceScoringConfig
    model_mode = "sequence_scorer"
    description = "sequence scoring"

    @classmethod
    def check_config(cls, cfg, *, check_paths: bool = True) -> None:
        super().check_config(cfg, check_paths=check_paths)
        if not 0 < cfg.sequence_scoring.max_corruption_rate <= 1:
            raise ConfigError("sequence_scoring.max_corruption_rate must be in (0, 1].")

    def __init__(self, cfg, data):
        super().__init__(cfg, data)
        self.synthetic = cfg.sequence_scoring.score_source == "synthetic"
        self.cls_id = self.meta.cls_id
        self.pad_id = self.meta.pad_id
        self.text_vocab = self.meta.text_vocab_size
        self._docs: dict[str, tuple] = {}
        if self.synthetic:
            from mmengine.data.corruption import Corruptor

            self.corruptor = Corruptor([{"type": "random", "rate": cfg.sequence_scoring.max_corruption_rate}], self.text_vocab)
        if not self.synthetic:
            for split in ("train", "val"):
                if data.documents(split) is None:
                    raise UserError(f"sequence_scoring.score_source='documents' but the data dir has no {split} documents (prepare it from {{text, score}} JSONL).")

    def window_length(self) -> int:
        return self.block_size - 1  # position 0 holds [CLS]

    def documents(self, split):
        if split not in self._docs:
            self._docs[split] = self.data.documents(split)
        return self._docs[split]

    def num_items(self, split="train"):
        if self.synthetic:
            return super().num_items(split)
        _tokens, offsets, _scores = self.documents(split)
        return len(offsets) - 1

    def build_batch(self, split, idx, rng, iteration, batch_state):
        if not self.synthetic:
            from mmengine.data import fastloader

            tokens, offsets, scores = self.documents(split)
            idx = np.asarray(idx, dtype=np.int64)
            x, lengths = fastloader.gather_documents(tokens, offsets, idx, self.block_size, cls_id=self.cls_id, pad_id=self.pad_id)
            return {"x": x, "y": np.asarray(scores[idx], dtype=np.float32), "lengths": lengths}
        from mmengine.data.corruption import corruption_score

        x = self.windows(split).gather(idx)
        B, T = x.shape
        # each row corrupted at its own rate in [0, max_corruption_rate], so scores spread out
        xc, labels = self.corruptor.corrupt(x, rng, row_scale=rng.uniform(0.0, 1.0, size=B))
        cls = np.full((B, 1), self.cls_id, dtype=np.int64)
        return {"x": np.concatenate([cls, xc], axis=1).astype(np.int64),  # (B, block_size)
                "y": corruption_score(labels).astype(np.float32),
                "lengths": np.full(B, T + 1, dtype=np.int64)}

    def gpt_kwargs(self):
        return {"mode": self.model_mode, "cls_token_id": self.cls_id}

    def summarize(self, logits, batch):
        # predicted and true score per row (B,)
        return logits.float().reshape(-1).cpu().numpy(), batch["y"].float().reshape(-1).cpu().numpy()

    def figures(self, preds, targets):
        from mmengine.metrics import regression_metrics

        return regression_metrics(preds, targets)

    def describe(self):
        return "sequence scoring, " + ("synthetic scores (fraction corrupted)" if self.synthetic else "document scores")

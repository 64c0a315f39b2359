"""``training_type = "sequence_scoring"``: the judge, one score in [0, 1] per sequence.

Input ``[CLS]`` + tokens (+ ``[PAD]``); the score is read at the ``[CLS]`` position. Targets, by
``score_source``:

- ``documents``: the scores of a prepared ``{text, score}`` JSONL data dir;
- ``synthetic``: the fraction of tokens a random corruption changed (low is good);
- ``reconstruction`` (the earlier research trainer's way): windows are masked with the masking stages
  (every batch mixes them, rows split evenly), a frozen masked-diffusion LM fills the masked positions
  with its most probable text token, and the label is the share of the row the LM rewrote (or, with
  ``reconstruction_label = "wrong"``, the share where its fill differs from the text). A judge trained
  so has seen what that LM's own mistakes look like; low is good.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmengine.errors import ConfigError, UserError
from mmengine.modes.base import ModeSpec
from mmengine.schema import option, parse_items

_DEFAULT_STAGES = [{"type": "random", "max_masked_ratio": 1.0}]


@dataclass
class SequenceScoringConfig:
    """[sequence_scoring] one score in [0, 1] per sequence, read at the [CLS] position."""

    score_source: str = option("synthetic", "'documents' (a data dir prepared from {text, score} JSONL), 'synthetic' "
                                            "(score = fraction of corrupted tokens, any corpus) or 'reconstruction' "
                                            "(score = share of the window a frozen LM rewrote after masking, "
                                            "the earlier trainer's labels).",
                               choices=("synthetic", "documents", "reconstruction"))
    max_corruption_rate: float = option(0.5, "Synthetic scores: each window is corrupted at a rate drawn uniformly "
                                             "from [0, this].")
    unmasking_model_checkpoint: str = option("", "Reconstruction: the frozen masked-diffusion LM "
                                                 "(an unmasking run's checkpoint, or the earlier trainer's) "
                                                 "that fills the masked positions (argmax over text ids).")
    stages: list = option(_DEFAULT_STAGES, "Reconstruction: masking stages; every batch mixes them (rows split evenly, "
                                           "the remainder to the earlier stages, in random order).")
    validation_stages: list = option([], "Reconstruction: masking stages of the validation set; empty = stages.")
    reconstruction_label: str = option("rewritten", "Reconstruction: 'rewritten' (share of the window the LM filled, "
                                                    "i.e. masked: the earlier trainer's label) or 'wrong' "
                                                    "(share where its fill differs from the text).",
                                       choices=("rewritten", "wrong"))


class SequenceScoringMode(ModeSpec):
    """[CLS] + tokens (+ padding) -> one score; document scores, synthetic corruption or LM reconstruction labels."""

    name = "sequence_scoring"
    table = "sequence_scoring"
    settings = SequenceScoringConfig
    model_mode = "sequence_scorer"
    description = "sequence scoring"

    @classmethod
    def check_config(cls, cfg, *, check_paths: bool = True) -> None:
        super().check_config(cfg, check_paths=check_paths)
        s = cfg.sequence_scoring
        if not 0 < s.max_corruption_rate <= 1:
            raise ConfigError("sequence_scoring.max_corruption_rate must be in (0, 1].")
        from mmengine.data.masking import MaskingStage

        if s.score_source != "reconstruction":
            changed = [k for k, on in (("unmasking_model_checkpoint", s.unmasking_model_checkpoint),
                                       ("stages", s.stages != _DEFAULT_STAGES),
                                       ("validation_stages", s.validation_stages),
                                       ("reconstruction_label", s.reconstruction_label != "rewritten")) if on]
            if changed:
                raise ConfigError(f"sequence_scoring.{changed[0]} is set but applies only to "
                                  f"score_source='reconstruction' (this run's is {s.score_source!r}).")
            return
        if not s.unmasking_model_checkpoint:
            raise ConfigError("sequence_scoring.score_source='reconstruction' needs "
                              "sequence_scoring.unmasking_model_checkpoint "
                              "(the language model that fills the masked positions).")
        if not s.stages:
            raise ConfigError("sequence_scoring.stages must list at least one masking stage.")
        parse_items("sequence_scoring.stages", s.stages, MaskingStage.from_dict)
        parse_items("sequence_scoring.validation_stages", s.validation_stages, MaskingStage.from_dict)
        if check_paths:
            from pathlib import Path

            if not Path(s.unmasking_model_checkpoint).is_file():
                raise ConfigError("sequence_scoring.unmasking_model_checkpoint "
                                  f"'{s.unmasking_model_checkpoint}' does not exist.")

    @classmethod
    def masking_stages(cls, cfg) -> list[tuple[str, list]]:
        """[(role, [MaskingStage, ...])] a reconstruction run masks with
        (for ``python -m mmengine.masking_preview``)."""
        from mmengine.data.masking import MaskingStage

        s = cfg.sequence_scoring
        if s.score_source != "reconstruction":
            return []
        out = [("stage", parse_items("sequence_scoring.stages", s.stages, MaskingStage.from_dict))]
        if s.validation_stages:
            out.append(("validation stage", parse_items("sequence_scoring.validation_stages", s.validation_stages,
                                                        MaskingStage.from_dict)))
        return out

    def __init__(self, cfg, data, *, reconstruction_lm=None):
        super().__init__(cfg, data)
        s = cfg.sequence_scoring
        self.source = s.score_source
        self.synthetic = self.source == "synthetic"
        self.cls_id = self.meta.cls_id
        self.pad_id = self.meta.pad_id
        self.text_vocab = self.meta.text_vocab_size
        self._docs: dict[str, tuple] = {}
        if self.synthetic:
            from mmengine.data.corruption import Corruptor

            self.corruptor = Corruptor([{"type": "random", "rate": s.max_corruption_rate}], self.text_vocab)
        elif self.source == "documents":
            for split in ("train", "val"):
                if data.documents(split) is None:
                    raise UserError(f"sequence_scoring.score_source='documents' but the data dir has no {split} "
                                    "documents (prepare it from {text, score} JSONL).")
        else:
            from mmengine.data.masking import MaskingStage

            self.stages = parse_items("sequence_scoring.stages", s.stages, MaskingStage.from_dict)
            self.val_stages = (parse_items("sequence_scoring.validation_stages", s.validation_stages,
                                           MaskingStage.from_dict)
                               or self.stages)
            cls_id = cfg.transfer.cls_token_id if cfg.transfer.cls_token_id >= 0 else None
            self.lm = reconstruction_lm or ReconstructionLM(s.unmasking_model_checkpoint, self.meta,
                                                            cls_token_id=cls_id)
            if self.lm.block_size < self.window_length():
                raise UserError(f"sequence_scoring.unmasking_model_checkpoint reads {self.lm.block_size} tokens at "
                                f"most but this run's windows hold {self.window_length()} "
                                "(data.block_size - 1); lower data.block_size.")

    def window_length(self) -> int:
        return self.block_size - 1  # position 0 holds [CLS]

    def documents(self, split):
        if split not in self._docs:
            self._docs[split] = self.data.documents(split)
        return self._docs[split]

    def num_items(self, split="train"):
        if self.source != "documents":
            return super().num_items(split)
        _tokens, offsets, _scores = self.documents(split)
        return len(offsets) - 1

    def _with_cls(self, x: np.ndarray, scores: np.ndarray) -> dict:
        B, T = x.shape
        cls = np.full((B, 1), self.cls_id, dtype=np.int64)
        return {"x": np.concatenate([cls, x], axis=1).astype(np.int64),  # (B, block_size)
                "y": np.asarray(scores, dtype=np.float32), "lengths": np.full(B, T + 1, dtype=np.int64)}

    def build_batch(self, split, idx, rng, iteration, batch_state):
        if self.source == "documents":
            from mmengine.data import fastloader

            tokens, offsets, scores = self.documents(split)
            idx = np.asarray(idx, dtype=np.int64)
            x, lengths = fastloader.gather_documents(tokens, offsets, idx, self.block_size, cls_id=self.cls_id,
                                                     pad_id=self.pad_id)
            return {"x": x, "y": np.asarray(scores[idx], dtype=np.float32), "lengths": lengths}
        x = self.windows(split).gather(idx)
        if self.synthetic:
            from mmengine.data.corruption import corruption_score

            # each row corrupted at its own rate in [0, max_corruption_rate], so scores spread out
            xc, labels = self.corruptor.corrupt(x, rng, row_scale=rng.uniform(0.0, 1.0, size=len(x)))
            return self._with_cls(xc, corruption_score(labels))
        from mmengine.data.masking import make_mixed_mask

        mask, _ = make_mixed_mask(self.val_stages if split == "val" else self.stages, x.shape, rng)
        filled = self.lm(x, mask)
        changed = mask if self.cfg.sequence_scoring.reconstruction_label == "rewritten" else filled != x
        return self._with_cls(filled, changed.mean(axis=1))

    def gpt_kwargs(self):
        return {"mode": self.model_mode, "cls_token_id": self.cls_id}

    def summarize(self, logits, batch):
        # predicted and true score per row (B,)
        return logits.float().reshape(-1).cpu().numpy(), batch["y"].float().reshape(-1).cpu().numpy()

    def figures(self, preds, targets):
        from mmengine.metrics import regression_metrics

        return regression_metrics(preds, targets)

    def describe(self):
        what = {"synthetic": "synthetic scores (fraction corrupted)", "documents": "document scores",
                "reconstruction": f"reconstruction scores (share {self.cfg.sequence_scoring.reconstruction_label} "
                                  "by a frozen LM)"}
        return "sequence scoring, " + what[self.source]


class ReconstructionLM:
    """A frozen masked-diffusion LM that fills masked positions with its most probable text token.

    Loaded once (an mmengine file, or one of the earlier trainer / nanoGPT with its vocabulary mapped onto
    the data dir's), on the CPU: it runs in the prefetcher's thread, next to the training step.
    """

    def __init__(self, path: str, meta, *, device: str = "cpu", cls_token_id: int | None = None):
        from mmengine.checkpoint import load_checkpoint, model_from_checkpoint
        from mmengine.upstream import prepare_for_data

        ckpt = prepare_for_data(load_checkpoint(path), meta, cls_token_id=cls_token_id, source=str(path))
        self.model = model_from_checkpoint(ckpt, source=str(path)).to(device).eval()
        cfg = self.model.config
        if cfg.mode.value != "language_model" or cfg.attention_type != "bidirectional":
            raise UserError(f"sequence_scoring.unmasking_model_checkpoint {path} must be a bidirectional language "
                            f"model (an unmasking run), not a {cfg.attention_type} {cfg.mode.value}.")
        self.block_size = cfg.block_size
        self.mask_id = meta.mask_id
        self.text_vocab = meta.text_vocab_size
        self.device = device

    def __call__(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``x`` with each masked position replaced by the LM's argmax over the text ids, given the rest."""
        import torch

        inputs = torch.from_numpy(np.ascontiguousarray(np.where(mask, self.mask_id, x))).to(self.device)
        with torch.no_grad():
            logits, _ = self.model(inputs)  # (B, T, V)
            guess = logits[..., :self.text_vocab].argmax(-1).cpu().numpy()  # never a special id
        return np.where(mask, guess, x).astype(np.int64)

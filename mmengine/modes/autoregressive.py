"""``training_type = "autoregressive"``: a causal next-token language model.

The yardstick of the diffusion LM (its validation loss is the exact NLL per token, where the
masked-diffusion objective only gives an upper bound), the judge of generative perplexity, and the
way to fine-tune nanoGPT checkpoints. Windows of ``block_size + 1`` tokens from the C++ gather:
the first ``block_size`` are the input, the last ``block_size`` the targets.
"""
from __future__ import annotations

import math

import numpy as np

from mmengine.modes.base import ModeSpec


class AutoregressiveMode(ModeSpec):
    """Causal attention, next-token cross-entropy; validation ``loss`` (nats per token) and ``ppl``."""

    name = "autoregressive"
    model_mode = "language_model"
    attention = "causal"
    allowed_attention = ("causal",)
    description = "autoregressive (causal) language model"

    def window_length(self) -> int:
        return self.block_size + 1  # inputs and next-token targets overlap by block_size tokens

    def build_batch(self, split, idx, rng, iteration, batch_state):
        w = self.windows(split).gather(idx)  # (B, block_size + 1)
        return {"x": np.ascontiguousarray(w[:, :-1]), "y": np.ascontiguousarray(w[:, 1:])}

    def metrics(self, results):
        # every batch has B * block_size targets, so the mean of batch means is the mean over tokens
        loss = float(np.mean([r[2] for r in results]))
        return {"loss": loss, "ppl": float(math.exp(min(loss, 50.0)))}

    def describe(self):
        return "autoregressive language model"

    def sample(self, model, meta, tokenizer, cfg):
        from mmengine.modes.base import end_of_run_sample

        return "sample (left to right)", end_of_run_sample(model, meta, tokenizer, cfg)

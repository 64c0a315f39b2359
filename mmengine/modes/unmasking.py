"""``training_type = "unmasking"``: the masked-diffusion language model (the writer).

Windows of text, some tokens replaced by ``[MASK]``; the model learns to reconstruct them. Two
objectives: a curriculum of masking stages (:mod:`mmengine.data.masking`), or the continuous-time
MDLM/LLaDA objective whose validation loss is an upper bound on the NLL per token.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmengine.errors import ConfigError
from mmengine.modes.base import ModeSpec, spread
from mmengine.rng import STREAM_VAL, rng_for
from mmengine.schema import option, parse_items


@dataclass
class UnmaskingConfig:
    """[unmasking] the masked-diffusion language model."""

    objective: str = option("stages", "'stages' (masking-stage curriculum) or 'continuous_time' (MDLM/LLaDA: t ~ U(eps,1), loss weighted 1/t).",
                            choices=("stages", "continuous_time"))
    stages: list = option([{"type": "random", "max_masked_ratio": 1.0}],
                          "Masking stages, trained in order; each an inline table like {type=\"sticky\", target_masked_ratio=0.4, p1=0.1, p2=0.6}.")
    val_loss_stale_count: int = option(3, "Advance to the next stage after this many evaluations without a better validation loss.")
    bert_replacement: bool = option(False, "BERT-style 80/10/10: of the selected positions 10% get a random token and 10% stay unchanged.")
    estimator: str = option("exact_count", "How the continuous-time objective masks a row: 'exact_count' (exactly k ~ U{1..T} tokens, "
                                           "each row's mean CE: an unbiased NELBO with bounded weights) or 'bernoulli' (t ~ U(eps, 1), "
                                           "each token with probability t, weighted 1/t: MDLM's form, high variance).",
                            choices=("exact_count", "bernoulli"))
    eps: float = option(1e-3, "Smallest masking time t of the 'bernoulli' estimator.")
    text_only: bool = option(True, "Softmax over the text vocabulary only: the model never puts probability on [MASK] or another "
                                   "special id (MDLM's zero-masking-probability parameterization).")


class UnmaskingMode(ModeSpec):
    """Masked-diffusion LM: mask tokens (stage curriculum or continuous time), predict them."""

    name = "unmasking"
    table = "unmasking"
    settings = UnmaskingConfig
    model_mode = "language_model"
    attention = "bidirectional"
    allowed_attention = ("bidirectional", "causal")
    description = "masked-diffusion language model"

    @classmethod
    def check_config(cls, cfg, *, check_paths: bool = True) -> None:
        super().check_config(cfg, check_paths=check_paths)
        u = cfg.unmasking
        if u.objective == "stages" and not u.stages:
            raise ConfigError("unmasking.stages must list at least one masking stage.")
        if not 0 < u.eps < 1:
            raise ConfigError(f"unmasking.eps must be in (0, 1), got {u.eps}.")
        if u.val_loss_stale_count < 1:
            raise ConfigError(f"unmasking.val_loss_stale_count must be at least 1, got {u.val_loss_stale_count}.")
        from mmengine.data.masking import MaskingStage

        parse_items("unmasking.stages", u.stages, MaskingStage.from_dict)

    def __init__(self, cfg, data):
        super().__init__(cfg, data)
        from mmengine.data.masking import MaskingStage, StageCurriculum

        self.continuous = cfg.unmasking.objective == "continuous_time"
        self.stages = parse_items("unmasking.stages", cfg.unmasking.stages, MaskingStage.from_dict)
        self.curriculum = StageCurriculum(self.stages, cfg.unmasking.val_loss_stale_count)
        self.mask_id = self.meta.mask_id
        self.text_vocab = self.meta.text_vocab_size
        self.bert = (0.8, 0.1, 0.1) if cfg.unmasking.bert_replacement else False

    def stage_index(self) -> int:
        return int(self.curriculum.index)

    def batch_state(self) -> Any:
        return self.stage_index()

    def _mask(self, x: np.ndarray, rng: np.random.Generator, stage: int, step: int | None) -> dict:
        from mmengine.data import masking

        if self.continuous:
            if self.cfg.unmasking.estimator == "exact_count":
                mask, t = masking.exact_count_mask(x.shape, rng, step=step)
            else:
                mask, t = masking.continuous_time_mask(x.shape, rng, eps=self.cfg.unmasking.eps, step=step)
            inputs = np.where(mask, self.mask_id, x)
            targets = np.where(mask, x, -1)
            return {"x": inputs.astype(np.int64), "y": targets.astype(np.int64), "t": t.astype(np.float32)}
        mask = masking.make_mask(self.stages[stage], x.shape, rng)
        inputs, targets = masking.apply_mask(x, mask, mask_id=self.mask_id, vocab_size=self.text_vocab, rng=rng,
                                             bert_replacement=self.bert)
        return {"x": np.asarray(inputs, dtype=np.int64), "y": np.asarray(targets, dtype=np.int64)}

    def build_batch(self, split, idx, rng, iteration, batch_state):
        x = self.windows(split).gather(idx)
        # continuous time: the batch's offset u comes from its own rng (stratified within the batch), so
        # micro-batches of one step and the ranks of a DDP run do not share their masking times
        return self._mask(x, rng, batch_state, None)

    def val_batches(self):
        w = self.windows("val")
        groups = ["continuous"] if self.continuous else [f"stage{i}" for i in range(len(self.stages))]
        # every stage gets its own batches, so the hardest stages are never skipped
        per_group = max(1, self.cfg.train.eval_iters if self.continuous else math.ceil(self.cfg.train.eval_iters / len(groups)))
        idx = spread(w.num_items, per_group * self.batch_size)
        out = []
        for g, name in enumerate(groups):
            for i in range(per_group):
                rng = rng_for(self.cfg.run.seed, g, i, STREAM_VAL)
                x = w.gather(idx[i * self.batch_size:(i + 1) * self.batch_size])
                # continuous time: the low-discrepancy t of step i covers (eps, 1) evenly over the set
                out.append((name, self._mask(x, rng, g, i)))
        return out

    def loss(self, model, batch):
        from mmengine.losses import safe_divide
        from mmengine.model import token_nll

        if not self.continuous and not self.cfg.unmasking.text_only:
            return model(batch["x"], batch["y"])
        logits, _ = model(batch["x"], all_positions=True)  # (B, T, V)
        if self.cfg.unmasking.text_only:
            logits = logits[..., :self.text_vocab]  # special ids follow the text ids
        y = batch["y"]
        B, T = y.shape
        nll = token_nll(logits, y, backend=self.cfg.model.loss_backend)  # (B, T), 0 where not masked
        if not self.continuous:
            return logits, safe_divide(nll.sum(), (y != -1).sum().float())
        # MDLM/LLaDA: E_t[(1/t) sum_masked -log p] / T is an upper bound on the per-token NLL
        loss = (nll.sum(1) / batch["t"].float()).sum() / (B * T)
        return logits, loss

    def metrics(self, results):
        by_group: dict[str, list[float]] = {}
        for group, _summary, loss in results:
            by_group.setdefault(group, []).append(loss)
        out: dict[str, Any] = {}
        means = {g: float(np.mean(v)) for g, v in by_group.items()}
        out["loss"] = float(np.mean(list(means.values())))
        if self.continuous:
            out["nll_bound"] = out["loss"]
            out["ppl_bound"] = float(math.exp(min(out["loss"], 50.0)))
        else:
            for g, v in means.items():
                out[f"loss_{g}"] = v
            out["stage"] = self.stage_index()
            out["loss_current_stage"] = means[f"stage{self.stage_index()}"]
        return out

    def observe_eval(self, metrics):
        if self.continuous or len(self.stages) < 2:
            return None
        before = self.stage_index()
        advanced = self.curriculum.update(metrics["loss_current_stage"])
        if advanced and self.stage_index() != before:
            return ({"event": "stage_advanced", "from_stage": before, "to_stage": self.stage_index()},
                    f"curriculum: stage {before + 1} -> {self.stage_index() + 1} "
                    f"(validation loss stale for {self.curriculum.stale_count} evaluations)")
        return None

    def state_dict(self):
        return {"curriculum": self.curriculum.state_dict()}

    def load_state_dict(self, state):
        if state and "curriculum" in state:
            self.curriculum.load_state_dict(state["curriculum"])

    def describe(self):
        if self.continuous:
            return "unmasking (continuous-time objective)"
        return f"unmasking, stage {self.stage_index() + 1}/{len(self.stages)}"

    def sample(self, model, meta, tokenizer, cfg):
        from mmengine.modes.base import end_of_run_sample

        return "sample (iterative unmasking)", end_of_run_sample(model, meta, tokenizer, cfg)

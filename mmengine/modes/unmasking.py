"""``training_type = "unmasking"``: the masked-diffusion language model (the writer).

Windows of text, some tokens replaced by ``[MASK]``; the model learns to reconstruct them. Two
objectives: a curriculum of masking stages (:mod:`mmengine.data.masking`), or the continuous-time
MDLM/LLaDA objective whose validation loss is an upper bound on the NLL per token.

The earlier research trainer's recipes, each off by default:

- ``stage_mixing``: a training batch masked by the curriculum's stage alone (``current``, mmengine's
  default), or mixing stages 0..current (``up_to_current``, that trainer's default) or every stage
  (``all``, its ``use_all_stages_for_training = True``): rows split evenly, the remainder to the earlier
  stages, in random order. ``validation_stages``: a validation set of its own stages (the curriculum then
  follows the mean validation loss, as that trainer did).
- Loss recipes, applied to *training* batches only (:meth:`UnmaskingMode.train_batch` marks them):
  ``uncertainty_factor`` (label smoothing over the text ids), ``weight_loss_by_mask_ratio`` (loss x
  sqrt(1 / masked share of the batch)) and the wrong-answer entropy penalty (loss x (1 + lambda(t)
  (Hmax - H_wrong) / Hmax)). The validation loss is always the plain cross-entropy of the true token,
  so runs with and without recipes compare, and the continuous-time ``nll_bound`` stays a bound.
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

#: Key of a training batch that switches the loss recipes on; it holds the entropy penalty's lambda(t).
RECIPE_KEY = "train_recipes"


@dataclass
class UnmaskingConfig:
    """[unmasking] the masked-diffusion language model."""

    objective: str = option("stages", "'stages' (masking-stage curriculum) or 'continuous_time' (MDLM/LLaDA: "
                                      "t ~ U(eps,1), loss weighted 1/t).",
                            choices=("stages", "continuous_time"))
    stages: list = option([{"type": "random", "max_masked_ratio": 1.0}],
                          "Masking stages, trained in order; each an inline table like {type=\"sticky\", "
                          "target_masked_ratio=0.4, p1=0.1, p2=0.6} (the earlier trainer's keys p1_probability, "
                          "p2_probability, spans_count, val_loss_stale_count work too).")
    val_loss_stale_count: int = option(3, "Advance to the next stage after this many evaluations without a better "
                                          "validation loss (a stage's own val_loss_stale_count wins).")
    bert_replacement: bool = option(False, "BERT-style 80/10/10: of the selected positions 10% get a random token and "
                                           "10% stay unchanged.")
    estimator: str = option("exact_count", "How the continuous-time objective masks a row: 'exact_count' "
                                           "(exactly k ~ U{1..T} tokens, each row's mean CE: "
                                           "an unbiased NELBO with bounded weights) or 'bernoulli' (t ~ U(eps, 1), "
                                           "each token with probability t, weighted 1/t: MDLM's form, high variance).",
                            choices=("exact_count", "bernoulli"))
    eps: float = option(1e-3, "Smallest masking time t of the 'bernoulli' estimator.")
    text_only: bool = option(True, "Softmax over the text vocabulary only: the model never puts probability on [MASK] "
                                   "or another special id (MDLM's zero-masking-probability parameterization).")
    validation_stages: list = option([], "Masking stages of the validation set, one loss each; "
                                         "empty = the training stages. With a list of its own the curriculum follows "
                                         "the mean validation loss (the earlier trainer's way).")
    stage_mixing: str = option("current", "Stages a training batch is masked with: 'current' (the curriculum's stage), "
                                          "'up_to_current' (stages 0..current mixed: rows split evenly, "
                                          "the remainder to the earlier stages, in random order; "
                                          "the earlier trainer's default) or 'all' (every stage mixed so, "
                                          "whatever the curriculum stage; its use_all_stages_for_training = True).",
                               choices=("current", "up_to_current", "all"))
    uncertainty_factor: float = option(0.0, "Label smoothing of the training loss: the true token gets 1 - u, "
                                            "the other text ids share u; special ids get nothing (0 = off).")
    weight_loss_by_mask_ratio: bool = option(False, "Multiply the training loss by "
                                                    "sqrt(1 / masked share of the batch).")
    enable_entropy_penalty: bool = option(False, "Multiply the training loss by 1 + lambda(t) (Hmax - H_wrong) / Hmax, "
                                                 "H_wrong the entropy of the predicted distribution over the wrong "
                                                 "tokens (concentrated wrong answers cost more), "
                                                 "Hmax = log(softmax width - 1).")
    max_entropy_penalty: float = option(0.5, "lambda at train.max_iters; "
                                             "it ramps linearly from 0 at entropy_penalty_start_iter.")
    entropy_penalty_start_iter: int = option(0, "Step from which the entropy penalty ramps up (lambda = 0 before).")


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
        if not 0 <= u.uncertainty_factor < 1:
            raise ConfigError(f"unmasking.uncertainty_factor must be in [0, 1), got {u.uncertainty_factor}.")
        if u.max_entropy_penalty < 0 or u.entropy_penalty_start_iter < 0:
            raise ConfigError("unmasking.max_entropy_penalty and unmasking.entropy_penalty_start_iter "
                              "must not be negative.")
        if u.enable_entropy_penalty and u.entropy_penalty_start_iter >= cfg.train.max_iters:
            raise ConfigError(f"unmasking.entropy_penalty_start_iter ({u.entropy_penalty_start_iter}) is not before "
                              f"train.max_iters ({cfg.train.max_iters}), so the entropy penalty would never apply.")
        if u.objective == "continuous_time":
            for key in ("stage_mixing", "validation_stages"):
                if getattr(u, key) not in ("current", []):
                    raise ConfigError(f"unmasking.{key} is about masking stages, "
                                      "which unmasking.objective='continuous_time' does not use.")
        from mmengine.data.masking import MaskingStage

        parse_items("unmasking.stages", u.stages, MaskingStage.from_dict)
        parse_items("unmasking.validation_stages", u.validation_stages, MaskingStage.from_dict)

    @classmethod
    def masking_stages(cls, cfg) -> list[tuple[str, list]]:
        """[(role, [MaskingStage, ...])] this run masks with (for ``python -m mmengine.masking_preview``)."""
        from mmengine.data.masking import MaskingStage

        u = cfg.unmasking
        if u.objective == "continuous_time":
            return []
        out = [("training stage", parse_items("unmasking.stages", u.stages, MaskingStage.from_dict))]
        if u.validation_stages:
            out.append(("validation stage",
                        parse_items("unmasking.validation_stages", u.validation_stages, MaskingStage.from_dict)))
        return out

    def __init__(self, cfg, data):
        super().__init__(cfg, data)
        from mmengine.data.masking import MaskingStage, StageCurriculum

        u = cfg.unmasking
        self.continuous = u.objective == "continuous_time"
        self.stages = parse_items("unmasking.stages", u.stages, MaskingStage.from_dict)
        self.own_val_stages = bool(u.validation_stages)
        self.val_stages = (parse_items("unmasking.validation_stages", u.validation_stages, MaskingStage.from_dict)
                           or self.stages)
        self.curriculum = StageCurriculum(self.stages, u.val_loss_stale_count)
        self.mask_id = self.meta.mask_id
        self.text_vocab = self.meta.text_vocab_size
        self.bert = (0.8, 0.1, 0.1) if u.bert_replacement else False
        self.recipes = u.uncertainty_factor > 0 or u.weight_loss_by_mask_ratio or u.enable_entropy_penalty

    def stage_index(self) -> int:
        return int(self.curriculum.index)

    def batch_state(self) -> Any:
        return self.stage_index()

    # --- batches --------------------------------------------------------------------------

    def _continuous(self, x: np.ndarray, rng: np.random.Generator, step: int | None) -> dict:
        from mmengine.data import masking

        if self.cfg.unmasking.estimator == "exact_count":
            mask, t = masking.exact_count_mask(x.shape, rng, step=step)
        else:
            mask, t = masking.continuous_time_mask(x.shape, rng, eps=self.cfg.unmasking.eps, step=step)
        inputs = np.where(mask, self.mask_id, x)
        targets = np.where(mask, x, -1)
        return {"x": inputs.astype(np.int64), "y": targets.astype(np.int64), "t": t.astype(np.float32)}

    def _staged(self, x: np.ndarray, rng: np.random.Generator, stages: list) -> dict:
        """Rows masked by ``stages`` (one stage: all rows; several: rows split between them)."""
        from mmengine.data import masking

        if len(stages) == 1:
            mask = masking.make_mask(stages[0], x.shape, rng)
        else:
            mask, _ = masking.make_mixed_mask(stages, x.shape, rng)
        inputs, targets = masking.apply_mask(x, mask, mask_id=self.mask_id, vocab_size=self.text_vocab, rng=rng,
                                             bert_replacement=self.bert)
        return {"x": np.asarray(inputs, dtype=np.int64), "y": np.asarray(targets, dtype=np.int64)}

    def training_stages(self, stage: int) -> list:
        """The stages one training batch is masked with at curriculum stage ``stage``."""
        mixing = self.cfg.unmasking.stage_mixing
        return {"current": [self.stages[stage]], "up_to_current": self.stages[:stage + 1], "all": self.stages}[mixing]

    def build_batch(self, split, idx, rng, iteration, batch_state):
        x = self.windows(split).gather(idx)
        # continuous time: the batch's offset u comes from its own rng (stratified within the batch), so
        # micro-batches of one step and the ranks of a DDP run do not share their masking times
        if self.continuous:
            return self._continuous(x, rng, None)
        return self._staged(x, rng, self.training_stages(int(batch_state)))

    def train_batch(self, idx, rng, iteration, batch_state):
        batch = self.build_batch("train", idx, rng, iteration, batch_state)
        if self.recipes:
            batch[RECIPE_KEY] = np.asarray(self.entropy_lambda(iteration), dtype=np.float32)
        return batch

    def val_batches(self):
        w = self.windows("val")
        groups = ["continuous"] if self.continuous else [f"stage{i}" for i in range(len(self.val_stages))]
        # every stage gets its own batches, so the hardest stages are never skipped
        per_group = max(1, self.cfg.train.eval_iters if self.continuous
                        else math.ceil(self.cfg.train.eval_iters / len(groups)))
        idx = spread(w.num_items, per_group * self.batch_size)
        out = []
        for g, name in enumerate(groups):
            for i in range(per_group):
                rng = rng_for(self.cfg.run.seed, g, i, STREAM_VAL)
                x = w.gather(idx[i * self.batch_size:(i + 1) * self.batch_size])
                # continuous time: the low-discrepancy t of step i covers (eps, 1) evenly over the set
                out.append((name, self._continuous(x, rng, i) if self.continuous
                                  else self._staged(x, rng, [self.val_stages[g]])))
        return out

    # --- loss -----------------------------------------------------------------------------

    def entropy_lambda(self, iteration: int) -> float:
        """lambda(t) of the entropy penalty: 0 before its start, then linear up to its maximum at train.max_iters."""
        u = self.cfg.unmasking
        if not u.enable_entropy_penalty or iteration < u.entropy_penalty_start_iter:
            return 0.0
        span = self.cfg.train.max_iters - u.entropy_penalty_start_iter
        progress = 1.0 if span <= 0 else min(1.0, (iteration - u.entropy_penalty_start_iter) / span)
        return u.max_entropy_penalty * progress

    def loss(self, model, batch):
        from mmengine.losses import safe_divide
        from mmengine.model import token_nll

        recipes = RECIPE_KEY in batch  # a training batch of a run with a loss recipe on
        if not self.continuous and not self.cfg.unmasking.text_only and not recipes:
            return model(batch["x"], batch["y"])
        logits, _ = model(batch["x"], all_positions=True)  # (B, T, V)
        if self.cfg.unmasking.text_only:
            logits = logits[..., :self.text_vocab]  # special ids follow the text ids
        y = batch["y"]
        B, T = y.shape
        masked = y != -1
        if recipes and self.cfg.unmasking.uncertainty_factor > 0:
            nll = smoothed_token_loss(logits, y, self.cfg.unmasking.uncertainty_factor, self.text_vocab)
        else:
            nll = token_nll(logits, y, backend=self.cfg.model.loss_backend)  # (B, T), 0 where not masked
        if self.continuous:
            # MDLM/LLaDA: E_t[(1/t) sum_masked -log p] / T is an upper bound on the per-token NLL
            loss = (nll.sum(1) / batch["t"].float()).sum() / (B * T)
        else:
            loss = safe_divide(nll.sum(), masked.sum().float())
        if recipes:
            u = self.cfg.unmasking
            if u.weight_loss_by_mask_ratio:
                ratio = masked.float().mean()
                loss = loss * torch_sqrt_inverse(ratio)
            if u.enable_entropy_penalty:
                lam = batch[RECIPE_KEY].float().reshape(())  # a 0-d array arrives as shape (1,)
                loss = loss * (1.0 + lam * wrong_answer_entropy_gap(logits, y))
        return logits, loss

    # --- metrics --------------------------------------------------------------------------

    def summarize(self, logits, batch):
        """Sums over the masked positions (count, argmax hits, probability of the true token, softmax
        width) and each row's masked share; never the (B, T, V) logits."""
        import torch

        y = batch["y"]
        masked = y != -1
        picked = logits[masked].float()  # (M, V)
        truth = y[masked]
        p_true = (torch.softmax(picked, dim=-1).gather(1, truth[:, None]).squeeze(1) if len(truth)
                  else picked.new_zeros(0))
        return {"masked": int(masked.sum()), "hits": int((picked.argmax(-1) == truth).sum()) if len(truth) else 0,
                "p_true": float(p_true.sum()), "width": int(logits.shape[-1]),
                "ratios": masked.float().mean(1).cpu().numpy()}

    @staticmethod
    def _lm_figures(summaries: list[dict]) -> dict:
        """Masked-token accuracy, mean probability of the true token, that probability over the uniform
        one (1 / softmax width: text ids with text_only), masked-share statistics over the rows."""
        n = sum(s["masked"] for s in summaries)
        ratios = np.concatenate([s["ratios"] for s in summaries])
        out = {}
        if n:
            p = sum(s["p_true"] for s in summaries) / n
            out.update(accuracy=sum(s["hits"] for s in summaries) / n, p_correct=p,
                       model_vs_uniform=p * summaries[0]["width"])
        out.update(mask_ratio_mean=float(ratios.mean()), mask_ratio_min=float(ratios.min()),
                   mask_ratio_max=float(ratios.max()))
        return out

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
            if not self.own_val_stages:
                out["loss_current_stage"] = means[f"stage{self.stage_index()}"]
        summaries = [r[1] for r in results if r[1] is not None]
        if summaries:
            out.update(self._lm_figures(summaries))
        return out

    # --- curriculum -----------------------------------------------------------------------

    def observe_eval(self, metrics):
        if self.continuous or len(self.stages) < 2:
            return None
        before = self.stage_index()
        limit = self.curriculum.limit
        # validation stages of their own do not say which is the training stage: the earlier trainer's mean
        watched = metrics["loss"] if self.own_val_stages else metrics["loss_current_stage"]
        advanced = self.curriculum.update(watched)
        if advanced and self.stage_index() != before:
            return ({"event": "stage_advanced", "from_stage": before, "to_stage": self.stage_index()},
                    (f"curriculum: stage {before + 1} -> {self.stage_index() + 1} "
                     f"(validation loss stale for {limit} evaluations)"))
        return None

    def state_dict(self):
        return {"curriculum": self.curriculum.state_dict()}

    def load_state_dict(self, state):
        if state and "curriculum" in state:
            self.curriculum.load_state_dict(state["curriculum"])

    def describe(self):
        if self.continuous:
            return "unmasking (continuous-time objective)"
        mixed = {"current": "", "up_to_current": ", batches mix stages 1..current", "all": ", batches mix every stage"}[
            self.cfg.unmasking.stage_mixing]
        return f"unmasking, stage {self.stage_index() + 1}/{len(self.stages)}{mixed}"

    def sample(self, model, meta, tokenizer, cfg):
        from mmengine.modes.base import end_of_run_sample

        return "sample (iterative unmasking)", end_of_run_sample(model, meta, tokenizer, cfg)


# --- the loss recipes (eager torch, on every position then masked: no host sync, no boolean indexing) --

def smoothed_token_loss(logits, y, u: float, text_vocab: int):
    """(B, T) cross-entropy against the smoothed target, 0 where ``y == -1``.

    The target puts 1 - u on the true token and u / (K - 1) on each other *text* id (K = ``text_vocab``);
    special ids (at and above K) get nothing, whether or not the softmax covers them (the earlier trainer
    spread u over its reserved ids too). Written as (1 - u) nll_true + u / (K - 1) (sum_text nll - nll_true).
    """
    import torch

    masked = y != -1
    lp = torch.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    nll_true = -lp.gather(-1, y.clamp_min(0)[..., None]).squeeze(-1)  # (B, T)
    nll_text = -lp[..., :text_vocab].sum(-1)
    per = (1.0 - u) * nll_true + u / (text_vocab - 1) * (nll_text - nll_true)
    return torch.where(masked, per, torch.zeros_like(per))


def wrong_answer_entropy_gap(logits, y):
    """(Hmax - H_wrong) / Hmax over the masked positions, differentiable (a 0-d tensor).

    H_wrong is the entropy of the predicted distribution with the true token removed and the rest
    renormalised, averaged over the masked positions that put any mass (> 1e-9, as the earlier trainer)
    on wrong tokens; Hmax = log(V - 1) for a softmax over V ids. 0 (no penalty) where no masked position
    has wrong mass at all. Computed from log-probabilities with the true logit pushed to a large finite
    negative value, so an exact zero probability never meets a log (whose gradient would be NaN).
    """
    import torch

    V = logits.shape[-1]
    if V < 3:  # one wrong id: its entropy is always 0 = Hmax
        return logits.new_zeros((), dtype=torch.float32)
    z = logits.float()
    true = torch.zeros_like(z, dtype=torch.bool).scatter(-1, y.clamp_min(0)[..., None], True)
    z_wrong = z.masked_fill(true, -1e9)  # (B, T, V)
    log_q = torch.log_softmax(z_wrong, dim=-1)  # the wrong tokens renormalised
    h_rows = -(log_q.exp() * log_q).sum(-1)  # (B, T); the true token adds 0 * (finite)
    log_wrong_mass = torch.logsumexp(z_wrong, -1) - torch.logsumexp(z, -1)  # log(1 - p_true)
    has_wrong = (log_wrong_mass > math.log(1e-9)) & (y != -1)
    count = has_wrong.sum()
    h = torch.where(has_wrong, h_rows, torch.zeros_like(h_rows)).sum() / count.clamp_min(1)
    h_max = math.log(V - 1)
    return torch.where(count > 0, (h_max - h) / h_max, torch.zeros_like(h))


def torch_sqrt_inverse(ratio):
    """sqrt(1 / ratio), and 1 where nothing is masked."""
    import torch

    return torch.where(ratio > 0, ratio.clamp_min(1e-12).rsqrt(), torch.ones_like(ratio))

"""One small spec per training mode: how a batch is built, which head, which loss, which metrics.

The trainer looks the spec up once (:func:`build_mode`) and then only calls its methods:

- ``gpt_kwargs()``: the model's mode and head settings (``mode``, ``num_token_classes``, ``cls_token_id``);
- ``num_items(split)`` / ``build_batch(split, idx, rng, iteration, batch_state)``: numpy batches for
  the sampler's item indices, built in the prefetcher's thread (``batch_state`` is an immutable
  snapshot, e.g. the curriculum stage, so a prefetched batch never mixes stages);
- ``val_batches()``: a fixed validation set, the same at every evaluation (and on every rank);
- ``loss(model, batch)``: ``(logits, loss)``;
- ``evaluate(model, batches)``: the validation figures, ``loss`` first; per batch it keeps only
  ``summarize(logits, batch)`` (small: predictions and targets, never a (B, T, V) logits tensor),
  which ``figures(preds, targets)`` turns into the mode's metrics;
- ``observe_eval(metrics)`` / ``state_dict()`` / ``load_state_dict()``: the curriculum, when the mode has one.

Every batch is a dict of numpy arrays with ``x`` (B, T) int64 inputs and ``y`` targets, plus
``lengths`` (B,) for padded rows and ``t`` (B,) for the continuous-time objective.
"""
from __future__ import annotations

import contextlib
import logging
import math
from typing import Any

import numpy as np

from mmengine.config import Config, ConfigError, UserError, corruption_kinds, num_token_classes, parse_items

logger = logging.getLogger(__name__)

# Stream ids of np.random.default_rng([seed, rank, counter, STREAM]); one per purpose.
STREAM_BATCH = 1
STREAM_VAL = 2
STREAM_DROPOUT = 3
STREAM_SAMPLE = 4


def spread(num_items: int, n: int) -> np.ndarray:
    """``n`` item indices spread evenly over ``num_items`` (a validation set that sees all of a split)."""
    return np.linspace(0, num_items - 1, n).round().astype(np.int64)


class Windows:
    """Windows of ``length`` tokens cut from one split, at any offset or at paragraph starts."""

    def __init__(self, tokens: np.ndarray, length: int, *, starts: np.ndarray | None, split: str):
        from mmengine.data import fastloader

        self._fl = fastloader
        self.tokens = tokens
        self.length = length
        self.starts = starts
        n = len(starts) if starts is not None else len(tokens) - length + 1
        if n < 1:
            raise UserError(f"the {split} split has {len(tokens)} tokens, too few for windows of {length} tokens (lower data.block_size).")
        self.num_items = int(n)

    def offsets(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        return self.starts[idx] if self.starts is not None else idx

    def gather(self, idx: np.ndarray) -> np.ndarray:
        """(B, length) int64 token windows for item indices ``idx``."""
        return self._fl.gather_windows(self.tokens, self.offsets(idx), self.length)


class ModeSpec:
    """Base: windows of ``block_size`` tokens, the model's own loss, no curriculum."""

    name = "base"
    model_mode = "language_model"
    generates_text = False  # the run ends with a generated sample

    def __init__(self, cfg: Config, data):
        self.cfg = cfg
        self.data = data
        self.meta = data.meta
        self.block_size = cfg.data.block_size
        self.batch_size = cfg.data.batch_size
        self._windows: dict[str, Windows] = {}

    # --- data -----------------------------------------------------------------------------

    def window_length(self) -> int:
        return self.block_size

    def separator_ids(self) -> list[int]:
        sep = self.cfg.data.separator
        if not sep:
            return list(self.meta.separator_ids)
        tok = self.data.tokenizer
        if tok is None:
            raise UserError("data.separator is text but the data dir has no tokenizer to encode it; leave it empty to use meta.json's separator.")
        return list(tok.encode(sep))

    def windows(self, split: str) -> Windows:
        if split not in self._windows:
            from mmengine.data import fastloader

            tokens = self.data.tokens(split)
            length = self.window_length()
            starts = None
            if self.cfg.data.use_paragraph_boundaries:
                sep = self.separator_ids()
                if not sep:
                    raise UserError("data.use_paragraph_boundaries is true but the data dir defines no separator (set data.separator).")
                starts = fastloader.paragraph_starts(tokens, np.asarray(sep, dtype=np.int64), length)
                if len(starts) == 0:
                    raise UserError(f"no paragraph of the {split} split fits a window of {length} tokens; lower data.block_size or switch off data.use_paragraph_boundaries.")
            self._windows[split] = Windows(tokens, length, starts=starts, split=split)
        return self._windows[split]

    def num_items(self, split: str = "train") -> int:
        return self.windows(split).num_items

    def batch_state(self) -> Any:
        """Immutable snapshot of whatever changes how batches are built (the curriculum stage)."""
        return None

    def build_batch(self, split: str, idx: np.ndarray, rng: np.random.Generator, iteration: int, batch_state: Any) -> dict:
        """The batch of item indices ``idx`` of ``split``; all randomness from ``rng``."""
        raise NotImplementedError

    def train_batch(self, idx: np.ndarray, rng: np.random.Generator, iteration: int, batch_state: Any) -> dict:
        return self.build_batch("train", idx, rng, iteration, batch_state)

    def val_batches(self) -> list[tuple[str, dict]]:
        """The fixed validation set: ``(group, batch)`` pairs; groups get their own loss.

        Built as at the end of training (``iteration = max_iters``: ramped rates at their final values).
        """
        n, B = self.cfg.train.eval_iters, self.batch_size
        idx = spread(self.num_items("val"), n * B)
        out = []
        for i in range(n):
            rng = np.random.default_rng([self.cfg.run.seed, 0, i, STREAM_VAL])
            out.append(("all", self.build_batch("val", idx[i * B:(i + 1) * B], rng, self.cfg.train.max_iters, self.batch_state())))
        return out

    # --- model ----------------------------------------------------------------------------

    def gpt_kwargs(self) -> dict:
        return {"mode": self.model_mode}

    def check_model(self, model, source: str) -> None:
        """A model loaded from ``source`` must have this mode's head (a resume or an evaluation with another config)."""
        for key, want in self.gpt_kwargs().items():
            have = getattr(model.config, key)
            have = getattr(have, "value", have)  # ModelMode -> its string
            if have != want:
                raise UserError(f"{source} holds a model with {key}={have!r} but this config's train.training_type="
                                f"'{self.cfg.train.training_type}' needs {want!r}; use the configuration that run was started with.")

    def loss(self, model, batch: dict):
        """(logits, loss) of one batch of tensors."""
        return model(batch["x"], batch["y"], lengths=batch.get("lengths"))

    def summarize(self, logits, batch: dict) -> tuple[np.ndarray, np.ndarray] | None:
        """(predictions, targets) of one batch, flattened, that :meth:`figures` needs (None: loss only)."""
        return None

    def figures(self, preds: np.ndarray, targets: np.ndarray) -> dict:
        """The mode's metrics over the whole validation set."""
        return {}

    def metrics(self, results: list[tuple[str, Any, float]]) -> dict:
        """``results`` = [(group, summary, loss)] over the validation set -> figures, ``loss`` first."""
        out = {"loss": float(np.mean([r[2] for r in results]))}
        summaries = [r[1] for r in results if r[1] is not None]
        if summaries:
            out.update(self.figures(np.concatenate([p for p, _ in summaries]), np.concatenate([t for _, t in summaries])))
        return out

    def evaluate(self, model, batches: list[tuple[str, dict]], autocast=contextlib.nullcontext) -> dict:
        """:meth:`metrics` of ``model`` (left in eval mode) over ``batches`` of tensors."""
        import torch

        model.eval()
        results = []
        with torch.no_grad():
            for group, batch in batches:
                with autocast():
                    logits, loss = self.loss(model, batch)
                results.append((group, self.summarize(logits, batch), float(loss)))
        return self.metrics(results)

    # --- curriculum -----------------------------------------------------------------------

    def observe_eval(self, metrics: dict) -> tuple[dict, str] | None:
        """Called on rank 0 after each evaluation; when batch building changed, (event for metrics.jsonl, console line)."""
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def describe(self) -> str:
        return self.name


class UnmaskingMode(ModeSpec):
    """Masked-diffusion LM: mask tokens (stage curriculum or continuous time), predict them."""

    name = "unmasking"
    model_mode = "language_model"
    generates_text = True

    def __init__(self, cfg: Config, data):
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
                rng = np.random.default_rng([self.cfg.run.seed, g, i, STREAM_VAL])
                x = w.gather(idx[i * self.batch_size:(i + 1) * self.batch_size])
                # continuous time: the low-discrepancy t of step i covers (eps, 1) evenly over the set
                out.append((name, self._mask(x, rng, g, i)))
        return out

    def loss(self, model, batch):
        if not self.continuous:
            return model(batch["x"], batch["y"])
        import torch.nn.functional as F

        logits, _ = model(batch["x"])  # (B, T, V): all positions of a bidirectional LM
        y = batch["y"]
        B, T = y.shape
        ce = F.cross_entropy(logits.float().reshape(B * T, -1), y.reshape(-1), ignore_index=-1, reduction="none").view(B, T)
        # MDLM/LLaDA: E_t[(1/t) sum_masked -log p] / T is an upper bound on the per-token NLL
        loss = (ce.sum(1) / batch["t"].float()).sum() / (B * T)
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


class TokenClassificationMode(ModeSpec):
    """One class per token; labels from the data dir's label files or made by a Corruptor."""

    name = "token_classification"
    model_mode = "token_classifier"

    def __init__(self, cfg: Config, data, *, lm_sampler=None):
        super().__init__(cfg, data)
        tc = cfg.token_classification
        self.from_labels = tc.label_source == "labels"
        if self.from_labels:
            for split in ("train", "val"):
                if data.labels(split) is None:
                    raise UserError(f"token_classification.label_source='labels' but the data dir has no {split} label file (prepare it from {{text, spans}} JSONL).")
            in_data = getattr(self.meta, "num_token_classes", None)
            n = num_token_classes(cfg) or in_data
            if not n:
                raise UserError("the number of token classes is unknown; set token_classification.num_token_classes.")
            if in_data and n < in_data:
                # said now, not when the first batch with a high label happens to be drawn
                raise UserError(f"the data dir's labels have {in_data} classes but the run has {n} "
                                f"(train.training_type='{cfg.train.training_type}', token_classification.num_token_classes={cfg.token_classification.num_token_classes}).")
            self.num_classes = int(n)
            self.corruptor = None
        else:
            from mmengine.data.corruption import CorruptionKind, Corruptor

            kinds = parse_items("token_classification.corruption", corruption_kinds(cfg), CorruptionKind.from_dict)
            self.corruptor = Corruptor(kinds, self.meta.text_vocab_size, lm_sampler=lm_sampler)
            self.num_classes = int(self.corruptor.num_classes)

    def _labels(self, split: str, idx: np.ndarray) -> np.ndarray:
        w = self.windows(split)
        labels = self.data.labels(split)
        offsets = w.offsets(idx)
        return np.asarray(labels[offsets[:, None] + np.arange(w.length)], dtype=np.int64)  # (B, T)

    def build_batch(self, split, idx, rng, iteration, batch_state):
        x = self.windows(split).gather(idx)
        if self.from_labels:
            y = self._labels(split, idx)
            if y.size and y.max() >= self.num_classes:
                raise UserError(f"the {split} label file holds class {int(y.max())} but the run has {self.num_classes} classes.")
            return {"x": x, "y": y}
        xc, y = self.corruptor.corrupt(x, rng, iteration)
        return {"x": np.asarray(xc, dtype=np.int64), "y": np.asarray(y, dtype=np.int64)}

    def gpt_kwargs(self):
        return {"mode": self.model_mode, "num_token_classes": self.num_classes}

    def summarize(self, logits, batch):
        # predicted and true class per token, flattened (B*T,)
        return logits.argmax(-1).reshape(-1).cpu().numpy(), batch["y"].reshape(-1).cpu().numpy()

    def figures(self, preds, targets):
        from mmengine.metrics import classification_metrics

        return classification_metrics(preds, targets, self.num_classes, ignore_index=-1)

    def describe(self):
        src = "label files" if self.from_labels else "corruption"
        return f"token classification, {self.num_classes} classes from {src}"


class SequenceScoringMode(ModeSpec):
    """[CLS] + tokens (+ padding) -> one score; documents with scores, or synthetic corruption scores."""

    name = "sequence_scoring"
    model_mode = "sequence_scorer"

    def __init__(self, cfg: Config, data):
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


class LMSampler:
    """Replacement tokens for the 'lm' corruption kind, sampled from a masked-diffusion LM checkpoint.

    The selected positions are replaced by [MASK] and the LM's prediction there is sampled (text ids
    only). The torch generator is seeded from the batch's content, which is itself a function of
    (seed, rank, step), so corrupted batches stay reproducible across resumes.
    """

    def __init__(self, path: str, meta, *, device: str = "cpu", temperature: float = 1.0):
        import torch

        from mmengine.checkpoint import load_checkpoint, model_from_checkpoint

        ckpt = load_checkpoint(path)
        self.model = model_from_checkpoint(ckpt, source=str(path)).to(device).eval()
        cfg = self.model.config
        if cfg.mode.value != "language_model" or cfg.attention_type != "bidirectional":
            raise UserError(f"token_classification.lm_checkpoint {path} must be a bidirectional language model (an unmasking run), not a {cfg.attention_type} {cfg.mode.value}.")
        saved = ((ckpt.get("trainer") or {}).get("data_meta") or {}).get("text_vocab_size")
        if saved is not None and saved != meta.text_vocab_size:
            raise UserError(f"token_classification.lm_checkpoint {path} was trained on a text vocabulary of {saved} tokens, this data has {meta.text_vocab_size}.")
        if cfg.vocab_size <= meta.mask_id:
            raise UserError(f"token_classification.lm_checkpoint {path} has no [MASK] embedding for id {meta.mask_id}.")
        self.mask_id = meta.mask_id
        self.text_vocab = meta.text_vocab_size
        self.device = device
        self.temperature = temperature
        self._torch = torch

    def __call__(self, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
        import zlib

        torch = self._torch
        block = self.model.config.block_size
        inputs = np.where(positions, self.mask_id, x)
        out = x.copy()
        g = torch.Generator(device=self.device)
        g.manual_seed(zlib.crc32(x.tobytes()) ^ (zlib.crc32(positions.tobytes()) << 1))
        with torch.no_grad():
            for start in range(0, x.shape[1], block):  # windows longer than the LM's context in pieces
                piece = torch.from_numpy(np.ascontiguousarray(inputs[:, start:start + block])).to(self.device)
                logits, _ = self.model(piece)  # (B, t, V)
                probs = torch.softmax(logits.float()[..., :self.text_vocab] / self.temperature, dim=-1)
                B, t, V = probs.shape
                ids = torch.multinomial(probs.reshape(B * t, V), 1, generator=g).reshape(B, t)
                out[:, start:start + block] = ids.cpu().numpy()
        return out


MODES: dict[str, type[ModeSpec]] = {
    "unmasking": UnmaskingMode,
    "token_classification": TokenClassificationMode,
    "remasking_binary": TokenClassificationMode,
    "sequence_scoring": SequenceScoringMode,
}


def build_mode(cfg: Config, data, *, lm_sampler=None) -> ModeSpec:
    """The spec of ``cfg.train.training_type`` (with the LM sampler an 'lm' corruption kind needs)."""
    cls = MODES[cfg.train.training_type]
    kw = {}
    if cls is TokenClassificationMode:
        tc = cfg.token_classification
        if lm_sampler is None and tc.label_source == "corruption" and any(k.get("type") == "lm" for k in corruption_kinds(cfg)):
            # on the CPU: it runs in the prefetcher's thread, next to the training step
            lm_sampler = LMSampler(tc.lm_checkpoint, data.meta, device="cpu")
        kw["lm_sampler"] = lm_sampler
    try:
        return cls(cfg, data, **kw)
    except (ValueError, TypeError) as e:
        if isinstance(e, (ConfigError, UserError)):
            raise
        raise UserError(f"cannot set up {cfg.train.training_type}: {str(e).rstrip('.')}.") from None

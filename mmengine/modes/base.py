"""What every training type shares: the :class:`ModeSpec` contract and the window cutting most modes use.

A spec owns everything about one training type. The config side is class-level, so that
:mod:`mmengine.config` can check and complete a config before any data is opened:

- ``table`` / ``settings``: the name and dataclass of the TOML table the mode reads (None: none);
- ``check_config(cfg, check_paths)``: mode-specific validation (one-sentence :class:`ConfigError`);
- ``resolve_config(cfg)``: derived defaults written into the config, so the printed and saved config
  says what the run does;
- ``attention``: the attention ``model.attention_type = "auto"`` means for this mode
  (:meth:`ModeSpec.attention_type`); ``allowed_attention``: what the mode accepts.

The run side is an instance built for a config and a data dir (``spec = cls(cfg, data)``):

- ``gpt_kwargs()``: the model's head settings (``mode``, ``num_token_classes``, ``cls_token_id``, ...);
- ``num_items(split)`` / ``build_batch(split, idx, rng, iteration, batch_state)``: numpy batches for
  the sampler's item indices, built in the prefetcher's thread (``batch_state`` is an immutable
  snapshot, e.g. the curriculum stage, so a prefetched batch never mixes stages);
- ``val_batches()``: a fixed validation set, the same at every evaluation (and on every rank);
- ``loss(model, batch)``: ``(logits, loss)``;
- ``evaluate(model, batches)``: the validation figures, ``loss`` first; per batch it keeps only
  ``summarize(logits, batch)`` (small: predictions and targets, never a (B, T, V) logits tensor),
  which ``figures(preds, targets)`` turns into the mode's metrics;
- ``observe_eval(metrics)`` / ``state_dict()`` / ``load_state_dict()``: the curriculum, when the mode has one;
- ``sample(model, meta, tokenizer, cfg)``: what the end of a run shows (None: nothing).

Every batch is a dict of numpy arrays with ``x`` (B, T) int64 inputs and ``y`` targets, plus
``lengths`` (B,) for padded rows and ``t`` (B,) for the continuous-time objective.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any

import numpy as np

from mmengine.errors import ConfigError, UserError
from mmengine.rng import STREAM_VAL, rng_for

logger = logging.getLogger(__name__)


def end_of_run_sample(model, meta, tokenizer, cfg) -> str:
    """The text shown when a language model's run ends: ``log.sample_tokens`` tokens with the ``[sample]`` settings.

    Inspector and judge strategies fall back to 'random' when the table names no inspector (the end of a
    run must never fail on a sampler setting that only ``python -m mmengine.sample`` uses).
    """
    import dataclasses

    from mmengine.generate import sample_texts
    from mmengine.generate.config import INSPECTOR_STRATEGIES

    s = dataclasses.replace(cfg.sample, num_samples=1, length=cfg.log.sample_tokens, best_of=1, out="", progress=False,
                            device=str(next(model.parameters()).device), judge="")
    if s.remasking in INSPECTOR_STRATEGIES and not s.inspector:
        s = dataclasses.replace(s, remasking="random")
    return sample_texts(model, meta, tokenizer, s)[0]["text"]


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
            raise UserError(f"the {split} split has {len(tokens)} tokens, too few for windows of {length} tokens "
                            "(lower data.block_size).")
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
    table: str | None = None  # the TOML table this mode reads
    settings: type | None = None  # its dataclass
    model_mode = "language_model"  # the head: language_model | token_classifier | sequence_scorer
    attention = "bidirectional"  # what model.attention_type='auto' becomes
    allowed_attention: tuple[str, ...] = ("bidirectional",)
    description = ""  # one line for --help

    # --- config (class level) ---------------------------------------------------------------

    @classmethod
    def check_config(cls, cfg, *, check_paths: bool = True) -> None:
        """Mode-specific validation; raise ConfigError with one sentence."""
        want = cfg.model.attention_type
        if want != "auto" and want not in cls.allowed_attention:
            raise ConfigError(f"train.training_type='{cfg.train.training_type}' needs model.attention_type="
                              f"{' or '.join(repr(a) for a in cls.allowed_attention)} (or 'auto'), got {want!r}.")

    @classmethod
    def resolve_config(cls, cfg) -> None:
        """Fill in derived values (in place)."""

    @classmethod
    def attention_type(cls, cfg) -> str:
        """The model's attention for this run (``model.attention_type = 'auto'`` -> what the mode needs)."""
        return cls.attention if cfg.model.attention_type == "auto" else cfg.model.attention_type

    # --- data -----------------------------------------------------------------------------

    def __init__(self, cfg, data):
        self.cfg = cfg
        self.data = data
        self.meta = data.meta
        self.block_size = cfg.data.block_size
        self.batch_size = cfg.data.batch_size
        self._windows: dict[str, Windows] = {}

    def window_length(self) -> int:
        return self.block_size

    def separator_ids(self) -> list[int]:
        sep = self.cfg.data.separator
        if not sep:
            return list(self.meta.separator_ids)
        tok = self.data.tokenizer
        if tok is None:
            raise UserError("data.separator is text but the data dir has no tokenizer to encode it; "
                            "leave it empty to use meta.json's separator.")
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
                    raise UserError("data.use_paragraph_boundaries is true but the data dir defines no separator "
                                    "(set data.separator).")
                starts = fastloader.paragraph_starts(tokens, np.asarray(sep, dtype=np.int64), length)
                if len(starts) == 0:
                    raise UserError(f"no paragraph of the {split} split fits a window of {length} tokens; "
                                    "lower data.block_size or switch off data.use_paragraph_boundaries.")
            self._windows[split] = Windows(tokens, length, starts=starts, split=split)
        return self._windows[split]

    def num_items(self, split: str = "train") -> int:
        return self.windows(split).num_items

    def batch_state(self) -> Any:
        """Immutable snapshot of whatever changes how batches are built (the curriculum stage)."""
        return None

    def build_batch(self, split: str, idx: np.ndarray, rng: np.random.Generator, iteration: int,
                    batch_state: Any) -> dict:
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
            rng = rng_for(self.cfg.run.seed, 0, i, STREAM_VAL)
            out.append(("all", self.build_batch("val", idx[i * B:(i + 1) * B], rng, self.cfg.train.max_iters,
                                                self.batch_state())))
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
                                f"'{self.cfg.train.training_type}' needs {want!r}; "
                                "use the configuration that run was started with.")
        if model.config.attention_type not in self.allowed_attention:
            raise UserError(f"{source} holds a model with {model.config.attention_type} attention but "
                            f"train.training_type='{self.cfg.train.training_type}' needs "
                            f"{' or '.join(self.allowed_attention)} attention.")

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
            out.update(self.figures(np.concatenate([p for p, _ in summaries]),
                                    np.concatenate([t for _, t in summaries])))
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
        """Called on rank 0 after each evaluation; when batch building changed, (event for metrics.jsonl,
        console line)."""
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def describe(self) -> str:
        return self.name

    # --- end of run -----------------------------------------------------------------------

    def sample(self, model, meta, tokenizer, cfg) -> tuple[str, str] | None:
        """(heading, text) shown at the end of a run; None for modes that do not write text."""
        return None

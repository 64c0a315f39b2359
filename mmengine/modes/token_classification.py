"""``training_type = "token_classification"`` (and ``"remasking_binary"`` = 2 classes): the inspector.

One class per token; labels come from the data dir's label files (prepared from ``{text, spans}``
JSONL) or are made on the fly by corrupting clean text (class 0 = original, class k = the k-th
corruption kind, :mod:`mmengine.data.corruption`). The 'lm' corruption kind samples replacements
from a masked-diffusion LM, so the classifier learns what the LM's own mistakes look like.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmengine.errors import ConfigError, UserError
from mmengine.modes.base import ModeSpec
from mmengine.schema import option, parse_items


@dataclass
class TokenClassificationConfig:
    """[token_classification] one class per token."""

    num_token_classes: int = option(0, "Classes per token; 0 = derived (labels: from the data dir; corruption: "
                                       "1 + number of kinds; remasking_binary: 2).")
    label_source: str = option("corruption", "'corruption' (labels made on the fly: 0 = original, "
                                             "k = k-th corruption kind) or 'labels' (the data dir's label files).",
                               choices=("corruption", "labels"))
    corruption: list = option([], "Corruption kinds, each an inline table {type=\"random\"|\"lm\"|\"swap\"|\"repeat\", "
                                  "rate=..., rate_start=..., ramp_iters=...}; empty = the first num_token_classes - 1 "
                                  "of random (rate 0.15), swap (0.05), repeat (0.05).")
    lm_checkpoint: str = option("", "Language-model checkpoint that samples the replacements of an "
                                    "'lm' corruption kind.")


# Class k of a corruption run is the k-th kind; an empty list takes the first num_token_classes - 1 of
# these, so `--training_type=token_classification --num_token_classes=3` (a train_run.py command line) runs.
DEFAULT_CORRUPTION = ({"type": "random", "rate": 0.15}, {"type": "swap", "rate": 0.05},
                      {"type": "repeat", "rate": 0.05})


class TokenClassificationMode(ModeSpec):
    """One class per token; labels from the data dir's label files or made by a Corruptor."""

    name = "token_classification"
    table = "token_classification"
    settings = TokenClassificationConfig
    model_mode = "token_classifier"
    description = "token classification"
    fixed_classes: int | None = None  # an alias with a fixed class count (remasking_binary)
    # set in another training type's run, these would change a head that run does not have
    must_stay_default = ("num_token_classes",)

    # --- config ---------------------------------------------------------------------------

    @classmethod
    def corruption_kinds(cls, cfg) -> list[dict]:
        """The corruption kinds of the run: as listed, or the defaults for its class count."""
        tc = cfg.token_classification
        if tc.corruption:
            return tc.corruption
        n = cls.fixed_classes or tc.num_token_classes or 2
        if n - 1 > len(DEFAULT_CORRUPTION):
            raise ConfigError(f"{n} token classes need {n - 1} corruption kinds but only {len(DEFAULT_CORRUPTION)} "
                              "have defaults; list them in token_classification.corruption.")
        return [dict(k) for k in DEFAULT_CORRUPTION[:n - 1]]

    @classmethod
    def num_classes_of(cls, cfg) -> int | None:
        """The class count when it follows from the config alone (None: read it from the data)."""
        tc = cfg.token_classification
        if cls.fixed_classes:
            return cls.fixed_classes
        if tc.num_token_classes:
            return tc.num_token_classes
        if tc.label_source == "corruption":
            return 1 + len(cls.corruption_kinds(cfg))
        return None

    @classmethod
    def check_config(cls, cfg, *, check_paths: bool = True) -> None:
        super().check_config(cfg, check_paths=check_paths)
        tc = cfg.token_classification
        if cls.fixed_classes and tc.num_token_classes not in (0, cls.fixed_classes):
            raise ConfigError(f"train.training_type='{cfg.train.training_type}' means {cls.fixed_classes} classes, "
                              f"but num_token_classes is {tc.num_token_classes}.")
        if tc.num_token_classes == 1 or tc.num_token_classes < 0:
            raise ConfigError(f"token_classification.num_token_classes must be at least 2, got {tc.num_token_classes}.")
        if tc.label_source != "corruption":
            return
        kinds = cls.corruption_kinds(cfg)
        _check_corruption(kinds)
        n = cls.num_classes_of(cfg)
        if n is not None and n != 1 + len(kinds):
            raise ConfigError(f"{n} token classes do not match {len(kinds)} corruption kind(s): class 0 is "
                              f"'original' and each kind adds one class, so use {1 + len(kinds)}.")
        if any(k.get("type") == "lm" for k in kinds):
            if not tc.lm_checkpoint:
                raise ConfigError("an 'lm' corruption kind needs token_classification.lm_checkpoint "
                                  "(the LM that samples replacements).")
            if check_paths and not Path(tc.lm_checkpoint).is_file():
                raise ConfigError(f"token_classification.lm_checkpoint '{tc.lm_checkpoint}' does not exist.")

    @classmethod
    def resolve_config(cls, cfg) -> None:
        super().resolve_config(cfg)
        if cfg.token_classification.label_source == "corruption":
            cfg.token_classification.corruption = cls.corruption_kinds(cfg)

    # --- run ------------------------------------------------------------------------------

    def __init__(self, cfg, data, *, lm_sampler=None):
        super().__init__(cfg, data)
        tc = cfg.token_classification
        self.from_labels = tc.label_source == "labels"
        if self.from_labels:
            for split in ("train", "val"):
                if data.labels(split) is None:
                    raise UserError(f"token_classification.label_source='labels' but the data dir has no {split} label "
                                    "file (prepare it from {text, spans} JSONL).")
            in_data = getattr(self.meta, "num_token_classes", None)
            n = self.num_classes_of(cfg) or in_data
            if not n:
                raise UserError("the number of token classes is unknown; set token_classification.num_token_classes.")
            if in_data and n < in_data:
                # said now, not when the first batch with a high label happens to be drawn
                raise UserError(f"the data dir's labels have {in_data} classes but the run has {n} "
                                f"(train.training_type='{cfg.train.training_type}', "
                                "token_classification.num_token_classes="
                                f"{cfg.token_classification.num_token_classes}).")
            self.num_classes = int(n)
            self.corruptor = None
        else:
            from mmengine.data.corruption import CorruptionKind, Corruptor

            kinds = parse_items("token_classification.corruption", self.corruption_kinds(cfg), CorruptionKind.from_dict)
            if lm_sampler is None and any(k.type == "lm" for k in kinds):
                # on the CPU: it runs in the prefetcher's thread, next to the training step
                lm_sampler = LMSampler(tc.lm_checkpoint, self.meta, device="cpu")
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
                raise UserError(f"the {split} label file holds class {int(y.max())} "
                                f"but the run has {self.num_classes} classes.")
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


class RemaskingBinaryMode(TokenClassificationMode):
    """The earlier trainer's name for a 2-class token classifier (class 1 = should be remasked)."""

    name = "remasking_binary"
    fixed_classes = 2
    description = "token classification with 2 classes"


def _check_corruption(kinds: list) -> None:
    from mmengine.data.corruption import CorruptionKind

    parsed = parse_items("token_classification.corruption", kinds, CorruptionKind.from_dict)
    # ramps are linear, so the summed rate is largest at iteration 0 or where a ramp ends
    for it in sorted({0, *(k.ramp_iters for k in parsed)}):
        total = sum(k.rate_at(it) for k in parsed)
        if total > 1.0 + 1e-9:
            raise ConfigError(f"the token_classification.corruption rates sum to {total:.3g} at iteration {it}; "
                              "they must sum to at most 1.")


class LMSampler:
    """Replacement tokens for the 'lm' corruption kind, sampled from a masked-diffusion LM checkpoint.

    The selected positions are replaced by [MASK] and the LM's prediction there is sampled (text ids
    only). The torch generator is seeded from the batch's content, which is itself a function of
    (seed, rank, step), so corrupted batches stay reproducible across resumes.
    """

    def __init__(self, path: str, meta, *, device: str = "cpu", temperature: float = 1.0):
        import torch

        from mmengine.checkpoint import load_checkpoint, model_from_checkpoint
        from mmengine.upstream import prepare_for_data

        ckpt = prepare_for_data(load_checkpoint(path), meta, source=str(path))  # another trainer's vocabulary: mapped
        self.model = model_from_checkpoint(ckpt, source=str(path)).to(device).eval()
        cfg = self.model.config
        if cfg.mode.value != "language_model" or cfg.attention_type != "bidirectional":
            raise UserError(f"token_classification.lm_checkpoint {path} must be a bidirectional language model "
                            f"(an unmasking run), not a {cfg.attention_type} {cfg.mode.value}.")
        saved = ((ckpt.get("trainer") or {}).get("data_meta") or {}).get("text_vocab_size")
        if saved is not None and saved != meta.text_vocab_size:
            raise UserError(f"token_classification.lm_checkpoint {path} was trained on a text vocabulary of {saved} "
                            f"tokens, this data has {meta.text_vocab_size}.")
        if cfg.vocab_size <= meta.mask_id:
            raise UserError(f"token_classification.lm_checkpoint {path} has no [MASK] embedding for id {meta.mask_id}.")
        self.mask_id = meta.mask_id
        self.text_vocab = meta.text_vocab_size
        self.device = device
        self.temperature = temperature
        self._torch = torch

    def __call__(self, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
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

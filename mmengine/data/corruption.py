"""Synthetic corruption for token classification and synthetic sequence scores.

A :class:`Corruptor` takes clean token windows and corrupts a share of the tokens with one of
several kinds; the label of a token is 0 if it is unchanged and k if the k-th kind (1-based, in the
order the user listed them) changed it. Kinds:

* ``random``: a uniformly random *text* token, never equal to the original.
* ``lm``: a token sampled from a language model, through ``lm_sampler(x, positions) -> ids``
  supplied by the trainer (``x`` (B, T) int64 clean tokens, ``positions`` (B, T) bool; it returns
  either a (B, T) array, read at ``positions``, or one id per True position in row-major order).
  The sampler may import torch; this module does not.
* ``swap``: the token and its right neighbour trade places (both labelled; pairs of equal tokens
  are skipped, as swapping them changes nothing). ``rate`` = share of positions starting a swap.
* ``repeat``: the token is replaced by a copy of the token before it (a stutter); positions
  whose previous token is equal are skipped.

Positions are split between kinds without overlap: one uniform draw per position falls into the
kinds' rate intervals [0, r1), [r1, r1 + r2), ... (so the rates must sum to <= 1). A kind's rate may
ramp linearly from ``rate_start`` to ``rate`` over ``ramp_iters`` iterations. A token whose
"corruption" happens to equal the original (an LM that samples the same id) is labelled 0: labels
always describe the tokens the model sees.

numpy only (no torch import).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Callable, Sequence

import numpy as np

CORRUPTION_TYPES = ("random", "lm", "swap", "repeat")


@dataclass
class CorruptionKind:
    """One kind of corruption (one entry of ``[token_classification] corruptions``).

    Fields:
        type: "random", "lm", "swap" or "repeat".
        rate: share of positions given to this kind (after the ramp), in [0, 1]; for "swap" the share
            of positions starting a swap (both tokens of a pair change).
        rate_start: rate at iteration 0 when ramping (None = no ramp).
        ramp_iters: iterations over which the rate goes linearly from rate_start to rate (0 = no ramp).
    """

    type: str = "random"
    rate: float = 0.15
    rate_start: float | None = None
    ramp_iters: int = 0

    def __post_init__(self):
        if self.type not in CORRUPTION_TYPES:
            raise ValueError(f"corruption type must be one of {', '.join(CORRUPTION_TYPES)}; got {self.type!r}")
        for name in ("rate", "rate_start"):
            v = getattr(self, name)
            if v is None and name == "rate_start":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"corruption field {name} must be a number, got {v!r}")
            if not (math.isfinite(v) and 0.0 <= v <= 1.0):
                raise ValueError(f"corruption field {name} must be in [0, 1], got {v!r}")
            setattr(self, name, float(v))
        if isinstance(self.ramp_iters, bool) or not isinstance(self.ramp_iters, int) or self.ramp_iters < 0:
            raise ValueError(f"corruption field ramp_iters must be an integer >= 0, got {self.ramp_iters!r}")
        if self.ramp_iters > 0 and self.rate_start is None:
            # Silently not ramping would ignore what the user asked for.
            raise ValueError(f"corruption field ramp_iters = {self.ramp_iters} needs rate_start "
                             "(the rate at iteration 0)")

    @classmethod
    def from_dict(cls, d) -> "CorruptionKind":
        """Build from a TOML table (unknown keys and bad values raise one clear error)."""
        if isinstance(d, CorruptionKind):
            return d
        if not isinstance(d, dict):
            raise TypeError(f"a corruption kind must be a table like {{type = \"random\", rate = 0.1}}, got {d!r}")
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise ValueError(f"unknown corruption key(s) {unknown}; valid keys are {valid}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)

    def rate_at(self, iteration: int) -> float:
        """The rate at ``iteration`` (linear ramp from rate_start, then constant)."""
        if self.rate_start is None or self.ramp_iters == 0:
            return self.rate
        frac = min(1.0, max(0, iteration) / self.ramp_iters)
        return self.rate_start + (self.rate - self.rate_start) * frac


LMSampler = Callable[[np.ndarray, np.ndarray], np.ndarray]


class Corruptor:
    """Corrupts token windows; ``num_classes = 1 + len(kinds)`` (class 0 = original token)."""

    def __init__(self, kinds: Sequence, text_vocab_size: int, *, lm_sampler: LMSampler | None = None):
        self.kinds = [CorruptionKind.from_dict(k) for k in kinds]
        if not self.kinds:
            raise ValueError("token classification by corruption needs at least one corruption kind")
        if (isinstance(text_vocab_size, bool) or not isinstance(text_vocab_size, (int, np.integer))
                or text_vocab_size < 2):
            raise ValueError(f"text_vocab_size must be an integer >= 2 to corrupt tokens, got {text_vocab_size!r}")
        self.text_vocab_size = int(text_vocab_size)
        # The summed rate is piecewise linear in the iteration, so its maximum is at a breakpoint.
        for it in sorted({0, *(k.ramp_iters for k in self.kinds)}):
            total = sum(k.rate_at(it) for k in self.kinds)
            if total > 1.0 + 1e-9:
                raise ValueError(f"the corruption rates sum to {total:.3f} at iteration {it}; they must sum to <= 1")
        if any(k.type == "lm" for k in self.kinds) and lm_sampler is None:
            raise ValueError("the 'lm' corruption kind needs an lm_sampler (a language-model checkpoint)")
        self.lm_sampler = lm_sampler

    @property
    def num_classes(self) -> int:
        return 1 + len(self.kinds)

    def rates(self, iteration: int) -> list[float]:
        """Each kind's rate at ``iteration``."""
        return [k.rate_at(iteration) for k in self.kinds]

    def corrupt(
        self,
        x: np.ndarray,
        rng: np.random.Generator,
        iteration: int = 0,
        *,
        row_scale: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Corrupt ``x`` (B, T) text ids; returns ``(corrupted int64 (B, T), labels int64 (B, T))``.

        ``row_scale`` (B,) in [0, 1] multiplies every rate per row (the sequence-scoring mode
        passes random scales so the synthetic scores spread over [0, 1]).
        """
        x = np.asarray(x)
        if x.ndim != 2:
            raise ValueError(f"x must be (B, T), got shape {x.shape}")
        x = x.astype(np.int64, copy=False)
        B, T = x.shape
        rates = np.asarray(self.rates(iteration), dtype=np.float64)
        scale = np.ones(B) if row_scale is None else np.asarray(row_scale, dtype=np.float64).reshape(B)
        edges = np.cumsum(rates)[None, :] * scale[:, None]  # (B, K) upper edges of each kind's interval
        u = rng.random((B, T))
        # which[b, t] = index of the kind whose interval holds u, or K (no corruption).
        which = (u[:, :, None] >= edges[:, None, :]).sum(axis=2)  # (B, T)
        out = x.copy()
        labels = np.zeros((B, T), dtype=np.int64)
        claimed = np.zeros((B, T), dtype=bool)
        # Swaps first: they touch two positions, so they claim both before the single-position kinds.
        for k, kind in enumerate(self.kinds):
            if kind.type != "swap":
                continue
            sel = which == k
            sel[:, -1] = False
            sel[:, :-1] &= (x[:, :-1] != x[:, 1:]) & ~claimed[:, :-1] & ~claimed[:, 1:]
            # Overlapping pairs (consecutive starts): keep only the first start of each run.
            sel[:, 1:] &= ~sel[:, :-1]
            r, c = np.nonzero(sel)
            out[r, c], out[r, c + 1] = x[r, c + 1], x[r, c]
            claimed[r, c] = claimed[r, c + 1] = True
            labels[r, c] = labels[r, c + 1] = k + 1
        for k, kind in enumerate(self.kinds):
            if kind.type == "swap":
                continue
            sel = (which == k) & ~claimed
            if kind.type == "random":
                n = int(sel.sum())
                if n:
                    # Uniform over the other V - 1 text ids: draw in [0, V-1) and skip the original.
                    r = rng.integers(0, self.text_vocab_size - 1, size=n)
                    orig = x[sel]
                    out[sel] = r + (r >= orig)
            elif kind.type == "repeat":
                sel[:, 0] = False
                sel[:, 1:] &= x[:, 1:] != x[:, :-1]
                r, c = np.nonzero(sel)
                out[r, c] = x[r, c - 1]
            elif kind.type == "lm":
                if sel.any():
                    out[sel] = self._lm_ids(x, sel)
            claimed |= sel
            changed = sel & (out != x)
            labels[changed] = k + 1
        return out, labels

    def _lm_ids(self, x: np.ndarray, sel: np.ndarray) -> np.ndarray:
        ids = np.asarray(self.lm_sampler(x.copy(), sel.copy()))
        if ids.shape == x.shape:
            ids = ids[sel]
        elif ids.shape != (int(sel.sum()),):
            raise ValueError(
                f"lm_sampler returned shape {ids.shape}; expected {x.shape} or ({int(sel.sum())},) ids"
            )
        ids = ids.astype(np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.text_vocab_size):
            raise ValueError(f"lm_sampler returned ids outside the text vocabulary [0, {self.text_vocab_size})")
        return ids


def corruption_score(labels: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
    """Synthetic sequence score: the share of each row's tokens that were corrupted (label > 0).

    ``labels`` (B, T) from :meth:`Corruptor.corrupt` (-1 entries count as not corrupted but are
    still tokens); with ``lengths`` (B,) only the first lengths[b] positions of row b count.
    Returns float32 (B,) in [0, 1]; an empty row scores 0.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (B, T), got shape {labels.shape}")
    B, T = labels.shape
    corrupted = labels > 0
    if lengths is None:
        n = np.full(B, T, dtype=np.int64)
    else:
        n = np.asarray(lengths, dtype=np.int64).reshape(B)
        if (n < 0).any() or (n > T).any():
            raise ValueError(f"lengths must be in [0, {T}]")
        corrupted &= np.arange(T)[None, :] < n[:, None]
    num = corrupted.sum(axis=1)
    return np.where(n > 0, num / np.maximum(n, 1), 0.0).astype(np.float32)

"""Masking for the masked-diffusion language model (``training_type = "unmasking"``).

Two objectives:

* **Discrete stages** (:class:`MaskingStage`, :func:`make_mask`): choose which positions of each
  row to hide with one of three strategies, then :func:`apply_mask` replaces them ([MASK], or
  BERT-style 80/10/10) and returns targets (the original id at selected positions, -1 elsewhere).
  :class:`StageCurriculum` moves to the next stage when the validation loss stops improving.

  - ``random``: each row draws a rate r ~ U(0, max_masked_ratio] and masks every position with
    probability r; a row that ends up with nothing masked gets one random position.
  - ``sticky``: grows contiguous masked runs. Each step, every not-yet-masked position joins with
    probability p2 if a neighbour is masked and p1 otherwise, until exactly
    ``max(1, round(target_masked_ratio * T))`` positions of the row are masked (when a step would
    overshoot, a uniformly random subset of its new positions is kept). Steps in which nothing
    joins are skipped by drawing each step conditioned on progress (the same distribution of
    masks, in at most T steps). If nothing can ever join (p1 = 0 before any run exists, or
    p1 = p2 = 0) the row is seeded with one uniformly random position.
  - ``span``: spans with geometric lengths of mean ``span_length`` starting at random unmasked
    positions, until exactly ``max(1, round(target_masked_ratio * T))`` positions are masked. With
    ``spans_count = S > 0`` it is the earlier research trainer's span stage instead: 2S boundaries
    drawn uniformly from the T positions, sorted and paired into S inclusive spans (so the masked share
    varies from row to row, S / (2S + 1) on average).

  A batch may mix stages (:func:`make_mixed_mask`, the earlier trainer's mixed batches):
  its rows are split evenly between them, the remainder going to the earlier stages, in random order.

* **Continuous time** (MDLM / LLaDA, :func:`continuous_time_mask`): per row a time t in [eps, 1),
  each token replaced by [MASK] independently with probability t (no BERT replacement: the bound
  below assumes the model sees [MASK] at every masked position). With the linear schedule
  alpha_t = 1 - t the negative ELBO of a sequence x of T tokens is

      NELBO(x) = integral_0^1 (1 / t) E_{x_t} [ sum_{i masked in x_t} -log p_theta(x_i | x_t) ] dt
               >= -log p_theta(x),

  so with one t_b per row, ``sum_b (1 / t_b) * sum_{masked i} CE_bi / (B * T)`` estimates
  NELBO / T without bias: an *upper bound* on the NLL per token (nats), and ``exp`` of it an upper
  bound on the perplexity, the figure MDLM/LLaDA report (see :func:`nelbo_per_token`). As in MDLM,
  t is drawn from [eps, 1) rather than [0, 1), which changes the figure by O(eps) (the integrand is
  bounded: about one token's CE near t = 0). The bound is tight for the exact conditionals and
  grows with every error of the model. The batch's t values are stratified,
  t_i = eps + (1 - eps) * (i + u) / B, which lowers the variance of the estimate.

numpy only (no torch import). Every function takes an explicit ``np.random.Generator``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from functools import partial

import numpy as np

MASKING_TYPES = ("random", "sticky", "span")
#: The earlier research trainer's stage keys -> MaskingStage's.
_EARLIER_STAGE_KEYS = {"p1_probability": "p1", "p2_probability": "p2"}
#: Default BERT replacement split: (mask, random token, keep original).
BERT_SPLIT = (0.8, 0.1, 0.1)


@dataclass
class MaskingStage:
    """One masking configuration (one entry of ``[unmasking] stages``).

    Fields:
        type: "random", "sticky" or "span".
        max_masked_ratio: random: upper bound of the per-row masking rate, in (0, 1].
        target_masked_ratio: sticky/span: exact share of each row to mask, in (0, 1].
        p1: sticky: probability that a position with no masked neighbour joins, per step, in [0, 1].
        p2: sticky: probability that a position next to a masked one joins, per step, in [0, 1].
        span_length: span: mean span length (>= 1).
        spans_count: span: when > 0, that many spans between uniformly drawn boundaries (the earlier
            trainer's span stage; ``target_masked_ratio`` and ``span_length`` are then unused).
        val_loss_stale_count: evaluations without a better validation loss before the curriculum
            leaves this stage; 0 = the run's ``unmasking.val_loss_stale_count``.

    The earlier trainer's stage dicts read as they are: ``p1_probability`` / ``p2_probability`` are
    accepted for ``p1`` / ``p2``.
    """

    type: str = "random"
    max_masked_ratio: float = 0.5
    target_masked_ratio: float = 0.5
    p1: float = 0.1
    p2: float = 0.6
    span_length: float = 3.0
    spans_count: int = 0
    val_loss_stale_count: int = 0

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ValueError/TypeError naming the bad field."""
        if self.type not in MASKING_TYPES:
            raise ValueError(f"masking stage type must be one of {', '.join(MASKING_TYPES)}; got {self.type!r}")
        for name in ("max_masked_ratio", "target_masked_ratio", "p1", "p2", "span_length"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"masking stage field {name} must be a number, got {type(v).__name__} {v!r}")
            if not math.isfinite(v):
                raise ValueError(f"masking stage field {name} must be finite, got {v!r}")
            setattr(self, name, float(v))
        for name in ("max_masked_ratio", "target_masked_ratio"):
            v = getattr(self, name)
            if not 0.0 < v <= 1.0:
                raise ValueError(f"masking stage field {name} must be in (0, 1], got {v}")
        for name in ("p1", "p2"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"masking stage field {name} must be in [0, 1], got {v}")
        if self.span_length < 1.0:
            raise ValueError(f"masking stage field span_length must be >= 1, got {self.span_length}")
        for name in ("spans_count", "val_loss_stale_count"):
            v = getattr(self, name)
            if isinstance(v, float) and v.is_integer():
                v = int(v)  # 3.0 from a Python config is 3
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"masking stage field {name} must be an integer >= 0, got {v!r}")
            setattr(self, name, v)

    @classmethod
    def from_dict(cls, d: dict) -> MaskingStage:
        """Build from a TOML table; unknown keys, wrong types and out-of-range values raise one clear error."""
        if isinstance(d, MaskingStage):
            return d
        if not isinstance(d, dict):
            raise TypeError(f"a masking stage must be a table like {{type = \"random\", max_masked_ratio = 0.5}}, "
                            f"got {d!r}")
        d = dict(d)
        for alias, name in _EARLIER_STAGE_KEYS.items():
            if alias in d:
                if name in d:
                    raise ValueError(f"masking stage sets both {name} and {alias} "
                                     "(the earlier trainer's name for it); keep one")
                d[name] = d.pop(alias)
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise ValueError(f"unknown masking stage key(s) {unknown}; valid keys are {valid}")
        if "type" in d and not isinstance(d["type"], str):
            raise TypeError(f"masking stage field type must be a string, got {d['type']!r}")
        return cls(**d)

    def to_dict(self) -> dict:
        """Plain dict (round-trips through :meth:`from_dict`)."""
        return asdict(self)

    def masked_count(self, T: int) -> int:
        """Exact number of masked positions per row for sticky/span: max(1, round(ratio * T)), <= T."""
        return min(T, max(1, round(self.target_masked_ratio * T)))


def make_mask(stage: MaskingStage, batch_shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Boolean (B, T) mask of the positions to predict, drawn with ``stage``'s strategy."""
    B, T = (int(s) for s in batch_shape)
    if B < 0 or T < 0:
        raise ValueError(f"batch_shape must be non-negative, got {batch_shape}")
    if B == 0 or T == 0:
        return np.zeros((B, T), dtype=bool)
    if stage.type == "random":
        return _random_mask(stage.max_masked_ratio, B, T, rng)
    if stage.type == "sticky":
        return _grow_to(stage.masked_count(T), B, T, rng, partial(_sticky_step, p1=stage.p1, p2=stage.p2))
    if stage.spans_count > 0:
        return _boundary_spans(stage.spans_count, B, T, rng)
    return _grow_to(stage.masked_count(T), B, T, rng, partial(_span_step, mean_len=stage.span_length))


def stage_of_rows(num_stages: int, B: int, rng: np.random.Generator) -> np.ndarray:
    """(B,) stage index per row: ``B // n`` rows for each of the n stages and one more for each of the
    first ``B % n``, in a uniformly random order (the earlier trainer's split, then its shuffle)."""
    if num_stages < 1:
        raise ValueError(f"need at least one stage, got {num_stages}")
    counts = B // num_stages + (np.arange(num_stages) < B % num_stages)
    return rng.permutation(np.repeat(np.arange(num_stages), counts))


def make_mixed_mask(stages, batch_shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(mask (B, T) bool, stage (B,) int64)``: each row masked by one of ``stages``, split as
    :func:`stage_of_rows` says (the earlier trainer's training batches)."""
    B, T = (int(s) for s in batch_shape)
    stage = stage_of_rows(len(stages), B, rng)
    mask = np.zeros((B, T), dtype=bool)
    for s, st in enumerate(stages):
        rows = np.flatnonzero(stage == s)
        if len(rows):
            mask[rows] = make_mask(st, (len(rows), T), rng)
    return mask, stage


def _boundary_spans(spans: int, B: int, T: int, rng: np.random.Generator) -> np.ndarray:
    """The earlier trainer's span stage: per row 2 * spans positions floor(u * T), u ~ U[0, 1), sorted
    and paired (1st-2nd, 3rd-4th, ...) into inclusive spans [start, end]."""
    bounds = np.sort(np.floor(rng.random((B, 2 * spans)) * T).astype(np.int64), axis=1)  # (B, 2S)
    starts, ends = bounds[:, 0::2], bounds[:, 1::2] + 1  # (B, S) each; ends exclusive
    # difference array: +1 at each start, -1 after each end; a positive prefix sum = inside a span
    diff = np.zeros((B, T + 1), dtype=np.int64)
    rows = np.repeat(np.arange(B), spans)
    np.add.at(diff, (rows, starts.reshape(-1)), 1)
    np.add.at(diff, (rows, ends.reshape(-1)), -1)
    return np.cumsum(diff[:, :T], axis=1) > 0


def _random_mask(max_ratio: float, B: int, T: int, rng: np.random.Generator) -> np.ndarray:
    rate = max_ratio * (1.0 - rng.random(B))  # (B,) in (0, max_ratio]
    mask = rng.random((B, T)) < rate[:, None]
    empty = ~mask.any(axis=1)
    if empty.any():
        rows = np.flatnonzero(empty)
        mask[rows, rng.integers(0, T, size=len(rows))] = True
    return mask


def _neighbour_masked(mask: np.ndarray) -> np.ndarray:
    nb = np.zeros_like(mask)
    nb[:, 1:] |= mask[:, :-1]
    nb[:, :-1] |= mask[:, 1:]
    return nb


def _keep_random_subset(cand: np.ndarray, need: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per row, a uniformly random subset of ``need[row]`` True entries of ``cand`` (all if fewer)."""
    keys = np.where(cand, rng.random(cand.shape), 2.0)
    rank = np.argsort(np.argsort(keys, axis=1, kind="stable"), axis=1, kind="stable")
    return cand & (rank < need[:, None])


def _bernoulli_nonempty(prob: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Independent Bernoulli(prob) draws per row, conditioned on at least one success in each row.

    The same law as redrawing a row until something succeeds, without that loop (tiny probabilities
    would make it long): the first success falls at j with probability proportional to
    prob_j * prod_{i<j} (1 - prob_i), and the positions after it are drawn unconditionally.
    Every row needs some prob > 0.
    """
    A, T = prob.shape
    survive = np.cumprod(1.0 - prob, axis=1)  # (A, T): P(no success in [0, j])
    first_at = prob * np.concatenate([np.ones((A, 1)), survive[:, :-1]], axis=1)  # (A, T)
    cdf = np.cumsum(first_at, axis=1)
    u = rng.random(A) * cdf[:, -1]
    j = (cdf <= u[:, None]).sum(axis=1)
    # Rounding of u * cdf[-1] must not step past the last position that can succeed.
    last = T - 1 - np.argmax(first_at[:, ::-1] > 0, axis=1)
    j = np.minimum(j, last)
    pos = np.arange(T)
    out = (rng.random((A, T)) < prob) & (pos > j[:, None])
    out[np.arange(A), j] = True
    return out


def _grow_to(k: int, B: int, T: int, rng: np.random.Generator, step) -> np.ndarray:
    """Boolean (B, T) masks grown step by step until every row holds exactly ``k`` positions.

    ``step(m, need, rng)`` gets the masks of the rows still growing (A, T) and how many positions
    each still needs (A,), and returns their new positions: at least one and at most need[row] per
    row, none already masked. So the loop ends within k steps.
    """
    mask = np.zeros((B, T), dtype=bool)
    count = np.zeros(B, dtype=np.int64)
    active = np.arange(B)
    while len(active):
        m = mask[active]  # (A, T)
        new = step(m, k - count[active], rng)
        mask[active] = m | new
        count[active] += new.sum(axis=1)
        active = active[count[active] < k]
    return mask


def _sticky_step(m: np.ndarray, need: np.ndarray, rng: np.random.Generator, *, p1: float, p2: float) -> np.ndarray:
    T = m.shape[1]
    prob = np.where(_neighbour_masked(m), p2, p1)
    prob[m] = 0.0
    new = rng.random(m.shape) < prob
    # A step in which nothing joins changes nothing: such rows take a step conditioned on
    # progress instead, which is the same process without the idle steps.
    stuck = np.flatnonzero(~new.any(axis=1) & (prob > 0).any(axis=1))
    if len(stuck):
        new[stuck] = _bernoulli_nonempty(prob[stuck], rng)
    # Rows where nothing can ever join (p1 = 0 and nothing masked yet, or p1 = p2 = 0) are
    # seeded with one uniformly random unmasked position.
    dead = np.flatnonzero(~new.any(axis=1))
    if len(dead):
        keys = np.where(m[dead], -1.0, rng.random((len(dead), T)))
        new[dead, np.argmax(keys, axis=1)] = True
    over = new.sum(axis=1) > need
    if over.any():
        new[over] = _keep_random_subset(new[over], need[over], rng)
    return new


def _span_step(m: np.ndarray, need: np.ndarray, rng: np.random.Generator, *, mean_len: float) -> np.ndarray:
    A, T = m.shape
    # Several spans per step (about half of what is still needed, since spans may overlap),
    # starting at random unmasked positions; a row that draws no start gets one, so every
    # step makes progress.
    free = T - m.sum(axis=1)
    rate = np.minimum(1.0, need / (2.0 * mean_len) / free)
    u = rng.random(m.shape)
    starts = (u < rate[:, None]) & ~m  # (A, T) span start positions
    none = np.flatnonzero(~starts.any(axis=1))
    if len(none):
        starts[none, np.argmax(np.where(m[none], -1.0, u[none]), axis=1)] = True
    rows, cols = np.nonzero(starts)
    ends = np.minimum(cols + rng.geometric(1.0 / mean_len, size=len(cols)), T)
    # Difference array: +1 at each start, -1 at each end; positive prefix sum = inside a span.
    diff = np.zeros((A, T + 1), dtype=np.int64)
    np.add.at(diff, (rows, cols), 1)
    np.add.at(diff, (rows, ends), -1)
    new = (np.cumsum(diff[:, :T], axis=1) > 0) & ~m
    # Keep the first `need` new positions (only the last step of a row can overshoot).
    return new & (np.cumsum(new, axis=1) <= need[:, None])


def _bert_split(bert_replacement) -> tuple[float, float, float] | None:
    if bert_replacement is False or bert_replacement is None:
        return None
    if bert_replacement is True:
        return BERT_SPLIT
    try:
        a, b, c = (float(v) for v in bert_replacement)
    except (TypeError, ValueError):
        raise TypeError("bert_replacement must be False, True or "
                        f"(mask, random, keep), got {bert_replacement!r}") from None
    if min(a, b, c) < 0 or abs(a + b + c - 1.0) > 1e-6:
        raise ValueError(f"bert_replacement shares must be >= 0 and sum to 1, got {bert_replacement!r}")
    return a, b, c


def apply_mask(
    x: np.ndarray,
    mask: np.ndarray,
    *,
    mask_id: int,
    vocab_size: int,
    rng: np.random.Generator,
    bert_replacement=BERT_SPLIT,
) -> tuple[np.ndarray, np.ndarray]:
    """Hide the selected positions of ``x``; returns ``(inputs, targets)``, both int64 (B, T).

    ``targets`` holds the original id where ``mask`` is True and -1 elsewhere. Selected positions of
    ``inputs`` become ``mask_id``, or with ``bert_replacement=(a, b, c)`` (True = (0.8, 0.1, 0.1))
    [MASK] with probability a, a random *text* token with probability b, the original with c.

    ``vocab_size`` is the size of the text vocabulary (``DataMeta.text_vocab_size``): random ids come
    from [0, vocab_size), never a special token; passing the full vocabulary (which contains
    ``mask_id``) is rejected.
    """
    x = np.asarray(x)
    mask = np.asarray(mask, dtype=bool)
    if x.shape != mask.shape:
        raise ValueError(f"x has shape {x.shape} but mask has shape {mask.shape}")
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    if 0 <= mask_id < vocab_size:
        raise ValueError(
            f"mask_id {mask_id} lies inside vocab_size {vocab_size}; pass the text vocabulary size "
            "(DataMeta.text_vocab_size) so random replacements are never special tokens"
        )
    split = _bert_split(bert_replacement)
    inputs = x.astype(np.int64, copy=True)
    targets = np.where(mask, inputs, -1)
    if split is None:
        inputs[mask] = mask_id
        return inputs, targets
    a, b, _ = split
    u = rng.random(x.shape)
    to_mask = mask & (u < a)
    to_rand = mask & (u >= a) & (u < a + b)
    inputs[to_mask] = mask_id
    n = int(to_rand.sum())
    if n:
        inputs[to_rand] = rng.integers(0, vocab_size, size=n)
    return inputs, targets


def continuous_time_mask(
    batch_shape: tuple[int, int],
    rng: np.random.Generator,
    *,
    eps: float = 1e-3,
    step: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Continuous-time (MDLM / LLaDA) masking: returns ``(mask (B, T) bool, t (B,) float32)``.

    t_i = eps + (1 - eps) * (i + u) / B for row i, with one offset u in [0, 1) per batch
    (stratified: exactly one t in each of the B equal strata of [eps, 1)); each token of row i is
    masked with probability t_i. The loss of a masked token is weighted by 1 / t_i (see the module
    docstring and :func:`nelbo_per_token`). ``u`` comes from ``rng``, or, when ``step`` is given,
    from the golden-ratio sequence frac(step * 0.618...), so that the offsets of consecutive
    batches fill the strata evenly too (low discrepancy across steps, reproducible on resume).
    """
    B, T = (int(s) for s in batch_shape)
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"eps must be in [0, 1), got {eps}")
    if step is not None:
        u = (int(step) * 0.6180339887498949) % 1.0
    else:
        u = rng.random()
    t = eps + (1.0 - eps) * (np.arange(B) + u) / max(B, 1)
    # Avoid t == 0 when eps == 0 (the 1/t weight).
    t = np.maximum(t, np.finfo(np.float32).tiny).astype(np.float32)
    mask = rng.random((B, T)) < t[:, None]
    return mask, t


def exact_count_mask(
    batch_shape: tuple[int, int],
    rng: np.random.Generator,
    *,
    step: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The continuous-time NELBO with exact mask counts: returns ``(mask (B, T) bool, t (B,) float32)``.

    Row i masks exactly ``k_i`` positions, a uniformly random subset, with the counts stratified over
    ``{1, ..., T}``: ``k_i = 1 + floor((i + u) * T / B)`` (one offset u per batch, as in
    :func:`continuous_time_mask`), and ``t_i = k_i / T``. Plugged into the same loss,
    ``(1 / t_i) * sum_masked CE / T`` is then the row's *mean* masked CE, and the batch mean is an
    unbiased estimate of NELBO / T, with no truncation at eps and no 1/t blow-up:

    Given t, the number of masked tokens K ~ Binomial(T, t) and the masked set is uniform given K, so
    with m(k) = E[mean CE over a random k-subset, those k masked],

        NELBO = integral_0^1 (1/t) sum_k P(K = k | t) k m(k) dt
              = sum_k k m(k) C(T, k) B(k, T - k + 1) = sum_{k=1}^{T} m(k),

    i.e. NELBO / T = E_{k ~ U{1..T}} [m(k)]. The Bernoulli form weights the tokens of a row by 1/t,
    up to 1/eps = 1000 for the smallest t, so one badly predicted token of a nearly clean row can
    outweigh whole batches: its gradient is mostly noise at small batch sizes (grad clipping then
    throws most of the step away). Here every row weighs the same.
    """
    B, T = (int(s) for s in batch_shape)
    if T < 1:
        raise ValueError(f"rows must hold at least one token, got shape {batch_shape}")
    u = (int(step) * 0.6180339887498949) % 1.0 if step is not None else rng.random()
    k = 1 + np.floor((np.arange(B) + u) * T / max(B, 1)).astype(np.int64)  # stratified over {1..T}
    k = np.minimum(k, T)
    # exactly k_i uniformly random positions: the k_i smallest of T random keys
    ranks = np.argsort(np.argsort(rng.random((B, T)), axis=1), axis=1)
    mask = ranks < k[:, None]
    return mask, (k / T).astype(np.float32)


def nelbo_per_token(token_nll: np.ndarray, mask: np.ndarray, t: np.ndarray) -> float:
    """Estimate of the NELBO per token (nats) from one batch: sum_b (1/t_b) sum_{masked} nll / (B * T).

    ``token_nll`` (B, T): -log p(x_i | x_t) at each position (ignored where not masked); ``mask``
    and ``t`` from :func:`continuous_time_mask`. Its expectation over batches is NELBO / T, an upper
    bound on the NLL per token (up to the O(eps) of the truncated time range); ``math.exp`` of the
    mean over an evaluation set bounds the perplexity.
    """
    token_nll = np.asarray(token_nll, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    t = np.asarray(t, dtype=np.float64)
    if token_nll.ndim != 2 or mask.shape != token_nll.shape or t.shape != token_nll.shape[:1]:
        raise ValueError(f"need token_nll and mask of one shape (B, T) and t of shape (B,); got "
                         f"{token_nll.shape}, {mask.shape}, {t.shape}")
    B, T = token_nll.shape
    return float((np.where(mask, token_nll, 0.0) / t[:, None]).sum() / max(B * T, 1))


class StageCurriculum:
    """Moves through masking stages when the validation loss stops improving.

    ``update(val_loss)`` counts evaluations without a new best loss; after the current stage's limit
    of them in a row (its own ``val_loss_stale_count``, else ``stale_count``) it advances to the next
    stage (never past the last) and resets best/stale, since a harder stage starts from a higher loss.
    A NaN loss counts as "not improved". State (``state_dict``) is plain ints/floats, so it goes into
    checkpoints as it is.
    """

    def __init__(self, stages, stale_count: int = 3):
        stages = [MaskingStage.from_dict(s) for s in stages]
        if not stages:
            raise ValueError("a stage curriculum needs at least one masking stage")
        if isinstance(stale_count, bool) or not isinstance(stale_count, int) or stale_count < 1:
            raise ValueError(f"stale_count must be an integer >= 1, got {stale_count!r}")
        self.stages = stages
        self.stale_count = stale_count
        self.limits = [s.val_loss_stale_count or stale_count for s in stages]
        self.index = 0
        self.best: float | None = None
        self.stale = 0

    @property
    def stage(self) -> MaskingStage:
        """The current stage."""
        return self.stages[self.index]

    @property
    def is_last(self) -> bool:
        return self.index == len(self.stages) - 1

    @property
    def limit(self) -> int:
        """Stale evaluations the current stage waits for."""
        return self.limits[self.index]

    def update(self, val_loss: float) -> bool:
        """Record one validation loss; returns True when this moved to the next stage."""
        val_loss = float(val_loss)
        if math.isfinite(val_loss) and (self.best is None or val_loss < self.best):
            self.best = val_loss
            self.stale = 0
            return False
        self.stale += 1
        if self.stale >= self.limit and not self.is_last:
            self.index += 1
            self.best = None
            self.stale = 0
            return True
        return False

    def state_dict(self) -> dict:
        """{"index": int, "best": float | None, "stale": int, "num_stages": int}."""
        return {"index": self.index, "best": self.best, "stale": self.stale, "num_stages": len(self.stages)}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; a stage count that differs from this curriculum's is an error."""
        n = state.get("num_stages", len(self.stages))
        if n != len(self.stages):
            raise ValueError(f"the saved curriculum has {n} stages but this run configures {len(self.stages)}")
        index = int(state["index"])
        if not 0 <= index < len(self.stages):
            raise ValueError(f"saved stage index {index} is out of range for {len(self.stages)} stages")
        self.index = index
        self.best = None if state.get("best") is None else float(state["best"])
        self.stale = int(state.get("stale", 0))

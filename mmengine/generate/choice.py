"""Token choice at masked positions: repetition penalty, temperature, top-k, top-p, special ids banned.

All of it on (B, K, V) logits at once (K positions per row), without host synchronisation. Order:

1. special ids (>= text_vocab_size, [MASK] included) are cut off the logits, so they can never be
   chosen, not even by top-p (the earlier sampler left [MASK] sampleable there);
2. repetition penalty on the raw logits of tokens already present nearby: a positive logit is
   divided by the penalty, a negative one multiplied (dividing a negative logit would raise it,
   the earlier sampler's bug);
3. temperature 0: the most probable token (greedy), steps 4-5 skipped;
4. logits / temperature, then top-k (keep the k highest, ties at the k-th value included) and
   top-p (keep the smallest set of most probable tokens whose probability reaches p; at least one;
   on a CPU found among the 64 most probable tokens first, see :func:`nucleus_sample`);
5. one draw from what is left by inverse CDF: one uniform per position, ``searchsorted`` in the
   cumulative probabilities. No ``torch.multinomial`` (a device sync on CUDA) and one random number
   per position instead of one per vocabulary entry.

"Nearby" for the repetition penalty: revealed tokens within ``window`` positions on either side
of the position being chosen (the prompt counts; [MASK] and out-of-window positions do not). For
a causal model only the left side exists.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

#: Top-p on a CPU looks for the nucleus among this many most probable tokens first (see nucleus_sample).
TOP_P_CANDIDATES = 64


def repetition_hits(x: torch.Tensor, revealed: torch.Tensor, window: int, vocab: int,
                    positions: slice | torch.Tensor | None = None) -> torch.Tensor:
    """Bool (B, K, vocab): True where token v is revealed within ``window`` positions of a position.

    ``x`` (B, T) ids, ``revealed`` (B, T) bool. ``positions`` selects the K positions asked about:
    a slice, a (B, K) index tensor, or None for all T. A position is not its own neighbour.
    """
    dummy = vocab  # an extra column that absorbs masked and out-of-range neighbours
    ids = torch.where(revealed, x, torch.full_like(x, dummy))
    padded = F.pad(ids, (window, window), value=dummy)  # (B, T + 2w)
    neighbours = padded.unfold(1, 2 * window + 1, 1)  # (B, T, 2w + 1)
    neighbours = torch.cat([neighbours[..., :window], neighbours[..., window + 1:]], dim=-1)  # (B, T, 2w)
    if isinstance(positions, torch.Tensor):
        neighbours = neighbours.gather(1, positions.unsqueeze(-1).expand(-1, -1, 2 * window))  # (B, K, 2w)
    elif positions is not None:
        neighbours = neighbours[:, positions]
    hits = torch.zeros(*neighbours.shape[:2], vocab + 1, dtype=torch.bool, device=x.device)
    hits.scatter_(2, neighbours, True)
    return hits[..., :vocab]


def recent_hits(recent: torch.Tensor, vocab: int) -> torch.Tensor:
    """Bool (B, 1, vocab): the tokens of ``recent`` (B, w) ids, for the one position a causal model chooses next."""
    hits = torch.zeros(recent.shape[0], 1, vocab, dtype=torch.bool, device=recent.device)
    return hits.scatter_(2, recent.unsqueeze(1), True)


def penalize_repeats(logits: torch.Tensor, hits: torch.Tensor, penalty: float) -> torch.Tensor:
    """Logits of the ``hits`` tokens moved towards "less likely": positive / penalty, negative * penalty."""
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(hits, penalized, logits)


def filter_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """-inf outside the k highest logits of each row (ties at the k-th value are kept)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def _nucleus_sorted(logits: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities in descending order with everything outside the nucleus set to 0, the order)."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    before = torch.cumsum(probs, dim=-1) - probs  # probability of the more probable tokens
    return probs.masked_fill(before >= p, 0.0), order  # the first token (before = 0 < p) always stays


def filter_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """-inf outside the nucleus: the most probable tokens whose probability first reaches ``p``."""
    if p >= 1.0:
        return logits
    kept_sorted, order = _nucleus_sorted(logits, p)
    drop = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, kept_sorted == 0)
    return logits.masked_fill(drop, float("-inf"))


def nucleus_sample(logits: torch.Tensor, p: float, generator: torch.Generator | None = None, *,
                   candidates: int | None = TOP_P_CANDIDATES) -> torch.Tensor:
    """One token per row of ``logits`` (..., V) from its top-p nucleus.

    ``candidates=None``: a sort of the whole vocabulary (fast on a GPU, and sync-free). Otherwise the
    ``candidates`` most probable tokens are found with ``topk`` (on a CPU a full sort costs ~17x a
    top-64 for an 8k vocabulary); a row whose candidates hold probability >= p has its whole nucleus
    among them, so its draw is exact; the other rows (flat distributions) are redrawn from a full sort
    of those rows only. That needs one host read per call, which costs nothing on a CPU.
    """
    V = logits.shape[-1]
    if candidates is None or candidates >= V:
        kept, order = _nucleus_sorted(logits, p)
        return order.gather(-1, sample_from(kept, generator).unsqueeze(-1)).squeeze(-1)
    probs = torch.softmax(logits, dim=-1)
    top, index = probs.topk(candidates, dim=-1)  # (..., K), most probable first
    before = torch.cumsum(top, dim=-1) - top
    ids = index.gather(-1, sample_from(top.masked_fill(before >= p, 0.0), generator).unsqueeze(-1)).squeeze(-1)
    wide = top.sum(dim=-1) < p  # the nucleus reaches beyond the candidates
    if bool(wide.any()):
        ids[wide] = nucleus_sample(logits[wide], p, generator, candidates=None)
    return ids


def sample_from(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One index per row of ``probs`` (..., V) (non-negative, not all zero), with probability p_v / sum."""
    cdf = probs.cumsum(dim=-1)
    u = torch.rand(cdf.shape[:-1] + (1,), generator=generator, device=probs.device, dtype=cdf.dtype) * cdf[..., -1:]
    idx = torch.searchsorted(cdf, u, right=True).clamp_(max=probs.shape[-1] - 1)
    # rounding can put u on the total itself: never return a token of probability 0 then
    ok = probs.gather(-1, idx) > 0
    return torch.where(ok, idx, probs.argmax(dim=-1, keepdim=True)).squeeze(-1)


def choose_tokens(logits: torch.Tensor, *, text_vocab_size: int, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0, repetition_penalty: float = 1.0, repeat_hits: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (B, K) chosen from ``logits`` (B, K, V), and their log-probability (B, K) under the LM's
    own distribution over text tokens (raw logits: no penalty, temperature or filter; the confidence
    that ``low_confidence`` remasking ranks by).

    ``repeat_hits`` (B, K, V') bool from :func:`repetition_hits` marks the tokens to penalise (its
    first ``text_vocab_size`` columns are used); ignored when ``repetition_penalty`` is 1.
    """
    raw = logits[..., :text_vocab_size].float()
    work = raw
    if repetition_penalty != 1.0 and repeat_hits is not None:
        hits = repeat_hits[..., :text_vocab_size]
        if hits.shape[-1] < text_vocab_size:
            hits = F.pad(hits, (0, text_vocab_size - hits.shape[-1]), value=False)
        work = penalize_repeats(work, hits, repetition_penalty)
    if temperature == 0:
        ids = work.argmax(dim=-1)
    else:
        work = filter_top_k(work / temperature, top_k)
        if top_p < 1.0:
            candidates = TOP_P_CANDIDATES if work.device.type == "cpu" else None
            ids = nucleus_sample(work, top_p, generator, candidates=candidates)
        else:
            ids = sample_from(torch.softmax(work, dim=-1), generator)
    log_p = raw.gather(-1, ids.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(raw, dim=-1)
    return ids, log_p

"""Token choice at masked positions: repetition penalty, temperature, top-k, top-p, special ids banned.

All of it on (B, L, V) logits at once, without host synchronisation. Order of operations:

1. special ids (>= text_vocab_size, [MASK] included) get -inf, so they are never chosen, not even by
   top-p (the earlier sampler left [MASK] sampleable there);
2. repetition penalty on the raw logits of tokens already present nearby: a positive logit is
   divided by the penalty, a negative one multiplied (dividing a negative logit would raise it,
   the earlier sampler's bug);
3. temperature 0: the most probable remaining token (greedy), steps 4-5 skipped;
4. logits / temperature, then top-k (keep the k highest) and top-p (keep the smallest set of most
   probable tokens whose probability reaches p; always at least one);
5. one draw from what is left, by the exponential race argmax(p / E), E ~ Exp(1) i.i.d., which
   picks token v with probability p_v and needs no multinomial.

"Nearby" for the repetition penalty: revealed tokens within ``window`` positions on either side
of the position being chosen (the prompt counts; [MASK] and out-of-window positions do not). For
a causal model only the left side exists.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def repetition_hits(x: torch.Tensor, revealed: torch.Tensor, window: int, vocab: int,
                    positions: slice | None = None) -> torch.Tensor:
    """Bool (B, L, vocab): True where token v is revealed within ``window`` positions of a position.

    ``x`` (B, T) ids, ``revealed`` (B, T) bool. ``positions`` selects the L positions asked about
    (default: all T). The position itself is not its own neighbour.
    """
    dummy = vocab  # an extra column that absorbs masked and out-of-range neighbours
    ids = torch.where(revealed, x, torch.full_like(x, dummy))
    padded = F.pad(ids, (window, window), value=dummy)  # (B, T + 2w)
    neighbours = padded.unfold(1, 2 * window + 1, 1)  # (B, T, 2w + 1)
    neighbours = torch.cat([neighbours[..., :window], neighbours[..., window + 1:]], dim=-1)  # (B, T, 2w)
    if positions is not None:
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


def filter_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """-inf outside the nucleus: the most probable tokens whose probability first reaches ``p``."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    before = torch.cumsum(probs, dim=-1) - probs  # probability of the more probable tokens
    drop_sorted = before >= p  # the first token (before = 0) is always kept, since p > 0
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def choose_tokens(logits: torch.Tensor, *, text_vocab_size: int, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0, repetition_penalty: float = 1.0, repeat_hits: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (B, L) chosen from ``logits`` (B, L, V), and the log-probabilities (B, L, V) of the
    LM's own distribution over text tokens (raw logits, no penalty, temperature or filter: the
    confidence that ``low_confidence`` remasking ranks by; -inf at special ids).

    ``repeat_hits`` (B, L, V') bool from :func:`repetition_hits` (V' <= V columns) marks the
    tokens to penalise; ignored when ``repetition_penalty`` is 1.
    """
    logits = logits.float()
    V = logits.shape[-1]
    if text_vocab_size < V:
        logits = logits.clone()
        logits[..., text_vocab_size:] = float("-inf")
    log_probs = torch.log_softmax(logits, dim=-1)
    work = logits
    if repetition_penalty != 1.0 and repeat_hits is not None:
        hits = repeat_hits
        if hits.shape[-1] < V:
            hits = F.pad(hits, (0, V - hits.shape[-1]), value=False)
        work = penalize_repeats(work, hits, repetition_penalty)
    if temperature == 0:
        ids = work.argmax(dim=-1)
    else:
        work = filter_top_p(filter_top_k(work / temperature, top_k), top_p)
        probs = torch.softmax(work, dim=-1)
        # clamped away from 0: a zero draw would turn 0 / 0 into NaN for a filtered-out token
        race = torch.empty_like(probs).exponential_(1.0, generator=generator).clamp_min_(torch.finfo(probs.dtype).tiny)
        ids = (probs / race).argmax(dim=-1)
    return ids, log_probs

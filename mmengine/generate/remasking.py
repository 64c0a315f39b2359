"""Which revealed tokens of a block are masked again: a score per position, then the top ``m``.

Every function works on (R, L) tensors of one block (R rows, L positions) and never leaves the
device: ``m`` (how many, from the schedule) is a host integer, the same for every row. Positions
that are not free (prompt, given template ids) get -inf and are never chosen (``m`` never exceeds
the free count). The strategies are described in :mod:`mmengine.generate.sampler`; here is how
their scores are made:

* ``random``: U(0,1) + 1 for the positions filled in this step, U(0,1) for older ones, so this
  step's tokens go first (MDLM ancestral); ``low_confidence``: (1 - P_LM(token)) + 1 / + 0 likewise.
* ``self_surprise``: 1 - P_LM(token | rest); ``inspector``: s * U + (1 - s) * P(wrong).
* ``mixed``: 2 for the q = floor((1 - min_random) * m) most-wrong positions with P(wrong) > tau,
  U(0,1) elsewhere, so exactly min(q, candidates) come from the inspector and the rest at random.
* ``threshold`` has no count: every free position with P(wrong) > tau (:func:`threshold_mask`).
"""
from __future__ import annotations

import math

import torch


def fresh_first(score: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """``score`` in [0, 1] lifted by 1 where ``new``: positions filled in this step outrank older ones."""
    return score + new.to(score.dtype)


def mix_inspector(p_wrong: torch.Tensor, uniform: torch.Tensor, randomness: float) -> torch.Tensor:
    """``randomness * U + (1 - randomness) * P(wrong)``."""
    return randomness * uniform + (1.0 - randomness) * p_wrong


def mixed_scores(p_wrong: torch.Tensor, uniform: torch.Tensor, free: torch.Tensor, m: int, threshold: float,
                 min_random: float) -> torch.Tensor:
    """Scores whose top ``m`` take up to floor((1 - min_random) * m) inspector candidates, the rest at random."""
    q = math.floor((1.0 - min_random) * m)
    if q <= 0:
        return uniform
    candidates = (p_wrong > threshold) & free
    ranked = torch.where(candidates, p_wrong, torch.full_like(p_wrong, -1.0))
    top = ranked.topk(min(q, ranked.shape[-1]), dim=-1).indices
    chosen = torch.zeros_like(candidates).scatter_(1, top, True) & candidates
    return torch.where(chosen, torch.full_like(uniform, 2.0), uniform)


def threshold_mask(p_wrong: torch.Tensor, free: torch.Tensor, threshold: float) -> torch.Tensor:
    """Every free position with P(wrong) > ``threshold``."""
    return (p_wrong > threshold) & free


def top_m_indices(score: torch.Tensor, free: torch.Tensor, m: int) -> torch.Tensor:
    """(R, m) indices of the ``m`` highest-scoring free positions of each row (``m`` <= free count)."""
    return score.masked_fill(~free, float("-inf")).topk(m, dim=-1).indices


def top_m(score: torch.Tensor, free: torch.Tensor, m: int) -> torch.Tensor:
    """Bool (R, L): the ``m`` highest-scoring free positions of each row (``m`` <= free count)."""
    chosen = torch.zeros(score.shape, dtype=torch.bool, device=score.device)
    if m <= 0:
        return chosen
    return chosen.scatter_(1, top_m_indices(score, free, m), True)

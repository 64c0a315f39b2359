"""Ratings from pairwise results: Elo, Bradley-Terry (maximum likelihood, weak prior), bootstrap intervals.

A match is ``(a, b, result)``: player indices ``a != b`` in ``[0, n_players)`` and the result for
``a``: 1 (a wins), 0.5 (draw) or 0 (b wins). Every rating is on the Elo scale, where a rating gap
of ``D`` points means an expected score of ``1 / (1 + 10^(-D / 400))`` for the higher player.

* :func:`elo` replays the matches in the given order, as the earlier research tool did: every
  player starts at 1000, the expected score of a is ``E = 1 / (1 + 10^((R_b - R_a) / 400))`` and
  both players move by ``K * (S - E)`` in opposite directions (K = 32), so the sum of the ratings
  never changes. Elo depends on the order of the matches; the tournament fixes a seeded order.

* :func:`bradley_terry` fits strengths ``theta`` (natural-log units) with
  ``P(a beats b) = sigmoid(theta_a - theta_b)`` by maximising

      sum over matches of  S log sigmoid(theta_a - theta_b) + (1 - S) log sigmoid(theta_b - theta_a)
      - sum_i theta_i^2 / (2 sigma^2),

  where a draw (S = 0.5) counts as half a win for each side, and reports ``anchor + theta *
  400 / ln 10``. The sum over matches does not depend on their order. The Gaussian prior (the last
  term, ``sigma = prior_sd * ln 10 / 400``) is what makes the estimate exist when a player wins or
  loses every game (the plain MLE would be infinite) or when the players do not all meet: it is a
  maximum a posteriori estimate. Because the likelihood only sees differences, its gradient sums to
  zero, so at the optimum ``sum(theta) = 0`` exactly: the mean rating is ``anchor`` (1000).
  **Bias:** the prior pulls every rating towards the mean. Its weight ``1 / sigma^2`` equals the
  Fisher information of about ``4 / sigma^2`` games between evenly matched players (0.75 games for
  the default ``prior_sd = 400``), so a player with ``n`` informative games keeps a share of about
  ``n / (n + 0.75)`` of its distance from the mean: 1.5 % shrinkage at 50 games, negligible beyond;
  an unbeaten player gets a large but finite rating.

* :func:`bootstrap_intervals` resamples the matches with replacement, refits Bradley-Terry on each
  resample and returns percentile intervals.

The fit is Newton's method with backtracking on the (strictly concave) objective, batched over
bootstrap replicates: the matches are first reduced to a games matrix ``N[i, j]`` and a wins
matrix ``W[i, j]`` (wins of i over j, draws counted half), so a fit costs O(n_players^3) per
iteration whatever the number of matches.

numpy only (no torch import).
"""
from __future__ import annotations

import math

import numpy as np

#: Elo points per natural-log unit of Bradley-Terry strength (a 400-point gap = 10:1 odds).
ELO_PER_NAT = 400.0 / math.log(10.0)
#: Where the mean Bradley-Terry rating is placed.
DEFAULT_ANCHOR = 1000.0
#: Standard deviation of the Gaussian prior on each strength, in Elo points (see the module docstring). In
#: simulated 150-game round robins its pull towards the mean about cancels the plain MLE's small-sample
#: overestimate of the gaps (no net slope of error against true rating); 200 shrinks visibly, 800+ overshoots.
DEFAULT_PRIOR_SD = 400.0

_RESULTS = (0.0, 0.5, 1.0)
#: Resampled matches per bootstrap chunk (memory: a few dozen bytes each).
_BOOT_CHUNK = 1 << 21


def match_arrays(matches, n_players: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated ``(a, b, result)`` arrays (int64, int64, float64) from matches.

    ``matches`` is an iterable of ``(a, b, result)`` triples or an array of shape (M, 3).
    Raises ValueError naming the first bad match.
    """
    if isinstance(n_players, bool) or not isinstance(n_players, (int, np.integer)) or n_players < 1:
        raise ValueError(f"n_players must be a positive integer, got {n_players!r}")
    try:
        table = np.asarray(matches if isinstance(matches, np.ndarray) else list(matches), dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("every match must be a triple (a, b, result) of numbers") from None
    if table.size == 0:
        table = table.reshape(0, 3)
    if table.ndim != 2 or table.shape[1] != 3:
        raise ValueError(f"matches must be (a, b, result) triples; got an array of shape {table.shape}")
    a_f, b_f, result = table[:, 0], table[:, 1], table[:, 2]
    a, b = a_f.astype(np.int64), b_f.astype(np.int64)
    bad = (a_f != a) | (b_f != b) | (a < 0) | (b < 0) | (a >= n_players) | (b >= n_players)
    if bad.any():
        m = int(np.flatnonzero(bad)[0])
        raise ValueError(f"match {m} names players {a_f[m]:g} and {b_f[m]:g}; players are integers in [0, {n_players})")
    if (a == b).any():
        m = int(np.flatnonzero(a == b)[0])
        raise ValueError(f"match {m} pits player {a[m]} against itself")
    bad = ~np.isin(result, _RESULTS)
    if bad.any():
        m = int(np.flatnonzero(bad)[0])
        raise ValueError(f"match {m} has result {result[m]!r}; a result is 1 (a wins), 0.5 (draw) or 0 (b wins)")
    return a, b, result


def record(matches, n_players: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per player (wins, draws, losses) as int64 arrays of length ``n_players``."""
    a, b, result = match_arrays(matches, n_players)
    wins = np.bincount(a[result == 1.0], minlength=n_players) + np.bincount(b[result == 0.0], minlength=n_players)
    losses = np.bincount(a[result == 0.0], minlength=n_players) + np.bincount(b[result == 1.0], minlength=n_players)
    drawn = result == 0.5
    draws = np.bincount(a[drawn], minlength=n_players) + np.bincount(b[drawn], minlength=n_players)
    return wins.astype(np.int64), draws.astype(np.int64), losses.astype(np.int64)


def win_rate(wins, draws, losses) -> np.ndarray:
    """Wins / games played (draws count as games, not as wins, as in the earlier tool); NaN with no games."""
    wins, games = np.asarray(wins, np.float64), np.asarray(wins, np.float64) + np.asarray(draws) + np.asarray(losses)
    return np.divide(wins, games, out=np.full(games.shape, np.nan), where=games > 0)


def expected_score(rating_a, rating_b):
    """Expected score of a against b on the Elo scale: ``1 / (1 + 10^((R_b - R_a) / 400))``."""
    return 1.0 / (1.0 + 10.0 ** ((np.asarray(rating_b, np.float64) - np.asarray(rating_a, np.float64)) / 400.0))


# -----------------------------------------------------------------------------
# Elo


def elo(matches, n_players: int, *, k: float = 32.0, start: float = 1000.0) -> np.ndarray:
    """Elo ratings after replaying ``matches`` in order (float64, length ``n_players``).

    Each match moves a by ``k * (S - E)`` and b by the opposite amount (the earlier tool's rule),
    so ``ratings.sum() == n_players * start`` up to rounding.
    """
    if not (math.isfinite(k) and k >= 0):
        raise ValueError(f"the Elo K-factor must be a finite number >= 0, got {k!r}")
    a, b, result = match_arrays(matches, n_players)
    ratings = np.full(n_players, float(start))
    # Sequential by nature (each update reads the previous ratings); plain floats keep the loop cheap.
    r = ratings.tolist()
    for i, j, s in zip(a.tolist(), b.tolist(), result.tolist()):
        expected = 1.0 / (1.0 + 10.0 ** ((r[j] - r[i]) / 400.0))
        change = k * (s - expected)
        r[i] += change
        r[j] -= change
    return np.asarray(r, dtype=np.float64)


# -----------------------------------------------------------------------------
# Bradley-Terry


def _pair_counts(a: np.ndarray, b: np.ndarray, result: np.ndarray, n: int):
    """Games N (R, n, n) (symmetric) and wins W (R, n, n) (W[i, j]: wins of i over j, draws half).

    ``a``, ``b``, ``result`` are (R, M): row r holds the matches of replicate r.
    """
    R = a.shape[0]
    offset = np.arange(R)[:, None] * (n * n)  # (R, 1): each replicate's block of the flat counts
    size = R * n * n
    forward = np.bincount((offset + a * n + b).ravel(), weights=result.ravel(), minlength=size)  # wins of a over b
    backward = np.bincount((offset + b * n + a).ravel(), weights=(1.0 - result).ravel(), minlength=size)
    W = (forward + backward).reshape(R, n, n)
    N = W + W.transpose(0, 2, 1)
    return N, W


def _log_posterior(theta: np.ndarray, W: np.ndarray, precision: float) -> np.ndarray:
    """The objective of the module docstring for each replicate: theta (R, n) -> (R,)."""
    diff = theta[:, :, None] - theta[:, None, :]  # (R, n, n): theta_i - theta_j
    log_sigmoid = -np.logaddexp(0.0, -diff)
    return (W * log_sigmoid).sum(axis=(1, 2)) - 0.5 * precision * (theta * theta).sum(axis=1)


def _fit_strengths(N: np.ndarray, W: np.ndarray, precision: float, *, tol: float = 1e-10,
                   max_iter: int = 100) -> np.ndarray:
    """Maximum a posteriori strengths (R, n) in natural-log units for games N and wins W (R, n, n).

    Newton's method: the objective is strictly concave (its Hessian is minus a graph Laplacian
    weighted by ``N p (1 - p)`` minus ``precision * I``), so the Newton system is positive
    definite. A full step can overshoot when a player is unbeaten, so steps are halved (per
    replicate) until the objective does not decrease.
    """
    R, n, _ = N.shape
    theta = np.zeros((R, n))
    value = _log_posterior(theta, W, precision)
    eye = np.eye(n)
    active = np.ones(R, dtype=bool)
    for _ in range(max_iter):
        t, Nn, Wn = theta[active], N[active], W[active]
        p = 0.5 + 0.5 * np.tanh(0.5 * (t[:, :, None] - t[:, None, :]))  # (r, n, n): sigmoid, never overflows
        grad = (Wn - Nn * p).sum(axis=2) - precision * t  # (r, n)
        info = Nn * p * (1.0 - p)  # (r, n, n): Fisher information of each pair
        neg_hessian = -info + (info.sum(axis=2) + precision)[:, :, None] * eye  # (r, n, n), SPD
        step = np.linalg.solve(neg_hessian, grad[..., None])[..., 0]  # (r, n)
        old = value[active]
        scale = np.ones(len(t))
        new_t = t + step
        new_value = _log_posterior(new_t, Wn, precision)
        for _ in range(60):
            worse = new_value < old - 1e-12 * np.maximum(1.0, np.abs(old))
            if not worse.any():
                break
            scale[worse] *= 0.5
            new_t[worse] = t[worse] + scale[worse, None] * step[worse]
            new_value[worse] = _log_posterior(new_t[worse], Wn[worse], precision)
        theta[active] = new_t
        value[active] = new_value
        done = np.abs(scale[:, None] * step).max(axis=1) < tol
        idx = np.flatnonzero(active)
        active[idx[done]] = False
        if not active.any():
            break
    # The optimum has sum(theta) = 0; remove the rounding left by the last step.
    return theta - theta.mean(axis=1, keepdims=True)


def _precision(prior_sd: float) -> float:
    if not (math.isfinite(prior_sd) and prior_sd > 0):
        raise ValueError(f"prior_sd must be a positive number of Elo points, got {prior_sd!r}")
    sigma = prior_sd / ELO_PER_NAT
    return 1.0 / (sigma * sigma)


def bradley_terry(matches, n_players: int, *, prior_sd: float = DEFAULT_PRIOR_SD,
                  anchor: float = DEFAULT_ANCHOR) -> np.ndarray:
    """Bradley-Terry ratings on the Elo scale (float64, length ``n_players``, mean exactly ``anchor``).

    Draws count half a win for each side; the order of ``matches`` does not matter. ``prior_sd``
    (Elo points) is the Gaussian prior that keeps the estimate finite; see the module docstring for
    how it biases the ratings. A player without games gets ``anchor``.
    """
    a, b, result = match_arrays(matches, n_players)
    N, W = _pair_counts(a[None], b[None], result[None], n_players)
    theta = _fit_strengths(N, W, _precision(prior_sd))[0]
    return anchor + ELO_PER_NAT * theta


def bootstrap_ratings(matches, n_players: int, *, n_boot: int = 1000, seed: int = 0,
                      prior_sd: float = DEFAULT_PRIOR_SD, anchor: float = DEFAULT_ANCHOR) -> np.ndarray:
    """Bradley-Terry ratings (n_boot, n_players) refitted on ``n_boot`` resamples of the matches.

    Each resample draws ``len(matches)`` matches uniformly with replacement from
    ``np.random.default_rng(seed)``, so the same seed gives the same replicates.
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    a, b, result = match_arrays(matches, n_players)
    precision = _precision(prior_sd)
    M = len(a)
    if M == 0:
        return np.full((n_boot, n_players), float(anchor))
    rng = np.random.default_rng(seed)
    boot = np.empty((n_boot, n_players))
    # Replicates go in chunks of about _BOOT_CHUNK resampled matches to bound the memory; the draws
    # come from one generator in order, so the chunking does not change the replicates.
    chunk = max(1, _BOOT_CHUNK // M)
    for start in range(0, n_boot, chunk):
        picks = rng.integers(0, M, size=(min(chunk, n_boot - start), M))  # (r, M): resampled match indices
        N, W = _pair_counts(a[picks], b[picks], result[picks], n_players)
        boot[start:start + len(picks)] = anchor + ELO_PER_NAT * _fit_strengths(N, W, precision)
    return boot


def bootstrap_intervals(matches, n_players: int, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                        prior_sd: float = DEFAULT_PRIOR_SD,
                        anchor: float = DEFAULT_ANCHOR) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap intervals ``(lo, hi)`` of the Bradley-Terry ratings, each of length ``n_players``.

    ``lo`` and ``hi`` are the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the ratings
    refitted by :func:`bootstrap_ratings` (same ``seed``, same intervals).
    """
    if not (isinstance(level, (int, float)) and 0.0 < level < 1.0):
        raise ValueError(f"level must be a probability in (0, 1), got {level!r}")
    boot = bootstrap_ratings(matches, n_players, n_boot=n_boot, seed=seed, prior_sd=prior_sd, anchor=anchor)
    lo, hi = np.quantile(boot, [(1.0 - level) / 2.0, (1.0 + level) / 2.0], axis=0)
    return lo, hi

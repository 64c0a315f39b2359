"""mmengine.ratings: Elo, Bradley-Terry, bootstrap intervals; exact properties and recovery of known strengths."""
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmengine.ratings import (
    ELO_PER_NAT,
    bootstrap_intervals,
    bootstrap_ratings,
    bradley_terry,
    elo,
    expected_score,
    match_arrays,
    record,
    win_rate,
)

N_PLAYERS = 5


@st.composite
def match_lists(draw, n=N_PLAYERS, min_size=0, max_size=40):
    """Random matches between n players: (a, b != a, result in {0, 0.5, 1})."""
    size = draw(st.integers(min_size, max_size))
    out = []
    for _ in range(size):
        a = draw(st.integers(0, n - 1))
        b = (a + draw(st.integers(1, n - 1))) % n
        out.append((a, b, draw(st.sampled_from([0.0, 0.5, 1.0]))))
    return out


def simulate(strengths_elo, a, b, rng):
    """Win/loss results of matches (a[m], b[m]) drawn from the Bradley-Terry model with the given ratings."""
    return (rng.random(len(a)) < expected_score(strengths_elo[a], strengths_elo[b])).astype(np.float64)


def round_robin(n, games_per_pair):
    pairs = np.array([(i, j) for i in range(n) for j in range(i + 1, n)])
    return np.repeat(pairs[:, 0], games_per_pair), np.repeat(pairs[:, 1], games_per_pair)


# ----------------------------------------------------------------------------- Elo


def test_elo_by_hand():
    # first match: equal ratings, E = 0.5, a wins -> +-16
    assert elo([(0, 1, 1.0)], 2).tolist() == [1016.0, 984.0]
    # second match b wins at ratings (1016, 984): a expected 1 / (1 + 10^(-32/400)), loses it all
    e = 1.0 / (1.0 + 10.0 ** (-32.0 / 400.0))
    r = elo([(0, 1, 1.0), (0, 1, 0.0)], 2)
    assert r == pytest.approx([1016.0 - 32.0 * e, 984.0 + 32.0 * e], abs=1e-12)
    # a draw between equals changes nothing; K and the start are honoured
    assert elo([(2, 0, 0.5)], 3, k=10.0, start=1500.0).tolist() == [1500.0] * 3
    assert elo([(1, 0, 1.0)], 2, k=10.0).tolist() == [995.0, 1005.0]


def test_elo_follows_the_earlier_tools_rule():
    """Replays the earlier research tool's ELOTracker update (zero-sum K * (S - E), K = 32, start 1000)."""
    rng = np.random.default_rng(3)
    matches = [(int(a), int((a + o) % 4), float(s)) for a, o, s in
               zip(rng.integers(0, 4, 200), rng.integers(1, 4, 200), rng.choice([0.0, 0.5, 1.0], 200))]
    ratings = {p: 1000.0 for p in range(4)}
    for a, b, s in matches:
        change = 32 * (s - 1 / (1 + 10 ** ((ratings[b] - ratings[a]) / 400)))
        ratings[a] += change
        ratings[b] -= change
    assert elo(matches, 4) == pytest.approx([ratings[p] for p in range(4)], abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(matches=match_lists(), k=st.floats(0.0, 64.0), start=st.floats(-2000.0, 3000.0))
def test_elo_conserves_the_sum_of_ratings(matches, k, start):
    r = elo(matches, N_PLAYERS, k=k, start=start)
    assert r.sum() == pytest.approx(N_PLAYERS * start, abs=1e-8 * max(1.0, abs(start)) * (1 + len(matches)))


def test_elo_depends_on_the_order_and_bt_does_not():
    matches = [(0, 1, 1.0), (1, 2, 1.0), (2, 0, 0.5), (0, 2, 0.0)]
    assert not np.allclose(elo(matches, 3), elo(matches[::-1], 3))
    assert np.allclose(bradley_terry(matches, 3), bradley_terry(matches[::-1], 3), atol=1e-9)


# ----------------------------------------------------------------------------- Bradley-Terry: exact properties


def test_bt_equal_results_on_a_symmetric_schedule_give_equal_ratings():
    a, b = round_robin(4, 2)
    split = np.tile([1.0, 0.0], len(a) // 2)  # each pair: one win each
    assert bradley_terry(np.stack([a, b, split], 1), 4) == pytest.approx([1000.0] * 4, abs=1e-9)
    draws = np.full(len(a), 0.5)
    assert bradley_terry(np.stack([a, b, draws], 1), 4) == pytest.approx([1000.0] * 4, abs=1e-9)
    # a cycle 0 > 1 > 2 > 0 is symmetric too
    assert bradley_terry([(0, 1, 1), (1, 2, 1), (2, 0, 1)], 3) == pytest.approx([1000.0] * 3, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(matches=match_lists(min_size=1), seed=st.integers(0, 2**31))
def test_bt_is_invariant_to_match_order_and_to_swapping_sides(matches, seed):
    ref = bradley_terry(matches, N_PLAYERS)
    perm = np.random.default_rng(seed).permutation(len(matches))
    assert bradley_terry([matches[i] for i in perm], N_PLAYERS) == pytest.approx(ref, abs=1e-7)
    swapped = [(b, a, 1.0 - s) for a, b, s in matches]
    assert bradley_terry(swapped, N_PLAYERS) == pytest.approx(ref, abs=1e-7)
    assert ref.mean() == pytest.approx(1000.0, abs=1e-9)  # the anchor
    assert np.isfinite(ref).all()


def test_bt_two_players_without_prior_is_the_closed_form_mle():
    # 7 wins, 3 losses: P = 0.7 = sigmoid(d) -> gap 400 log10(7/3); a huge prior_sd removes the prior
    matches = [(0, 1, 1.0)] * 7 + [(0, 1, 0.0)] * 3
    r = bradley_terry(matches, 2, prior_sd=1e7)
    assert r[0] - r[1] == pytest.approx(400 * math.log10(7 / 3), abs=1e-6)
    # draws count half a win: 6 wins, 2 draws, 2 losses is the same as 7 wins, 3 losses
    with_draws = [(0, 1, 1.0)] * 6 + [(1, 0, 0.5)] * 2 + [(1, 0, 1.0)] * 2
    assert bradley_terry(with_draws, 2, prior_sd=1e7) == pytest.approx(r, abs=1e-6)
    assert bradley_terry(with_draws, 2) == pytest.approx(bradley_terry(matches, 2), abs=1e-9)


def mm_reference(matches, n, iters=20000):
    """Plain Bradley-Terry MLE by Hunter's (2004) MM iterations, draws as half wins; Elo scale, mean 1000."""
    a, b, s = (np.array(c) for c in zip(*matches))
    wins = np.bincount(a, weights=s, minlength=n) + np.bincount(b, weights=1 - s, minlength=n)
    games = np.zeros((n, n))
    np.add.at(games, (a, b), 1.0)
    games += games.T
    p = np.ones(n)
    for _ in range(iters):
        p = wins / (games / (p[:, None] + p[None, :])).sum(axis=1)
        p /= np.exp(np.log(p).mean())
    theta = np.log(p)
    return 1000.0 + ELO_PER_NAT * (theta - theta.mean())


def test_bt_matches_an_independent_mle_when_the_prior_is_removed():
    rng = np.random.default_rng(7)
    a, b = round_robin(5, 6)
    results = rng.choice([0.0, 0.5, 1.0], size=len(a), p=[0.4, 0.2, 0.4])
    matches = list(zip(a.tolist(), b.tolist(), results.tolist()))
    assert bradley_terry(matches, 5, prior_sd=1e7) == pytest.approx(mm_reference(matches, 5), abs=1e-4)


def test_bt_is_a_stationary_point_of_the_stated_objective():
    """The gradient of sum S log sig(d) + (1-S) log sig(-d) - theta^2 / (2 sigma^2), per match, vanishes."""
    rng = np.random.default_rng(11)
    n, M = 6, 80
    a = rng.integers(0, n, M)
    b = (a + rng.integers(1, n, M)) % n
    s = rng.choice([0.0, 0.5, 1.0], M)
    for prior_sd in (100.0, 400.0):
        theta = (bradley_terry(np.stack([a, b, s], 1), n, prior_sd=prior_sd) - 1000.0) / ELO_PER_NAT
        sigma = prior_sd / ELO_PER_NAT
        resid = s - 1.0 / (1.0 + np.exp(-(theta[a] - theta[b])))
        grad = np.bincount(a, resid, n) - np.bincount(b, resid, n) - theta / sigma**2
        assert np.abs(grad).max() < 1e-8


def test_bt_is_finite_when_a_player_wins_or_loses_everything():
    a, b = round_robin(3, 5)
    results = np.where(a == 0, 1.0, 0.5)  # player 0 unbeaten, 1 and 2 draw each other
    r = bradley_terry(np.stack([a, b, results], 1), 3)
    assert np.isfinite(r).all() and r[0] > 1300 and r[1] == pytest.approx(r[2])
    # more wins, larger (still finite) gap
    r2 = bradley_terry(np.stack([*round_robin(3, 20), np.where(round_robin(3, 20)[0] == 0, 1.0, 0.5)], 1), 3)
    assert r2[0] > r[0] and np.isfinite(r2).all()
    lo, hi = bootstrap_intervals(np.stack([a, b, results], 1), 3, n_boot=50)
    assert np.isfinite(lo).all() and np.isfinite(hi).all()


def test_bt_players_without_games_and_disconnected_groups():
    # player 2 never plays; players 0-1 and 3-4 never meet: the prior keeps each group centred
    matches = [(0, 1, 1.0), (0, 1, 1.0), (1, 0, 0.0), (3, 4, 0.0), (4, 3, 1.0), (3, 4, 1.0)]
    r = bradley_terry(matches, 5)
    assert r[2] == pytest.approx(1000.0)
    assert r[0] - 1000 == pytest.approx(1000 - r[1]) and r[4] - 1000 == pytest.approx(1000 - r[3])
    assert r[0] > r[4] > 1000  # 3-0 beats 2-1
    assert bradley_terry([], 3).tolist() == [1000.0] * 3
    assert elo([], 2).tolist() == [1000.0, 1000.0]


def test_bt_anchor_and_prior_strength():
    matches = [(0, 1, 1.0)] * 4 + [(1, 2, 1.0)] * 4
    r = bradley_terry(matches, 3, anchor=1500.0)
    assert r.mean() == pytest.approx(1500.0) and r[0] > r[1] > r[2]
    spreads = [np.ptp(bradley_terry(matches, 3, prior_sd=sd)) for sd in (50.0, 400.0, 1e4)]
    assert spreads[0] < spreads[1] < spreads[2]  # a tighter prior shrinks towards the mean


# ----------------------------------------------------------------------------- counts and validation


def test_record_and_win_rate():
    matches = [(0, 1, 1.0), (1, 0, 0.5), (2, 1, 0.0), (0, 2, 0.0)]
    wins, draws, losses = record(matches, 4)
    assert wins.tolist() == [1, 1, 1, 0] and draws.tolist() == [1, 1, 0, 0] and losses.tolist() == [1, 1, 1, 0]
    rate = win_rate(wins, draws, losses)
    assert rate[:3] == pytest.approx([1 / 3, 1 / 3, 1 / 2]) and math.isnan(rate[3])  # 3, 3 and 2 games


@pytest.mark.parametrize(
    "matches, n, msg",
    [
        ([(0, 0, 1.0)], 2, "against itself"),
        ([(0, 2, 1.0)], 2, r"players are integers in \[0, 2\)"),
        ([(0, -1, 1.0)], 2, "players are integers"),
        ([(0, 1.5, 1.0)], 3, "players are integers"),
        ([(0, 1, 0.7)], 2, "a result is 1 .a wins., 0.5 .draw. or 0"),
        ([(0, 1, float("nan"))], 2, "a result is"),
        ([(0, 1)], 2, "triples"),
        ([(0, 1, 1.0), (0, 1)], 2, "triple"),
        ([(0, 1, 1.0)], 0, "n_players must be a positive integer"),
    ],
)
def test_bad_matches_raise_one_clear_error(matches, n, msg):
    with pytest.raises(ValueError, match=msg):
        match_arrays(matches, n)


def test_bad_parameters():
    with pytest.raises(ValueError, match="K-factor"):
        elo([(0, 1, 1.0)], 2, k=-1.0)
    with pytest.raises(ValueError, match="prior_sd"):
        bradley_terry([(0, 1, 1.0)], 2, prior_sd=0.0)
    with pytest.raises(ValueError, match="level"):
        bootstrap_intervals([(0, 1, 1.0)], 2, level=1.0)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_intervals([(0, 1, 1.0)], 2, n_boot=0)


def test_ratings_module_does_not_import_torch():
    code = "import sys, mmengine.ratings, mmengine.tournament; assert 'torch' not in sys.modules, 'torch imported'"
    p = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


# ----------------------------------------------------------------------------- bootstrap


def test_bootstrap_is_seeded_and_its_intervals_behave():
    rng = np.random.default_rng(5)
    true = np.array([900.0, 1000.0, 1100.0, 1000.0])
    a, b = round_robin(4, 15)
    matches = np.stack([a, b, simulate(true, a, b, rng)], 1)
    lo, hi = bootstrap_intervals(matches, 4, n_boot=300, seed=1)
    lo2, hi2 = bootstrap_intervals(matches, 4, n_boot=300, seed=1)
    assert np.array_equal(lo, lo2) and np.array_equal(hi, hi2)
    lo3, _ = bootstrap_intervals(matches, 4, n_boot=300, seed=2)
    assert not np.array_equal(lo, lo3)
    bt = bradley_terry(matches, 4)
    assert (lo < bt).all() and (bt < hi).all()
    wide_lo, wide_hi = bootstrap_intervals(matches, 4, n_boot=300, seed=1, level=0.99)
    assert (wide_lo <= lo).all() and (wide_hi >= hi).all() and (wide_hi - wide_lo > hi - lo).any()
    # each replicate is a refit: its mean is the anchor
    assert bootstrap_ratings(matches, 4, n_boot=20).mean(axis=1) == pytest.approx([1000.0] * 20)


def test_bootstrap_replicate_equals_a_refit_of_the_resampled_matches():
    rng = np.random.default_rng(9)
    a, b = round_robin(4, 5)
    matches = np.stack([a, b, rng.choice([0.0, 0.5, 1.0], len(a))], 1)
    boot = bootstrap_ratings(matches, 4, n_boot=3, seed=4)
    picks = np.random.default_rng(4).integers(0, len(matches), size=(3, len(matches)))
    for r in range(3):
        assert boot[r] == pytest.approx(bradley_terry(matches[picks[r]], 4), abs=1e-8)


def test_bootstrap_chunking_does_not_change_the_replicates(monkeypatch):
    from mmengine import ratings

    rng = np.random.default_rng(10)
    a, b = round_robin(5, 3)
    matches = np.stack([a, b, rng.choice([0.0, 0.5, 1.0], len(a))], 1)
    whole = bootstrap_ratings(matches, 5, n_boot=7, seed=3)
    monkeypatch.setattr(ratings, "_BOOT_CHUNK", 2 * len(matches) + 1)  # chunks of 2 replicates
    assert np.array_equal(bootstrap_ratings(matches, 5, n_boot=7, seed=3), whole)


# ----------------------------------------------------------------------------- recovery of known strengths


def fisher_standard_errors(true_elo, a, b):
    """Asymptotic standard errors (Elo points) of the centred MLE: pseudo-inverse of the Fisher information."""
    n = len(true_elo)
    p = expected_score(true_elo[a], true_elo[b])
    info = np.zeros((n, n))
    np.add.at(info, (a, b), -p * (1 - p))
    info += info.T
    info[np.diag_indices(n)] = -info.sum(axis=1)
    return ELO_PER_NAT * np.sqrt(np.diag(np.linalg.pinv(info)))


def test_bt_recovers_known_strengths_within_the_error_the_games_allow():
    rng = np.random.default_rng(2024)
    true = np.array([1000.0, 1150.0, 850.0, 1300.0, 950.0, 1050.0, 700.0, 1000.0])
    true += 1000.0 - true.mean()
    a, b = round_robin(len(true), 80)  # 2240 games
    fitted = bradley_terry(np.stack([a, b, simulate(true, a, b, rng)], 1), len(true))
    se = fisher_standard_errors(true, a, b)
    assert se.max() < 40  # the bound below is tight enough to mean something
    assert (np.abs(fitted - true) < 4 * se).all(), (fitted - true, se)
    assert np.argsort(fitted)[[0, -1]].tolist() == [6, 3]  # the weakest and the strongest found


def test_bt_intervals_cover_the_truth_at_about_the_stated_rate():
    """Many simulated round-robin tournaments from known strengths: 95% intervals cover ~95% of them."""
    rng = np.random.default_rng(12345)
    n, tournaments = 6, 250
    a, b = round_robin(n, 10)  # 150 games per tournament
    covered, z, truths, errors = [], [], [], []
    for t in range(tournaments):
        true = rng.normal(0.0, 150.0, n)
        true += 1000.0 - true.mean()  # only differences are identifiable; compare at the same anchor
        matches = np.stack([a, b, simulate(true, a, b, rng)], 1)
        lo, hi = bootstrap_intervals(matches, n, n_boot=200, seed=t)
        covered.append((lo <= true) & (true <= hi))
        error = bradley_terry(matches, n) - true
        z.append(error / fisher_standard_errors(true, a, b))
        truths.append(true - 1000.0)
        errors.append(error)
    coverage = np.mean(covered)
    assert 0.90 <= coverage <= 0.99, coverage
    # errors of the size the number of games allows (mean squared z-score ~ 1) ...
    assert 0.7 < np.mean(np.square(z)) < 1.3
    # ... and no systematic pull towards or away from the mean (the prior's shrinkage is small)
    slope = np.polyfit(np.concatenate(truths), np.concatenate(errors), 1)[0]
    assert abs(slope) < 0.1, slope

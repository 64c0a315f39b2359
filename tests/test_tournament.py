"""mmengine.tournament: schedule balance, match play, standings that rank, results files, entrants file, judges."""
import json
import math
import os
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmengine.config import ConfigError, UserError
from mmengine.ratings import ELO_PER_NAT, bradley_terry, elo, expected_score
from mmengine.tournament import (
    Entrant,
    Judge,
    Match,
    PerplexityJudge,
    format_standings,
    load_entrants,
    play,
    schedule_matches,
    standings,
    unigram_entropy,
    write_results,
)

try:
    import matplotlib  # noqa: F401

    HAVE_MATPLOTLIB = True
except ImportError:  # an optional extra: the results go without ratings.png
    HAVE_MATPLOTLIB = False


def make_entrants(strengths_nat, n_samples, seed=0, higher_is_better=True):
    """Entrants whose judge scores are strength + standard Gumbel noise.

    The difference of two Gumbel variables is logistic, so P(a's sample scores higher) =
    sigmoid(strength_a - strength_b): exactly the Bradley-Terry model, on the natural-log scale.
    """
    rng = np.random.default_rng(seed)
    entrants = []
    for e, strength in enumerate(strengths_nat):
        scores = strength + rng.gumbel(size=n_samples)
        samples = [rng.integers(0, 20, size=int(rng.integers(3, 9))).tolist() for _ in range(n_samples)]
        entrants.append(Entrant(
            name=f"model-{e}", checkpoint=f"out/m{e}/ckpt.pt", sampler={"steps": 8 + e, "temperature": 0.9},
            samples=samples, texts=[f"text {e}.{s}" for s in range(n_samples)],
            judge_scores=scores if higher_is_better else -scores, tokens_per_s=100.0 + e,
        ))
    return entrants


def run_tournament(entrants, *, seed, rounds=4, margin=0.0, higher_is_better=True, n_boot=200):
    schedule = schedule_matches(len(entrants), [len(e.samples) for e in entrants], rounds, seed)
    matches = play(entrants, schedule, margin=margin, higher_is_better=higher_is_better)
    return matches, standings(entrants, matches, seed=seed, higher_is_better=higher_is_better, n_boot=n_boot)


# ----------------------------------------------------------------------------- schedule


@settings(max_examples=80, deadline=None)
@given(n=st.integers(2, 6), counts=st.lists(st.integers(1, 9), min_size=6, max_size=6), rounds=st.integers(1, 5),
       seed=st.integers(0, 2**31))
def test_schedule_is_round_robin_and_uses_every_sample_about_equally(n, counts, rounds, seed):
    counts = counts[:n]
    schedule = schedule_matches(n, counts, rounds, np.random.default_rng(seed))
    pairs = n * (n - 1) // 2
    assert len(schedule) == rounds * pairs
    for r in range(rounds):  # every round: every pair exactly once
        assert sorted((a, b) for a, _, b, _ in schedule[r * pairs:(r + 1) * pairs]) == [
            (a, b) for a in range(n) for b in range(a + 1, n)]
    uses = [np.zeros(c, int) for c in counts]
    for a, i, b, j in schedule:
        assert a < b
        uses[a][i] += 1
        uses[b][j] += 1
    for e in range(n):
        assert uses[e].sum() == rounds * (n - 1)
        assert uses[e].max() - uses[e].min() <= 1, (e, uses[e])


def test_schedule_is_seeded():
    a = schedule_matches(4, 5, 3, 7)
    assert a == schedule_matches(4, 5, 3, np.random.default_rng(7))
    assert a != schedule_matches(4, 5, 3, 8)
    assert all(isinstance(v, int) for match in a for v in match)


@pytest.mark.parametrize(
    "args, msg",
    [
        ((1, 5, 1), "at least two entrants"),
        ((3, 5, 0), "rounds must be a positive integer"),
        ((3, 0, 1), "at least one sample; entrant 0 has 0"),
        ((2, [3, 0], 1), "entrant 1 has 0"),
    ],
)
def test_schedule_errors(args, msg):
    with pytest.raises(UserError, match=msg):
        schedule_matches(*args, rng=0)
    with pytest.raises(ValueError, match="2 counts for 3 entrants"):
        schedule_matches(3, [1, 2], 1, 0)


# ----------------------------------------------------------------------------- play


def entrants_with_scores(*score_lists):
    return [Entrant(f"e{k}", "ck.pt", judge_scores=np.array(s, float), samples=[[1, 2]] * len(s))
            for k, s in enumerate(score_lists)]


def test_play_decides_by_score_and_margin():
    entrants = entrants_with_scores([1.0, 2.0, 3.0], [2.05, 0.5])
    schedule = [(0, 0, 1, 0), (0, 1, 1, 0), (0, 2, 1, 0), (0, 2, 1, 1), (1, 1, 0, 2)]
    assert [m.result for m in play(entrants, schedule, margin=0.1, higher_is_better=True)] == [
        "b", "draw", "a", "a", "b"]
    assert [m.result for m in play(entrants, schedule, margin=0.1, higher_is_better=False)] == [
        "a", "draw", "b", "b", "a"]
    assert [m.result for m in play(entrants, schedule, margin=0.0, higher_is_better=True)] == [
        "b", "b", "a", "a", "b"]
    m = play(entrants, schedule, margin=1.0, higher_is_better=True)[2]
    assert m == Match(0, 1, 3.0, 2.05, "draw", 2, 0) and m.points_a == 0.5  # |0.95| < 1
    with pytest.raises(ValueError, match="a match result is one of a, b, draw"):
        Match(0, 1, 1.0, 2.0, "win")


def test_equal_scores_are_a_draw_even_with_margin_zero():
    entrants = entrants_with_scores([1.5], [1.5])
    for hib in (True, False):
        assert play(entrants, [(0, 0, 1, 0)], margin=0.0, higher_is_better=hib)[0].result == "draw"


def test_play_errors():
    entrants = entrants_with_scores([1.0, float("nan")], [2.0])
    with pytest.raises(ValueError, match="sample 1 of entrant 'e0' a score of nan; scores must be finite"):
        play(entrants, [(0, 0, 1, 0)], margin=0.0, higher_is_better=True)
    ok = entrants_with_scores([1.0], [2.0])
    with pytest.raises(ValueError, match="names sample 3 of entrant 1"):
        play(ok, [(0, 0, 1, 3)], margin=0.0, higher_is_better=True)
    with pytest.raises(UserError, match="draw margin must be a finite number >= 0"):
        play(ok, [], margin=-0.1, higher_is_better=True)
    with pytest.raises(ValueError, match="has no judge scores"):
        play([Entrant("x", "c"), ok[0]], [], margin=0.0, higher_is_better=True)


# ----------------------------------------------------------------------------- standings


def test_unigram_entropy():
    assert unigram_entropy([[0, 1], [2, 3]]) == pytest.approx(2.0)
    assert unigram_entropy([[5, 5], [5]]) == 0.0
    assert unigram_entropy([[0, 0], [1, 1]]) == pytest.approx(1.0)  # pooled, not a mean of per-sample entropies
    assert unigram_entropy([[0, 0, 0, 1]]) == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))
    assert math.isnan(unigram_entropy([])) and math.isnan(unigram_entropy([[]]))


def test_standings_by_hand():
    entrants = entrants_with_scores([1.0, 5.0, 3.0, 4.0], [2.0, 2.0], [0.0, 9.0])
    entrants[0].samples = [[1, 1], [1, 2], [3, 4], [5, 6]]
    entrants[0].texts = ["one", "five", "three", "four"]
    entrants[1].elbo_ppl = 12.5
    entrants[2].entropy = 3.25
    matches = [Match(0, 1, 5.0, 2.0, "a", 1, 0), Match(1, 2, 2.0, 2.0, "draw", 0, 0), Match(2, 0, 9.0, 1.0, "a", 1, 0),
               Match(0, 1, 1.0, 2.0, "b", 0, 1)]
    rows = standings(entrants, matches, seed=0, n_boot=100)
    triples = [(m.a, m.b, m.points_a) for m in matches]
    bt, el = bradley_terry(triples, 3), elo(triples, 3)
    assert [r["index"] for r in rows] == list(np.argsort(-bt, kind="stable"))
    by_name = {r["name"]: r for r in rows}
    r0, r1, r2 = by_name["e0"], by_name["e1"], by_name["e2"]
    assert (r0["wins"], r0["draws"], r0["losses"], r0["games"]) == (1, 0, 2, 3)
    assert (r1["wins"], r1["draws"], r1["losses"]) == (1, 1, 1) and (r2["wins"], r2["draws"], r2["losses"]) == (1, 1, 0)
    assert r0["win_rate"] == pytest.approx(1 / 3) and r2["win_rate"] == pytest.approx(0.5)
    assert r0["elo"] == pytest.approx(el[0]) and r0["bt"] == pytest.approx(bt[0])
    for r in rows:
        assert r["bt_ci"][0] <= r["bt"] <= r["bt_ci"][1]
    assert (r0["judge_mean"], r0["judge_min"], r0["judge_max"]) == (3.25, 1.0, 5.0)
    assert [s["score"] for s in r0["top_samples"]] == [5.0, 4.0, 3.0]
    assert [s["text"] for s in r0["worst_samples"]] == ["one", "three", "four"]
    assert r2["top_samples"][0] == {"sample": 1, "score": 9.0, "text": "1 2"}  # ids when there are no texts
    assert "elbo_ppl" in r1 and r1["elbo_ppl"] == 12.5 and "elbo_ppl" not in r0
    assert r2["entropy"] == 3.25 and r0["entropy"] == pytest.approx(unigram_entropy(entrants[0].samples))
    assert r0["sampler"] == {} and r0["checkpoint"] == "ck.pt" and r0["tokens_per_s"] is None
    # lower-is-better judges turn the top and worst samples around
    low = {r["name"]: r for r in standings(entrants, matches, seed=0, n_boot=20, higher_is_better=False)}["e0"]
    assert [s["score"] for s in low["top_samples"]] == [1.0, 3.0, 4.0]


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_tournament_ranks_entrants_of_known_strength(higher_is_better):
    """Scores drawn so that matches follow Bradley-Terry exactly; the ratings must recover the strengths."""
    strengths = np.array([0.0, 0.4, -0.5, 1.2, 0.8])  # natural-log units
    # as many samples as games, so no sample plays twice and the matches are independent
    entrants = make_entrants(strengths, n_samples=200, seed=1, higher_is_better=higher_is_better)
    matches, rows = run_tournament(entrants, seed=3, rounds=50, higher_is_better=higher_is_better)
    assert [r["index"] for r in rows] == [3, 4, 1, 0, 2]
    true_elo = 1000.0 + ELO_PER_NAT * (strengths - strengths.mean())
    fitted = np.array([r["bt"] for r in sorted(rows, key=lambda r: r["index"])])
    # 200 games per entrant: standard error ~ 2 / sqrt(200) nats ~ 25 Elo; allow 4 of them
    assert np.abs(fitted - true_elo).max() < 4 * ELO_PER_NAT * 2 / math.sqrt(200)
    # the empirical win share of each pair agrees with the model
    a = np.array([m.a for m in matches])
    b = np.array([m.b for m in matches])
    points = np.array([m.points_a for m in matches])
    pair = (a == 3) & (b == 4)
    assert points[pair].mean() == pytest.approx(expected_score(true_elo[3], true_elo[4]), abs=0.25)


def test_same_seed_same_results(tmp_path):
    def run(seed, out):
        entrants = make_entrants([0.0, 0.3, 0.6], n_samples=7, seed=0)
        matches, rows = run_tournament(entrants, seed=seed, rounds=5, margin=0.2)
        write_results(out, judge_name="toy", standings=rows, matches=matches, higher_is_better=True,
                      settings={"seed": seed, "rounds": 5, "margin": 0.2})
        return (out / "results.json").read_bytes(), (out / "report.md").read_bytes()

    first = run(11, tmp_path / "a")
    assert first == run(11, tmp_path / "b")
    assert first[0] != run(12, tmp_path / "c")[0]


# ----------------------------------------------------------------------------- results files


@pytest.fixture
def played():
    entrants = make_entrants([0.0, 1.0, 0.5], n_samples=6, seed=2)
    entrants[0].texts[0] = "a text | with a pipe and ``` backticks"
    entrants[1].elbo_ppl = 3.5
    entrants[2].tokens_per_s = None
    matches, rows = run_tournament(entrants, seed=0, rounds=3, margin=0.1)
    return entrants, matches, rows


def test_write_results_files(tmp_path, played):
    entrants, matches, rows = played
    out = tmp_path / "new" / "dir"
    written = write_results(out, judge_name="ar-perplexity", standings=rows, matches=matches, higher_is_better=False,
                            settings={"seed": 0, "margin": 0.1})
    # ratings.png only where matplotlib is installed (an optional extra)
    assert sorted(written) == (["ratings.png"] if HAVE_MATPLOTLIB else []) + ["report.md", "results.json"]
    doc = json.loads((out / "results.json").read_text())
    assert doc["judge"] == "ar-perplexity" and doc["higher_is_better"] is False and doc["settings"]["seed"] == 0
    assert [e["name"] for e in doc["entrants"]] == [r["name"] for r in rows]
    required = {"name", "checkpoint", "sampler", "elo", "bt", "bt_ci", "wins", "draws", "losses", "judge_mean",
                "tokens_per_s", "entropy"}
    for e in doc["entrants"]:
        assert required <= set(e) and len(e["bt_ci"]) == 2
    assert {e["name"]: e.get("elbo_ppl") for e in doc["entrants"]}["model-1"] == 3.5
    assert {e["name"]: e["tokens_per_s"] for e in doc["entrants"]}["model-2"] is None
    assert len(doc["matches"]) == len(matches)
    m0 = doc["matches"][0]
    assert set(m0) >= {"a", "b", "score_a", "score_b", "result"}
    assert m0["a"] == entrants[matches[0].a].name and m0["result"] == matches[0].result
    report = (out / "report.md").read_text()
    assert "Judge: `ar-perplexity` (lower is better)" in report and "| # | entrant | BT |" in report
    for r in rows:
        assert f"### {r['name']}" in report
    assert "````text\na text | with a pipe and ``` backticks\n````" in report  # a fence the text cannot close
    if HAVE_MATPLOTLIB:
        assert (out / "ratings.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_write_results_without_matplotlib(tmp_path, played, monkeypatch):
    _, matches, rows = played
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    written = write_results(tmp_path, judge_name="j", standings=rows, matches=matches)
    assert sorted(written) == ["report.md", "results.json"] and not (tmp_path / "ratings.png").exists()


def test_write_results_never_leaves_half_files(tmp_path, played, monkeypatch):
    _, matches, rows = played
    write_results(tmp_path, judge_name="first", standings=rows, matches=matches)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    from mmengine import tournament

    def broken_plot(*args, **kwargs):
        raise RuntimeError("plot failed")

    monkeypatch.setattr(tournament, "plot_ratings", broken_plot)
    with pytest.raises(RuntimeError, match="plot failed"):  # rendering fails: nothing is touched
        write_results(tmp_path, judge_name="second", standings=rows, matches=matches)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    monkeypatch.undo()

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):  # writing fails: the old file stays whole, no temp files
        write_results(tmp_path, judge_name="second", standings=rows, matches=matches)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_write_results_refuses_a_file_as_folder(tmp_path, played):
    _, matches, rows = played
    target = tmp_path / "results"
    target.write_text("keep me")
    with pytest.raises(UserError, match="is not a folder"):
        write_results(target, judge_name="j", standings=rows, matches=matches)
    assert target.read_text() == "keep me"


def test_console_table_is_sorted_by_bt(played):
    _, _, rows = played
    table = format_standings(list(reversed(rows)))
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["#", "entrant", "BT", "BT"] and len(lines) == 2 + len(rows)
    names_in_order = [line.split()[1] for line in lines[2:]]
    assert names_in_order == [r["name"] for r in sorted(rows, key=lambda r: -r["bt"])]
    assert len({len(line) for line in lines}) == 1  # fixed width


# ----------------------------------------------------------------------------- entrants file


def test_load_entrants_inline_and_sub_table(tmp_path):
    path = tmp_path / "entrants.toml"
    path.write_text(
        '[[entrant]]\nname = "fast"\ncheckpoint = "out/a.pt"\nsample = { steps = 16, temperature = 0.9 }\n\n'
        '[[entrant]]\nname = "slow"\ncheckpoint = "out/a.pt"\n[entrant.sample]\nsteps = 128\n'
        'remasking = { strategy = "inspector", threshold = 0.5 }\n\n'
        '[[entrant]]\nname = "defaults"\ncheckpoint = "out/b.pt"\n'
    )
    entrants = load_entrants(path)
    assert [e.name for e in entrants] == ["fast", "slow", "defaults"]
    assert entrants[0].sampler == {"steps": 16, "temperature": 0.9}
    assert entrants[1].sampler == {"steps": 128, "remasking": {"strategy": "inspector", "threshold": 0.5}}
    assert entrants[2].sampler == {} and entrants[2].checkpoint == "out/b.pt"
    assert isinstance(entrants[0], Entrant) and entrants[0].samples == [] and entrants[0].judge_scores is None


TWO = '[[entrant]]\nname = "a"\ncheckpoint = "a.pt"\n[[entrant]]\nname = "b"\ncheckpoint = "b.pt"\n'


@pytest.mark.parametrize(
    "text, msg",
    [
        ('[[entrant]]\nname = "a"\ncheckpoint = "a.pt"\nsampler = {steps = 3}\n' + TWO,
         r"entrant 1 \('a'\): unknown key 'sampler' \(did you mean 'sample'\?\); valid keys are name, checkpoint"),
        (TWO + '[[entrant]]\nname = "a"\ncheckpoint = "c.pt"\n', "entrants 1 and 3 are both named 'a'"),
        (TWO + '[[entrant]]\ncheckpoint = "c.pt"\n', "entrant 3: name is missing"),
        (TWO + '[[entrant]]\nname = ""\ncheckpoint = "c.pt"\n', "name must be a non-empty string"),
        (TWO + '[[entrant]]\nname = "c"\ncheckpoint = 3\n', "checkpoint must be a non-empty string, got 3"),
        (TWO + '[[entrant]]\nname = "c"\ncheckpoint = "c.pt"\nsample = 5\n', "sample must be a table"),
        ('[entrant]\nname = "a"\ncheckpoint = "a.pt"\n', r"must be an array of tables; start each entrant with \[\["),
        ('entrants = []\n' + TWO, r"unknown top-level key 'entrants' \(did you mean 'entrant'\?\)"),
        ("", r"has no \[\[entrant\]\] tables"),
        ('[[entrant]]\nname = "a"\ncheckpoint = "a.pt"\n', "lists 1 entrant; a tournament needs at least two"),
        ('[[entrant]]\nname = "a\n', "is not valid TOML"),
    ],
)
def test_load_entrants_errors(tmp_path, text, msg):
    path = tmp_path / "entrants.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=msg) as info:
        load_entrants(path)
    assert "\n" not in str(info.value)  # one sentence


def test_load_entrants_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="entrants file .*missing.toml' does not exist"):
        load_entrants(tmp_path / "missing.toml")


# ----------------------------------------------------------------------------- judges


def tiny_ar(block_size=8, vocab_size=13, use_rope=True, seed=0):
    from mmengine.model import GPT, GPTConfig

    torch.manual_seed(seed)
    model = GPT(GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=2, n_head=2, n_embd=16,
                          attention_type="causal", use_rope=use_rope))
    with torch.no_grad():
        model.transformer.wte.weight.mul_(20.0)  # spread the predictions so that perplexities differ
    return model.eval()


def reference_perplexity(model, ids, stride):
    """One forward per token, with the documented context x[k * stride : t]; log-softmax and gather."""
    C = model.config.block_size
    total = 0.0
    for t in range(1, len(ids)):
        k = max(0, math.ceil((t - C + 1) / stride))
        x = torch.tensor([ids[k * stride:t + 1]])
        with torch.no_grad():
            logits, _ = model(x, torch.full_like(x, -1))  # (1, T, V): the full-logits path of forward
        total += torch.log_softmax(logits[0, -2].double(), dim=-1)[ids[t]].item()  # position t-1 predicts t
    return math.exp(-total / (len(ids) - 1))


@pytest.mark.parametrize("use_rope", [True, False])
@pytest.mark.parametrize("stride, batch_size", [(None, 3), (1, 2), (3, 1), (7, 16)])
def test_perplexity_judge_matches_an_eager_reference(use_rope, stride, batch_size):
    model = tiny_ar(use_rope=use_rope)
    rng = np.random.default_rng(0)
    samples = [rng.integers(0, 13, size=n).tolist() for n in (2, 3, 8, 9, 17, 30)]  # block_size 8
    judge = PerplexityJudge(model, stride=stride, batch_size=batch_size)
    got = judge.score(samples)
    want = [reference_perplexity(model, s, judge.stride) for s in samples]
    assert got.dtype == np.float64 and got.shape == (6,)
    assert got == pytest.approx(want, rel=1e-5)
    assert np.ptp(got) > 1.0  # the samples do get different scores
    assert not model.training


def test_perplexity_windows_score_every_token_once_with_enough_context():
    judge = PerplexityJudge(tiny_ar(block_size=8), stride=3)
    for length in range(2, 40):
        scored = []
        for start, end, first in judge.windows(length):
            assert end - start <= 8 and start < first
            if start > 0:
                assert first - start >= 8 - 3  # at least C - stride tokens of context
            scored += range(first, end)
        assert scored == list(range(1, length))


def test_perplexity_judge_is_a_judge_and_a_better_model_scores_lower():
    model = tiny_ar()
    judge = PerplexityJudge(model)
    assert isinstance(judge, Judge) and judge.higher_is_better is False and judge.name == "ar-perplexity"
    # the model's own greedy continuation is more likely under it than random tokens
    greedy = [3]
    with torch.no_grad():
        for _ in range(15):
            logits, _ = model(torch.tensor([greedy[-8:]]))
            greedy.append(int(logits[0, -1].argmax()))
    random_ids = np.random.default_rng(1).integers(0, 13, size=16).tolist()
    ppl = judge.score([greedy, random_ids])
    assert ppl[0] < ppl[1]


def test_perplexity_judge_errors():
    from mmengine.model import GPT, GPTConfig

    bidirectional = GPT(GPTConfig(block_size=8, vocab_size=13, n_layer=1, n_head=2, n_embd=16))
    with pytest.raises(UserError, match="needs an autoregressive language model.*bidirectional attention"):
        PerplexityJudge(bidirectional)
    scorer = GPT(GPTConfig(block_size=8, vocab_size=13, n_layer=1, n_head=2, n_embd=16, mode="sequence_scorer"))
    with pytest.raises(UserError, match="sequence_scorer"):
        PerplexityJudge(scorer)
    with pytest.raises(UserError, match=r"stride must be an integer in \[1, 7\]"):
        PerplexityJudge(tiny_ar(), stride=8)
    with pytest.raises(UserError, match="batch_size"):
        PerplexityJudge(tiny_ar(), batch_size=0)
    judge = PerplexityJudge(tiny_ar())
    with pytest.raises(UserError, match="at least 2 tokens; sample 1 has 1"):
        judge.score([[1, 2], [3]])
    with pytest.raises(UserError, match="sample 0 holds token id 13, outside the judge's vocabulary of 13 ids"):
        judge.score([[1, 13]])


def test_any_object_with_the_protocol_is_a_judge():
    class Length:
        name = "length"
        higher_is_better = True

        def score(self, samples):
            return np.array([len(s) for s in samples], float)

    assert isinstance(Length(), Judge) and not isinstance(object(), Judge)


# ----------------------------------------------------------------------------- tournament file and settings


def test_read_tournament_file_with_settings_shared_sample_and_entrants(tmp_path):
    from mmengine.tournament import TournamentConfig, read_tournament_file

    path = tmp_path / "t.toml"
    path.write_text('[tournament]\njudge = "j.pt"\nground_truth = true\nmargin = 1\n\n[sample]\nlength = 64\n\n'
                    '[[entrant]]\nname = "a"\ncheckpoint = "a.pt"\ndata_dir = "data/nano"\n\n'
                    '[[entrant]]\nname = "b"\ncheckpoint = "a.pt"\nsample = { temperature = 0.5 }\n')
    doc = read_tournament_file(path)
    assert doc.settings == TournamentConfig(judge="j.pt", ground_truth=True, margin=1.0)
    assert isinstance(doc.settings.margin, float) and doc.sample == {"length": 64}
    assert [(e.name, e.checkpoint, e.sampler, e.data_dir) for e in doc.entrants] == [
        ("a", "a.pt", {}, "data/nano"), ("b", "a.pt", {"temperature": 0.5}, "")]
    only_settings = tmp_path / "s.toml"
    only_settings.write_text('[tournament]\nsamples_per_model = 4\n')
    assert read_tournament_file(only_settings).entrants == []  # the entrants may come from the command line


@pytest.mark.parametrize(
    "text, msg",
    [
        ('[tournament]\njudg = "j.pt"\n', r"unknown key 'tournament.judg' \(did you mean 'tournament.judge'\?\)"),
        ('[tournament]\nsamples_per_model = "many"\n', "tournament.samples_per_model must be an integer"),
        ('[tournament]\nground_truth = 1\n', "tournament.ground_truth must be true or false"),
        ('tournament = 3\n', r"'tournament' must be a table \(\[tournament\]\)"),
        ('sample = 3\n', r"'sample' must be a table of sampler settings"),
        ('[[entrant]]\nname = "a"\ncheckpoint = "a.pt"\ndata_dir = 3\n', "data_dir must be a string"),
        ('[touranment]\n', r"unknown top-level key 'touranment' \(did you mean 'tournament'\?\)"),
    ],
)
def test_read_tournament_file_errors(tmp_path, text, msg):
    from mmengine.tournament import read_tournament_file

    path = tmp_path / "t.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=msg) as info:
        read_tournament_file(path)
    assert "\n" not in str(info.value) and "tournament file" in str(info.value)


@pytest.mark.parametrize(
    "changes, msg",
    [
        ({"samples_per_model": 0}, "samples_per_model must be at least 1"),
        ({"rounds": -1}, "rounds must be at least 0"),
        ({"seed": -1}, "seed must be at least 0"),
        ({"bootstrap": 0}, "bootstrap must be at least 1"),
        ({"margin": -0.5}, "margin must be a finite number >= 0"),
        ({"margin": float("inf")}, "margin must be a finite number >= 0"),
        ({"judge_kind": "perplexty"}, r"judge_kind must be one of .* \(did you mean 'perplexity'\?\)"),
        ({"device": "gpu"}, "device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
        ({"out": " "}, "out must name a folder"),
    ],
)
def test_tournament_settings_are_validated(changes, msg):
    import dataclasses

    from mmengine.tournament import TournamentConfig

    assert TournamentConfig().validate() == TournamentConfig()
    with pytest.raises(ConfigError, match=msg):
        dataclasses.replace(TournamentConfig(), **changes).validate()


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), length=st.integers(1, 40), count=st.integers(1, 30), seed=st.integers(0, 2**31))
def test_ground_truth_starts_are_distinct_seeded_windows_inside_the_split(n, length, count, seed):
    from mmengine.tournament import ground_truth_starts

    if n - length + 1 < count:
        with pytest.raises(UserError, match=f"too few for {count} distinct ground-truth windows of {length} tokens"):
            ground_truth_starts(n, length, count, seed)
        return
    starts = ground_truth_starts(n, length, count, seed)
    assert len(starts) == count == len(set(starts.tolist())) and list(starts) == sorted(starts)
    assert starts.min() >= 0 and starts.max() + length <= n
    assert np.array_equal(starts, ground_truth_starts(n, length, count, seed))

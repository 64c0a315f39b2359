"""The tournament: settings, entrants, the match schedule, standings and the results files.

An **entrant** is an LM checkpoint plus its sampler settings (or, with ``ground_truth``, real
validation text). A run (:mod:`mmengine.tournament_run`) generates samples for every entrant, a
**judge** (:mod:`mmengine.judges`) scores every sample once, and entrants then meet in **matches**:
round-robin over every pair, each side represented by one of its samples (:func:`schedule_matches`
uses every sample of an entrant about equally often), and the judge's scores decide (:func:`play`:
a draw when they differ by less than a margin). :func:`standings` turns the matches into Elo and
Bradley-Terry ratings with bootstrap intervals (:mod:`mmengine.ratings`) plus per-entrant figures,
and :func:`write_results` writes ``results.json``, ``report.md`` and ``ratings.png``.

Tournament file (TOML), read by :func:`read_tournament_file`: a ``[tournament]`` table
(:class:`TournamentConfig`), a ``[sample]`` table of sampler settings shared by every entrant, and
the entrants::

    [tournament]
    judge = "out-ar/ckpt.pt"
    ground_truth = true

    [sample]
    length = 128

    [[entrant]]
    name = "mdlm-small"
    checkpoint = "out/small/ckpt.pt"      # relative paths are relative to the working directory
    sample = { steps = 64, temperature = 0.9 }

    [[entrant]]
    name = "mdlm-small-lowtemp"
    checkpoint = "out/small/ckpt.pt"
    [entrant.sample]
    steps = 64
    temperature = 0.7

An entrant may also name the ``data_dir`` whose vocabulary its checkpoint uses (nanoGPT and
earlier-trainer files store none). The sampler settings stay plain dicts here; the run validates
them (as :class:`mmengine.generate.SampleConfig`) before it loads any model.

numpy only: no torch import (the judges import it when they score).
"""
from __future__ import annotations

import dataclasses
import difflib
import io
import json
import logging
import math
import os
import secrets
import sys
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmengine import ratings
from mmengine.errors import ConfigError, UserError
from mmengine.judges import JUDGE_KINDS, Judge, PerplexityJudge  # Judge and PerplexityJudge are re-exported
from mmengine.schema import check_value, option

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

logger = logging.getLogger(__name__)

__all__ = [
    "GROUND_TRUTH",
    "Entrant",
    "Judge",
    "Match",
    "PerplexityJudge",
    "TournamentConfig",
    "TournamentFile",
    "format_standings",
    "ground_truth_starts",
    "load_entrants",
    "play",
    "plot_ratings",
    "read_tournament_file",
    "render_report",
    "results_document",
    "schedule_matches",
    "standings",
    "unigram_entropy",
    "write_results",
]

RESULTS = ("a", "b", "draw")
#: Points of side a for each result, as :mod:`mmengine.ratings` takes them.
POINTS = {"a": 1.0, "draw": 0.5, "b": 0.0}


# -----------------------------------------------------------------------------
# Settings: the [tournament] table

JUDGE_DIRECTIONS = ("auto", "higher", "lower")
JUDGE_AGGREGATES = ("mean", "min", "max")
#: The name of the entrant that stands for real text (``ground_truth = true``).
GROUND_TRUTH = "ground_truth"


@dataclass
class TournamentConfig:
    """[tournament] rank generators by a judge: the judge, the matches, the outputs."""

    judge: str = option("", "Judge checkpoint: a sequence scorer, an autoregressive LM (generative perplexity) or "
                            "any language model (self-confidence).")
    judge_kind: str = option("auto", "'auto' (a sequence scorer judges as 'scorer', an autoregressive LM as "
                                     "'perplexity', a masked-diffusion LM as 'self_confidence'), 'scorer', "
                                     "'perplexity' (lower is better) or 'self_confidence' (mean log-probability "
                                     "under the judge LM; higher is better).", choices=JUDGE_KINDS)
    judge_direction: str = option("auto", "Scorer judges: is a high score good: 'auto' (as the scorer's checkpoint "
                                          "records), 'higher' or 'lower'.", choices=JUDGE_DIRECTIONS)
    judge_aggregate: str = option("mean", "Scorer judges: how the windows of a sample longer than the scorer's "
                                          "context combine: 'mean', 'min' or 'max'.", choices=JUDGE_AGGREGATES)
    ground_truth: bool = option(False, f"Add the entrant '{GROUND_TRUTH}': samples_per_model windows of real "
                                       "validation text, each as long as the first entrant's samples.")
    samples_per_model: int = option(16, "Samples each entrant generates (one batched, seeded sampler call).")
    rounds: int = option(0, "Round-robin rounds (every pair meets once per round); 0 = enough for every sample to play "
                            "about once: ceil(samples_per_model / (entrants - 1)).")
    margin: float = option(0.0, "A match is a draw when the two judge scores differ by less than this (judge units).")
    seed: int = option(0, "Seed of the samplers (unless an entrant's sample table sets its own seed), the ground-truth "
                          "windows, the match schedule (and so the Elo order) and the bootstrap.")
    bootstrap: int = option(1000, "Bootstrap resamples of the matches behind each Bradley-Terry interval.")
    elbo: bool = option(True, "Also evaluate each masked-diffusion entrant's ELBO perplexity bound on its validation "
                              "set (python -m mmengine.evaluate CKPT --unmasking.objective=continuous_time).")
    data_dir: str = option("", "Data dir whose vocabulary, tokenizer and validation text the checkpoints use "
                               "(default: the one each checkpoint stores; nanoGPT and earlier-trainer files store "
                               "none).")
    out: str = option("out/tournament", "Folder for results.json, report.md and ratings.png.")
    device: str = option("auto", "'auto' (CUDA when there is one), 'cpu', 'cuda' or 'cuda:N'.")
    progress: bool = option(True, "Progress bars over generation, judging and matches on stderr when it is a terminal.")

    def validate(self) -> TournamentConfig:
        """Raise ConfigError naming the first value that cannot work; returns self."""
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                value = getattr(self, f.name)
                raise ConfigError(f"tournament.{f.name} must be one of {', '.join(map(repr, choices))}, got {value!r}"
                                  f"{_did_you_mean(str(value), list(choices))}.")
        for name, low in (("samples_per_model", 1), ("rounds", 0), ("seed", 0), ("bootstrap", 1)):
            if getattr(self, name) < low:
                raise ConfigError(f"tournament.{name} must be at least {low}, got {getattr(self, name)}.")
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise ConfigError(f"tournament.margin must be a finite number >= 0, got {self.margin}.")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"tournament.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}.")
        if not self.out.strip():
            raise ConfigError("tournament.out must name a folder for the results.")
        return self


def tournament_fields() -> dict[str, Any]:
    """Field name -> type of the [tournament] table."""
    return typing.get_type_hints(TournamentConfig)


def set_tournament_value(cfg: TournamentConfig, name: str, value: Any, source: str) -> None:
    """Set ``tournament.<name>`` from a TOML value; an unknown key or a wrong type raises ConfigError naming
    ``source``."""
    types = tournament_fields()
    if name not in types:
        raise ConfigError(f"{source}: unknown key 'tournament.{name}'"
                          f"{_did_you_mean('tournament.' + name, ['tournament.' + n for n in types])}.")
    try:
        setattr(cfg, name, check_value(f"tournament.{name}", types[name], value))
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


# -----------------------------------------------------------------------------
# Entrants


@dataclass
class Entrant:
    """One competitor: an LM checkpoint and its sampler settings, plus what a run fills in.

    ``checkpoint`` is None for the ground-truth entrant (real validation text); ``data_dir`` names
    the data whose vocabulary the checkpoint uses ("" = the one it stores, or the tournament's).

    Fields filled by a run:
        samples: the generated token-id lists.
        texts: the decoded samples (same order), for the report.
        judge_scores: the judge's score of each sample (float array, same order).
        tokens_per_s: generated tokens per second of wall time.
        entropy: unigram entropy of the samples in bits per token (:func:`unigram_entropy`).
        elbo_ppl: for a masked-diffusion LM, the ELBO perplexity bound on the validation set.
    """

    name: str
    checkpoint: str | None
    sampler: dict = field(default_factory=dict)
    data_dir: str = ""
    samples: list[list[int]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    judge_scores: np.ndarray | None = None
    tokens_per_s: float | None = None
    entropy: float | None = None
    elbo_ppl: float | None = None


def unigram_entropy(samples: Sequence[Sequence[int]]) -> float:
    """Entropy in bits per token of the token frequencies pooled over all ``samples``; NaN with no tokens.

    ``H = -sum_v p_v log2 p_v`` with ``p_v`` the share of token v among all tokens of all samples
    (not a mean of per-sample entropies). A collapsing sampler (repetition) scores low. It is the
    plug-in estimate, biased low by about ``(K - 1) / (2 N ln 2)`` bits for K distinct tokens in N
    tokens, so compare entrants with the same number and length of samples.
    """
    chunks = [np.asarray(s, dtype=np.int64).reshape(-1) for s in samples]
    ids = np.concatenate(chunks) if chunks else np.zeros(0, np.int64)
    if ids.size == 0:
        return float("nan")
    _, counts = np.unique(ids, return_counts=True)
    p = counts / ids.size
    return float(-(p * np.log2(p)).sum())


ENTRANT_KEYS = ("name", "checkpoint", "sample", "data_dir")
FILE_TABLES = ("tournament", "sample", "entrant")


@dataclass
class TournamentFile:
    """A tournament file read by :func:`read_tournament_file`.

    Fields:
        settings: the ``[tournament]`` table over the defaults (not yet validated as a whole:
            command-line overrides may still change it).
        sample: the ``[sample]`` table, sampler settings every entrant starts from.
        entrants: the ``[[entrant]]`` tables in file order (possibly none).
    """

    settings: TournamentConfig
    sample: dict
    entrants: list[Entrant]


def _read_toml(p: Path, what: str) -> dict:
    if not p.is_file():
        raise ConfigError(f"{what} '{p}' does not exist.")
    try:
        return tomllib.loads(p.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{what} '{p}' is not UTF-8 text.") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{what} '{p}' is not valid TOML: {e}.") from None


def _entrant(table: dict, number: int, where: str) -> Entrant:
    for key in table:
        if key not in ENTRANT_KEYS:
            raise ConfigError(f"{where}: unknown key '{key}'{_did_you_mean(key, list(ENTRANT_KEYS))}; "
                              f"valid keys are {', '.join(ENTRANT_KEYS)}.")
    for key in ("name", "checkpoint"):
        if key not in table:
            raise ConfigError(f"{where}: {key} is missing.")
        value = table[key]
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where}: {key} must be a non-empty string, got {value!r}.")
    sample = table.get("sample", {})
    if not isinstance(sample, dict):
        raise ConfigError(f"{where}: sample must be a table of sampler settings, like sample = {{ steps = 64 }} "
                          f"or an [entrant.sample] table, got {sample!r}.")
    data_dir = table.get("data_dir", "")
    if not isinstance(data_dir, str):
        raise ConfigError(f"{where}: data_dir must be a string (a data dir path), got {data_dir!r}.")
    return Entrant(name=table["name"], checkpoint=table["checkpoint"], sampler=sample, data_dir=data_dir)


def read_tournament_file(path: str | Path, *, what: str = "tournament file") -> TournamentFile:
    """Read a tournament file (see the module docstring); mistakes raise ConfigError in one sentence.

    Refused: a missing or malformed file, top-level keys other than ``[tournament]``, ``[sample]``
    and ``[[entrant]]``, unknown ``[tournament]`` keys and wrong types, entrant keys other than
    ``name``, ``checkpoint``, ``sample`` and ``data_dir``, empty or non-string names and
    checkpoints, a ``sample`` that is not a table, and duplicate names. ``what`` names the file in
    messages.
    """
    p = Path(path)
    doc = _read_toml(p, what)
    for key in doc:
        if key not in FILE_TABLES:
            raise ConfigError(f"{what} '{p}': unknown top-level key '{key}'{_did_you_mean(key, list(FILE_TABLES))}; "
                              "the file holds a [tournament] table, a [sample] table and [[entrant]] tables with name, "
                              "checkpoint and sample.")
    settings = TournamentConfig()
    table = doc.get("tournament", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{what} '{p}': 'tournament' must be a table ([tournament]), got {table!r}.")
    for name, value in table.items():
        set_tournament_value(settings, name, value, f"{what} '{p}'")
    sample = doc.get("sample", {})
    if not isinstance(sample, dict):
        raise ConfigError(f"{what} '{p}': 'sample' must be a table of sampler settings ([sample]), got {sample!r}.")
    tables = doc.get("entrant", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{what} '{p}': 'entrant' must be an array of tables; start each entrant with [[entrant]].")
    entrants: list[Entrant] = []
    seen: dict[str, int] = {}
    for number, table in enumerate(tables, start=1):
        where = f"{what} '{p}', entrant {number}"
        if isinstance(table.get("name"), str) and table["name"].strip():
            where += f" ('{table['name']}')"
        entrant = _entrant(table, number, where)
        if entrant.name in seen:
            raise ConfigError(f"{what} '{p}': entrants {seen[entrant.name]} and {number} are both named "
                              f"'{entrant.name}'; names must be unique.")
        seen[entrant.name] = number
        entrants.append(entrant)
    return TournamentFile(settings=settings, sample=sample, entrants=entrants)


def load_entrants(path: str | Path) -> list[Entrant]:
    """The entrants of a tournament file that must list at least two (see :func:`read_tournament_file`).

    Besides what :func:`read_tournament_file` refuses: a file without ``[[entrant]]`` tables and
    one with a single entrant.
    """
    p = Path(path)
    doc = read_tournament_file(p, what="entrants file")
    if not doc.entrants:
        raise ConfigError(f"entrants file '{p}' has no [[entrant]] tables.")
    if len(doc.entrants) < 2:
        raise ConfigError(f"entrants file '{p}' lists {len(doc.entrants)} entrant; a tournament needs at least two.")
    return doc.entrants


def ground_truth_starts(n_tokens: int, length: int, count: int, seed: int) -> np.ndarray:
    """``count`` distinct window starts of ``length`` tokens in a split of ``n_tokens``, drawn with ``seed`` (sorted).

    One sentence when the split holds fewer than ``count`` distinct windows.
    """
    positions = n_tokens - length + 1
    if length < 1 or positions < count:
        raise UserError(f"the validation split has {n_tokens} tokens, too few for {count} distinct ground-truth "
                        f"windows of {length} tokens; lower tournament.samples_per_model or the sample length.")
    rng = np.random.default_rng([int(seed), 0x67_74])  # a stream of its own: not the schedule's draws
    return np.sort(rng.choice(positions, size=count, replace=False))


def _did_you_mean(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


# -----------------------------------------------------------------------------
# Matches


def schedule_matches(n_entrants: int, samples_per_entrant: int | Sequence[int], rounds: int,
                     rng: np.random.Generator | int) -> list[tuple[int, int, int, int]]:
    """The matches of a tournament as ``(a, i, b, j)``: sample i of entrant a meets sample j of entrant b.

    Round-robin: each of the ``rounds`` rounds has every pair ``a < b`` meet once, in a random
    order per round. Each entrant's samples are dealt from shuffled decks (a fresh permutation of
    its samples whenever the previous one is used up), so after the schedule every sample of an
    entrant has played ``floor(g / n)`` or ``ceil(g / n)`` times, where g = ``rounds * (n_entrants - 1)``
    games and n = its number of samples. ``samples_per_entrant`` is one count for all or one per
    entrant. ``rng`` (a Generator or a seed) fixes the whole schedule and thus the Elo order.
    """
    if isinstance(n_entrants, bool) or not isinstance(n_entrants, (int, np.integer)) or n_entrants < 2:
        raise UserError(f"a tournament needs at least two entrants, got {n_entrants!r}.")
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 1:
        raise UserError(f"rounds must be a positive integer, got {rounds!r}.")
    counts = [samples_per_entrant] * n_entrants if np.ndim(samples_per_entrant) == 0 else list(samples_per_entrant)
    if len(counts) != n_entrants:
        raise ValueError(f"samples_per_entrant has {len(counts)} counts for {n_entrants} entrants")
    for e, c in enumerate(counts):
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 1:
            raise UserError(f"every entrant needs at least one sample; entrant {e} has {c!r}.")
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    pairs = [(a, b) for a in range(n_entrants) for b in range(a + 1, n_entrants)]
    order = np.concatenate([rng.permutation(len(pairs)) for _ in range(rounds)])
    games = rounds * (n_entrants - 1)
    decks = [np.concatenate([rng.permutation(c) for _ in range(-(-games // c))]).tolist() for c in counts]
    dealt = [0] * n_entrants
    schedule = []
    for p in order.tolist():
        a, b = pairs[p]
        i, j = decks[a][dealt[a]], decks[b][dealt[b]]
        dealt[a] += 1
        dealt[b] += 1
        schedule.append((a, i, b, j))
    return schedule


@dataclass(frozen=True)
class Match:
    """One played match between entrants a and b (indices); ``result`` is "a", "b" or "draw"."""

    a: int
    b: int
    score_a: float
    score_b: float
    result: str
    sample_a: int | None = None
    sample_b: int | None = None

    def __post_init__(self):
        if self.result not in RESULTS:
            raise ValueError(f"a match result is one of {', '.join(RESULTS)}; got {self.result!r}")

    @property
    def points_a(self) -> float:
        """1, 0.5 or 0: the result for a as :mod:`mmengine.ratings` takes it."""
        return POINTS[self.result]


def _scores_of(entrant: Entrant, position: int) -> np.ndarray:
    if entrant.judge_scores is None:
        raise ValueError(f"entrant {position} ('{entrant.name}') has no judge scores; score its samples first")
    scores = np.asarray(entrant.judge_scores, dtype=np.float64).reshape(-1)
    bad = ~np.isfinite(scores)
    if bad.any():
        raise ValueError(f"the judge gave sample {int(np.flatnonzero(bad)[0])} of entrant '{entrant.name}' "
                         f"a score of {scores[bad][0]}; scores must be finite")
    return scores


def play(entrants: Sequence[Entrant], schedule, *, margin: float, higher_is_better: bool,
         progress: bool = False) -> list[Match]:
    """Decide each scheduled match ``(a, i, b, j)`` from the judge scores of the two samples.

    A draw when ``|score_a - score_b| < margin`` (and always when the scores are equal, also with
    margin 0); otherwise the side with the better score wins (higher or lower, per the judge).
    ``progress`` shows a bar over the matches on stderr.
    """
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not (math.isfinite(margin) and margin >= 0):
        raise UserError(f"the draw margin must be a finite number >= 0, got {margin!r}.")
    scores = [_scores_of(e, k) for k, e in enumerate(entrants)]
    matches = []
    if progress:
        from tqdm import tqdm

        schedule = tqdm(schedule, desc="matches", unit="match", file=sys.stderr, leave=False)
    for m, (a, i, b, j) in enumerate(schedule):
        for e, s in ((a, i), (b, j)):
            if not (0 <= e < len(entrants) and 0 <= s < len(scores[e])):
                raise ValueError(f"scheduled match {m} names sample {s} of entrant {e}, which does not exist")
        sa, sb = float(scores[a][i]), float(scores[b][j])
        diff = sa - sb
        if diff == 0.0 or abs(diff) < margin:
            result = "draw"
        else:
            result = "a" if (diff > 0) == bool(higher_is_better) else "b"
        matches.append(Match(int(a), int(b), sa, sb, result, int(i), int(j)))
    return matches


# -----------------------------------------------------------------------------
# Standings


def _sample_entries(entrant: Entrant, scores: np.ndarray, order: np.ndarray) -> list[dict]:
    entries = []
    for s in order.tolist():
        if s < len(entrant.texts):
            text = entrant.texts[s]
        else:  # no decoded text: show the ids
            text = " ".join(map(str, entrant.samples[s])) if s < len(entrant.samples) else ""
        entries.append({"sample": int(s), "score": float(scores[s]), "text": text})
    return entries


def _optional_float(value) -> float | None:
    return None if value is None else float(value)


def standings(entrants: Sequence[Entrant], matches: Sequence[Match], *, seed: int, higher_is_better: bool = True,
              k: float = 32.0, n_boot: int = 1000, level: float = 0.95, prior_sd: float = ratings.DEFAULT_PRIOR_SD,
              n_shown: int = 3) -> list[dict]:
    """Per-entrant results, best Bradley-Terry rating first (ties: entrant order).

    Each row: ``index`` (position in ``entrants``), ``name``, ``checkpoint``, ``sampler``, ``elo``
    (K = ``k``, start 1000, matches in the given order), ``bt`` and ``bt_ci`` [lo, hi] (bootstrap
    percentile interval at ``level`` from ``n_boot`` resamples seeded by ``seed``), ``wins``,
    ``draws``, ``losses``, ``games``, ``win_rate`` (wins / games), ``judge_mean``, ``judge_min``,
    ``judge_max``, ``tokens_per_s``, ``entropy`` (the entrant's, else :func:`unigram_entropy` of its
    samples), ``elbo_ppl`` when known, and ``top_samples`` / ``worst_samples``: the ``n_shown``
    best and worst samples by judge score (``{sample, score, text}``, best or worst first).
    """
    n = len(entrants)
    triples = [(m.a, m.b, m.points_a) for m in matches]
    elo = ratings.elo(triples, n, k=k)
    bt = ratings.bradley_terry(triples, n, prior_sd=prior_sd)
    lo, hi = ratings.bootstrap_intervals(triples, n, n_boot=n_boot, level=level, seed=seed, prior_sd=prior_sd)
    wins, draws, losses = ratings.record(triples, n)
    rate = ratings.win_rate(wins, draws, losses)
    rows = []
    for e, entrant in enumerate(entrants):
        scores = _scores_of(entrant, e) if entrant.judge_scores is not None else np.zeros(0)
        # stable sorts: ties keep sample order, so the shown samples are deterministic
        best_first = np.argsort(-scores if higher_is_better else scores, kind="stable")
        worst_first = np.argsort(scores if higher_is_better else -scores, kind="stable")
        entropy = entrant.entropy if entrant.entropy is not None else unigram_entropy(entrant.samples)
        row = {
            "index": e,
            "name": entrant.name,
            "checkpoint": entrant.checkpoint,
            "sampler": dict(entrant.sampler),
            "elo": float(elo[e]),
            "bt": float(bt[e]),
            "bt_ci": [float(lo[e]), float(hi[e])],
            "wins": int(wins[e]),
            "draws": int(draws[e]),
            "losses": int(losses[e]),
            "games": int(wins[e] + draws[e] + losses[e]),
            "win_rate": float(rate[e]),
            "judge_mean": float(scores.mean()) if scores.size else None,
            "judge_min": float(scores.min()) if scores.size else None,
            "judge_max": float(scores.max()) if scores.size else None,
            "tokens_per_s": _optional_float(entrant.tokens_per_s),
            "entropy": _optional_float(entropy),
        }
        if entrant.elbo_ppl is not None:
            row["elbo_ppl"] = float(entrant.elbo_ppl)
        row["top_samples"] = _sample_entries(entrant, scores, best_first[:n_shown])
        row["worst_samples"] = _sample_entries(entrant, scores, worst_first[:n_shown])
        rows.append(row)
    return sorted(rows, key=lambda r: (-r["bt"], r["index"]))


# -----------------------------------------------------------------------------
# Results: console table, report.md, ratings.png, results.json


def _fmt(value, spec: str = ".1f") -> str:
    """A number for a table; '-' for unknown (None or NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def _fmt_score(value) -> str:
    return _fmt(value, ".4g")


def _table_rows(rows: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and cells shared by the console table and report.md."""
    header = ["#", "entrant", "BT", "BT interval", "Elo", "W", "D", "L", "win %", "judge mean", "judge min",
              "judge max", "tokens/s", "entropy", "ELBO ppl"]
    cells = []
    for rank, r in enumerate(_by_rating(rows), start=1):
        lo, hi = r["bt_ci"]
        cells.append([
            str(rank), r["name"], _fmt(r["bt"], ".0f"), f"[{_fmt(lo, '.0f')}, {_fmt(hi, '.0f')}]",
            _fmt(r["elo"], ".0f"),
            str(r["wins"]), str(r["draws"]), str(r["losses"]), _fmt(100.0 * r["win_rate"] if r["games"] else None),
            _fmt_score(r["judge_mean"]), _fmt_score(r["judge_min"]), _fmt_score(r["judge_max"]),
            _fmt(r["tokens_per_s"]), _fmt(r["entropy"], ".3f"), _fmt(r.get("elbo_ppl"), ".2f"),
        ])
    return header, cells


def _by_rating(rows: Sequence[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: (-r["bt"], r.get("index", 0)))


def format_standings(rows: Sequence[dict]) -> str:
    """The standings as a fixed-width console table, best Bradley-Terry rating first."""
    header, cells = _table_rows(rows)
    widths = [max(len(h), *(len(c[col]) for c in cells)) for col, h in enumerate(header)]
    left = {1}  # the name column reads better left-aligned; numbers right-aligned

    def line(values):
        return "  ".join(v.ljust(w) if col in left else v.rjust(w) for col, (v, w) in enumerate(zip(values, widths)))

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(c) for c in cells)])


def _md_cell(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], cells: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in cells]
    return lines


def _fenced(text: str) -> list[str]:
    """A fenced code block that no run of backticks inside ``text`` can close."""
    longest, run = 0, 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * max(3, longest + 1)
    return [fence + "text", text, fence]


def render_report(*, judge_name: str, standings: Sequence[dict], matches: Sequence[Match],
                  higher_is_better: bool | None = None, settings: dict | None = None) -> str:
    """report.md: the run's settings, the standings table, the entrants' settings, their top and worst samples."""
    rows = _by_rating(standings)
    direction = ("" if higher_is_better is None
                 else " (higher is better)" if higher_is_better else " (lower is better)")
    draws = sum(m.result == "draw" for m in matches)
    out = ["# Tournament results", "",
           f"Judge: `{judge_name}`{direction}. {len(rows)} entrants, {len(matches)} matches ({draws} draws).", "",
           ("Ratings are on the Elo scale. BT: Bradley-Terry maximum a posteriori rating (mean 1000, draws count "
            "half a win), with its percentile bootstrap interval; Elo: K = 32 from 1000 over the matches in their "
            "seeded order. Entropy: unigram entropy of the samples, bits per token."), ""]
    if settings:
        out += ["## Settings", ""] + [f"- {key}: `{json.dumps(_plain(value))}`" for key, value in settings.items()]
        out.append("")
    header, cells = _table_rows(rows)
    out += ["## Standings", ""] + _md_table(header, cells) + [""]
    out += ["## Entrants", ""] + _md_table(
        ["entrant", "checkpoint", "sampler settings"],
        [[r["name"], r["checkpoint"] or "(validation text)", json.dumps(_plain(r["sampler"]), sort_keys=True)]
         for r in rows],
    ) + [""]
    out += ["## Samples", ""]
    for r in rows:
        out += [f"### {r['name']}", ""]
        for title, key in (("Top", "top_samples"), ("Worst", "worst_samples")):
            out += [f"{title} {len(r[key])} by judge score:", ""]
            for rank, s in enumerate(r[key], start=1):
                out += [f"{rank}. score {_fmt_score(s['score'])} (sample {s['sample']})", ""]
                out += _fenced(s["text"]) + [""]
    return "\n".join(out)


def plot_ratings(standings: Sequence[dict], *, judge_name: str = "") -> bytes | None:
    """ratings.png as bytes: each entrant's BT rating with its interval, and its Elo; None without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    rows = _by_rating(standings)[::-1]  # best at the top of the plot
    y = np.arange(len(rows))
    bt = np.array([r["bt"] for r in rows])
    lo = np.array([r["bt_ci"][0] for r in rows])
    hi = np.array([r["bt_ci"][1] for r in rows])
    # a Figure without pyplot: no global backend or figure state is touched
    fig = Figure(figsize=(7.0, 1.2 + 0.45 * len(rows)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.errorbar(bt, y, xerr=[bt - lo, hi - bt], fmt="o", capsize=4, label="Bradley-Terry, bootstrap interval")
    ax.plot([r["elo"] for r in rows], y, "x", label="Elo")
    ax.set_yticks(y, [r["name"] for r in rows])
    ax.set_xlabel("rating (Elo scale)")
    ax.set_title(f"Tournament ratings{f' (judge: {judge_name})' if judge_name else ''}")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars and arrays to Python, tuples to lists, NaN and infinities to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def results_document(*, judge_name: str, standings: Sequence[dict], matches: Sequence[Match],
                     higher_is_better: bool | None = None, settings: dict | None = None) -> dict:
    """The content of results.json (entrants best first; matches name the entrants)."""
    rows = _by_rating(standings)
    names = {r["index"]: r["name"] for r in rows}
    doc: dict[str, Any] = {"judge": judge_name}
    if higher_is_better is not None:
        doc["higher_is_better"] = bool(higher_is_better)
    doc["settings"] = dict(settings or {})
    doc["entrants"] = [{key: value for key, value in r.items() if key != "index"} for r in rows]
    doc["matches"] = [
        {"a": names[m.a], "b": names[m.b], "sample_a": m.sample_a, "sample_b": m.sample_b,
         "score_a": m.score_a, "score_b": m.score_b, "result": m.result}
        for m in matches
    ]
    return _plain(doc)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file in the same folder, then rename it over ``path``: never half a file.

    The temp file is opened with mode 0o666 (less the umask), so results get the usual permissions
    rather than mkstemp's 0o600.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_results(out_dir: str | Path, *, judge_name: str, standings: Sequence[dict], matches: Sequence[Match],
                  higher_is_better: bool | None = None, settings: dict | None = None) -> dict[str, Path]:
    """Write results.json, report.md and (when matplotlib imports) ratings.png into ``out_dir``.

    Every file is rendered before anything is written, and each is written atomically, so a
    failure leaves the previous files whole. ``settings`` (seed, margin, rounds, ...) is recorded as
    given. Returns the written paths by file name.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"results folder '{out}' exists and is not a folder.")
    document = results_document(judge_name=judge_name, standings=standings, matches=matches,
                                higher_is_better=higher_is_better, settings=settings)
    files = {
        "results.json": (json.dumps(document, indent=1, allow_nan=False) + "\n").encode("utf-8"),
        "report.md": render_report(judge_name=judge_name, standings=standings, matches=matches,
                                   higher_is_better=higher_is_better, settings=settings).encode("utf-8"),
    }
    png = plot_ratings(standings, judge_name=judge_name)
    if png is not None:
        files["ratings.png"] = png
    elif (out / "ratings.png").exists():
        logger.warning("matplotlib is not installed: ratings.png not written; the one in %s is from an earlier run",
                       out)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, data in files.items():
        _write_atomic(out / name, data)
        written[name] = out / name
    return written

"""Running a tournament: every entrant writes, the judge scores, the matches are played, the results are written.

:func:`run_tournament` takes the ``[tournament]`` settings and the entrants (checkpoints with their
own sampler settings) and, in this order, so that a mistake costs no generation:

1. checks everything that needs no model: each entrant's sampler settings (the shared ``[sample]``
   table, then the entrant's own ``sample`` table, then the command line's ``--sample.key``, as a
   :class:`mmengine.generate.SampleConfig`), that the checkpoints and the sampler's inspector and
   judge files exist, and that the results folder can be one;
2. loads the judge (:func:`mmengine.judges.load_judge`);
3. per entrant: loads the LM (:func:`mmengine.generate.load.load_for_inference`, with the entrant's
   or the tournament's ``data_dir``), checks that it reads the judge's vocabulary, generates
   ``samples_per_model`` samples in one batched sampler call seeded with the entrant's ``seed``
   (default: the tournament's), timed for tokens/s (after an untimed one-sample call), and, for a
   masked-diffusion LM stored by mmengine, asks ``elbo`` for its ELBO perplexity bound on the
   validation set;
4. with ``ground_truth`` (cut when the first entrant is loaded, before anything is generated): real
   validation text of the first entrant's data dir (:func:`mmengine.tournament.ground_truth_starts`),
   as many windows as samples, each as long as the first entrant's samples;
5. scores all samples in one judge call, plays the seeded round-robin, computes the standings and
   writes ``results.json``, ``report.md`` and ``ratings.png``.

The same settings, seed and device give the same samples, scores, matches and ratings (tokens/s
is measured, so it differs between runs).
"""
from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from mmengine.errors import ConfigError, MMEngineError, UserError
from mmengine.tournament import (
    GROUND_TRUTH,
    Entrant,
    Match,
    TournamentConfig,
    ground_truth_starts,
    play,
    schedule_matches,
    standings,
    write_results,
)

logger = logging.getLogger(__name__)

__all__ = ["TournamentRun", "check_sample_keys", "entrant_sampler_settings", "run_tournament"]

#: Sampler settings the tournament decides for every entrant, and the setting that does.
SET_BY_TOURNAMENT = {"num_samples": "tournament.samples_per_model", "out": "tournament.out",
                     "progress": "tournament.progress", "device": "tournament.device"}

#: ``elbo(checkpoint, data_dir or None, device) -> ELBO perplexity bound or None``.
ElboFn = Callable[[str, "str | None", str], "float | None"]


@dataclass
class TournamentRun:
    """What :func:`run_tournament` did.

    Fields:
        judge_name / judge_kind / higher_is_better: the judge.
        entrants: every entrant with its samples, texts, scores and figures (the ground truth last).
        matches: the played matches in their seeded order.
        standings: :func:`mmengine.tournament.standings` rows, best Bradley-Terry rating first.
        settings: what results.json records under ``settings``.
        written: the results files by name.
    """

    judge_name: str
    judge_kind: str
    higher_is_better: bool
    entrants: list[Entrant]
    matches: list[Match]
    standings: list[dict]
    settings: dict
    written: dict


# -----------------------------------------------------------------------------
# Sampler settings


def check_sample_keys(table: dict, where: str) -> None:
    """Refuse keys that are not ``[sample]`` fields, and the ones the tournament decides (:data:`SET_BY_TOURNAMENT`)."""
    from mmengine.generate import SampleConfig

    names = [f.name for f in fields(SampleConfig)]
    for key in table:
        if key in SET_BY_TOURNAMENT:
            raise ConfigError(f"{where}: sample.{key} is the tournament's to set (use {SET_BY_TOURNAMENT[key]}).")
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
            hint = f" (did you mean 'sample.{close[0]}'?)" if close else ""
            raise ConfigError(f"{where}: unknown sampler setting 'sample.{key}'{hint}.")


def entrant_sampler_settings(own: dict, shared: dict, command_line: dict, *, seed: int, where: str) -> dict:
    """An entrant's sampler settings as given: ``seed`` < shared ``[sample]`` < its own table < the command line.

    The entrant's own table is checked (:func:`check_sample_keys`, messages start with ``where``);
    ``shared`` and ``command_line`` are taken as checked. A command-line value that replaces one
    the entrant sets itself is said in a warning.
    """
    check_sample_keys(own, where)
    for key, value in command_line.items():
        if key in own and own[key] != value:
            logger.warning("%s: --sample.%s=%r replaces its own setting %r", where, key, value, own[key])
    return {"seed": seed, **shared, **own, **command_line}


def _sample_config(settings: dict, samples_per_model: int, device: str, where: str):
    """The :class:`SampleConfig` of an entrant (validated, its inspector and judge files present)."""
    from mmengine.generate import SampleConfig

    try:
        cfg = SampleConfig(**settings, num_samples=samples_per_model, progress=False, device=device, out="")
        cfg.validate()
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    for role in ("inspector", "judge"):
        path = getattr(cfg, role)
        if path and not Path(path).is_file():
            raise ConfigError(f"{where}: sample.{role} '{path}' does not exist.")
    return cfg


# -----------------------------------------------------------------------------
# Vocabularies


def _same_vocabulary(a, b) -> bool:
    """Whether two DataMeta read text with the same ids: equal text vocabularies, the same tokens where both
    fingerprints know them (:func:`mmengine.fingerprint.tokenizer_fingerprint`). Special ids do not matter:
    judges and entrants exchange text only."""
    from mmengine.fingerprint import tokenizer_fingerprint

    fa, fb = tokenizer_fingerprint(a), tokenizer_fingerprint(b)
    if fa["text_vocab_size"] != fb["text_vocab_size"]:
        return False
    return not (fa["vocabulary"] and fb["vocabulary"]) or fa["vocabulary"] == fb["vocabulary"]


def _check_reads_judges_vocabulary(entrant: Entrant, meta, judge_meta, judge_path: str) -> None:
    if not _same_vocabulary(meta, judge_meta):
        raise UserError(f"entrant '{entrant.name}' writes with a vocabulary of {meta.text_vocab_size} text tokens "
                        f"that is not the judge's ({judge_meta.text_vocab_size} text tokens, {judge_path}); a judge "
                        "must read the entrants' tokenizer.")


# -----------------------------------------------------------------------------
# Generation


def _encode(tokenizer, text: str, what: str) -> list[int]:
    if tokenizer is None:
        raise UserError(f"{what} is text, but the data has no tokenizer to encode it.")
    try:
        return [int(i) for i in tokenizer.encode(text)]
    except ValueError as e:  # a character outside the vocabulary
        raise UserError(f"{what}: {e}") from None


def _start(entrant: Entrant, cfg, tokenizer) -> tuple[list[int] | None, list | None, int]:
    """(prompt ids, infill template, tokens per sample) of an entrant's settings."""
    from mmengine.generate import parse_infill

    where = f"entrant '{entrant.name}'"
    prompt_ids = _encode(tokenizer, cfg.prompt, f"{where}: sample.prompt") if cfg.prompt else None
    if cfg.infill:
        if tokenizer is None:
            raise UserError(f"{where}: sample.infill is text, but the data has no tokenizer to encode it.")
        template = parse_infill(cfg.infill, tokenizer)
        return None, template, len(template)
    return prompt_ids, None, len(prompt_ids or []) + cfg.length


def _generate(entrant: Entrant, cfg, loaded, device) -> None:
    """Fills ``entrant.samples``, ``texts`` and ``tokens_per_s`` from one batched, seeded sampler call."""
    from mmengine.generate import Inspector, SamplerVocab, generate
    from mmengine.generate import Judge as SequenceScorer

    tokenizer = loaded.tokenizer
    vocab = SamplerVocab.from_meta(loaded.meta, tokenizer)
    meta = loaded.meta  # another trainer's inspector or scorer gets its vocabulary mapped onto the LM's
    inspector = Inspector.from_checkpoint(cfg.inspector, vocab, device=device, meta=meta) if cfg.inspector else None
    scorer = (SequenceScorer.from_checkpoint(cfg.judge, vocab, direction=cfg.judge_direction,
                                             aggregate=cfg.judge_aggregate, device=device, meta=meta)
              if cfg.judge else None)
    prompt_ids, template, _ = _start(entrant, cfg, tokenizer)
    # untimed: one sample first, so that first-call costs (allocation, kernel compilation) stay out of tokens/s
    warm = dataclasses.replace(cfg, num_samples=1, best_of=1)
    generate(loaded.model, warm, vocab, inspector=inspector, prompt_ids=prompt_ids, template=template, device=device,
             progress=False)
    started = time.perf_counter()
    out = generate(loaded.model, cfg, vocab, inspector=inspector, judge=scorer, prompt_ids=prompt_ids,
                   template=template, device=device, progress=False)
    seconds = time.perf_counter() - started
    per_sample = sum(i is None for i in template) if template is not None else cfg.length
    entrant.samples = [list(s.ids) for s in out]
    entrant.texts = [tokenizer.decode(s.ids) for s in out] if tokenizer is not None else []
    entrant.tokens_per_s = per_sample * len(out) / seconds if seconds > 0 else None
    logger.info("entrant '%s': %d samples of %d tokens in %.2f s (%.0f tokens/s)", entrant.name, len(out),
                len(entrant.samples[0]), seconds, entrant.tokens_per_s or float("nan"))


def _is_masked_diffusion_lm_of_ours(loaded) -> bool:
    """A bidirectional LM in mmengine's own format (the ELBO path reads its stored run config and data)."""
    from mmengine.upstream import FORMAT_MMENGINE, recognise_format

    if loaded.model.config.attention_type != "bidirectional":
        return False
    try:
        ours = recognise_format(loaded.checkpoint)[0] == FORMAT_MMENGINE
        return ours and isinstance(loaded.checkpoint.get("config"), dict)
    except MMEngineError:
        return False


def _ground_truth(data_dir: str, length: int, count: int, seed: int, judge_meta, judge_path: str) -> Entrant:
    """The entrant of real validation text: ``count`` windows of ``length`` tokens from ``data_dir``'s val split."""
    from mmengine.data.dataset import DataDir

    try:
        data = DataDir.open(data_dir)
    except (OSError, ValueError) as e:
        raise UserError(f"ground truth: cannot open data dir '{data_dir}': {str(e).rstrip('.')}.") from None
    if not _same_vocabulary(data.meta, judge_meta):
        raise UserError(f"ground truth: the data dir '{data_dir}' has a vocabulary of {data.meta.text_vocab_size} text "
                        f"tokens that is not the judge's ({judge_meta.text_vocab_size}, {judge_path}).")
    val = np.asarray(data.tokens("val"))
    starts = ground_truth_starts(len(val), length, count, seed)
    samples = [val[s:s + length].astype(np.int64).tolist() for s in starts.tolist()]
    tokenizer = data.tokenizer
    texts = [tokenizer.decode(s) for s in samples] if tokenizer is not None else []
    return Entrant(name=GROUND_TRUTH, checkpoint=None, sampler={}, data_dir=str(data_dir), samples=samples, texts=texts)


# -----------------------------------------------------------------------------
# The run


def _progress(show: bool, total: int, desc: str, unit: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not show, file=sys.stderr, leave=False)


def run_tournament(settings: TournamentConfig, entrants: list[Entrant], *, shared_sample: dict | None = None,
                   command_line_sample: dict | None = None, elbo: ElboFn | None = None) -> TournamentRun:
    """Generate, judge, play and write the results (see the module docstring); mistakes raise one sentence.

    ``entrants`` carry their own sampler settings in ``sampler``; on return it holds the settings
    as given after merging (``shared_sample`` < own < ``command_line_sample``, ``seed`` defaulting to
    the tournament's). ``elbo`` computes a masked-diffusion entrant's ELBO perplexity bound (None:
    not computed).
    """
    from mmengine.generate.load import load_for_inference
    from mmengine.generate.sampler import resolve_device
    from mmengine.judges import load_judge

    t = settings.validate()
    if not t.judge:
        raise ConfigError("a tournament needs a judge: --judge=CKPT (a sequence scorer, an autoregressive LM or "
                          "any LM).")
    names = [e.name for e in entrants]
    if GROUND_TRUTH in names and t.ground_truth:
        raise ConfigError(f"an entrant is named '{GROUND_TRUTH}', the name of the ground-truth entrant; rename it.")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"two entrants are named '{duplicates[0]}'; names must be unique.")
    if len(entrants) + int(t.ground_truth) < 2:
        raise ConfigError(f"a tournament needs at least two entrants, got {len(entrants)}"
                          f"{' and no ground truth (add --ground_truth)' if not t.ground_truth else ''}.")
    out = Path(t.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"results folder '{out}' exists and is not a folder.")
    device = resolve_device(t.device)
    check_sample_keys(shared_sample or {}, "[sample]")
    check_sample_keys(command_line_sample or {}, "command line")
    configs = []
    for e in entrants:  # 1. everything that needs no model
        where = f"entrant '{e.name}'"
        if not Path(str(e.checkpoint)).is_file():
            raise ConfigError(f"{where}: checkpoint '{e.checkpoint}' does not exist.")
        e.sampler = entrant_sampler_settings(e.sampler, shared_sample or {}, command_line_sample or {}, seed=t.seed,
                                             where=where)
        configs.append(_sample_config(e.sampler, t.samples_per_model, str(device), where))

    show = bool(t.progress and sys.stderr.isatty())
    loaded_judge = load_judge(t.judge, t.judge_kind, data_dir=t.data_dir or None, device=device,  # 2. the judge
                              direction=t.judge_direction, aggregate=t.judge_aggregate, progress=show)
    judge, judge_meta = loaded_judge.judge, loaded_judge.meta

    competitors: list[Entrant] = list(entrants)
    elbo_cache: dict[tuple, float | None] = {}
    ground_truth = None
    with _progress(show, len(entrants), "generating", "entrant") as bar:  # 3. the entrants write
        for e, cfg in zip(entrants, configs):
            bar.set_postfix_str(e.name)
            data_dir = e.data_dir or t.data_dir or None
            loaded = load_for_inference(e.checkpoint, "language_model", data_dir=data_dir, device=device,
                                        role=f"entrant '{e.name}'")
            _check_reads_judges_vocabulary(e, loaded.meta, judge_meta, loaded_judge.path)
            if t.ground_truth and ground_truth is None:  # 4. real text, as long as the first entrant's samples
                ground_truth_dir = data_dir or (loaded.checkpoint.get("trainer") or {}).get("data_dir")
                if not ground_truth_dir:
                    raise UserError("ground truth: the first entrant's checkpoint stores no data dir; "
                                    "set tournament.data_dir.")
                length = _start(e, cfg, loaded.tokenizer)[2]
                ground_truth = _ground_truth(str(ground_truth_dir), length, t.samples_per_model, t.seed, judge_meta,
                                             loaded_judge.path)
            _generate(e, cfg, loaded, device)
            if elbo is not None and t.elbo and _is_masked_diffusion_lm_of_ours(loaded):
                key = (e.checkpoint, data_dir)
                if key not in elbo_cache:
                    try:
                        elbo_cache[key] = elbo(str(e.checkpoint), data_dir, str(device))
                    except MMEngineError as exc:  # a figure beside the ranking: say why it is missing, go on
                        logger.warning("entrant '%s': no ELBO perplexity bound: %s", e.name, str(exc).rstrip("."))
                        elbo_cache[key] = None
                e.elbo_ppl = elbo_cache[key]
            del loaded
            bar.update(1)

    if ground_truth is not None:
        if len(ground_truth.samples[0]) != len(entrants[0].samples[0]):  # the sampler's length rule changed
            raise AssertionError("the ground truth's length differs from the first entrant's samples")
        competitors.append(ground_truth)

    everything = [s for e in competitors for s in e.samples]  # 5. one judge call for every sample
    scores = np.asarray(judge.score(everything), dtype=np.float64)
    at = 0
    for e in competitors:
        e.judge_scores = scores[at:at + len(e.samples)]
        at += len(e.samples)
    rounds = t.rounds or max(1, math.ceil(max(len(e.samples) for e in competitors) / (len(competitors) - 1)))
    schedule = schedule_matches(len(competitors), [len(e.samples) for e in competitors], rounds, t.seed)
    matches = play(competitors, schedule, margin=t.margin, higher_is_better=judge.higher_is_better, progress=show)
    rows = standings(competitors, matches, seed=t.seed, higher_is_better=judge.higher_is_better, n_boot=t.bootstrap)
    recorded = {"judge": t.judge, "judge_kind": loaded_judge.kind, "samples_per_model": t.samples_per_model,
                "rounds": rounds, "margin": t.margin, "seed": t.seed, "bootstrap": t.bootstrap,
                "ground_truth": t.ground_truth, "device": str(device)}
    if ground_truth is not None:
        recorded["ground_truth_text"] = {"data_dir": ground_truth.data_dir, "length": len(ground_truth.samples[0])}
    written = write_results(out, judge_name=judge.name, standings=rows, matches=matches,
                            higher_is_better=judge.higher_is_better, settings=recorded)
    return TournamentRun(judge_name=judge.name, judge_kind=loaded_judge.kind, higher_is_better=judge.higher_is_better,
                         entrants=competitors, matches=matches, standings=rows, settings=recorded, written=written)

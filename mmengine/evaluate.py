"""``python -m mmengine.evaluate``: a checkpoint's validation metrics, or a tournament that ranks generators.

**One checkpoint, no judge** - ``python -m mmengine.evaluate CKPT [--table.key=value ...]``: the run's
config is read from the checkpoint; overrides change it (e.g. ``--data.dir=other_data`` or
``--train.eval_iters=50``). The fixed validation set and the metrics are those of the training mode
(:mod:`mmengine.modes`); the result is printed as one JSON object.

**A tournament** - ``python -m mmengine.evaluate A.pt B.pt ... --judge=J.pt [--ground_truth]
[--samples_per_model=16] [--out=DIR] [tournament.toml] [--sample.key=value ...]``: every entrant (an LM
checkpoint plus sampler settings) writes ``samples_per_model`` samples with the batched sampler, one
judge scores them (a sequence scorer, an autoregressive LM's perplexity, or an LM's self-confidence),
entrants meet round-robin sample against sample, and Elo and Bradley-Terry ratings (with bootstrap
intervals) rank them. ``--ground_truth`` enters real validation text. The standings are printed;
``DIR/results.json``, ``DIR/report.md`` and ``DIR/ratings.png`` hold everything. A TOML file sets the
``[tournament]`` table, a shared ``[sample]`` table and ``[[entrant]]`` tables (name, checkpoint,
sample, data_dir), so one LM can enter several times with different sampler settings
(:mod:`mmengine.tournament`, :mod:`mmengine.tournament_run`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
import typing

from mmengine.config import (
    TABLES,
    Config,
    ConfigError,
    apply_dict,
    apply_overrides,
    cli_entry,
    open_brackets,  # how parse_args joins an unquoted TOML list split by the shell
    parse_args,
    table_help,
    validate,
)
from mmengine.modes import get_spec
from mmengine.schema import check_value, parse_cli_value

logger = logging.getLogger(__name__)

PROG = "python -m mmengine.evaluate"
USAGE = (f"usage: {PROG} CKPT [--table.key=value ...]\n"
         f"       {PROG} A.pt B.pt ... --judge=J.pt [--ground_truth] [--samples_per_model=16] [--out=DIR] "
         "[tournament.toml] [--tournament.key=value ...] [--sample.key=value ...]")


def evaluate_checkpoint(path: str, overrides: list[str] | None = None, device: str | None = None) -> dict:
    """Metrics of the checkpoint at ``path`` on its validation set (``device``: default ``run.device``, e.g. 'auto')."""
    from mmengine.checkpoint import (
        CheckpointError,
        check_run_state,
        load_checkpoint,
        model_from_checkpoint,
        upgrade_trainer_state,
    )
    from mmengine.data.stream import check_mode_data, open_data, to_device
    from mmengine.distributed import pick_device
    from mmengine.modes import build_mode
    from mmengine.upstream import ready_for_data
    from mmengine.upstream_run import is_foreign, run_settings

    ckpt = load_checkpoint(path)
    check_run_state(ckpt, str(path))
    cfg = Config()
    saved = ckpt.get("config") or {}
    if is_foreign(ckpt):
        # the earlier trainer's or nanoGPT's stored config is not ours: the model says what it is
        implied = run_settings(ckpt, str(path))
        apply_dict(cfg, _tables(implied), f"the model of {path}")
        logger.warning("%s was written by another trainer; its stored config is ignored and the model decides %s "
                       "(change any with --table.key=value)", path, ", ".join(f"{k}={v!r}" for k, v in implied))
    elif saved:
        try:
            apply_dict(cfg, saved, f"config stored in {path}")
        except ConfigError as e:
            # e.g. a nanoGPT checkpoint's flat config: its own settings, not ours
            logger.warning("%s; it is ignored (defaults and the command line decide)", str(e).rstrip("."))
            cfg = Config()
    cfg.run.init_from = "scratch"
    cfg.transfer = type(cfg.transfer)()  # the weights are in the checkpoint; transfer is history
    path_arg, pairs = parse_args(overrides or [])
    if path_arg is not None:
        raise ConfigError(f"unexpected argument '{path_arg}'; the config comes from the checkpoint, "
                          "change it with --table.key=value.")
    apply_overrides(cfg, pairs)
    validate(cfg)
    get_spec(cfg.train.training_type).resolve_config(cfg)
    device = device or pick_device(cfg.run.device)
    # the data first: a foreign vocabulary is mapped onto the data dir's, a data dir of another vocabulary is
    # refused before the model is even built
    data = open_data(cfg)
    cls_id = cfg.transfer.cls_token_id if cfg.transfer.cls_token_id >= 0 else None
    ckpt = ready_for_data(ckpt, data, f"cannot evaluate {path}", cls_token_id=cls_id, source=str(path))
    mode = build_mode(cfg, data)
    check_mode_data(mode, cfg)
    model = model_from_checkpoint(ckpt, source=str(path)).to(device)
    mode.check_model(model, str(path))
    try:
        mode.load_state_dict(upgrade_trainer_state(ckpt.get("trainer")).get("mode") or {})
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"checkpoint {path}: its stored {mode.describe()} state cannot be read ({e})") from None
    metrics = mode.evaluate(model, [(g, to_device(b, device)) for g, b in mode.val_batches()])
    metrics["iter"] = int(ckpt.get("iter_num", 0))
    return metrics


def _tables(pairs) -> dict:
    """[("table.key", value)] -> {table: {key: value}}."""
    out: dict = {}
    for dotted, value in pairs:
        table, _, key = dotted.partition(".")
        out.setdefault(table, {})[key] = value
    return out


def elbo_perplexity(path: str, data_dir: str | None, device: str) -> float | None:
    """The ELBO perplexity bound of a masked-diffusion LM on its validation set: :func:`evaluate_checkpoint` with
    the continuous-time objective (``--unmasking.objective=continuous_time``); None when the run reports none."""
    overrides = ["--unmasking.objective=continuous_time"]
    if data_dir:
        overrides.append(f"--data.dir={json.dumps(str(data_dir))}")  # a TOML string: any path survives the parse
    return evaluate_checkpoint(path, overrides, device=device).get("ppl_bound")


# -----------------------------------------------------------------------------
# Command line


def _tournament_types() -> dict:
    from mmengine.tournament import tournament_fields

    return tournament_fields()


def _sample_types() -> dict:
    return typing.get_type_hints(TABLES["sample"])


#: Flat [tournament] names that the run config has too: with one checkpoint they keep meaning the run's settings,
#: so they do not ask for a tournament; every other [tournament] name (--judge, --ground_truth, --out, ...) does.
_SHARED_FLAT = ("seed", "device", "progress", "data_dir")


def _asks_for_tournament(key: str) -> bool:
    return key.startswith("tournament.") or (key in _tournament_types() and key not in _SHARED_FLAT)


def _is_bool_option(key: str) -> bool:
    """Whether ``--key`` names a boolean setting (which may stand bare, without a value)."""
    table, _, name = key.rpartition(".")
    if table == "tournament":
        return _tournament_types().get(name) is bool
    if table:
        cls = TABLES.get(table)
        return cls is not None and typing.get_type_hints(cls).get(name) is bool
    if name in _tournament_types():
        return _tournament_types()[name] is bool
    return any(typing.get_type_hints(cls).get(name) is bool for cls in TABLES.values())


def split_args(argv: list[str]) -> tuple[list[str], list[tuple[str, str | None]]]:
    """Positional arguments (checkpoints, a TOML file) and ``(key, raw value or None)`` options, in any order.

    ``--key=value`` and ``--key value`` both work; a boolean option may stand bare (``--ground_truth``),
    so the argument after it is positional unless it is ``true`` or ``false``.
    """
    positional: list[str] = []
    options: list[tuple[str, str | None]] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            positional.append(arg)
            i += 1
            continue
        key, eq, raw = arg[2:].partition("=")
        key = key.replace("-", "_")
        value: str | None = raw if eq else None
        if not eq and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            nxt = argv[i + 1]
            if not _is_bool_option(key) or nxt.lower() in ("true", "false"):
                value = nxt
                i += 1
        # an unquoted TOML list or table arrives split at its spaces: join the words until it closes
        while value is not None and open_brackets(value) > 0 and i + 1 < len(argv) and argv[i + 1][:2] != "--":
            value += " " + argv[i + 1]
            i += 1
        options.append((key, value))
        i += 1
    return positional, options


def _did_you_mean(word: str, candidates: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f" (did you mean '--{close[0]}'?)" if close else ""


def _route(key: str) -> tuple[str, str]:
    """``("tournament" | "sample", field)`` a tournament option sets; one sentence for any other option."""
    tournament, sample = _tournament_types(), _sample_types()
    known = [f"tournament.{n}" for n in tournament] + [f"sample.{n}" for n in sample] + ["data.dir"]
    table, _, name = key.rpartition(".")
    if key in ("data.dir", "data_dir"):
        return "tournament", "data_dir"
    if table in ("tournament", "sample"):
        if name not in (tournament if table == "tournament" else sample):
            raise ConfigError(f"unknown option --{key}{_did_you_mean(key, known)}.")
        return table, name
    if table:
        raise ConfigError(f"--{key} is a setting of [{table}], which a tournament does not read "
                          "(it reads [tournament], [sample] and --data.dir; see --help).")
    if name in tournament:  # flat names that both tables have (judge, seed, out, ...) are the tournament's
        return "tournament", name
    if name in sample:
        return "sample", name
    raise ConfigError(f"unknown option --{key}{_did_you_mean(key, known + list(tournament) + list(sample))}.")


def _value(key: str, raw: str | None, tp, items: str = "tables"):
    if raw is None:
        if tp is not bool:
            raise ConfigError(f"--{key} needs a value (--{key}=...).")
        return True
    return check_value(key, tp, parse_cli_value(raw, tp), items)


def _tournament_mode(positional: list[str], options: list[tuple[str, str | None]]) -> int:
    from mmengine.tournament import (
        Entrant,
        TournamentConfig,
        format_standings,
        read_tournament_file,
        set_tournament_value,
    )
    from mmengine.tournament_run import run_tournament

    files = [p for p in positional if p.endswith(".toml")]
    checkpoints = [p for p in positional if not p.endswith(".toml")]
    if len(files) > 1:
        raise ConfigError(f"{PROG} takes at most one tournament file, got {', '.join(files)}.")
    if files:
        doc = read_tournament_file(files[0])
        settings, shared, entrants = doc.settings, dict(doc.sample), list(doc.entrants)
    else:
        settings, shared, entrants = TournamentConfig(), {}, []
    command_line_sample: dict = {}
    sample_fields = {f.name: f for f in dataclasses.fields(TABLES["sample"])}
    for key, raw in options:
        table, name = _route(key)
        if table == "tournament":
            set_tournament_value(settings, name, _value(f"tournament.{name}", raw, _tournament_types()[name]),
                                 "command line")
        else:
            items = sample_fields[name].metadata.get("items", "tables")
            command_line_sample[name] = _value(f"sample.{name}", raw, _sample_types()[name], items)
    seen: set[str] = set()
    for path in checkpoints:
        if path in seen:
            raise ConfigError(f"checkpoint '{path}' is given twice; to enter one LM with different sampler settings, "
                              "list it under [[entrant]] tables with names of their own.")
        seen.add(path)
        entrants.append(Entrant(name=path, checkpoint=path))
    result = run_tournament(settings, entrants, shared_sample=shared, command_line_sample=command_line_sample,
                            elbo=elbo_perplexity)
    direction = "higher" if result.higher_is_better else "lower"
    print(f"judge: {result.judge_name} ({direction} is better); {len(result.matches)} matches")
    print(format_standings(result.standings))
    print(f"results: {', '.join(str(p) for p in result.written.values())}", file=sys.stderr)
    return 0


def _run(args: list[str]) -> int:
    positional, options = split_args(args)
    tournament = (any(p.endswith(".toml") for p in positional) or len(positional) > 1
                  or any(_asks_for_tournament(key) for key, _ in options))
    if tournament:
        package_log = logging.getLogger("mmengine")
        level = package_log.level
        package_log.setLevel(logging.INFO)  # a line per entrant as it finishes
        try:
            return _tournament_mode(positional, options)
        finally:
            package_log.setLevel(level)
    if not positional:
        raise ConfigError(f"give the checkpoint to evaluate: {PROG} CKPT [--table.key=value ...], or several LM "
                          f"checkpoints and a judge to rank them: {PROG} A.pt B.pt --judge=J.pt (see --help).")
    overrides = [f"--{key}" if raw is None else f"--{key}={raw}" for key, raw in options]
    print(json.dumps(evaluate_checkpoint(positional[0], overrides), indent=1))
    return 0


def help_text() -> str:
    """Both usages, the tournament's tables, the entrants file and the run config a single evaluation overrides."""
    from mmengine.tournament import TournamentConfig

    doc = __doc__.split("\n\n", 1)[1].strip()
    doc = re.sub(r":\w+:`([^`]+)`", r"\1", doc).replace("``", "").replace("**", "")  # the docstring as plain text
    lines = [USAGE, "", doc, ""]
    lines += table_help("tournament", TournamentConfig)
    lines += ["  --data.dir=\"\"", "      The same as --tournament.data_dir.", ""]
    lines += table_help("sample", TABLES["sample"])
    lines += ["  (num_samples, out, progress and device are set by the tournament: samples_per_model, out, ...)", "",
              "Flat names work too: --judge, --ground_truth, --samples_per_model, --out, --seed, ... for [tournament];",
              "--steps, --temperature, ... for [sample].", "",
              "Tournament file (TOML): [tournament] and [sample] tables as above, and entrants:",
              "  [[entrant]]",
              "  name = \"mdlm-lowtemp\"          # unique; command-line checkpoints are named by their path",
              "  checkpoint = \"out/ckpt.pt\"",
              "  sample = { temperature = 0.7 }  # over [sample]; --sample.key on the command line wins over both",
              "  data_dir = \"\"                  # the data dir of a file that stores none (nanoGPT, earlier trainer)",
              "",
              "One checkpoint without a judge: --table.key=value overrides of the run's config:", ""]
    for table, cls in TABLES.items():
        if table != "sample":
            lines += table_help(table, cls) + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    return cli_entry(_run, argv, PROG, help_text=help_text)


if __name__ == "__main__":
    sys.exit(main())

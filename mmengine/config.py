"""Run configuration: TOML tables -> typed dataclasses, with command-line overrides.

One dataclass per TOML table, one help string per field (``field(metadata={"help": ...})``, so
``--help`` and ``python -m mmengine.config --help`` can print it). Precedence is command line >
file > defaults. Command-line values are parsed as TOML values, so anything a file can say the
command line can say::

    python -m mmengine.train configs/quickstart.toml --optim.learning_rate=3e-4 \\
        --unmasking.stages='[{type="random", max_masked_ratio=0.5}]'

Typed without the shell quotes the last value still works: bash hands it over split at its spaces
and without its double quotes, so the words of an unclosed list are joined again and the bare words
in value position are read as strings.

The flat flags of the earlier ``train_run.py`` (``--max_iters=5000 --freeze_transformer=True``)
are accepted when the key names exactly one field. Every user mistake raises :class:`ConfigError`
with one sentence; the CLIs turn it into a message on stderr and exit code 2.

``python -m mmengine.config [CONFIG.toml] [overrides]`` prints the resolved config as TOML.
"""
from __future__ import annotations

import dataclasses
import difflib
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmengine.errors import ConfigError, UserError
from mmengine.errors import cli_entry as _cli_entry
from mmengine.generate.config import SampleConfig
from mmengine.modes import REGISTRY, get_spec, mode_tables
from mmengine.schema import (
    check_value,
    option,
    parse_cli_value,
    parse_items,
    toml_value,
    tomllib,
)

__all__ = [
    "TABLES",
    "TRAINING_TYPES",
    "Config",
    "ConfigError",
    "UserError",
    "cli_entry",
    "from_dict",
    "help_text",
    "ignored_settings",
    "load_config",
    "parse_items",
    "to_dict",
    "to_toml",
    "validate",
]

_f = option  # the core tables below declare their fields with it
TRAINING_TYPES = tuple(REGISTRY)


@dataclass
class RunConfig:
    """[run] where outputs go, hardware, seeds, how the run starts."""

    out_dir: str = _f("out", "Folder for ckpt.pt (latest), best.pt, metrics.jsonl and plots.")
    seed: int = _f(1337, "Seed of every random choice (data order, masking, corruption, init).")
    device: str = _f("auto", "'auto' (cuda when available), 'cpu', 'cuda' or 'cuda:N'.")
    dtype: str = _f("auto", "'auto' (bfloat16 on CUDA when supported, float32 on CPU), 'float32', 'bfloat16' "
                            "or 'float16'.",
                    choices=("auto", "float32", "bfloat16", "float16"))
    compile: bool = _f(False, "Compile the model with torch.compile (slow first iterations, faster afterwards).")
    init_from: str = _f("scratch", "'scratch' starts a new run; 'resume' continues exactly from out_dir/ckpt.pt.",
                        choices=("scratch", "resume"))
    nan_policy: str = _f("stop", "On a NaN/inf loss: 'stop' with a message, or 'rollback' to the last checkpoint and "
                                 "skip the batch.",
                         choices=("stop", "rollback"))
    max_rollbacks: int = _f(3, "How many NaN roll-backs are allowed before the run stops anyway.")
    overwrite: bool = _f(False, "Let a new run (init_from='scratch') replace the run already in out_dir; its "
                                "metrics.jsonl and best.pt stay until the new run's first checkpoint. "
                                "Not needed to resume.")
    dist_timeout_s: float = _f(900.0, "torchrun: seconds a rank waits for the others at a collective operation "
                                      "before the job stops naming the missing rank (longer than the slowest "
                                      "checkpoint save).")


@dataclass
class DataConfig:
    """[data] the prepared data dir and how windows are cut from it."""

    dir: str = _f("", "Prepared data dir (python -m mmengine.prepare); empty means the bundled tiny-Shakespeare "
                      "(prepared on first use).")
    block_size: int = _f(64, "Tokens per training window (the model's context length).")
    batch_size: int = _f(32, "Windows per micro-batch on each rank.")
    use_paragraph_boundaries: bool = _f(False, "Start windows only at paragraph starts (after the separator) "
                                               "instead of at any token.")
    separator: str = _f("", "Paragraph separator text, encoded with the data dir's tokenizer; empty means the data "
                            "dir's own (meta.json).")
    prefetch_depth: int = _f(2, "Batches assembled ahead of time by the background prefetcher (0 = assemble in the "
                                "training loop).")


@dataclass
class ModelConfig:
    """[model] the transformer; the head follows from train.training_type."""

    n_layer: int = _f(4, "Transformer blocks.")
    n_head: int = _f(4, "Attention heads per block (n_embd must be divisible by it).")
    n_embd: int = _f(128, "Width of the residual stream.")
    dropout: float = _f(0.0, "Dropout probability (embeddings, attention, MLP).")
    bias: bool = _f(False, "Biases in Linear and LayerNorm layers.")
    attention_type: str = _f("auto", "'auto' (what train.training_type needs: causal for autoregressive, "
                                     "bidirectional otherwise), 'bidirectional' or 'causal'.",
                             choices=("auto", "bidirectional", "causal"))
    use_rope: bool = _f(True, "Rotary position embeddings (False: learned absolute positions).")
    attention_backend: str = _f("auto", "'auto' (Triton kernels on CUDA when available), 'torch' or 'triton'.",
                                choices=("auto", "torch", "triton"))
    loss_backend: str = _f("auto", "'auto' (Triton kernels on CUDA when available), 'torch' or 'triton'.",
                           choices=("auto", "torch", "triton"))


@dataclass
class TrainConfig:
    """[train] what is learned and for how long."""

    training_type: str = _f("unmasking",
                            "What is learned: "
                            + "; ".join(f"'{n}' ({s.description})" for n, s in REGISTRY.items()) + ".",
                            choices=TRAINING_TYPES)
    max_iters: int = _f(1000, "Optimizer steps in total.")
    eval_interval: int = _f(250, "Evaluate (and save checkpoints) every this many steps, and at the end.")
    eval_iters: int = _f(8, "Validation batches per evaluation (the same fixed batches every time).")
    log_interval: int = _f(25, "Log the training loss every this many steps.")
    gradient_accumulation_steps: int = _f(1, "Micro-batches per optimizer step (per rank).")
    grad_clip: float = _f(1.0, "Clip the gradient norm to this value (0 disables).")


@dataclass
class OptimConfig:
    """[optim] AdamW with linear warmup and cosine decay."""

    learning_rate: float = _f(4e-3, "Peak learning rate.")
    min_lr: float = _f(4e-4, "Learning rate at the end of the cosine decay.")
    warmup_iters: int = _f(40, "Linear warmup steps.")
    lr_decay_iters: int = _f(0, "Step at which the cosine reaches min_lr; 0 means train.max_iters.")
    decay_lr: bool = _f(True, "Use warmup + cosine decay (False: constant learning_rate).")
    weight_decay: float = _f(0.1, "AdamW weight decay on matrices (not on biases, norms).")
    beta1: float = _f(0.9, "AdamW beta1.")
    beta2: float = _f(0.99, "AdamW beta2.")


@dataclass
class TransferConfig:
    """[transfer] start from another run's trunk; freeze it, unfreeze it later."""

    init_from_checkpoint: str = _f("", "Checkpoint whose trunk (transformer.*) initialises this model (any mode); "
                                       "empty = none.")
    freeze_transformer: bool = _f(False, "Train only the head (feature extraction); needs init_from_checkpoint.")
    unfreeze_at_iteration: int = _f(-1, "Unfreeze the trunk at this step (-1 = never); needs freeze_transformer.")
    unfreeze_lr_multiplier: float = _f(0.1, "After unfreezing, the trunk's learning rate is the scheduled one "
                                            "times this.")
    cls_token_id: int = _f(-1, "The [CLS] row of an earlier-trainer checkpoint that does not record it (used by "
                               "transfer, resume and evaluate; flat flag --cls_token_id); "
                               "-1 = the one the file records.")


@dataclass
class LogConfig:
    """[log] what the run writes and shows besides metrics.jsonl and the checkpoints."""

    progress: bool = _f(True, "Show a tqdm progress bar (only on rank 0, only on a terminal unless forced).")
    plots: bool = _f(False, "Write loss/learning-rate PNG plots into out_dir at each evaluation (needs matplotlib).")
    tensorboard: bool = _f(False, "Write TensorBoard event files into out_dir/tensorboard (needs tensorboard).")
    wandb: bool = _f(False, "Log to Weights & Biases in offline mode (needs wandb; sync later with `wandb sync`).")
    wandb_project: str = _f("mmengine", "wandb project name.")
    sample_tokens: int = _f(200, "Language models: length of the sample shown at the end of the run (0 = none); "
                                 "everything else about it comes from the [sample] table.")
    save_best: bool = _f(True, "Keep out_dir/best.pt, the checkpoint with the lowest validation loss.")
    keep_every: int = _f(0, "Also keep out_dir/ckpt_<training_type>_<iter>.pt at each evaluation whose step is a "
                            "multiple of this (the earlier trainer's numbered files; a multiple of "
                            "train.eval_interval); 0 = never.")


def _tables() -> dict[str, type]:
    """Every TOML table in file order: the core ones, each registered mode's, then [log]."""
    tables: dict[str, type] = {"run": RunConfig, "data": DataConfig, "model": ModelConfig, "train": TrainConfig,
                               "optim": OptimConfig, "transfer": TransferConfig}
    tables.update(mode_tables())
    tables["log"] = LogConfig
    tables["sample"] = SampleConfig
    return tables


TABLES: dict[str, type] = _tables()

#: The whole run; one attribute per TOML table (``cfg.run``, ``cfg.unmasking``, ...).
Config = dataclasses.make_dataclass("Config", [(name, cls, field(default_factory=cls)) for name, cls in TABLES.items()])
Config.__module__ = __name__
Config.__doc__ = "The whole run; one attribute per TOML table."


# Flat names of train_run.py / nanoGPT / earlier mmengine commands that do not equal a field name.
LEGACY_ALIASES: dict[str, str] = {
    "wandb_log": "log.wandb",
    "data_dir": "data.dir",
    "order": "sample.remasking",
}
# Keys of earlier mmengine configs (saved in their checkpoints) that moved: old 'table.key' -> (new key, value map).
MOVED_KEYS: dict[str, tuple[str, dict]] = {
    "log.sample_steps": ("sample.steps", {}),
    "log.sample_temperature": ("sample.temperature", {}),
    "log.sample_order": ("sample.remasking", {"confidence": "low_confidence"}),
}


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _flat_index() -> dict[str, list[str]]:
    """field name -> ['table.field', ...] over all tables (to resolve flat legacy flags)."""
    index: dict[str, list[str]] = {}
    for table, cls in TABLES.items():
        for f in dataclasses.fields(cls):
            index.setdefault(f.name, []).append(f"{table}.{f.name}")
    for alias, target in LEGACY_ALIASES.items():
        index.setdefault(alias, [target])
    return index


def _all_keys() -> list[str]:
    keys = [f"{t}.{f.name}" for t, cls in TABLES.items() for f in dataclasses.fields(cls)]
    return keys + list(TABLES)


def _did_you_mean(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _resolve_key(key: str, prefer: tuple[str, ...] = ()) -> str:
    """'table.field' or a flat legacy name -> 'table.field'; ConfigError with a suggestion otherwise.

    A flat name that several tables share resolves to the one in ``prefer`` (a command's own table,
    e.g. ``--seed`` is ``sample.seed`` for ``python -m mmengine.sample``), else it is ambiguous.
    """
    if key in MOVED_KEYS:
        return MOVED_KEYS[key][0]
    if "." in key:
        table, _, name = key.partition(".")
        if table not in TABLES:
            raise ConfigError(f"unknown table '{table}' in --{key}{_did_you_mean(table, list(TABLES))}.")
        names = [f.name for f in dataclasses.fields(TABLES[table])]
        if name not in names:
            raise ConfigError(f"unknown key '{key}'{_did_you_mean(key, [f'{table}.{n}' for n in names])}.")
        return key
    if key in TABLES:
        first = dataclasses.fields(TABLES[key])[0].name
        raise ConfigError(f"--{key} names a table; set one of its keys, e.g. --{key}.{first}=...")
    index = _flat_index()
    if key in index:
        targets = index[key]
        preferred = [t for t in targets if t.partition(".")[0] in prefer]
        if len(targets) > 1 and len(preferred) == 1:
            return preferred[0]
        if len(targets) > 1:
            raise ConfigError(f"--{key} is ambiguous; write one of {', '.join('--' + t for t in targets)}.")
        return targets[0]
    raise ConfigError(f"unknown option '--{key}'{_did_you_mean(key, list(index) + _all_keys())}.")


def _moved_value(old_key: str, value: Any) -> Any:
    """A value given under a key that moved, in the new key's terms (e.g. order 'confidence' -> 'low_confidence')."""
    if old_key in MOVED_KEYS:
        return MOVED_KEYS[old_key][1].get(value, value)
    if old_key == "order":
        return MOVED_KEYS["log.sample_order"][1].get(value, value)
    return value


def _field(table: str, name: str) -> dataclasses.Field:
    return {f.name: f for f in dataclasses.fields(TABLES[table])}[name]


def _set(cfg: Config, dotted: str, value: Any, source: str) -> None:
    table, _, name = dotted.partition(".")
    obj = getattr(cfg, table)
    tp = _field_types(type(obj))[name]
    try:
        setattr(obj, name, check_value(dotted, tp, value, _field(table, name).metadata.get("items", "tables")))
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def apply_dict(cfg: Config, data: dict, source: str) -> None:
    """Merge a parsed TOML document (tables of keys) into ``cfg``."""
    for table, values in data.items():
        if table not in TABLES:
            # A flat key at top level of a file (legacy style) resolves like a flat flag.
            if not isinstance(values, dict):
                try:
                    dotted = _resolve_key(table)
                except ConfigError as e:
                    raise ConfigError(f"{source}: {e}") from None
                _set(cfg, dotted, values, source)
                continue
            raise ConfigError(f"{source}: unknown table [{table}]{_did_you_mean(table, list(TABLES))}.")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: '{table}' must be a table ([{table}]), got {values!r}.")
        names = [f.name for f in dataclasses.fields(TABLES[table])]
        for name, value in values.items():
            dotted = f"{table}.{name}"
            if dotted in MOVED_KEYS:  # a config saved by an earlier mmengine
                _set(cfg, MOVED_KEYS[dotted][0], _moved_value(dotted, value), source)
                continue
            if name not in names:
                raise ConfigError(f"{source}: unknown key '{dotted}'"
                                  f"{_did_you_mean(dotted, [f'{table}.{n}' for n in names])}.")
            _set(cfg, dotted, value, source)


def load_toml(path: str | Path) -> dict:
    """Read a TOML file; a missing or malformed file raises ConfigError naming the file (and line)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file '{p}' does not exist.")
    text = p.read_bytes()
    try:
        return tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config file '{p}' is not UTF-8 text.") from None
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        if "at end of document" in msg:
            last_line = text.count(b"\n") + 1
            msg = msg.replace("at end of document", f"at line {last_line}, end of file")
        raise ConfigError(f"config file '{p}' is not valid TOML: {msg}.") from None


def open_brackets(text: str) -> int:
    """Opening minus closing brackets and braces outside quoted strings."""
    depth, quote = 0, None
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
    return depth


def parse_args(argv: list[str] | None) -> tuple[str | None, list[tuple[str, str | None]]]:
    """Split argv into an optional config path and ('key', 'raw value') overrides (None: a bare flag)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    path = None
    overrides: list[tuple[str, str | None]] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--"):
            body = arg[2:]
            raw: str | None
            if "=" in body:
                key, _, raw = body.partition("=")
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                key, raw = body, argv[i + 1]
                i += 1
            else:
                key, raw = body, None
            # an unquoted list of tables arrives split at its spaces: join the words until it closes
            while raw is not None and open_brackets(raw) > 0 and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                raw += " " + argv[i + 1]
                i += 1
            overrides.append((key.replace("-", "_"), raw))
        elif path is None:
            path = arg
        else:
            raise ConfigError(f"unexpected argument '{arg}'; give at most one config file, "
                              "then --table.key=value overrides.")
        i += 1
    return path, overrides


def apply_overrides(cfg: Config, overrides: list[tuple[str, str | None]], *, prefer: tuple[str, ...] = ()) -> None:
    """Apply ``parse_args`` overrides (command-line values) to ``cfg`` (``prefer``: see :func:`_resolve_key`)."""
    for key, raw in overrides:
        dotted = _resolve_key(key, prefer)
        table, _, name = dotted.partition(".")
        tp = _field_types(TABLES[table])[name]
        if raw is None:
            # a bare flag switches a boolean on (`--run.compile`)
            if tp is not bool:
                raise ConfigError(f"--{key} needs a value (--{dotted}=...).")
            raw = "true"
        _set(cfg, dotted, _moved_value(key, parse_cli_value(raw, tp)), "command line")


def load_config(argv: list[str] | None = None, *, check_paths: bool = True,
                prefer: tuple[str, ...] = ("run", "log")) -> Config:
    """Defaults, then the TOML file (if any), then the command-line overrides; validated and resolved.

    A flat flag that several tables share (``--seed``, ``--device``, ``--progress``) goes to the ``prefer``
    tables: the run's own by default, ``("sample",)`` for ``python -m mmengine.sample``.
    Derived values are filled in by the training type's spec (e.g. ``model.attention_type='auto'``,
    a token-classification run's default corruption kinds), so the resolved config that is printed
    and saved with the checkpoints says what the run does.
    """
    path, overrides = parse_args(argv)
    cfg = Config()
    if path is not None:
        apply_dict(cfg, load_toml(path), str(path))
    apply_overrides(cfg, overrides, prefer=prefer)
    validate(cfg, check_paths=check_paths)
    get_spec(cfg.train.training_type).resolve_config(cfg)
    return cfg


def load_tables(argv: list[str], tables: tuple[str, ...], prog: str) -> tuple[Config, list[str]]:
    """A command's own tables from ``[FILE.toml] [--table.key=value ...]`` (flat names prefer the first table).

    Returns the config (every other table at its defaults) and the positional arguments before the
    options. A file or an option that sets another table is refused in one sentence, so a training
    config handed to the wrong command does not silently do nothing.
    """
    positional = []
    while argv and not argv[0].startswith("-"):
        positional.append(argv.pop(0))
    files = [a for a in positional if a.endswith(".toml")]
    positional = [a for a in positional if not a.endswith(".toml")]
    if len(files) > 1:
        raise ConfigError(f"{prog} takes at most one TOML file, got {', '.join(files)}.")
    path, overrides = parse_args(files + argv)
    cfg = Config()
    if path is not None:
        data = load_toml(path)
        foreign = [t for t in data if t not in tables]
        if foreign:
            raise ConfigError(f"{path} sets [{foreign[0]}], but {prog} reads only "
                              f"{', '.join('[' + t + ']' for t in tables)}.")
        apply_dict(cfg, data, str(path))
    for key, _raw in overrides:
        dotted = _resolve_key(key, tables)
        if dotted.partition(".")[0] not in tables:
            raise ConfigError(f"--{key} is a setting of [{dotted.partition('.')[0]}], which {prog} does not read "
                              f"(it reads {', '.join('[' + t + ']' for t in tables)}).")
    apply_overrides(cfg, overrides, prefer=tables)
    return cfg, positional


def _unused_tables(cfg: Config) -> dict[str, type]:
    """Mode tables this run's training type does not read: ``table -> spec class`` of their owner."""
    own = get_spec(cfg.train.training_type).table
    out: dict[str, type] = {}
    for spec in REGISTRY.values():
        if spec.table and spec.table != own:
            out.setdefault(spec.table, spec)
    return out


def _changed(cfg: Config, table: str) -> list[str]:
    default, obj = TABLES[table](), getattr(cfg, table)
    return [f.name for f in dataclasses.fields(obj) if getattr(obj, f.name) != getattr(default, f.name)]


def ignored_settings(cfg: Config) -> list[str]:
    """'table.key' of every mode setting changed from its default that this run's training type does not read."""
    return [f"{table}.{name}" for table in _unused_tables(cfg) for name in _changed(cfg, table)]


def validate(cfg: Config, *, check_paths: bool = True) -> None:
    """Reject values and combinations that cannot work, with one sentence each.

    General checks here; everything about one training type is its spec's ``check_config``.
    """
    for table, cls in TABLES.items():
        obj = getattr(cfg, table)
        for f in dataclasses.fields(cls):
            choices = f.metadata.get("choices")
            value = getattr(obj, f.name)
            if choices and value not in choices:
                raise ConfigError(f"{table}.{f.name} must be one of {', '.join(repr(c) for c in choices)}, "
                                  f"got {value!r}{_did_you_mean(str(value), [str(c) for c in choices])}.")
    r, d, m, t, o, tr = cfg.run, cfg.data, cfg.model, cfg.train, cfg.optim, cfg.transfer
    if not r.out_dir.strip():
        raise ConfigError("run.out_dir is empty; name the folder for the run's checkpoints and logs "
                          "(e.g. --run.out_dir=out).")
    if not r.dist_timeout_s > 0:
        raise ConfigError(f"run.dist_timeout_s must be positive, got {r.dist_timeout_s}.")
    if not (r.device in ("auto", "cpu", "cuda") or r.device.startswith("cuda:")):
        raise ConfigError(f"run.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {r.device!r}.")
    positive = {"data.block_size": d.block_size, "data.batch_size": d.batch_size, "model.n_layer": m.n_layer,
                "model.n_head": m.n_head, "model.n_embd": m.n_embd, "train.max_iters": t.max_iters,
                "train.eval_interval": t.eval_interval, "train.eval_iters": t.eval_iters,
                "train.log_interval": t.log_interval,
                "train.gradient_accumulation_steps": t.gradient_accumulation_steps}
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key} must be at least 1, got {value}.")
    for key, value in {"run.seed": r.seed, "optim.warmup_iters": o.warmup_iters,
                       "optim.lr_decay_iters": o.lr_decay_iters,
                       "data.prefetch_depth": d.prefetch_depth, "train.grad_clip": t.grad_clip,
                       "log.sample_tokens": cfg.log.sample_tokens, "run.max_rollbacks": r.max_rollbacks}.items():
        if value < 0:
            raise ConfigError(f"{key} must not be negative, got {value}.")
    if m.n_embd % m.n_head:
        raise ConfigError(f"model.n_embd ({m.n_embd}) must be divisible by model.n_head ({m.n_head}).")
    if not 0.0 <= m.dropout < 1.0:
        raise ConfigError(f"model.dropout must be in [0, 1), got {m.dropout}.")
    if o.learning_rate <= 0 or o.min_lr < 0:
        raise ConfigError("optim.learning_rate must be positive and optim.min_lr non-negative.")
    if o.min_lr > o.learning_rate:
        raise ConfigError(f"optim.min_lr ({o.min_lr}) must not exceed optim.learning_rate ({o.learning_rate}).")
    if not (0 <= o.beta1 < 1 and 0 <= o.beta2 < 1):
        raise ConfigError("optim.beta1 and optim.beta2 must be in [0, 1).")
    if tr.freeze_transformer and not tr.init_from_checkpoint and r.init_from != "resume":
        raise ConfigError("transfer.freeze_transformer=true needs transfer.init_from_checkpoint "
                          "(a frozen random trunk never learns).")
    if tr.unfreeze_at_iteration >= 0 and not tr.freeze_transformer:
        raise ConfigError("transfer.unfreeze_at_iteration is set but transfer.freeze_transformer is false, "
                          "so there is nothing to unfreeze.")
    if tr.unfreeze_at_iteration < -1:
        raise ConfigError(f"transfer.unfreeze_at_iteration must be -1 (never) or a step, "
                          f"got {tr.unfreeze_at_iteration}.")
    if tr.unfreeze_lr_multiplier <= 0:
        raise ConfigError(f"transfer.unfreeze_lr_multiplier must be positive, got {tr.unfreeze_lr_multiplier}.")
    if tr.cls_token_id < -1:
        raise ConfigError(f"transfer.cls_token_id must be -1 (the file's own) or a row of the checkpoint, "
                          f"got {tr.cls_token_id}.")
    if cfg.log.keep_every < 0 or cfg.log.keep_every % t.eval_interval:
        raise ConfigError(f"log.keep_every must be 0 or a multiple of train.eval_interval ({t.eval_interval}), "
                          f"got {cfg.log.keep_every}.")
    for table, owner in _unused_tables(cfg).items():
        for name in _changed(cfg, table):
            if name in getattr(owner, "must_stay_default", ()):
                raise ConfigError(f"{table}.{name} is set but train.training_type is '{t.training_type}'; "
                                  f"it applies only to {owner.description}.")
    get_spec(t.training_type).check_config(cfg, check_paths=check_paths)
    cfg.sample.validate()
    if check_paths:
        if d.dir and not Path(d.dir).is_dir():
            raise ConfigError(f"data.dir '{d.dir}' does not exist "
                              "(prepare one with `python -m mmengine.prepare INPUT --out DIR`).")
        # on resume the trunk is in ckpt.pt already, so the transfer source may be gone
        if tr.init_from_checkpoint and r.init_from != "resume" and not Path(tr.init_from_checkpoint).is_file():
            raise ConfigError(f"transfer.init_from_checkpoint '{tr.init_from_checkpoint}' does not exist.")
        if r.init_from == "resume":
            # ckpt.pt, or the newest ckpt_<kind>_<iter>.pt (the earlier trainer's files)
            from mmengine.upstream_run import resume_path

            if resume_path(r.out_dir) is None:
                raise ConfigError(f"run.init_from='resume' but there is no checkpoint at "
                                  f"'{Path(r.out_dir) / 'ckpt.pt'}'.")


# --- printing ------------------------------------------------------------------------------------

def to_dict(cfg: Config) -> dict:
    """Plain nested dict (TOML/JSON-serialisable)."""
    return dataclasses.asdict(cfg)


def from_dict(data: dict) -> Config:
    """Inverse of :func:`to_dict` (keys not in the schema are rejected)."""
    cfg = Config()
    apply_dict(cfg, data, "saved config")
    return cfg


def to_toml(cfg: Config, *, comments: bool = False) -> str:
    """The resolved config as a TOML document (``comments=True`` adds each field's help)."""
    lines: list[str] = []
    for table, cls in TABLES.items():
        lines.append(f"[{table}]")
        obj = getattr(cfg, table)
        for f in dataclasses.fields(cls):
            if comments:
                lines.append(f"# {f.metadata['help']}")
            lines.append(f"{f.name} = {toml_value(getattr(obj, f.name))}")
        lines.append("")
    return "\n".join(lines)


def table_help(table: str, cls: type) -> list[str]:
    """``--table.key=default`` and its help line for every field of one table."""
    out = [f"[{table}]  {cls.__doc__.split(']', 1)[1].strip() if cls.__doc__ else ''}"]
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        out.append(f"  --{table}.{f.name}={toml_value(default)}")
        out.append(f"      {f.metadata['help']}")
    return out


def help_text(prog: str = "python -m mmengine.train") -> str:  # noqa: D401
    """Usage plus every table and field with its default and help string."""
    out = [f"usage: {prog} [CONFIG.toml] [--table.key=value ...]",
           "",
           "Values are TOML values (strings may omit quotes); precedence: command line > file > defaults.",
           "Flat flags (--max_iters=100) work when the name belongs to one table.",
           ""]
    for table, cls in TABLES.items():
        out += table_help(table, cls) + [""]
    return "\n".join(out)


_help_text = help_text


def cli_entry(main_fn, argv: list[str] | None, prog: str, help_text=None) -> int:
    """:func:`mmengine.errors.cli_entry` with this schema's ``--help`` (or the command's own ``help_text``)."""
    return _cli_entry(main_fn, argv, prog, help_text=help_text or (lambda: _help_text(prog)))


def main(argv: list[str] | None = None) -> int:
    """``python -m mmengine.config``: print the resolved config; ``--from-upstream FILE.py``: an earlier-trainer or
    nanoGPT Python config as mmengine TOML (parsed, never run; what has no mmengine meaning listed at the top)."""
    def _print(args):
        if args and args[0].split("=", 1)[0] == "--from-upstream":
            from mmengine.upstream_config import converted_toml

            files = [a for a in [args[0].partition("=")[2], *args[1:]] if a]
            if len(files) != 1 or files[0].startswith("-"):
                raise ConfigError("--from-upstream takes one Python config file of the earlier trainer or nanoGPT "
                                  "(python -m mmengine.config --from-upstream config/FILE.py).")
            print(converted_toml(files[0], TABLES, validate=lambda d: validate(from_dict(d), check_paths=False)),
                  end="")
            return 0
        cfg = load_config(args, check_paths=False)
        print(to_toml(cfg), end="")
        return 0
    prog = "python -m mmengine.config"
    return _cli_entry(_print, argv, prog, help_text=lambda: help_text(prog) + f"\nor: {prog} --from-upstream "
                      "CONFIG.py  (an earlier-trainer or nanoGPT Python config as mmengine TOML; parsed, never run)")


if __name__ == "__main__":
    sys.exit(main())

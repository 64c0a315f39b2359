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
import json
import math
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


class ConfigError(ValueError):
    """A configuration mistake the user can fix; the message is one sentence."""


def _f(default: Any, help: str, *, choices: tuple | None = None) -> Any:
    """A dataclass field with a help string (and optional allowed values)."""
    meta = {"help": help}
    if choices is not None:
        meta["choices"] = choices
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: json.loads(json.dumps(d)), metadata=meta)
    return field(default=default, metadata=meta)


TRAINING_TYPES = ("unmasking", "token_classification", "remasking_binary", "sequence_scoring")


@dataclass
class RunConfig:
    """[run] where outputs go, hardware, seeds, how the run starts."""

    out_dir: str = _f("out", "Folder for ckpt.pt (latest), best.pt, metrics.jsonl and plots.")
    seed: int = _f(1337, "Seed of every random choice (data order, masking, corruption, init).")
    device: str = _f("auto", "'auto' (cuda when available), 'cpu', 'cuda' or 'cuda:N'.")
    dtype: str = _f("auto", "'auto' (bfloat16 on CUDA when supported, float32 on CPU), 'float32', 'bfloat16' or 'float16'.",
                    choices=("auto", "float32", "bfloat16", "float16"))
    compile: bool = _f(False, "Compile the model with torch.compile (slow first iterations, faster afterwards).")
    init_from: str = _f("scratch", "'scratch' starts a new run; 'resume' continues exactly from out_dir/ckpt.pt.",
                        choices=("scratch", "resume"))
    nan_policy: str = _f("stop", "On a NaN/inf loss: 'stop' with a message, or 'rollback' to the last checkpoint and skip the batch.",
                         choices=("stop", "rollback"))
    max_rollbacks: int = _f(3, "How many NaN roll-backs are allowed before the run stops anyway.")


@dataclass
class DataConfig:
    """[data] the prepared data dir and how windows are cut from it."""

    dir: str = _f("", "Prepared data dir (python -m mmengine.prepare); empty means the bundled tiny-Shakespeare (prepared on first use).")
    block_size: int = _f(64, "Tokens per training window (the model's context length).")
    batch_size: int = _f(32, "Windows per micro-batch on each rank.")
    use_paragraph_boundaries: bool = _f(False, "Start windows only at paragraph starts (after the separator) instead of at any token.")
    separator: str = _f("", "Paragraph separator text, encoded with the data dir's tokenizer; empty means the data dir's own (meta.json).")
    prefetch_depth: int = _f(2, "Batches assembled ahead of time by the background prefetcher (0 = assemble in the training loop).")


@dataclass
class ModelConfig:
    """[model] the transformer; the head follows from train.training_type."""

    n_layer: int = _f(4, "Transformer blocks.")
    n_head: int = _f(4, "Attention heads per block (n_embd must be divisible by it).")
    n_embd: int = _f(128, "Width of the residual stream.")
    dropout: float = _f(0.0, "Dropout probability (embeddings, attention, MLP).")
    bias: bool = _f(False, "Biases in Linear and LayerNorm layers.")
    attention_type: str = _f("bidirectional", "'bidirectional' (masked diffusion, classifiers) or 'causal'.",
                             choices=("bidirectional", "causal"))
    use_rope: bool = _f(True, "Rotary position embeddings (False: learned absolute positions).")
    attention_backend: str = _f("auto", "'auto' (Triton kernels on CUDA when available), 'torch' or 'triton'.",
                                choices=("auto", "torch", "triton"))
    loss_backend: str = _f("auto", "'auto' (Triton kernels on CUDA when available), 'torch' or 'triton'.",
                           choices=("auto", "torch", "triton"))


@dataclass
class TrainConfig:
    """[train] what is learned and for how long."""

    training_type: str = _f("unmasking", "'unmasking' (masked-diffusion LM), 'token_classification', 'remasking_binary' (= 2 classes) or 'sequence_scoring'.",
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

    init_from_checkpoint: str = _f("", "Checkpoint whose trunk (transformer.*) initialises this model (any mode); empty = none.")
    freeze_transformer: bool = _f(False, "Train only the head (feature extraction); needs init_from_checkpoint.")
    unfreeze_at_iteration: int = _f(-1, "Unfreeze the trunk at this step (-1 = never); needs freeze_transformer.")
    unfreeze_lr_multiplier: float = _f(0.1, "After unfreezing, the trunk's learning rate is the scheduled one times this.")


@dataclass
class UnmaskingConfig:
    """[unmasking] the masked-diffusion language model."""

    objective: str = _f("stages", "'stages' (masking-stage curriculum) or 'continuous_time' (MDLM/LLaDA: t ~ U(eps,1), loss weighted 1/t).",
                        choices=("stages", "continuous_time"))
    stages: list = _f([{"type": "random", "max_masked_ratio": 1.0}],
                      "Masking stages, trained in order; each an inline table like {type=\"sticky\", target_masked_ratio=0.4, p1=0.1, p2=0.6}.")
    val_loss_stale_count: int = _f(3, "Advance to the next stage after this many evaluations without a better validation loss.")
    bert_replacement: bool = _f(False, "BERT-style 80/10/10: of the selected positions 10% get a random token and 10% stay unchanged.")
    eps: float = _f(1e-3, "Smallest masking time t of the continuous-time objective.")


@dataclass
class TokenClassificationConfig:
    """[token_classification] one class per token."""

    num_token_classes: int = _f(0, "Classes per token; 0 = derived (labels: from the data dir; corruption: 1 + number of kinds; remasking_binary: 2).")
    label_source: str = _f("corruption", "'corruption' (labels made on the fly: 0 = original, k = k-th corruption kind) or 'labels' (the data dir's label files).",
                           choices=("corruption", "labels"))
    corruption: list = _f([], "Corruption kinds, each an inline table {type=\"random\"|\"lm\"|\"swap\"|\"repeat\", rate=..., rate_start=..., ramp_iters=...}; "
                              "empty = the first num_token_classes - 1 of random (rate 0.15), swap (0.05), repeat (0.05).")
    lm_checkpoint: str = _f("", "Language-model checkpoint that samples the replacements of an 'lm' corruption kind.")


@dataclass
class SequenceScoringConfig:
    """[sequence_scoring] one score in [0, 1] per sequence, read at the [CLS] position."""

    score_source: str = _f("synthetic", "'documents' (a data dir prepared from {text, score} JSONL) or 'synthetic' (score = fraction of corrupted tokens, any corpus).",
                           choices=("synthetic", "documents"))
    max_corruption_rate: float = _f(0.5, "Synthetic scores: each window is corrupted at a rate drawn uniformly from [0, this].")


@dataclass
class LogConfig:
    """[log] what the run writes and shows besides metrics.jsonl and the checkpoints."""

    progress: bool = _f(True, "Show a tqdm progress bar (only on rank 0, only on a terminal unless forced).")
    plots: bool = _f(False, "Write loss/learning-rate PNG plots into out_dir at each evaluation (needs matplotlib).")
    tensorboard: bool = _f(False, "Write TensorBoard event files into out_dir/tensorboard (needs tensorboard).")
    wandb: bool = _f(False, "Log to Weights & Biases in offline mode (needs wandb; sync later with `wandb sync`).")
    wandb_project: str = _f("mmengine", "wandb project name.")
    sample_tokens: int = _f(200, "Language models: length of the sample generated at the end of the run (0 = none).")
    sample_steps: int = _f(32, "Unmasking steps per chunk of that sample (a chunk is half a block of new tokens).")
    sample_temperature: float = _f(0.8, "Softmax temperature of that sample (lower: safer, more repetitive).")
    sample_order: str = _f("random", "Which masked positions each unmasking step reveals: 'random' (MDLM ancestral sampling) or 'confidence' (most confident first; repetitive on small models).",
                           choices=("random", "confidence"))
    save_best: bool = _f(True, "Keep out_dir/best.pt, the checkpoint with the lowest validation loss.")


@dataclass
class Config:
    """The whole run; one attribute per TOML table."""

    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    unmasking: UnmaskingConfig = field(default_factory=UnmaskingConfig)
    token_classification: TokenClassificationConfig = field(default_factory=TokenClassificationConfig)
    sequence_scoring: SequenceScoringConfig = field(default_factory=SequenceScoringConfig)
    log: LogConfig = field(default_factory=LogConfig)


TABLES: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(Config)}  # type: ignore[misc]

# Flat names of train_run.py / nanoGPT that do not equal a field name.
LEGACY_ALIASES: dict[str, str] = {
    "wandb_log": "log.wandb",
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


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list"}.get(tp, str(tp))


def _check_value(key: str, tp: Any, value: Any) -> Any:
    """Return ``value`` converted to the field's type, or raise ConfigError naming the key."""
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, float):
        if math.isnan(value):
            raise ConfigError(f"{key} must be a number, got nan.")
        return value
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is bool and isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str):
        return value
    if tp is list and isinstance(value, list):
        for item in value:
            if not isinstance(item, dict):
                raise ConfigError(f"{key} must be a list of inline tables like [{{type=\"random\", ...}}], got an item {item!r}.")
        return value
    raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r} ({type(value).__name__}).")


# A bare word in value position of an inline table or array: `{type=random, ...}` (the shell ate the quotes).
_BARE_VALUE = re.compile(r"([=\[,]\s*)([A-Za-z_][\w.\-]*)(?=\s*[,}\]])")


def _toml_value_of(raw: str) -> Any:
    return tomllib.loads(f"v = {raw}")["v"]


def parse_cli_value(raw: str, tp: Any) -> Any:
    """Parse one command-line value as a TOML value.

    ``True``/``False`` (Python spelling) are booleans too, and a bare word for a string field is taken
    as the string itself, so ``--run.out_dir=out/lm`` needs no quotes. Likewise the bare words of an
    unquoted list of tables, since a shell removes the quotes of
    ``--unmasking.stages=[{type="random", max_masked_ratio=0.5}]`` before we see it.
    """
    if raw in ("True", "False"):
        return raw == "True"
    try:
        return _toml_value_of(raw)
    except tomllib.TOMLDecodeError:
        pass
    if tp is str:
        return raw
    if raw.lstrip()[:1] in ("[", "{"):
        quoted = _BARE_VALUE.sub(lambda m: m.group(0) if m.group(2) in ("true", "false", "inf", "nan")
                                 else f'{m.group(1)}"{m.group(2)}"', raw)
        try:
            return _toml_value_of(quoted)
        except tomllib.TOMLDecodeError:
            pass
    if tp is list:
        raise ConfigError(f"could not parse {raw!r} as a TOML list (write e.g. --unmasking.stages='[{{type=\"random\", max_masked_ratio=0.5}}]', "
                          "quoted for the shell).")
    return raw  # _check_value then names the expected type


def _resolve_key(key: str) -> str:
    """'table.field' or a flat legacy name -> 'table.field'; ConfigError with a suggestion otherwise."""
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
        if len(targets) > 1:
            raise ConfigError(f"--{key} is ambiguous; write one of {', '.join('--' + t for t in targets)}.")
        return targets[0]
    raise ConfigError(f"unknown option '--{key}'{_did_you_mean(key, list(index) + _all_keys())}.")


def _set(cfg: Config, dotted: str, value: Any, source: str) -> None:
    table, _, name = dotted.partition(".")
    obj = getattr(cfg, table)
    tp = _field_types(type(obj))[name]
    try:
        setattr(obj, name, _check_value(dotted, tp, value))
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
            if name not in names:
                raise ConfigError(f"{source}: unknown key '{table}.{name}'{_did_you_mean(f'{table}.{name}', [f'{table}.{n}' for n in names])}.")
            _set(cfg, f"{table}.{name}", value, source)


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


def _open_brackets(text: str) -> int:
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
            while raw is not None and _open_brackets(raw) > 0 and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                raw += " " + argv[i + 1]
                i += 1
            overrides.append((key.replace("-", "_"), raw))
        elif path is None:
            path = arg
        else:
            raise ConfigError(f"unexpected argument '{arg}'; give at most one config file, then --table.key=value overrides.")
        i += 1
    return path, overrides


def apply_overrides(cfg: Config, overrides: list[tuple[str, str | None]]) -> None:
    """Apply ``parse_args`` overrides (command-line values) to ``cfg``."""
    for key, raw in overrides:
        dotted = _resolve_key(key)
        table, _, name = dotted.partition(".")
        tp = _field_types(TABLES[table])[name]
        if raw is None:
            # a bare flag switches a boolean on (`--run.compile`)
            if tp is not bool:
                raise ConfigError(f"--{key} needs a value (--{dotted}=...).")
            raw = "true"
        _set(cfg, dotted, parse_cli_value(raw, tp), "command line")


def load_config(argv: list[str] | None = None, *, check_paths: bool = True) -> Config:
    """Defaults, then the TOML file (if any), then the command-line overrides; validated.

    Derived values are filled in (a token-classification run's default corruption kinds), so the
    resolved config that is printed and saved with the checkpoints says what the run does.
    """
    path, overrides = parse_args(argv)
    cfg = Config()
    if path is not None:
        apply_dict(cfg, load_toml(path), str(path))
    apply_overrides(cfg, overrides)
    validate(cfg, check_paths=check_paths)
    tc = cfg.token_classification
    if cfg.train.training_type in MODE_TABLES["token_classification"] and tc.label_source == "corruption":
        tc.corruption = corruption_kinds(cfg)
    return cfg


# Class k of a corruption run is the k-th kind; an empty list takes the first num_token_classes - 1 of
# these, so `--training_type=token_classification --num_token_classes=3` (a train_run.py command line) runs.
DEFAULT_CORRUPTION = ({"type": "random", "rate": 0.15}, {"type": "swap", "rate": 0.05}, {"type": "repeat", "rate": 0.05})


def corruption_kinds(cfg: Config) -> list[dict]:
    """The corruption kinds of a token-classification run: as listed, or the defaults for its class count."""
    tc = cfg.token_classification
    if tc.corruption:
        return tc.corruption
    n = 2 if cfg.train.training_type == "remasking_binary" else (tc.num_token_classes or 2)
    if n - 1 > len(DEFAULT_CORRUPTION):
        raise ConfigError(f"{n} token classes need {n - 1} corruption kinds but only {len(DEFAULT_CORRUPTION)} have defaults; "
                          "list them in token_classification.corruption.")
    return [dict(k) for k in DEFAULT_CORRUPTION[:n - 1]]


def num_token_classes(cfg: Config) -> int | None:
    """The classifier's class count when it follows from the config alone (None: read it from the data)."""
    tc = cfg.token_classification
    if cfg.train.training_type == "remasking_binary":
        return 2
    if tc.num_token_classes:
        return tc.num_token_classes
    if tc.label_source == "corruption":
        return 1 + len(corruption_kinds(cfg))
    return None


# Which training types read each mode table (the others ignore it).
MODE_TABLES = {"unmasking": ("unmasking",), "token_classification": ("token_classification", "remasking_binary"),
               "sequence_scoring": ("sequence_scoring",)}


def ignored_settings(cfg: Config) -> list[str]:
    """'table.key' of every mode setting changed from its default that this run's training type does not read."""
    out = []
    for table, users in MODE_TABLES.items():
        if cfg.train.training_type in users:
            continue
        default, obj = TABLES[table](), getattr(cfg, table)
        out += [f"{table}.{f.name}" for f in dataclasses.fields(obj) if getattr(obj, f.name) != getattr(default, f.name)]
    return out


def validate(cfg: Config, *, check_paths: bool = True) -> None:
    """Reject values and combinations that cannot work, with one sentence each."""
    for table, cls in TABLES.items():
        obj = getattr(cfg, table)
        for f in dataclasses.fields(cls):
            choices = f.metadata.get("choices")
            value = getattr(obj, f.name)
            if choices and value not in choices:
                raise ConfigError(f"{table}.{f.name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}{_did_you_mean(str(value), [str(c) for c in choices])}.")
    r, d, m, t, o, tr = cfg.run, cfg.data, cfg.model, cfg.train, cfg.optim, cfg.transfer
    if not (r.device in ("auto", "cpu", "cuda") or r.device.startswith("cuda:")):
        raise ConfigError(f"run.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {r.device!r}.")
    positive = {"data.block_size": d.block_size, "data.batch_size": d.batch_size, "model.n_layer": m.n_layer,
                "model.n_head": m.n_head, "model.n_embd": m.n_embd, "train.max_iters": t.max_iters,
                "train.eval_interval": t.eval_interval, "train.eval_iters": t.eval_iters,
                "train.log_interval": t.log_interval, "train.gradient_accumulation_steps": t.gradient_accumulation_steps,
                "unmasking.val_loss_stale_count": cfg.unmasking.val_loss_stale_count}
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key} must be at least 1, got {value}.")
    for key, value in {"optim.warmup_iters": o.warmup_iters, "optim.lr_decay_iters": o.lr_decay_iters,
                       "data.prefetch_depth": d.prefetch_depth, "train.grad_clip": t.grad_clip,
                       "log.sample_tokens": cfg.log.sample_tokens, "run.max_rollbacks": r.max_rollbacks,
                       "log.sample_temperature": cfg.log.sample_temperature}.items():
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
        raise ConfigError("transfer.freeze_transformer=true needs transfer.init_from_checkpoint (a frozen random trunk never learns).")
    if tr.unfreeze_at_iteration >= 0 and not tr.freeze_transformer:
        raise ConfigError("transfer.unfreeze_at_iteration is set but transfer.freeze_transformer is false, so there is nothing to unfreeze.")
    if tr.unfreeze_at_iteration < -1:
        raise ConfigError(f"transfer.unfreeze_at_iteration must be -1 (never) or a step, got {tr.unfreeze_at_iteration}.")
    if tr.unfreeze_lr_multiplier <= 0:
        raise ConfigError(f"transfer.unfreeze_lr_multiplier must be positive, got {tr.unfreeze_lr_multiplier}.")
    tt = t.training_type
    tc = cfg.token_classification
    if tc.num_token_classes and tt not in ("token_classification", "remasking_binary"):
        raise ConfigError(f"token_classification.num_token_classes is set but train.training_type is '{tt}'; it applies only to token classification.")
    if tt == "remasking_binary" and tc.num_token_classes not in (0, 2):
        raise ConfigError(f"train.training_type='remasking_binary' means 2 classes, but num_token_classes is {tc.num_token_classes}.")
    if tc.num_token_classes == 1 or tc.num_token_classes < 0:
        raise ConfigError(f"token_classification.num_token_classes must be at least 2, got {tc.num_token_classes}.")
    if tt in ("token_classification", "remasking_binary") and tc.label_source == "corruption":
        kinds = corruption_kinds(cfg)
        _check_corruption(kinds)
        n = num_token_classes(cfg)
        if n is not None and n != 1 + len(kinds):
            raise ConfigError(f"{n} token classes do not match {len(kinds)} corruption kind(s): class 0 is 'original' and each kind adds one class, so use {1 + len(kinds)}.")
        if any(k.get("type") == "lm" for k in kinds) and not tc.lm_checkpoint:
            raise ConfigError("an 'lm' corruption kind needs token_classification.lm_checkpoint (the LM that samples replacements).")
    if tt == "unmasking":
        if cfg.unmasking.objective == "stages" and not cfg.unmasking.stages:
            raise ConfigError("unmasking.stages must list at least one masking stage.")
        if not 0 < cfg.unmasking.eps < 1:
            raise ConfigError(f"unmasking.eps must be in (0, 1), got {cfg.unmasking.eps}.")
        _check_stages(cfg.unmasking.stages)
    if tt == "sequence_scoring" and not 0 < cfg.sequence_scoring.max_corruption_rate <= 1:
        raise ConfigError("sequence_scoring.max_corruption_rate must be in (0, 1].")
    if tt in ("token_classification", "remasking_binary", "sequence_scoring") and m.attention_type == "causal":
        raise ConfigError(f"train.training_type='{tt}' needs model.attention_type='bidirectional' (a classifier reads the whole window).")
    if check_paths:
        if d.dir and not Path(d.dir).is_dir():
            raise ConfigError(f"data.dir '{d.dir}' does not exist (prepare one with `python -m mmengine.prepare INPUT --out DIR`).")
        # on resume the trunk is in ckpt.pt already, so the transfer source may be gone
        for key, value in (("transfer.init_from_checkpoint", tr.init_from_checkpoint if r.init_from != "resume" else ""),
                           ("token_classification.lm_checkpoint", tc.lm_checkpoint if tt != "unmasking" else "")):
            if value and not Path(value).is_file():
                raise ConfigError(f"{key} '{value}' does not exist.")
        if r.init_from == "resume" and not (Path(r.out_dir) / "ckpt.pt").is_file():
            raise ConfigError(f"run.init_from='resume' but there is no checkpoint at '{Path(r.out_dir) / 'ckpt.pt'}'.")


def parse_items(key: str, items: list, from_dict) -> list:
    """``[from_dict(item) ...]`` for a list of inline tables; a bad item -> ConfigError naming ``key[i]``."""
    out = []
    for i, item in enumerate(items):
        try:
            out.append(from_dict(dict(item)))
        except (ValueError, TypeError, KeyError) as e:
            raise ConfigError(f"{key}[{i}]: {str(e).rstrip('.')}.") from None
    return out


def _check_stages(stages: list) -> None:
    from mmengine.data.masking import MaskingStage

    parse_items("unmasking.stages", stages, MaskingStage.from_dict)


def _check_corruption(kinds: list) -> None:
    from mmengine.data.corruption import CorruptionKind

    parsed = parse_items("token_classification.corruption", kinds, CorruptionKind.from_dict)
    # ramps are linear, so the summed rate is largest at iteration 0 or where a ramp ends
    for it in sorted({0, *(k.ramp_iters for k in parsed)}):
        total = sum(k.rate_at(it) for k in parsed)
        if total > 1.0 + 1e-9:
            raise ConfigError(f"the token_classification.corruption rates sum to {total:.3g} at iteration {it}; they must sum to at most 1.")


# --- printing ------------------------------------------------------------------------------------

def to_dict(cfg: Config) -> dict:
    """Plain nested dict (TOML/JSON-serialisable)."""
    return dataclasses.asdict(cfg)


def from_dict(data: dict) -> Config:
    """Inverse of :func:`to_dict` (keys not in the schema are rejected)."""
    cfg = Config()
    apply_dict(cfg, data, "saved config")
    return cfg


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {v!r} as TOML")


def to_toml(cfg: Config, *, comments: bool = False) -> str:
    """The resolved config as a TOML document (``comments=True`` adds each field's help)."""
    lines: list[str] = []
    for table, cls in TABLES.items():
        lines.append(f"[{table}]")
        obj = getattr(cfg, table)
        for f in dataclasses.fields(cls):
            if comments:
                lines.append(f"# {f.metadata['help']}")
            lines.append(f"{f.name} = {_toml_value(getattr(obj, f.name))}")
        lines.append("")
    return "\n".join(lines)


def help_text(prog: str = "python -m mmengine.train") -> str:
    """Usage plus every table and field with its default and help string."""
    out = [f"usage: {prog} [CONFIG.toml] [--table.key=value ...]",
           "",
           "Values are TOML values (strings may omit quotes); precedence: command line > file > defaults.",
           "Flat flags (--max_iters=100) work when the name belongs to one table.",
           ""]
    for table, cls in TABLES.items():
        out.append(f"[{table}]  {cls.__doc__.split(']', 1)[1].strip() if cls.__doc__ else ''}")
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            out.append(f"  --{table}.{f.name}={_toml_value(default)}")
            out.append(f"      {f.metadata['help']}")
        out.append("")
    return "\n".join(out)


def cli_entry(main_fn, argv: list[str] | None, prog: str) -> int:
    """Run ``main_fn(argv)``; turn user mistakes into one line on stderr and exit code 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "-h" in args or "--help" in args:
        print(help_text(prog))
        return 0
    try:
        return main_fn(args) or 0
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


class UserError(ValueError):
    """Any other user mistake found while starting a run (bad data dir, bad checkpoint)."""


def main(argv: list[str] | None = None) -> int:
    """``python -m mmengine.config``: print the resolved config."""
    def _print(args):
        cfg = load_config(args, check_paths=False)
        print(to_toml(cfg), end="")
        return 0
    return cli_entry(_print, argv, "python -m mmengine.config")


if __name__ == "__main__":
    sys.exit(main())

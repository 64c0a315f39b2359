"""Python configs of the earlier research trainer and of nanoGPT -> mmengine TOML tables.

Those configs are Python files that their trainers ``exec``; here they are only *read*: the top-level
``NAME = value`` assignments are parsed with :mod:`ast` and a value is taken when it is a literal (numbers,
strings, booleans, None, lists, tuples, dicts, a unary minus). Anything else (a call, a name, arithmetic,
an import) is listed as unconvertible and never evaluated, so ``x = __import__('os').system(...)`` is a
line in the notes, nothing more.

Each known key goes to its mmengine table (``n_layer`` -> ``[model]``, ``learning_rate`` -> ``[optim]``,
``unmasking_stages`` -> ``[unmasking] stages`` in mmengine's stage format, the recipes
``uncertainty_factor``, ... -> ``[unmasking]``, its stage mixing -> ``stage_mixing``; a sequence scorer's stages and
``unmasking_model_checkpoint`` -> ``[sequence_scoring]`` with ``score_source = "reconstruction"``). Whether
mmengine has a key is read from the schema it is given (``mmengine.config.TABLES``, and
:class:`mmengine.data.masking.MaskingStage` for stage keys) at conversion time: a key it does not have is still
written and listed as "needs mmengine support". Keys with no mmengine meaning are listed too; nothing is
dropped silently. ``python -m mmengine.config --from-upstream FILE.py`` prints the TOML with the notes as
comments (this module does not import :mod:`mmengine.config`, which calls it).
"""
from __future__ import annotations

import ast
import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmengine.errors import ConfigError, MMEngineError

__all__ = ["ConversionNotes", "convert_assignments", "convert_config", "converted_toml", "read_assignments",
           "tables_to_toml"]

# Keys of the earlier trainer's train_run.py that nanoGPT's train.py does not have: any of them in a
# file means it was written for the earlier trainer.
_EARLIER_TRAINER_KEYS = frozenset({
    "training_type", "attention_type", "use_rope", "position_encoding", "unmasking_stages", "validation_stages",
    "binary_classification", "num_token_classes", "init_from_checkpoint", "freeze_transformer",
    "unfreeze_at_iteration", "unfreeze_lr_multiplier", "use_all_stages_for_training", "weight_loss_by_mask_ratio",
    "uncertainty_factor", "enable_entropy_penalty", "unmasking_model_checkpoint", "use_paragraph_boundaries",
})

# Source key -> "table.key", for keys whose value carries over as it is.
_DIRECT = {
    "out_dir": "run.out_dir", "device": "run.device", "dtype": "run.dtype", "compile": "run.compile",
    "seed": "run.seed",
    "block_size": "data.block_size", "batch_size": "data.batch_size",
    "use_paragraph_boundaries": "data.use_paragraph_boundaries",
    "n_layer": "model.n_layer", "n_head": "model.n_head", "n_embd": "model.n_embd", "dropout": "model.dropout",
    "bias": "model.bias", "attention_type": "model.attention_type", "use_rope": "model.use_rope",
    "max_iters": "train.max_iters", "eval_interval": "train.eval_interval", "eval_iters": "train.eval_iters",
    "log_interval": "train.log_interval", "gradient_accumulation_steps": "train.gradient_accumulation_steps",
    "grad_clip": "train.grad_clip",
    "learning_rate": "optim.learning_rate", "min_lr": "optim.min_lr", "warmup_iters": "optim.warmup_iters",
    "lr_decay_iters": "optim.lr_decay_iters", "decay_lr": "optim.decay_lr", "weight_decay": "optim.weight_decay",
    "beta1": "optim.beta1", "beta2": "optim.beta2",
    "init_from_checkpoint": "transfer.init_from_checkpoint", "freeze_transformer": "transfer.freeze_transformer",
    "unfreeze_lr_multiplier": "transfer.unfreeze_lr_multiplier",
    "num_token_classes": "token_classification.num_token_classes",
    "wandb_log": "log.wandb", "wandb_project": "log.wandb_project",
}
# The earlier trainer's loss and batch recipes: [unmasking] keys of the same names, for a language model only.
_UNMASKING_RECIPES = ("uncertainty_factor", "weight_loss_by_mask_ratio", "enable_entropy_penalty",
                      "max_entropy_penalty", "entropy_penalty_start_iter")
# Which training types read those recipes (None: the file does not say, so mmengine's default, unmasking).
_RECIPE_READERS = (None, "unmasking")
# Where the stage lists of a file go, by its training_type: a scorer masks for its LM's reconstructions,
# any other reads them as a language model's curriculum.
_STAGE_CONVERTERS = {"sequence_scoring": "scorer_stages"}
# Its defaults where they differ from mmengine's (written when the file turns the recipe on without them).
_EARLIER_DEFAULTS = {"entropy_penalty_start_iter": 6000}
# Keys read by a converter below (not carried as they are).
_CONVERTED = frozenset({"training_type", "binary_classification", "dataset", "init_from", "position_encoding",
                        "unfreeze_at_iteration", "unmasking_stages", "validation_stages", "unmasking_model_checkpoint",
                        "use_all_stages_for_training", *_UNMASKING_RECIPES})
# Stage keys of the earlier trainer -> mmengine's MaskingStage names.
_STAGE_KEYS = {"type": "type", "target_masked_ratio": "target_masked_ratio", "p1_probability": "p1",
               "p2_probability": "p2", "max_masked_ratio": "max_masked_ratio", "spans_count": "spans_count",
               "val_loss_stale_count": "val_loss_stale_count"}
_TABLE_ORDER = ("run", "data", "model", "train", "optim", "transfer", "unmasking", "token_classification",
                "sequence_scoring", "log")


@dataclass
class ConversionNotes:
    """What a conversion could not carry over as a plain mmengine setting; each entry one line."""

    source_format: str = "earlier trainer"  # "earlier trainer" or "nanoGPT"
    unconvertible: list[str] = field(default_factory=list)  # assignments that are not literals (never run)
    needs_support: list[str] = field(default_factory=list)  # written, but mmengine has no such key yet
    ignored: list[str] = field(default_factory=list)  # keys with no mmengine meaning (not written)
    remarks: list[str] = field(default_factory=list)  # how a value was derived

    def lines(self) -> list[str]:
        article = "an" if self.source_format[:1] in "aeiou" else "a"
        out = [f"converted from {article} {self.source_format} config; keys it does not set take mmengine's defaults"]
        out += [f"unconvertible (not a literal, not run): {x}" for x in self.unconvertible]
        out += [f"needs mmengine support: {x}" for x in self.needs_support]
        out += [f"no mmengine meaning, not converted: {x}" for x in self.ignored]
        out += [f"note: {x}" for x in self.remarks]
        return out


# -----------------------------------------------------------------------------
# Reading the file


class _NotLiteral(ValueError):
    pass


def _literal(node: ast.AST) -> Any:
    """The value of a literal expression node; _NotLiteral naming what it is otherwise. Never evaluates code."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, (bool, int, float, str)) or node.value is None:
            return node.value
        raise _NotLiteral(f"a {type(node.value).__name__} constant")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _NotLiteral("a sign on something other than a number")
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(item) for item in node.elts]
    if isinstance(node, ast.Dict):
        if any(key is None for key in node.keys):
            raise _NotLiteral("a dict with ** unpacking")
        keys = [_literal(key) for key in node.keys]
        if not all(isinstance(key, str) for key in keys):
            raise _NotLiteral("a dict with keys that are not strings")
        return {key: _literal(value) for key, value in zip(keys, node.values)}
    kinds = {ast.Call: "a call", ast.Name: "a name", ast.Attribute: "an attribute", ast.BinOp: "arithmetic",
             ast.Subscript: "a subscript", ast.Lambda: "a lambda", ast.JoinedStr: "an f-string",
             ast.IfExp: "a conditional", ast.Compare: "a comparison", ast.BoolOp: "a boolean expression"}
    raise _NotLiteral(kinds.get(type(node), f"a {type(node).__name__} expression"))


def _clip(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_assignments(text: str, source: str = "config") -> tuple[dict[str, Any], list[str]]:
    """({name: literal value} of the top-level assignments, [one line per statement not read]).

    A later assignment of the same name wins, as when the file runs. Nothing is executed; a file that
    is not valid Python raises :class:`ConfigError`.
    """
    try:
        tree = ast.parse(text, filename=source)
    except SyntaxError as exc:
        raise ConfigError(f"{source} is not valid Python (line {exc.lineno}: {exc.msg}).") from None
    values: dict[str, Any] = {}
    skipped: list[str] = []
    for stmt in tree.body:
        where = f"line {stmt.lineno}: {_clip(ast.get_source_segment(text, stmt) or type(stmt).__name__)}"
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
            continue  # a docstring
        if isinstance(stmt, ast.Assign) and all(isinstance(t, ast.Name) for t in stmt.targets):
            targets, node = [t.id for t in stmt.targets], stmt.value
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            targets, node = [stmt.target.id], stmt.value
        else:
            skipped.append(f"{where} (a statement, not a NAME = literal assignment)")
            continue
        try:
            value = _literal(node)
        except _NotLiteral as exc:
            skipped.append(f"{where} ({exc})")
            for name in targets:
                values.pop(name, None)  # an earlier literal no longer holds once the file would reassign it
            continue
        for name in targets:
            values[name] = value
    return values, skipped


# -----------------------------------------------------------------------------
# Mapping onto the schema


def _schema_type(dotted: str, schema: dict[str, type]) -> Any:
    """The field type of 'table.key' in ``schema`` (table name -> dataclass), or None when it has no such key."""
    table, _, name = dotted.partition(".")
    cls = schema.get(table)
    if cls is None or name not in {f.name for f in dataclasses.fields(cls)}:
        return None
    return typing.get_type_hints(cls)[name]


def _fits(tp: Any, value: Any) -> bool:
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if tp is list:
        return isinstance(value, list)
    return True


def _stage_fields() -> set[str]:
    from mmengine.data.masking import MaskingStage

    return {f.name for f in dataclasses.fields(MaskingStage)}


class _Converter:
    def __init__(self, values: dict[str, Any], notes: ConversionNotes, schema: dict[str, type]):
        self.values = values
        self.notes = notes
        self.schema = schema
        self.tables: dict[str, dict[str, Any]] = {}

    def put(self, dotted: str, value: Any, origin: str) -> None:
        """Write table.key = value, checking it against the schema when mmengine has the key."""
        if value is None:
            self.notes.ignored.append(f"{origin} = None (TOML has no None; mmengine's default applies)")
            return
        tp = _schema_type(dotted, self.schema)
        if tp is None:
            self.notes.needs_support.append(f"{dotted} (from {origin})")
        elif not _fits(tp, value):
            self.notes.unconvertible.append(f"{origin} = {value!r} does not fit {dotted}")
            return
        elif tp is float:
            value = float(value)
        table, _, key = dotted.partition(".")
        self.tables.setdefault(table, {})[key] = value

    def stages(self, name: str, stages: Any, keep_stale: bool,
               why: str = "validation stages never advance") -> list[dict] | None:
        """The earlier trainer's stage dicts renamed to mmengine's stage keys (keys it never had listed)."""
        if not isinstance(stages, list) or not all(isinstance(s, dict) for s in stages):
            self.notes.unconvertible.append(f"{name} is not a list of stage dicts")
            return None
        out = []
        for i, stage in enumerate(stages):
            converted = {}
            for key, value in stage.items():
                target = _STAGE_KEYS.get(key)
                if target is None:
                    self.notes.ignored.append(f"{name}[{i}].{key}")
                elif target == "val_loss_stale_count" and not keep_stale:
                    self.notes.ignored.append(f"{name}[{i}].val_loss_stale_count ({why})")
                else:
                    converted[target] = value
            out.append(converted)
        return out

    def put_stages(self, dotted: str, stages: list[dict], origin: str) -> None:
        """table.key = stages, listing the stage keys mmengine's MaskingStage does not have yet."""
        known = _stage_fields()
        for key in sorted({k for s in stages for k in s if k not in known}):
            self.notes.needs_support.append(f"stage key {key} in {dotted} (from {origin})")
        self.put(dotted, stages, origin)

    def run(self) -> dict[str, dict[str, Any]]:
        v = self.values
        for key, dotted in _DIRECT.items():
            if key in v:
                self.put(dotted, v[key], key)
        kind = self.training_type()
        self.recipes(kind)
        if "dataset" in v:
            if isinstance(v["dataset"], str) and v["dataset"]:
                self.put("data.dir", f"data/{v['dataset']}", "dataset")
                self.notes.remarks.append(f"dataset '{v['dataset']}' -> data.dir 'data/{v['dataset']}', the source "
                                          "trainer's folder: point it at that data dir "
                                          "(a nanoGPT data dir reads as it is)")
            else:
                self.notes.unconvertible.append(f"dataset = {v['dataset']!r} is not a dataset name")
        if "init_from" in v:
            if v["init_from"] in ("scratch", "resume"):
                self.put("run.init_from", v["init_from"], "init_from")
            else:
                self.notes.ignored.append(f"init_from = {v['init_from']!r} (only 'scratch' and 'resume' have a "
                                          "meaning here; a trunk to start from is transfer.init_from_checkpoint)")
        if "position_encoding" in v:
            self.put("model.use_rope", v["position_encoding"] == "rotary", "position_encoding")
        if "unfreeze_at_iteration" in v:
            at = v["unfreeze_at_iteration"]
            self.put("transfer.unfreeze_at_iteration", -1 if at is None else at, "unfreeze_at_iteration")
        getattr(self, _STAGE_CONVERTERS.get(kind, "masking_stages"))()
        for key in sorted(set(v) - set(_DIRECT) - _CONVERTED):
            self.notes.ignored.append(key)
        return {t: self.tables[t] for t in [*_TABLE_ORDER, *sorted(self.tables)] if t in self.tables}

    def training_type(self) -> str | None:
        """Writes train.training_type; returns it (None: the file does not say, mmengine's default applies)."""
        v = self.values
        kind = v.get("training_type")
        if self.notes.source_format == "nanoGPT":
            # nanoGPT trains a causal next-token model with learned positions
            kind = "autoregressive"
            model = self.tables.setdefault("model", {})
            model.setdefault("attention_type", "causal")
            model.setdefault("use_rope", False)
            self.notes.remarks.append("nanoGPT: training_type 'autoregressive', causal attention, learned positions "
                                      "(use_rope = false)")
        elif v.get("binary_classification") and kind in (None, "remasking_binary", "token_classification"):
            kind = "remasking_binary"
            self.notes.remarks.append("binary_classification = True -> training_type 'remasking_binary' (2 classes)")
        if kind is None:
            return None
        from mmengine.modes import REGISTRY

        if kind not in REGISTRY:
            self.notes.needs_support.append(f"train.training_type = {kind!r}")
        self.tables.setdefault("train", {})["training_type"] = kind
        return kind

    def recipes(self, kind: str | None) -> None:
        """The LM recipes into [unmasking] (the earlier trainer read them for its language model only)."""
        v = self.values
        present = [key for key in _UNMASKING_RECIPES if key in v]
        if kind not in _RECIPE_READERS:
            if "use_all_stages_for_training" in v and kind not in _STAGE_CONVERTERS:
                present.append("use_all_stages_for_training")
            self.notes.ignored += [f"{key} (a recipe of the language model; training_type is {kind!r})"
                                   for key in present]
            return
        for key in present:
            self.put(f"unmasking.{key}", v[key], key)
        if v.get("enable_entropy_penalty") is True:
            for key, default in _EARLIER_DEFAULTS.items():
                if key not in v:
                    self.put(f"unmasking.{key}", default, f"{key} (the earlier trainer's default)")
                    self.notes.remarks.append(f"enable_entropy_penalty = True without {key}: "
                                              f"its default there, {default}")

    def masking_stages(self) -> None:
        v = self.values
        if "unmasking_model_checkpoint" in v:
            self.notes.ignored.append("unmasking_model_checkpoint (used by a sequence scorer only)")
        if "use_all_stages_for_training" in v and "unmasking_stages" not in v:
            self.notes.ignored.append("use_all_stages_for_training (the file lists no unmasking_stages)")
        if "unmasking_stages" in v:
            stages = self.stages("unmasking_stages", v["unmasking_stages"], keep_stale=True)
            if stages:
                counts = {s.get("val_loss_stale_count") for s in stages}
                if (len(counts) == 1 and None not in counts
                        and _schema_type("unmasking.val_loss_stale_count", self.schema)):
                    # one count for every stage is what mmengine's single setting means
                    self.put("unmasking.val_loss_stale_count", counts.pop(), "unmasking_stages[*].val_loss_stale_count")
                    for s in stages:
                        del s["val_loss_stale_count"]
                self.put_stages("unmasking.stages", stages, "unmasking_stages")
                self.stage_mixing(len(stages))
        if "validation_stages" in v:
            stages = self.stages("validation_stages", v["validation_stages"], keep_stale=False)
            if stages:
                self.put_stages("unmasking.validation_stages", stages, "validation_stages")

    def stage_mixing(self, count: int) -> None:
        """Its training batches: every stage mixed with use_all_stages_for_training = True, else stages 0..current."""
        flag = self.values.get("use_all_stages_for_training", False)
        if not isinstance(flag, bool):
            self.notes.unconvertible.append(f"use_all_stages_for_training = {flag!r} is not True or False")
        elif flag:
            self.put("unmasking.stage_mixing", "all", "use_all_stages_for_training = True")
        elif count > 1:
            self.put("unmasking.stage_mixing", "up_to_current", "use_all_stages_for_training (not True)")
            self.notes.remarks.append("use_all_stages_for_training is not True: its batches mixed stages 0..current, "
                                      "stage_mixing = 'up_to_current'")

    def scorer_stages(self) -> None:
        """A sequence scorer of the earlier trainer: labels from its frozen LM's reconstructions of text masked
        with its stages, stage 0 only unless use_all_stages_for_training (its scorers never advanced)."""
        v = self.values
        if "unmasking_model_checkpoint" in v:
            self.put("sequence_scoring.score_source", "reconstruction", "unmasking_model_checkpoint")
            self.put("sequence_scoring.unmasking_model_checkpoint", v["unmasking_model_checkpoint"],
                     "unmasking_model_checkpoint")
        if "unmasking_stages" in v:
            stages = self.stages("unmasking_stages", v["unmasking_stages"], keep_stale=False,
                                 why="a scorer has no curriculum")
            if stages:
                if not v.get("use_all_stages_for_training") and len(stages) > 1:
                    self.notes.remarks.append("use_all_stages_for_training is not set, so its scorer masked with "
                                              f"stage 0 only: sequence_scoring.stages keeps that one of {len(stages)}")
                    stages = stages[:1]
                self.put_stages("sequence_scoring.stages", stages, "unmasking_stages")
        if "validation_stages" in v:
            stages = self.stages("validation_stages", v["validation_stages"], keep_stale=False)
            if stages:
                self.put_stages("sequence_scoring.validation_stages", stages, "validation_stages")
        if "use_all_stages_for_training" in v:
            self.notes.remarks.append("use_all_stages_for_training: a scorer's batches mix every stage of "
                                      "sequence_scoring.stages")


def convert_assignments(values: dict[str, Any], skipped: list[str] | None,
                        schema: dict[str, type]) -> tuple[dict, ConversionNotes]:
    """(tables, notes) for assignments already read (see :func:`read_assignments`), against ``schema``
    (table name -> dataclass, i.e. ``mmengine.config.TABLES``)."""
    fmt = "earlier trainer" if _EARLIER_TRAINER_KEYS & values.keys() else "nanoGPT"
    notes = ConversionNotes(source_format=fmt, unconvertible=list(skipped or []))
    tables = _Converter(values, notes, schema).run()
    return tables, notes


def convert_config(path, schema: dict[str, type]) -> tuple[dict[str, dict[str, Any]], ConversionNotes]:
    """(mmengine TOML tables, notes) for the Python config file of the earlier trainer or nanoGPT at ``path``,
    checked against ``schema`` (``mmengine.config.TABLES``).

    The file is parsed, never run. Raises :class:`ConfigError` when it is missing or not Python.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file '{p}' does not exist.")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file '{p}' is not UTF-8 text.") from None
    values, skipped = read_assignments(text, str(p))
    return convert_assignments(values, skipped, schema)


# -----------------------------------------------------------------------------
# Writing TOML


def _toml_value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v, where) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v, where)}" for k, v in value.items()) + "}"
    raise ConfigError(f"{where}: {value!r} cannot be written as TOML.")


def _toml_string(text: str) -> str:
    """A TOML basic string: backslash, quote and every control character (DEL too) escaped."""
    def escape(match: re.Match) -> str:
        char = match.group()
        return "\\" + char if char in '"\\' else f"\\u{ord(char):04X}"

    return '"' + re.sub(r'["\\\x00-\x1f\x7f]', escape, text) + '"'


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_string(key)  # TOML bare keys or a quoted one


def tables_to_toml(tables: dict[str, dict[str, Any]], notes: ConversionNotes | None = None) -> str:
    """A TOML document of ``tables`` (one [table] each; lists of stage dicts as inline tables), the notes
    as comments at the top."""
    lines = [f"# {line}" for line in (notes.lines() if notes else [])]
    if lines:
        lines.append("")
    for table, values in tables.items():
        lines.append(f"[{_toml_key(table)}]")
        for key, value in values.items():
            lines.append(f"{_toml_key(key)} = {_toml_value(value, f'{table}.{key}')}")
        lines.append("")
    return "\n".join(lines)


def converted_toml(path, schema: dict[str, type], validate=None) -> str:
    """The TOML text of :func:`convert_config`, notes as comments; ``validate(tables)`` (mmengine's checks) raising
    an error adds one note saying what does not pass yet (the text is printed all the same)."""
    tables, notes = convert_config(path, schema)
    if validate is not None:
        try:
            validate(tables)
        except MMEngineError as exc:
            notes.remarks.append(f"as converted it does not pass mmengine's checks yet: {str(exc).rstrip('.')}")
    return tables_to_toml(tables, notes)

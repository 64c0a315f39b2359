"""How a config table is declared and how its values are checked: the pieces every table shares.

A table is a dataclass whose fields are declared with :func:`option` (a default, one help
sentence, optionally the allowed values). The core tables live in :mod:`mmengine.config`; each
training type declares its own table in its file under :mod:`mmengine.modes`; the sampler's
``[sample]`` table lives with the sampler. This module knows none of them.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import field
from typing import Any, Callable

from mmengine.errors import ConfigError

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = ["option", "check_value", "parse_cli_value", "parse_items", "toml_value", "tomllib"]


def option(default: Any, help: str, *, choices: tuple | None = None, items: str = "tables") -> Any:
    """A dataclass field with a help string, optional allowed values, and for lists the item kind
    (``"tables"``: inline tables such as masking stages; ``"numbers"``: e.g. a custom schedule)."""
    meta: dict[str, Any] = {"help": help}
    if choices is not None:
        meta["choices"] = choices
    if isinstance(default, list):
        meta["items"] = items
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: json.loads(json.dumps(d)), metadata=meta)
    return field(default=default, metadata=meta)


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            list: "a list"}.get(tp, str(tp))


def check_value(key: str, tp: Any, value: Any, items: str = "tables") -> Any:
    """``value`` converted to the field's type, or ConfigError naming ``key``."""
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
            if items == "numbers":
                if isinstance(item, bool) or not isinstance(item, (int, float)) or item != item:
                    raise ConfigError(f"{key} must be a list of numbers, got an item {item!r}.")
            elif not isinstance(item, dict):
                raise ConfigError(f"{key} must be a list of inline tables like [{{type=\"random\", ...}}], "
                                  f"got an item {item!r}.")
        return [float(v) for v in value] if items == "numbers" else value
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
        raise ConfigError(f"could not parse {raw!r} as a TOML list "
                          "(write e.g. --unmasking.stages='[{type=\"random\", max_masked_ratio=0.5}]', "
                          "quoted for the shell).")
    return raw  # check_value then names the expected type


def parse_items(key: str, items: list, from_dict: Callable[[dict], Any]) -> list:
    """``[from_dict(item) ...]`` for a list of inline tables; a bad item -> ConfigError naming ``key[i]``."""
    out = []
    for i, item in enumerate(items):
        try:
            out.append(from_dict(dict(item)))
        except (ValueError, TypeError, KeyError) as e:
            raise ConfigError(f"{key}[{i}]: {str(e).rstrip('.')}.") from None
    return out


def toml_value(v: Any) -> str:
    """One value written as TOML (inline tables for dicts)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {v!r} as TOML")

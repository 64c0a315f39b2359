"""The training types: ``training_type`` -> the spec that owns everything about it.

Adding a training type is one new file in this folder (a :class:`~mmengine.modes.base.ModeSpec`
subclass, with its config table if it has settings) plus one line in :data:`REGISTRY`. The trainer,
``evaluate``, the config and the checkpoint code only call the spec's methods; they never compare
training-type names.
"""
from __future__ import annotations

from mmengine.errors import ConfigError, MMEngineError, UserError
from mmengine.modes.autoregressive import AutoregressiveMode
from mmengine.modes.base import ModeSpec, Windows, spread
from mmengine.modes.sequence_scoring import SequenceScoringMode
from mmengine.modes.token_classification import (
    LMSampler,
    RemaskingBinaryMode,
    TokenClassificationMode,
)
from mmengine.modes.unmasking import UnmaskingMode

__all__ = [
    "REGISTRY",
    "ModeSpec",
    "Windows",
    "spread",
    "get_spec",
    "mode_tables",
    "build_mode",
    "UnmaskingMode",
    "TokenClassificationMode",
    "RemaskingBinaryMode",
    "SequenceScoringMode",
    "AutoregressiveMode",
    "LMSampler",
]

REGISTRY: dict[str, type[ModeSpec]] = {
    "unmasking": UnmaskingMode,
    "token_classification": TokenClassificationMode,
    "remasking_binary": RemaskingBinaryMode,  # the earlier trainer's 2-class name
    "sequence_scoring": SequenceScoringMode,
    "autoregressive": AutoregressiveMode,
}


def get_spec(training_type: str) -> type[ModeSpec]:
    """The spec class of ``training_type`` (ConfigError naming the valid ones)."""
    try:
        return REGISTRY[training_type]
    except KeyError:
        raise ConfigError(f"unknown training type {training_type!r}; valid ones: {', '.join(REGISTRY)}.") from None


def mode_tables() -> dict[str, type]:
    """``table name -> settings dataclass`` of every registered mode that has settings (in registry order)."""
    tables: dict[str, type] = {}
    for spec in REGISTRY.values():
        if spec.table and spec.table not in tables:
            tables[spec.table] = spec.settings
    return tables


def build_mode(cfg, data) -> ModeSpec:
    """The spec of ``cfg.train.training_type`` for this config and data dir."""
    spec = get_spec(cfg.train.training_type)
    try:
        return spec(cfg, data)
    except (ValueError, TypeError) as e:
        if isinstance(e, MMEngineError):
            raise
        raise UserError(f"cannot set up {cfg.train.training_type}: {str(e).rstrip('.')}.") from None

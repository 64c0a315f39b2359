"""Transfer learning: build a run's model, take a trunk from another checkpoint, apply the first freeze.

The plan lives in the run config's ``[transfer]`` table, never in the model's config: a saved model
already holds its transferred trunk, so rebuilding it never touches the source again. The source
checkpoint is read once, for both its architecture and its weights.

Transfer copies the trunk (``transformer.*``) of a checkpoint of any mode; the head is new (a
language model's head is its embedding, so an LM -> LM transfer keeps the whole model). The trunk's
shape (layers, heads, width, biases, position encoding) comes from the source, announced in one line:
``use_rope`` is read from the source's weights (a nanoGPT file has a learned ``wpe`` table), never
silently switched. A trunk trained with other attention (autoregressive into a bidirectional
diffusion LM, a known recipe) is allowed and said so.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mmengine.checkpoint import (
    CheckpointError,
    convert_model_args,
    load_checkpoint,
    model_state_dict,
    unwrap_model,
)
from mmengine.errors import ConfigError
from mmengine.model import GPT, GPTConfig

logger = logging.getLogger(__name__)

__all__ = ["TransferReport", "build_model", "build_run_model", "load_trunk", "model_config", "transfer_source"]

TRUNK_PREFIX = "transformer."
_WTE = "transformer.wte.weight"
_WPE = "transformer.wpe.weight"
# what a trunk's shape is made of; taken from the source, whatever the run config says
_ARCH_KEYS = ("n_layer", "n_head", "n_embd", "bias", "use_rope")


@dataclass
class TransferReport:
    """What :func:`load_trunk` did: the one summary of a transfer."""

    source: str
    loaded: list[str] = field(default_factory=list)  # trunk keys copied from the checkpoint
    missing: list[str] = field(default_factory=list)  # model trunk keys the checkpoint lacks (kept as initialised)
    unexpected: list[str] = field(default_factory=list)  # checkpoint trunk keys the model has no place for
    skipped_heads: list[str] = field(default_factory=list)  # checkpoint head keys, never transferred
    embedding_extended: tuple[int, int] | None = None  # (checkpoint vocab, model vocab) when rows were added

    def summary(self) -> str:
        text = (
            f"transferred {len(self.loaded)} trunk tensors from {self.source}; "
            f"skipped {len(self.skipped_heads)} head tensors; "
            f"missing {len(self.missing)}{_listing(self.missing)}; "
            f"unexpected {len(self.unexpected)}{_listing(self.unexpected)}"
        )
        if self.embedding_extended:
            old, new = self.embedding_extended
            text += f"; token embedding extended from {old} to {new} rows (old rows kept)"
        return text


def _listing(keys: list[str], limit: int = 6) -> str:
    if not keys:
        return ""
    shown = ", ".join(keys[:limit])
    return f" ({shown}{', ...' if len(keys) > limit else ''})"


def _source(source) -> tuple[dict, str]:
    """(checkpoint dict, name) of a path or of a checkpoint already in memory."""
    if isinstance(source, dict):
        return source, "checkpoint"
    return load_checkpoint(source), str(source)


def load_trunk(model: GPT, source, *, name: str | None = None) -> TransferReport:
    """Copies the trunk (``transformer.*``) of any mode's checkpoint into ``model``.

    ``source`` is a path or a checkpoint dict already read. Head weights are skipped. When the
    model's vocabulary is larger than the checkpoint's, the old embedding rows are copied and the new
    rows keep their initialisation; a learned position table longer than the model's is cut to its
    ``block_size``. Keys on one side only are reported, not fatal (e.g. ``wpe`` between RoPE and
    learned positions); any other shape mismatch, or a checkpoint vocabulary larger than the model's,
    raises :class:`CheckpointError` before anything is copied.
    """
    model = unwrap_model(model)
    checkpoint, default_name = _source(source)
    name = name or default_name
    state_dict = model_state_dict(checkpoint)
    report = TransferReport(source=name)
    report.skipped_heads = sorted(k for k in state_dict if not k.startswith(TRUNK_PREFIX))
    trunk = {k: v for k, v in state_dict.items() if k.startswith(TRUNK_PREFIX)}
    own = {k: v for k, v in model.state_dict().items() if k.startswith(TRUNK_PREFIX)}
    report.missing = sorted(k for k in own if k not in trunk)
    report.unexpected = sorted(k for k in trunk if k not in own)
    problems = []
    for key in sorted(own.keys() & trunk.keys()):
        ours, theirs = own[key], trunk[key]
        if tuple(ours.shape) == tuple(theirs.shape):
            continue
        same_width = theirs.dim() == 2 and theirs.shape[1] == ours.shape[1]
        if key == _WTE and same_width and theirs.shape[0] < ours.shape[0]:
            report.embedding_extended = (int(theirs.shape[0]), int(ours.shape[0]))
            continue
        if key == _WTE and theirs.dim() == 2 and theirs.shape[0] > ours.shape[0]:
            problems.append(f"its vocabulary ({theirs.shape[0]}) is larger than the model's ({ours.shape[0]})")
            continue
        if key == _WPE and same_width and theirs.shape[0] > ours.shape[0]:
            continue  # the first block_size positions are the ones this model uses
        problems.append(f"{key} {tuple(theirs.shape)} vs model {tuple(ours.shape)}")
    if problems:
        raise CheckpointError(f"cannot transfer the trunk of {name}: " + "; ".join(problems))
    if not (own.keys() & trunk.keys()):
        raise CheckpointError(f"cannot transfer the trunk of {name}: "
                              "it has no transformer.* weights in common with the model")
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        for key in sorted(own.keys() & trunk.keys()):
            target = params.get(key, buffers.get(key))
            value = trunk[key].to(device=target.device, dtype=target.dtype)
            rows = min(value.shape[0], target.shape[0]) if key in (_WTE, _WPE) else None
            if rows is not None:
                target[:rows].copy_(value[:rows])
            else:
                target.copy_(value)
            report.loaded.append(key)
    logger.info(report.summary())
    return report


def build_model(config: GPTConfig, *, init_from=None, freeze: bool = False, name: str | None = None) -> GPT:
    """``GPT(config)``, then the trunk of ``init_from`` (a path or a checkpoint dict named ``name``), then the freeze.

    The transfer report is kept on the model as ``model.transfer_report`` (None without transfer).
    """
    model = GPT(config)
    model.transfer_report = load_trunk(model, init_from, name=name) if init_from is not None else None
    if freeze:
        model.freeze_transformer_weights()
    return model


def model_config(cfg, spec, meta, source: dict | None = None, source_name: str = "") -> GPTConfig:
    """The run's GPTConfig: data vocabulary, the mode's head and attention, the trunk's shape.

    With a transfer ``source`` (a checkpoint dict) the trunk's shape is the source's; a learned
    position table fixes the longest context (``data.block_size`` must fit in it).
    """
    m = cfg.model
    args = dict(block_size=cfg.data.block_size, vocab_size=meta.vocab_size, n_layer=m.n_layer,
                n_head=m.n_head, n_embd=m.n_embd, dropout=m.dropout, bias=m.bias,
                attention_type=spec.attention_type(cfg),
                use_rope=m.use_rope, attention_backend=m.attention_backend, loss_backend=m.loss_backend)
    args.update(spec.gpt_kwargs())
    if source is not None:
        weights = model_state_dict(source)
        src_args = convert_model_args(source.get("model_args") or {}, weights, source_name)
        changed = {k: src_args[k] for k in _ARCH_KEYS if k in src_args and src_args[k] != args[k]}
        if changed:
            logger.info("transfer: trunk shape taken from %s: %s",
                        source_name, ", ".join(f"{k}={v}" for k, v in changed.items()))
            args.update(changed)
        if not args["use_rope"]:
            table = int(weights[_WPE].shape[0])
            if args["block_size"] > table:
                raise ConfigError(f"{source_name} has learned positions for {table} tokens, so this run's windows "
                                  f"({args['block_size']} tokens) do not fit; set data.block_size <= {table}.")
        if src_args.get("attention_type") != args["attention_type"]:
            logger.info("transfer: the trunk of %s was trained with %s attention; this run uses %s attention",
                        source_name, src_args.get("attention_type"), args["attention_type"])
    try:
        return GPTConfig(**args)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid model: {str(e).rstrip('.')}.") from None


def transfer_source(path, meta, cls_token_id: int | None = None) -> dict:
    """The checkpoint at ``path`` read for a transfer into a model of ``meta``'s vocabulary.

    A file of the earlier research trainer has its 80-row vocabulary (text, [MASK], 14 reserved ids) mapped
    onto the data dir's (:func:`mmengine.upstream.prepare_for_data`; ``cls_token_id`` names its [CLS] row when
    it does not record one); mmengine's and nanoGPT's files go to :func:`load_trunk` as they are (a smaller
    vocabulary is extended there).
    """
    from mmengine.upstream import FORMAT_EARLIER_TRAINER, prepare_for_data, recognise_format

    checkpoint = load_checkpoint(path)
    fmt = (checkpoint.get("upstream") or {}).get("format") or recognise_format(checkpoint)[0]
    if fmt == FORMAT_EARLIER_TRAINER:
        checkpoint = prepare_for_data(checkpoint, meta, cls_token_id=cls_token_id, source=str(path))
    return checkpoint


def build_run_model(cfg, spec, meta, *, check=None) -> GPT:
    """The model a new run starts from: its config, the transfer (source read once), the first freeze.

    ``check(config)`` runs once the architecture is known (a transfer's is the source's) and before anything
    is allocated: the trainer's memory estimate.
    """
    path = cfg.transfer.init_from_checkpoint
    cls_id = cfg.transfer.cls_token_id if cfg.transfer.cls_token_id >= 0 else None
    source = transfer_source(path, meta, cls_id) if path else None
    config = model_config(cfg, spec, meta, source, str(Path(path)) if path else "")
    if check is not None:
        check(config)
    return build_model(config, init_from=source, freeze=cfg.transfer.freeze_transformer and source is not None,
                       name=str(path) if path else None)


class FreezeController:
    """The trunk's freeze over a run, as a trainer component (``state_dict`` / ``load_state_dict``).

    A transfer run may start with the trunk frozen (:func:`build_run_model`); at
    ``transfer.unfreeze_at_iteration`` it is unfrozen, and from then on the trunk's learning rate is
    the schedule's times ``transfer.unfreeze_lr_multiplier``. The optimizer holds every parameter
    from the start (frozen ones get no gradient), so unfreezing never rebuilds it and the heads keep
    their Adam state; the multiplier is applied on every step by :meth:`apply_lr`, so the scheduler
    can never overwrite it.
    """

    def __init__(self, model: GPT, transfer_cfg):
        self.model = model
        self.unfreeze_at = transfer_cfg.unfreeze_at_iteration
        self.multiplier = transfer_cfg.unfreeze_lr_multiplier
        self.unfrozen_at: int | None = None

    @property
    def frozen(self) -> bool:
        return self.model.get_frozen_status()

    def due(self, it: int) -> bool:
        """Whether the trunk should be unfrozen before step ``it``."""
        return 0 <= self.unfreeze_at <= it and self.unfrozen_at is None and self.frozen

    def unfreeze(self, it: int) -> None:
        self.model.unfreeze_transformer_weights()
        self.unfrozen_at = it

    def trunk_scale(self) -> float:
        return self.multiplier if self.unfrozen_at is not None else 1.0

    def apply_lr(self, optimizer, lr: float) -> None:
        """lr = schedule(it) x the group's ``lr_scale`` (the trunk's multiplier after the unfreeze)."""
        scale = self.trunk_scale()
        for g in optimizer.param_groups:
            g["lr_scale"] = scale if g.get("trunk") else 1.0
            g["lr"] = lr * g["lr_scale"]

    def state_dict(self) -> dict:
        return {"frozen": self.frozen, "unfrozen_at": self.unfrozen_at}

    def load_state_dict(self, state: dict) -> None:
        self.unfrozen_at = state.get("unfrozen_at")
        if state.get("frozen"):
            self.model.freeze_transformer_weights()

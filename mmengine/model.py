"""The transformer of mmengine: one trunk, one head per mode.

Reads top-down like nanoGPT's model.py: the small pieces first (norm, rotary embedding,
attention, MLP, block), then the config and the model. Parameter names are exactly those
of nanoGPT and the research codebase this engine replaces (``transformer.wte``,
``transformer.h.{i}.attn.c_attn``, ``lm_head``, ...), so their checkpoints load unchanged.

Attention and the hard-target losses dispatch on ``config.attention_backend`` /
``config.loss_backend``: ``"torch"`` (``scaled_dot_product_attention`` / the eager losses of
:mod:`mmengine.losses`), ``"triton"`` (the fused kernels of ``mmengine.kernels``) or
``"auto"`` (Triton for CUDA tensors when it is available, torch otherwise). The attention
backend also accepts ``"eager"``: plain matmul-softmax-matmul, the reference for tests.
"""
from __future__ import annotations

import logging
import math
import numbers
import sys
import warnings
from dataclasses import dataclass
from enum import Enum

import torch
import torch.nn as nn
from torch.nn import functional as F

from mmengine import losses
from mmengine.reference import (
    apply_rope,
    attention_mask,
    attention_reference,
    rope_cos_sin,
    rotate_half,
    valid_positions,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ModelMode",
    "GPTConfig",
    "GPT",
    "LayerNorm",
    "rope_cos_sin",
    "apply_rope",
    "rotate_half",
    "key_padding_mask",
    "eager_attention",
    "sdpa_attention",
    "token_nll",
    "ATTENTION_BACKENDS",
    "LOSS_BACKENDS",
]

ATTENTION_BACKENDS = ("auto", "torch", "triton", "eager")
LOSS_BACKENDS = ("auto", "torch", "triton")
ATTENTION_TYPES = ("bidirectional", "causal")
IGNORE_INDEX = -1


class ModelMode(str, Enum):
    """What the model learns; the string value is what configs and checkpoints store."""

    LANGUAGE_MODEL = "language_model"
    TOKEN_CLASSIFIER = "token_classifier"
    SEQUENCE_SCORER = "sequence_scorer"

    @classmethod
    def parse(cls, value: "ModelMode | str") -> "ModelMode":
        """Accepts a member, its value ("token_classifier"), its name or "ModelMode.NAME"."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("ModelMode."):
                text = text[len("ModelMode."):]
            for member in cls:
                if text == member.value or text.upper() == member.name:
                    return member
        valid = ", ".join(repr(m.value) for m in cls)
        raise ValueError(f"unknown model mode {value!r}; expected one of {valid}")


# -----------------------------------------------------------------------------
# Small pieces


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (nn.LayerNorm cannot drop only the bias)."""

    def __init__(self, ndim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


def key_padding_mask(lengths: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Boolean (B, 1, 1, T) mask, True for keys a query may attend to (position < length; key 0 kept
    for rows of length 0, whose outputs are zeroed)."""
    return attention_mask(False, lengths, seq_len, lengths.device)


def eager_attention(q, k, v, *, causal: bool, lengths=None, dropout_p: float = 0.0, training: bool = False):
    """Reference attention (:func:`mmengine.reference.attention_reference`), for (B, nh, T, hs) inputs."""
    return attention_reference(q, k, v, causal=causal, lengths=lengths, dropout_p=dropout_p, training=training)


def sdpa_attention(q, k, v, *, causal: bool, lengths=None, dropout_p: float = 0.0, training: bool = False):
    """scaled_dot_product_attention with the reference's masking and padded-row rule."""
    p = dropout_p if training else 0.0
    if lengths is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=causal)
    # is_causal cannot be combined with an explicit mask, so causality goes into the mask.
    T = q.size(-2)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask(causal, lengths, T, q.device), dropout_p=p)
    return y * valid_positions(lengths.to(q.device), T)[:, None, :, None].to(y.dtype)  # padded query rows -> 0


def _triton_wanted(backend: str, tensor: torch.Tensor, function_name: str) -> bool:
    """Whether to call mmengine.kernels.<function_name> for this backend choice and tensor."""
    if backend == "triton":
        return True
    if backend != "auto" or not tensor.is_cuda:
        return False
    try:
        from mmengine import kernels
    except ImportError:
        return False
    available = getattr(kernels, "triton_available", None)
    return bool(available is not None and hasattr(kernels, function_name) and available())


def _kernel(function_name: str):
    """mmengine.kernels.<function_name>, imported lazily, or a clear error."""
    try:
        from mmengine import kernels
    except ImportError as exc:  # pragma: no cover - the package ships kernels/
        raise RuntimeError(f"backend 'triton' needs mmengine.kernels, which failed to import: {exc}") from exc
    function = getattr(kernels, function_name, None)
    if function is None:
        raise RuntimeError(f"backend 'triton' needs mmengine.kernels.{function_name}, "
                           "which this build does not provide")
    return function


def _triton_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, balanced: bool) -> torch.Tensor:
    """The fused kernel with the torch path's semantics, including 0 (not NaN) when all are ignored.

    The kernel sums; the mean's denominator (the valid positions' weights, as in
    :func:`mmengine.losses.weighted_cross_entropy`) is formed here so that an all-ignored batch
    divides 0 by 1 instead of 0 by 0.
    """
    C = logits.size(-1)
    flat_targets = targets.reshape(-1)  # (B*T,)
    weight = losses.class_balanced_weights(flat_targets, C, IGNORE_INDEX) if balanced else None
    total = _kernel("class_weighted_cross_entropy")(
        logits.reshape(-1, C),  # (B*T, C)
        flat_targets,
        weight=weight,
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    denominator = losses.position_weights(flat_targets, weight, IGNORE_INDEX).sum()
    return losses.safe_divide(total.float(), denominator)


def token_nll(logits: torch.Tensor, targets: torch.Tensor, *, backend: str = "auto",
              ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Per-position ``-log softmax(logits)[target]`` as float32 of ``targets``' shape, 0 where ignored.

    On the loss backend: the fused kernel (``reduction="none"``) for CUDA tensors when it is wanted,
    ``F.cross_entropy`` otherwise. For losses that weight positions themselves (the continuous-time ELBO).
    """
    C = logits.size(-1)
    flat_logits, flat_targets = logits.reshape(-1, C), targets.reshape(-1)  # (N, C), (N,)
    if _triton_wanted(backend, logits, "class_weighted_cross_entropy"):
        nll = _kernel("class_weighted_cross_entropy")(
            flat_logits, flat_targets, ignore_index=ignore_index, reduction="none"
        )
    else:
        nll = F.cross_entropy(flat_logits.float(), flat_targets, ignore_index=ignore_index, reduction="none")
    return nll.float().view(targets.shape)


def _attention_kernel_supports(head_dim: int) -> bool:
    """Whether mmengine.kernels' attention handles this head size (checked only for 'auto')."""
    module = sys.modules.get("mmengine.kernels.rope_attention")
    supported = getattr(module, "SUPPORTED_HEAD_DIMS", None)
    return supported is None or head_dim in supported


# -----------------------------------------------------------------------------
# Blocks


class SelfAttention(nn.Module):
    """Multi-head self-attention, causal or bidirectional, with optional RoPE on q and k."""

    def __init__(self, config: "GPTConfig"):
        super().__init__()
        # key, query, value projections for all heads, fused in one Linear
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        # attention-probability dropout happens inside the attention function (dropout_p)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.causal = config.attention_type == "causal"
        self.backend = config.attention_backend

    def forward(self, x, rope=None, lengths=None):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)

        dropout_active = self.training and self.dropout > 0
        # 'auto' keeps torch where the kernel cannot serve: attention dropout, unsupported head sizes
        use_kernel = self.backend == "triton" or (
            self.backend == "auto"
            and _triton_wanted("auto", x, "rope_attention")
            and not dropout_active
            and _attention_kernel_supports(C // self.n_head)
        )
        if use_kernel:
            if dropout_active:
                raise ValueError(
                    "attention_backend='triton' has no attention dropout; set dropout=0 or use attention_backend='auto'"
                )
            if rope is None:
                # identity rotation: the kernel always rotates, cos=1/sin=0 leaves q and k as they are
                cos = torch.ones(T, C // self.n_head, device=x.device, dtype=q.dtype)
                sin = torch.zeros_like(cos)
            else:
                # kept in fp32: the kernel rotates in fp32, so narrowing cos/sin would only lose precision
                cos, sin = rope[0][:T], rope[1][:T]
            # q/k/v stay strided views of the fused c_attn output: the kernel takes any strides and
            # gives its gradients their own layout, so no copies are made here
            y = _kernel("rope_attention")(q, k, v, cos, sin, causal=self.causal, lengths=lengths)
        else:
            if rope is not None:
                cos, sin = rope[0][:T], rope[1][:T]
                q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            attend = eager_attention if self.backend == "eager" else sdpa_attention
            y = attend(q, k, v, causal=self.causal, lengths=lengths, dropout_p=self.dropout, training=self.training)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble heads side by side: (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: "GPTConfig"):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()  # exact (erf) GELU, as nanoGPT and the checkpoints this model loads use
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, config: "GPTConfig"):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = SelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, rope=None, lengths=None):
        x = x + self.attn(self.ln_1(x), rope=rope, lengths=lengths)
        x = x + self.mlp(self.ln_2(x))
        return x


# -----------------------------------------------------------------------------
# Config


@dataclass
class GPTConfig:
    """Architecture and head of a :class:`GPT`. Everything here is a plain value.

    Training plans (transfer, freezing) are not model properties: they live in the run config's
    ``[transfer]`` table and the trainer's state (:mod:`mmengine.transfer`).
    """

    block_size: int = 1024  # longest sequence (learned position table size when use_rope=False)
    vocab_size: int = 50304  # embedding rows, special tokens included
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # biases in Linears and LayerNorms, like GPT-2
    attention_type: str = "bidirectional"  # "bidirectional" | "causal"
    use_rope: bool = True  # RoPE on q, k; False = learned absolute positions (transformer.wpe)
    mode: ModelMode = ModelMode.LANGUAGE_MODEL
    num_token_classes: int = 2  # TOKEN_CLASSIFIER: classes per token
    cls_token_id: int | None = None  # SEQUENCE_SCORER: id of the [CLS] token at position 0
    attention_backend: str = "auto"  # "auto" | "torch" | "triton" | "eager"
    loss_backend: str = "auto"  # "auto" | "torch" | "triton"

    def __post_init__(self):
        self.mode = ModelMode.parse(self.mode)
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.attention_type not in ATTENTION_TYPES:
            raise ValueError(f"GPTConfig.attention_type must be one of {ATTENTION_TYPES}, got {self.attention_type!r}")
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(
                f"GPTConfig.attention_backend must be one of {ATTENTION_BACKENDS}, got {self.attention_backend!r}"
            )
        if self.loss_backend not in LOSS_BACKENDS:
            raise ValueError(f"GPTConfig.loss_backend must be one of {LOSS_BACKENDS}, got {self.loss_backend!r}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.use_rope and (self.n_embd // self.n_head) % 2 != 0:
            raise ValueError(
                f"RoPE needs an even head size, but n_embd / n_head = {self.n_embd // self.n_head}; "
                "change n_embd or n_head, or set use_rope=False"
            )
        if (
            isinstance(self.num_token_classes, bool)
            or not isinstance(self.num_token_classes, int)
            or self.num_token_classes < 2
        ):
            raise ValueError(f"num_token_classes must be an integer >= 2, got {self.num_token_classes!r}")
        if self.cls_token_id is not None:
            cls_id = self.cls_token_id
            # numbers.Integral admits numpy ints (ids read from data metadata); bool is not an id
            if (
                isinstance(cls_id, bool)
                or not isinstance(cls_id, numbers.Integral)
                or not 0 <= cls_id < self.vocab_size
            ):
                raise ValueError(
                    f"cls_token_id must be an id inside the embedding table [0, {self.vocab_size}), got {cls_id!r}"
                )
            self.cls_token_id = int(cls_id)  # a plain int for checkpoints' model_args
        if self.mode is not ModelMode.LANGUAGE_MODEL and self.attention_type != "bidirectional":
            warnings.warn(
                f"{self.mode.value} needs bidirectional attention; attention_type "
                f"{self.attention_type!r} changed to 'bidirectional'",
                stacklevel=2,
            )
            self.attention_type = "bidirectional"

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        """Plain values only (the mode as its string), as stored in checkpoints' model_args."""
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["mode"] = self.mode.value
        return out


# -----------------------------------------------------------------------------
# Model


class GPT(nn.Module):
    """Embedding -> pre-norm blocks -> final norm -> the head of ``config.mode``.

    The constructor only builds and initialises; transfer and the initial freeze are applied by
    :func:`mmengine.transfer.build_model`, so that rebuilding a saved model never touches the
    transfer source again.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        modules = dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        )
        if not config.use_rope:
            modules["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        self.transformer = nn.ModuleDict(modules)

        if config.mode is ModelMode.LANGUAGE_MODEL:
            self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
            # weight tying: the output projection is the embedding
            self.transformer.wte.weight = self.lm_head.weight
        elif config.mode is ModelMode.TOKEN_CLASSIFIER:
            self.lm_head = nn.Linear(config.n_embd, config.num_token_classes, bias=False)
        else:
            self.sequence_head = nn.Sequential(nn.Linear(config.n_embd, 1, bias=False), nn.Sigmoid())

        if config.use_rope:
            cos, sin = rope_cos_sin(config.block_size, config.head_dim)
            # not persistent: derived from the config, and absent from existing checkpoints
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        else:
            self.rope_cos = self.rope_sin = None

        self.apply(self._init_weights)
        # residual projections scaled down per GPT-2 so the residual stream does not grow with depth
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        if config.mode is ModelMode.SEQUENCE_SCORER:
            # a small head keeps the initial scores near sigmoid(0) = 0.5
            torch.nn.init.normal_(self.sequence_head[0].weight, mean=0.0, std=0.002)

        logger.debug("GPT %s: %.2fM parameters", config.mode.value, self.get_num_params() / 1e6)

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # --- forward -------------------------------------------------------------

    def encode(self, idx: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states (B, T, n_embd) after the final LayerNorm."""
        B, T = idx.size()
        if T > self.config.block_size:
            raise ValueError(f"cannot forward a sequence of length {T}; block_size is {self.config.block_size}")
        if lengths is not None and tuple(lengths.shape) != (B,):
            raise ValueError(f"lengths must have shape ({B},), got {tuple(lengths.shape)}")
        x = self.transformer.wte(idx)  # (B, T, C)
        if not self.config.use_rope:
            pos = torch.arange(T, dtype=torch.long, device=idx.device)
            x = x + self.transformer.wpe(pos)  # (T, C) broadcast over B
        x = self.transformer.drop(x)
        rope = (self.rope_cos, self.rope_sin) if self.config.use_rope else None
        for block in self.transformer.h:
            x = block(x, rope=rope, lengths=lengths)
        return self.transformer.ln_f(x)

    def forward(self, idx, targets=None, *, lengths=None, all_positions: bool = False):
        """idx (B, T) token ids -> (logits, loss); loss is None without targets.

        LANGUAGE_MODEL: logits (B, T, V) (only (B, 1, V) for a causal model without targets);
        targets (B, T) ids with -1 ignored, or (B, T, V) soft targets.
        TOKEN_CLASSIFIER: logits (B, T, C); targets (B, T) class ids with -1 ignored (class-balanced
        cross-entropy), or (B, T, C) soft targets.
        SEQUENCE_SCORER: logits (B,) in [0, 1] read at position 0 ([CLS]); targets (B,) -> MSE.
        ``lengths`` (B,) marks the real tokens of each row; later keys are masked out of attention.
        ``all_positions=True`` gives a causal language model's logits at every position without targets.
        """
        x = self.encode(idx, lengths)
        mode = self.config.mode
        if mode is ModelMode.SEQUENCE_SCORER:
            logits = self.sequence_head(x[:, 0, :]).squeeze(-1)  # (B,)
            loss = None if targets is None else losses.mse(logits, targets.to(logits.dtype))
            return logits, loss
        if targets is None:
            if mode is ModelMode.LANGUAGE_MODEL and self.config.attention_type == "causal" and not all_positions:
                # generation only needs the next-token distribution; list index keeps the time dim
                return self.lm_head(x[:, [-1], :]), None
            return self.lm_head(x), None
        logits = self.lm_head(x)  # (B, T, V) or (B, T, C)
        return logits, self._token_loss(logits, targets)

    def _token_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if targets.is_floating_point():
            # soft targets always take the eager path: the fused kernel takes class ids only
            if targets.shape != logits.shape:
                raise ValueError(
                    f"soft targets must have shape {tuple(logits.shape)}, got {tuple(targets.shape)}"
                )
            return losses.soft_cross_entropy(logits, targets)
        if targets.shape != logits.shape[:-1]:
            raise ValueError(f"targets must have shape {tuple(logits.shape[:-1])}, got {tuple(targets.shape)}")
        balanced = self.config.mode is ModelMode.TOKEN_CLASSIFIER
        if _triton_wanted(self.config.loss_backend, logits, "class_weighted_cross_entropy"):
            return _triton_cross_entropy(logits, targets, balanced)
        if balanced:
            return losses.class_balanced_cross_entropy(logits, targets, IGNORE_INDEX)
        return losses.cross_entropy(logits, targets, IGNORE_INDEX)

    # --- freezing ------------------------------------------------------------

    def _head_parameter_ids(self) -> set[int]:
        heads = [m for m in (getattr(self, "lm_head", None), getattr(self, "sequence_head", None)) if m is not None]
        return {id(p) for head in heads for p in head.parameters()}

    def freeze_transformer_weights(self) -> None:
        """Stop gradients into the trunk; heads stay trainable.

        A language model's head is tied to the embedding, so that shared matrix stays trainable.
        """
        heads = self._head_parameter_ids()
        for p in self.transformer.parameters():
            trainable = id(p) in heads
            p.requires_grad_(trainable)
            if not trainable:
                # AdamW steps every parameter whose .grad is not None: a stale gradient would
                # keep moving a "frozen" weight (and decaying it)
                p.grad = None
        logger.info("transformer trunk frozen (heads stay trainable)")

    def unfreeze_transformer_weights(self) -> None:
        """Make every parameter trainable again (the optimizer already holds them all)."""
        for p in self.parameters():
            p.requires_grad_(True)
        logger.info("transformer trunk unfrozen")

    def get_frozen_status(self) -> bool:
        """True when every trunk parameter not shared with a head is frozen."""
        heads = self._head_parameter_ids()
        trunk = [p for p in self.transformer.parameters() if id(p) not in heads]
        return bool(trunk) and not any(p.requires_grad for p in trunk)

    def print_parameter_status(self) -> dict:
        """Logs and returns trainable/total parameter counts for the trunk and the heads.

        A parameter shared by trunk and head (the tied LM embedding) counts as trunk.
        """
        trunk_ids = {id(p) for p in self.transformer.parameters()}
        figures = dict(trunk_trainable=0, trunk_total=0, head_trainable=0, head_total=0)
        for p in self.parameters():  # parameters() yields shared tensors once
            part = "trunk" if id(p) in trunk_ids else "head"
            figures[f"{part}_total"] += p.numel()
            if p.requires_grad:
                figures[f"{part}_trainable"] += p.numel()
        figures["trainable"] = figures["trunk_trainable"] + figures["head_trainable"]
        figures["total"] = figures["trunk_total"] + figures["head_total"]
        figures["frozen"] = self.get_frozen_status()
        logger.info(
            "parameters: trunk %d/%d trainable, head %d/%d trainable%s",
            figures["trunk_trainable"], figures["trunk_total"], figures["head_trainable"], figures["head_total"],
            " (trunk frozen)" if figures["frozen"] else "",
        )
        return figures

    # --- optimisation ----------------------------------------------------------

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        """AdamW over every parameter, frozen ones included.

        Weight decay on >= 2-D tensors (matmul weights, embeddings) only. Frozen parameters get
        no .grad, and AdamW skips parameters whose grad is None, so they neither move nor gain
        state until unfrozen; unfreezing then needs no new optimizer and keeps the heads' Adam
        state. Groups are split trunk/head (``group["trunk"]``) and carry ``lr_scale`` (1.0) so a
        trainer can give the trunk its own learning-rate multiplier on every scheduler step.
        """
        trunk_ids = {id(p) for p in self.transformer.parameters()}
        groups = {}
        for name, p in self.named_parameters():  # shared tensors listed once
            part = "trunk" if id(p) in trunk_ids else "head"
            decay = p.dim() >= 2
            groups.setdefault((part, decay), []).append(p)
        param_groups = []
        for (part, decay), params in sorted(groups.items(), key=lambda kv: (kv[0][0] != "trunk", not kv[0][1])):
            param_groups.append(
                {
                    "params": params,
                    "weight_decay": weight_decay if decay else 0.0,
                    "name": f"{part}_{'decay' if decay else 'no_decay'}",
                    "trunk": part == "trunk",
                    "lr_scale": 1.0,
                }
            )
        use_fused = device_type == "cuda" and torch.cuda.is_available()
        optimizer = torch.optim.AdamW(
            param_groups, lr=learning_rate, betas=tuple(betas), **({"fused": True} if use_fused else {})
        )
        logger.debug(
            "AdamW groups: %s (fused=%s)", ", ".join(f"{g['name']}={len(g['params'])}" for g in param_groups), use_fused
        )
        return optimizer

    # --- accounting --------------------------------------------------------------

    def get_num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; learned position embeddings are excluded by default.

        Token embeddings stay in: in a language model they are also the output layer.
        """
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and "wpe" in self.transformer:
            n -= self.transformer.wpe.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward): 6N + 12 L H Q T (PaLM appendix B)."""
        cfg = self.config
        T = cfg.block_size if seq_len is None else seq_len
        return 6 * self.get_num_params() + 12 * cfg.n_layer * cfg.n_head * cfg.head_dim * T

    def estimate_mfu(self, fwdbwd_per_iter: int, dt: float, peak_flops: float = 312e12) -> float:
        """Model FLOPs utilisation: achieved FLOP/s over ``peak_flops`` (A100 bf16 by default).

        ``fwdbwd_per_iter`` is the number of sequences of block_size tokens per iteration.
        """
        flops_per_iter = self.flops_per_token() * self.config.block_size * fwdbwd_per_iter
        return flops_per_iter / dt / peak_flops

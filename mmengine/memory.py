"""Will it fit? A lower bound of the memory a model needs, checked before anything is allocated.

A size that cannot fit (``data.block_size=1000000000000``, ``model.n_embd=2000000``, a checkpoint whose
``model_args`` say so) would otherwise end in an allocator traceback, or on a CPU in the kernel's OOM
killer after minutes of swapping. :func:`check_training_fits` and :func:`check_model_fits` refuse it in
one sentence instead.

The estimate is a *lower bound*, so only what clearly cannot fit is refused:

- the weights: :func:`parameter_count` (exact, tied embeddings once) x 4 bytes, plus the RoPE tables;
- training adds a gradient and AdamW's two moments per parameter (12 more bytes each);
- activations of one micro-batch: at least 8 values per token and layer kept for the backward pass (the
  block's input, its normalised copies, q/k/v, the attention output; the MLP's 4x-wide hidden layer is
  left out), plus the logits of one micro-batch when the head is vocabulary-sized.

The memory available is ``torch.cuda.mem_get_info`` on a GPU; on a CPU the kernel's ``MemAvailable``
(or ``os.sysconf`` where there is no /proc), capped by a cgroup limit when the process runs in one, and
shared by the ranks of this machine.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "available_bytes",
    "check_model_fits",
    "check_training_fits",
    "format_bytes",
    "parameter_count",
    "training_bytes",
    "weight_bytes",
]


def parameter_count(config) -> int:
    """Parameters of ``GPT(config)``, counted from the config alone (equal to ``sum(p.numel())`` of the model)."""
    C, L = config.n_embd, config.n_layer
    bias = 1 if config.bias else 0
    norm = C * (1 + bias)
    # per block: two norms, qkv (C x 3C) and output (C x C) projections, MLP C x 4C and 4C x C
    block = 2 * norm + 12 * C * C + bias * (3 * C + C + 4 * C + C)
    n = config.vocab_size * C + L * block + norm
    if not config.use_rope:
        n += config.block_size * C  # learned positions
    mode = getattr(config.mode, "value", config.mode)
    if mode == "token_classifier":
        n += C * config.num_token_classes
    elif mode == "sequence_scorer":
        n += C
    # a language model's head is its embedding (tied): counted once
    return n


def weight_bytes(config, bytes_per_value: int = 4) -> int:
    """The model's parameters and buffers (the RoPE cos/sin tables) in memory."""
    buffers = 2 * config.block_size * config.head_dim if config.use_rope else 0
    return (parameter_count(config) + buffers) * bytes_per_value


def training_bytes(config, batch_size: int, seq_len: int, activation_bytes: int = 4) -> dict[str, int]:
    """Lower bounds of a training step's memory: ``{"weights", "optimizer", "activations"}`` in bytes.

    ``optimizer`` counts the gradients and AdamW's two moments of every parameter; ``activations`` one
    micro-batch of ``batch_size`` x ``seq_len`` tokens in values of ``activation_bytes``.
    """
    tokens = batch_size * seq_len
    mode = getattr(config.mode, "value", config.mode)
    outputs = config.vocab_size if mode == "language_model" else 0
    return {
        "weights": weight_bytes(config),
        "optimizer": 12 * parameter_count(config),
        "activations": (8 * config.n_layer * config.n_embd + outputs) * tokens * activation_bytes,
    }


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_room() -> int | None:
    """Bytes this process's cgroup may still allocate (v2, then v1), None without a limit."""
    limit, used = _read_int("/sys/fs/cgroup/memory.max"), _read_int("/sys/fs/cgroup/memory.current")
    if limit is None:
        limit, used = (_read_int("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
                       _read_int("/sys/fs/cgroup/memory/memory.usage_in_bytes"))
    if limit is None or limit >= 1 << 60:  # v1 writes "no limit" as a huge number
        return None
    return max(0, limit - (used or 0))


def _host_available() -> int | None:
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    room = _cgroup_room()
    return available if room is None else min(available, room)


def available_bytes(device: str) -> int | None:
    """Memory a new allocation on ``device`` can use now; None when it cannot be told."""
    if device.startswith("cuda"):
        import torch

        try:
            return int(torch.cuda.mem_get_info(torch.device(device))[0])
        except (RuntimeError, AssertionError):
            return None
    return _host_available()


def format_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"  # pragma: no cover


def _ranks_here() -> int:
    """Processes of this job on this machine (torchrun's LOCAL_WORLD_SIZE), which share its RAM."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def check_training_fits(config, *, batch_size: int, seq_len: int, device: str, dtype_name: str = "float32",
                        source: str | None = None) -> None:
    """Refuse, in one sentence, training ``config`` where it clearly cannot fit.

    :class:`~mmengine.errors.ConfigError` for a model the run config describes; for one a checkpoint
    describes (``source``, a resume), :class:`~mmengine.errors.CheckpointError` naming it. The weights are
    built on the CPU first (then moved), so the host must hold them too.
    """
    from mmengine.errors import CheckpointError, ConfigError

    error = CheckpointError if source else ConfigError
    need = training_bytes(config, batch_size, seq_len, 2 if dtype_name in ("bfloat16", "float16") else 4)
    places = [(device, sum(need.values()))]
    if device.startswith("cuda"):
        places.append(("cpu", need["weights"]))
    for place, total in places:
        have = available_bytes(place)
        if place == "cpu":
            total *= _ranks_here()
        if have is None or total <= have:
            continue
        params = parameter_count(config)
        activations = need["activations"] if place == device else 0
        if activations > need["weights"] + need["optimizer"]:
            fix = "lower data.batch_size or data.block_size"
        elif source:
            fix = (f"the model_args of checkpoint {source} describe a model too large for this machine "
                   "(or are damaged)")
        else:
            fix = "make the model smaller (model.n_layer, model.n_embd) or lower data.block_size"
        parts = f"weights of {params:,} parameters {format_bytes(need['weights'])}"
        if place == device:
            parts += (f", gradients and AdamW state {format_bytes(need['optimizer'])}, activations of one "
                      f"micro-batch of {batch_size} x {seq_len} tokens {format_bytes(activations)}")
        ranks = f" for {_ranks_here()} ranks" if place == "cpu" and _ranks_here() > 1 else ""
        what = f"resuming checkpoint {source}" if source else "this run"
        raise error(f"{what} needs at least {format_bytes(total)} of memory on {place}{ranks} ({parts}) but "
                    f"{format_bytes(have)} are available; {fix}.")


def check_model_fits(config, what: str, *, device: str = "cpu", error=None) -> None:
    """Raise ``error`` (default :class:`~mmengine.errors.CheckpointError`) when ``config``'s weights alone cannot fit.

    For a model described by a file (a checkpoint's ``model_args``), before it is allocated.
    """
    from mmengine.errors import CheckpointError

    error = error or CheckpointError
    need, have = weight_bytes(config), available_bytes(device)
    if have is not None and need > have:
        raise error(f"{what} describes a model of {parameter_count(config):,} parameters ({config.n_layer} layers, "
                    f"{config.n_embd} wide, block size {config.block_size}, vocabulary {config.vocab_size}) that needs "
                    f"at least {format_bytes(need)} of memory, but {format_bytes(have)} are available on {device}.")

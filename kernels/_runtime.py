"""When a Triton kernel can run here, and the one error raised when it cannot.

Kept free of a module-level ``import triton`` so that ``mmengine.kernels`` imports on
machines without Triton (CPU-only installs, macOS); the kernels then raise
:class:`KernelUnavailableError` when called.
"""
from __future__ import annotations

import functools
import os


class KernelUnavailableError(RuntimeError):
    """A Triton kernel was called where it cannot run (no Triton, or CPU tensors without the interpreter)."""


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """True when ``import triton`` succeeds (it says nothing about a GPU being present)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except ImportError:
        return False
    return True


def interpreting() -> bool:
    """True when Triton runs kernels through its numpy interpreter (``TRITON_INTERPRET=1``).

    Triton reads the variable when a kernel is decorated, i.e. when the kernel module is
    imported; tests set it in ``conftest.py`` before anything imports triton.
    """
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on")


def check_runnable(op: str, *tensors, interpret: bool) -> None:
    """Raise KernelUnavailableError unless every tensor can be handed to the Triton kernel.

    ``interpret`` is whether the op's kernels were decorated under the interpreter.
    """
    devices = {t.device.type for t in tensors if t is not None}
    if len(devices) > 1:
        raise ValueError(f"{op}: all tensors must be on one device, got {sorted(devices)}.")
    device = devices.pop() if devices else "cpu"
    if interpret:
        if device != "cpu":
            raise KernelUnavailableError(
                f"{op}: the Triton interpreter (TRITON_INTERPRET=1) runs only on CPU tensors, got {device} tensors."
            )
        return
    if device != "cuda":
        raise KernelUnavailableError(
            f"{op} is a Triton GPU kernel and got {device} tensors: move them to CUDA, use the eager "
            f"reference ({op}_reference), or set TRITON_INTERPRET=1 before triton is imported to run it slowly on CPU."
        )

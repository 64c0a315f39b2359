"""Triton kernels of mmengine, imported as ``mmengine.kernels``.

    rope_attention                  fused RoPE + FlashAttention-2 style attention (kernels/rope_attention.py)
    class_weighted_cross_entropy    fused class-weighted cross-entropy (kernels/cross_entropy.py)
    *_reference                     the eager PyTorch equivalents (kernels/reference.py)

Triton is optional: without it this package still imports, the references work, and the
kernels raise :class:`KernelUnavailableError`. On CPU tensors the kernels run only through
Triton's interpreter, i.e. with ``TRITON_INTERPRET=1`` set before triton is first imported.
"""
from __future__ import annotations

from ._runtime import KernelUnavailableError, triton_available
from .reference import (
    balanced_class_weights,
    class_weighted_cross_entropy_reference,
    rope_attention_reference,
)

if triton_available():
    # The function names shadow their submodules on purpose: `from .x import x` binds the
    # function after the import machinery has set the submodule attribute.
    from .cross_entropy import class_weighted_cross_entropy
    from .rope_attention import rope_attention
else:

    def _unavailable(name: str):
        def kernel(*args, **kwargs):
            raise KernelUnavailableError(
                f"{name} needs Triton, which is not installed here; use {name}_reference (eager PyTorch) instead."
            )

        kernel.__name__ = kernel.__qualname__ = name
        return kernel

    rope_attention = _unavailable("rope_attention")
    class_weighted_cross_entropy = _unavailable("class_weighted_cross_entropy")

__all__ = [
    "KernelUnavailableError",
    "balanced_class_weights",
    "class_weighted_cross_entropy",
    "class_weighted_cross_entropy_reference",
    "rope_attention",
    "rope_attention_reference",
    "triton_available",
]

"""Fast batch assembly over token files: a thin wrapper around the C++ extension.

``tokens`` is always a 1-D C-contiguous ``np.uint16`` or ``np.uint32`` array, typically an
``np.memmap`` of a ``train.bin``; it is read in place, never copied or converted (a wrong dtype
or a strided view is a TypeError, not a silent multi-GB copy). Positions are ``np.int64``.
Each call releases the GIL while it works and may use a few threads (``threads=0`` picks a
default: one thread for small inputs, up to four for large ones); results never depend on
the thread count.

The semantics are specified by the numpy versions in :mod:`mmengine.data.reference`.
This module imports numpy and the extension only (never torch), so it can be embedded in
numpy-only pipelines.
"""
from __future__ import annotations

import numpy as np

try:
    from mmengine import _fastloader
except ImportError as exc:  # a source checkout whose extension was never built
    raise ImportError(
        "mmengine's C++ extension mmengine._fastloader is not built for this checkout: install the "
        "package with `pip install -e .` (or run from outside the source tree after `pip install .`)"
    ) from exc

__all__ = ["paragraph_starts", "gather_windows", "gather_documents"]


def _check_tokens(tokens) -> np.ndarray:
    if not isinstance(tokens, np.ndarray):
        raise TypeError(
            f"tokens must be a numpy array (uint16 or uint32, e.g. an np.memmap), got {type(tokens).__name__}"
        )
    return tokens


def _int64_array(values, name: str) -> np.ndarray:
    """Small index arguments (separator, starts, offsets, ids) may be lists or any int dtype.

    Unlike ``tokens`` these are converted: they hold one entry per row or document, so a
    copy costs little, and callers naturally pass lists or int32 arrays. Floats and other
    non-integer dtypes are a TypeError.
    """
    if type(values) is np.ndarray and values.dtype == np.int64 and values.ndim == 1 and values.flags.c_contiguous:
        return values  # the per-batch fast path: already what the extension takes
    arr = np.asarray(values)
    if arr.size and arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    if arr.ndim > 1:
        raise TypeError(f"{name} must be 1-D, got shape {arr.shape}")
    return np.ascontiguousarray(arr.reshape(-1), dtype=np.int64)


_DTYPE_NAMES = {np.int64: "int64", np.int32: "int32", np.uint16: "uint16"}


def _dtype_name(dtype) -> str:
    name = _DTYPE_NAMES.get(dtype)
    if name is not None:
        return name
    try:
        return np.dtype(dtype).name
    except TypeError as exc:
        raise TypeError(f"dtype must be int64, int32 or uint16, got {dtype!r}") from exc


def paragraph_starts(tokens: np.ndarray, separator, block_size: int, *, threads: int = 0) -> np.ndarray:
    """Sorted int64 positions where a ``block_size`` window may start at a paragraph start.

    ``p = 0`` and every ``p >= k`` with ``tokens[p-k:p] == separator`` and
    ``tokens[p] != separator[0]`` (k = len(separator)), so a run of repeated separators yields
    one start, after the run. Only ``p + block_size <= len(tokens)`` are kept (none when the
    array is shorter than ``block_size``).

    Args:
        tokens: 1-D C-contiguous uint16/uint32 array.
        separator: token id(s) of the paragraph separator, e.g. the ids of ``"\\n\\n"`` for
            character data or a single id for a BPE vocabulary. Empty -> ValueError.
        block_size: window length (>= 1).
        threads: worker threads, 0 for the default.
    """
    sep = _int64_array(separator, "separator")
    return _fastloader.paragraph_starts(
        _check_tokens(tokens), sep, int(block_size), threads=int(threads)
    )


def gather_windows(
    tokens: np.ndarray,
    starts,
    block_size: int,
    *,
    shift: bool = False,
    dtype=np.int64,
    threads: int = 0,
):
    """Windows of ``block_size`` tokens: ``x[i] = tokens[starts[i]:starts[i]+block_size]``.

    With ``shift=True`` also returns ``y[i] = tokens[starts[i]+1:starts[i]+block_size+1]``
    (next-token targets) as ``(x, y)``. Outputs have shape (len(starts), block_size) and dtype
    int64 (default), int32 or uint16; a narrowing dtype raises ValueError if a copied token
    does not fit. A negative start, or one whose window would read past the end, raises
    IndexError naming it.
    """
    return _fastloader.gather_windows(
        _check_tokens(tokens),
        _int64_array(starts, "starts"),
        int(block_size),
        shift=bool(shift),
        dtype=_dtype_name(dtype),
        threads=int(threads),
    )


def gather_documents(
    tokens: np.ndarray,
    doc_offsets,
    doc_ids,
    block_size: int,
    *,
    cls_id: int,
    pad_id: int,
    dtype=np.int64,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``[cls_id, document tokens..., pad_id...]`` for sequence scoring.

    Document d is ``tokens[doc_offsets[d]:doc_offsets[d+1]]`` (``doc_offsets`` has n_docs + 1
    non-decreasing entries within ``[0, len(tokens)]``, else ValueError). Row r holds
    ``cls_id``, the first ``min(len(doc), block_size - 1)`` tokens of document ``doc_ids[r]``
    (IndexError if it is not in ``[0, n_docs)``), then ``pad_id`` up to ``block_size``.

    Returns:
        ``(x, lengths)``: x of shape (len(doc_ids), block_size) in ``dtype``; ``lengths`` int64,
        1 + the number of document tokens copied into each row.
    """
    return _fastloader.gather_documents(
        _check_tokens(tokens),
        _int64_array(doc_offsets, "doc_offsets"),
        _int64_array(doc_ids, "doc_ids"),
        int(block_size),
        cls_id=int(cls_id),
        pad_id=int(pad_id),
        dtype=_dtype_name(dtype),
    )

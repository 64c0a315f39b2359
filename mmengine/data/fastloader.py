"""Fast batch assembly over token files: a thin wrapper around the C++ extension.

``tokens`` is always a 1-D C-contiguous ``np.uint16`` or ``np.uint32`` array, typically an
``np.memmap`` of a ``train.bin``; it is read in place, never copied or converted (a wrong dtype
or a strided view is a TypeError, not a silent multi-GB copy). Positions are ``np.int64``.
Each call releases the GIL while it works and may use a few threads (``threads=0`` picks a
default: one thread for small inputs, up to four for large ones); results never depend on
the thread count.

Arguments are taken as written, never coerced:

* integer arguments (``block_size``, ``threads``, ``cls_id``, ``pad_id``) must be Python or
  numpy integers: ``3.7``, ``"8"`` or ``True`` is a TypeError naming the argument, not 3, 8 or 1;
  ``shift`` must be ``True`` or ``False``;
* ``tokens`` must be in native byte order (a big-endian file mapped as ``">u2"`` is a TypeError:
  the loops read raw values), and the output ``dtype`` too;
* index arrays (``separator``, ``starts``, ``doc_offsets``, ``doc_ids``) may have any integer
  dtype and byte order: they are converted by value to native int64;
* a masked array (``np.ma``) is a TypeError wherever an array goes, since its mask would be
  ignored.

The semantics are specified by the numpy versions in :mod:`mmengine.data.reference`.
This module imports numpy and the extension only (never torch), so it can be embedded in
numpy-only pipelines.
"""
from __future__ import annotations

import sys

import numpy as np

try:
    from mmengine import _fastloader
except ImportError as exc:  # a source checkout whose extension was never built
    raise ImportError(
        "mmengine's C++ extension mmengine._fastloader is not built for this checkout: install the "
        "package with `pip install -e .` (or run from outside the source tree after `pip install .`)"
    ) from exc

__all__ = ["gather_documents", "gather_windows", "paragraph_starts"]


def _check_tokens(tokens) -> np.ndarray:
    # dtype, byte order, layout and masked arrays are checked by the extension
    if not isinstance(tokens, np.ndarray):
        raise TypeError(
            f"tokens must be a numpy array (uint16 or uint32, e.g. an np.memmap), got {type(tokens).__name__}"
        )
    return tokens


def _int64_array(values, name: str) -> np.ndarray:
    """Small index arguments (separator, starts, offsets, ids) may be lists or any int dtype.

    Unlike ``tokens`` these are converted: they hold one entry per row or document, so a
    copy costs little, and callers naturally pass lists or int32 arrays. The conversion keeps
    every value (a big-endian array reads the same numbers); floats, bools, masked arrays and
    values beyond int64 are a TypeError / ValueError naming the argument.
    """
    if type(values) is np.ndarray and values.dtype == np.int64 and values.ndim == 1 and values.flags.c_contiguous:
        return values  # the per-batch fast path: already what the extension takes
    masked = sys.modules.get("numpy.ma")  # imported lazily by numpy: absent, no masked array exists
    if masked is not None and isinstance(values, masked.MaskedArray):
        raise TypeError(f"{name} is a masked array, whose mask the loader would ignore: pass np.ma.filled(...) "
                        "or .data explicitly, or drop the masked entries")
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise TypeError(f"{name} must be a 1-D sequence of integers: {exc}") from None
    if arr.size and arr.dtype.kind not in "iu":
        if arr.dtype.kind == "O" and all(isinstance(v, int) and not isinstance(v, bool) for v in arr.flat):
            raise ValueError(f"{name} holds an integer that does not fit in int64")
        raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    if arr.ndim > 1:
        raise TypeError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype == np.uint64 and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} holds {arr.max()}, which does not fit in int64")
    return np.ascontiguousarray(arr.reshape(-1), dtype=np.int64)



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
    return _fastloader.paragraph_starts(_check_tokens(tokens), sep, block_size, threads=threads)


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
    int64 (default), int32 or uint16, native byte order; a narrowing dtype raises ValueError if
    a copied token does not fit. A negative start, or one whose window would read past the end, raises
    IndexError naming it.
    """
    return _fastloader.gather_windows(
        _check_tokens(tokens),
        _int64_array(starts, "starts"),
        block_size,
        shift=shift,
        dtype=dtype,
        threads=threads,
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
        block_size,
        cls_id=cls_id,
        pad_id=pad_id,
        dtype=dtype,
    )

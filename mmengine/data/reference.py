"""Numpy reference implementations of the fast loader (``mmengine.data.fastloader``).

These are the specification: plain, vectorised numpy, written to be read rather than to be
fast. The tests compare the C++ extension against them on every edge case, and they raise
the same exception types for bad input (they do not reproduce the C++ messages word for word).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TOKEN_DTYPES = (np.dtype(np.uint16), np.dtype(np.uint32))
OUTPUT_DTYPES = (np.dtype(np.int64), np.dtype(np.int32), np.dtype(np.uint16))


def _check_tokens(tokens: np.ndarray) -> None:
    if not isinstance(tokens, np.ndarray) or tokens.dtype not in TOKEN_DTYPES:
        raise TypeError("tokens must be a numpy array of dtype uint16 or uint32")
    if tokens.ndim != 1 or not tokens.flags.c_contiguous:
        raise TypeError("tokens must be a 1-D C-contiguous array")


def _check_block_size(block_size: int) -> None:
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")


def _output_dtype(dtype) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in OUTPUT_DTYPES:
        raise TypeError(f"dtype must be int64, int32 or uint16, got {dt}")
    return dt


def _fits(values: np.ndarray, dt: np.dtype) -> bool:
    info = np.iinfo(dt)
    return values.size == 0 or (int(values.min()) >= info.min and int(values.max()) <= info.max)


def paragraph_starts_reference(
    tokens: np.ndarray, separator: Sequence[int], block_size: int, *, threads: int = 0
) -> np.ndarray:
    """Positions where a ``block_size`` window may start at a paragraph start.

    Returns the sorted int64 positions ``p`` with ``p == 0``, or ``p >= k`` and
    ``tokens[p-k:p] == separator`` and ``tokens[p] != separator[0]`` (k = len(separator); a run
    of repeated separators yields one start, at the first token after the run), keeping only
    ``p + block_size <= len(tokens)``. ``threads`` is accepted for signature parity and ignored.
    """
    _check_tokens(tokens)
    sep = np.asarray(separator, dtype=np.int64).reshape(-1)
    if sep.size == 0:
        raise ValueError("separator must not be empty")
    _check_block_size(block_size)
    if not _fits(sep, tokens.dtype):
        raise ValueError(f"separator ids {sep.tolist()} do not fit in {tokens.dtype} tokens")
    n, k = len(tokens), len(sep)
    if block_size > n:
        return np.zeros(0, dtype=np.int64)
    # match[i]: the separator occupies tokens[i:i+k]; then p = i + k is a candidate
    n_cand = max(n - k, 0)  # i + k < n so that tokens[p] exists
    match = np.ones(n_cand, dtype=bool)
    for j in range(k):
        match &= tokens[j : j + n_cand] == sep[j]
    p = np.flatnonzero(match).astype(np.int64) + k
    p = p[(tokens[p] != sep[0]) & (p + block_size <= n)]
    return np.concatenate([np.zeros(1, dtype=np.int64), p])


def gather_windows_reference(
    tokens: np.ndarray,
    starts: Sequence[int],
    block_size: int,
    *,
    shift: bool = False,
    dtype=np.int64,
    threads: int = 0,
):
    """``x[i] = tokens[starts[i]:starts[i]+block_size]``; with ``shift`` also ``y`` one token later.

    Returns ``x`` of shape (len(starts), block_size), or ``(x, y)`` when ``shift`` is true.
    A start that is negative or whose window (plus one token for ``y``) would read past the
    end raises IndexError naming it.
    """
    _check_tokens(tokens)
    _check_block_size(block_size)
    out = _output_dtype(dtype)
    starts = np.asarray(starts, dtype=np.int64).reshape(-1)
    width = block_size + int(shift)
    for r, s in enumerate(starts.tolist()):
        if s < 0 or s + width > len(tokens):
            raise IndexError(f"start {s} (starts[{r}]) is out of range for {len(tokens)} tokens")
    window = tokens[starts[:, None] + np.arange(width)]  # (B, width)
    if not _fits(window, out):
        raise ValueError(f"a token id does not fit in {out}")
    x = window[:, :block_size].astype(out)
    if not shift:
        return x
    return x, window[:, 1:].astype(out)


def gather_documents_reference(
    tokens: np.ndarray,
    doc_offsets: Sequence[int],
    doc_ids: Sequence[int],
    block_size: int,
    *,
    cls_id: int,
    pad_id: int,
    dtype=np.int64,
):
    """Rows of ``[cls_id, document tokens..., pad_id...]`` for sequence scoring.

    Document d is ``tokens[doc_offsets[d]:doc_offsets[d+1]]``. Row r holds ``cls_id``, the first
    ``min(len(doc), block_size - 1)`` tokens of document ``doc_ids[r]``, then ``pad_id`` up to
    ``block_size``; ``lengths[r]`` (int64) is 1 + the number of document tokens copied.
    Offsets that are empty, negative, decreasing or past the end raise ValueError; an id
    outside ``[0, n_docs)`` raises IndexError.
    """
    _check_tokens(tokens)
    _check_block_size(block_size)
    out = _output_dtype(dtype)
    offsets = np.asarray(doc_offsets, dtype=np.int64).reshape(-1)
    ids = np.asarray(doc_ids, dtype=np.int64).reshape(-1)
    if offsets.size == 0:
        raise ValueError("doc_offsets must hold n_docs + 1 entries, got an empty array")
    if offsets[0] < 0 or np.any(np.diff(offsets) < 0) or offsets[-1] > len(tokens):
        raise ValueError("doc_offsets must be non-decreasing and within [0, len(tokens)]")
    n_docs = len(offsets) - 1
    for r, d in enumerate(ids.tolist()):
        if not 0 <= d < n_docs:
            raise IndexError(f"doc id {d} (doc_ids[{r}]) is out of range for {n_docs} documents")
    for name, v in (("cls_id", cls_id), ("pad_id", pad_id)):
        if not _fits(np.array([v]), out):
            raise ValueError(f"{name} {v} does not fit in {out}")
    x = np.full((len(ids), block_size), pad_id, dtype=out)
    lengths = np.zeros(len(ids), dtype=np.int64)
    x[:, 0] = cls_id
    for r, d in enumerate(ids.tolist()):
        doc = tokens[offsets[d] : offsets[d + 1]][: block_size - 1]
        if not _fits(doc, out):
            raise ValueError(f"a token id in document {d} does not fit in {out}")
        x[r, 1 : 1 + len(doc)] = doc
        lengths[r] = 1 + len(doc)
    return x, lengths

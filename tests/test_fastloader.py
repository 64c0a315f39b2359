"""The C++ fast loader against its numpy references, on edge cases and random inputs."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmengine import _fastloader
from mmengine.data import fastloader as fl
from mmengine.data.reference import (
    gather_documents_reference,
    gather_windows_reference,
    paragraph_starts_reference,
)

TOKEN_DTYPES = [np.uint16, np.uint32]
OUT_DTYPES = [np.int64, np.int32, np.uint16]


def toks(values, dtype=np.uint16):
    return np.asarray(values, dtype=dtype)


# --- paragraph_starts ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", TOKEN_DTYPES)
@pytest.mark.parametrize(
    "values, separator, block_size, expected",
    [
        ([], [0, 0], 1, []),  # empty tokens: nothing fits
        ([5], [0], 1, [0]),  # length 1, block_size == len
        ([5], [0], 2, []),  # block_size > len
        ([5, 0, 0, 3, 4, 0, 0, 0, 7, 1], [0, 0], 2, [0, 3, 8]),  # run of separators: one start after it
        ([0, 0, 1, 2], [0, 0], 2, [0, 2]),  # separator at the very start
        ([1, 2, 0, 0], [0, 0], 1, [0]),  # separator at the very end: no token after it
        ([1, 0, 2, 0, 0, 3], [0], 1, [0, 2, 5]),  # one-token separator
        ([1, 0, 0, 0, 0, 3, 4], [0, 0], 3, [0]),  # start at 5 would overrun block_size 3
        ([1, 0, 0, 0, 0, 3, 4], [0, 0], 2, [0, 5]),  # ... and fits with 2
        ([1, 0, 9, 0, 9, 0, 9, 2], [0, 9], 1, [0, 7]),  # repeated two-token separator "0 9"
        ([1, 0, 9, 2, 0, 9, 0, 3], [0, 9], 1, [0, 3]),  # tokens[p] == sep[0] excludes p (spec)
        ([3, 1, 2, 3, 1, 2, 3, 4], [1, 2, 3], 1, [0, 7]),  # three-token separator: p=4 starts another
        ([7, 7, 7, 7], [0, 0], 4, [0]),  # no separator at all, block_size == len
    ],
)
def test_paragraph_starts_cases(dtype, values, separator, block_size, expected):
    tokens = toks(values, dtype)
    got = fl.paragraph_starts(tokens, separator, block_size)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, np.asarray(expected, dtype=np.int64))
    np.testing.assert_array_equal(got, paragraph_starts_reference(tokens, separator, block_size))


def test_paragraph_starts_separator_forms():
    tokens = toks([1, 0, 2, 0, 0, 3])
    expected = fl.paragraph_starts(tokens, [0], 1)
    for sep in (0, (0,), np.array([0], dtype=np.uint8), np.array([0], dtype=np.int64)):
        np.testing.assert_array_equal(fl.paragraph_starts(tokens, sep, 1), expected)


def test_paragraph_starts_uint32_large_ids():
    tokens = toks([5, 70000, 70001, 9, 70000, 70001, 70000, 70001, 4, 2], np.uint32)
    got = fl.paragraph_starts(tokens, [70000, 70001], 2)
    np.testing.assert_array_equal(got, [0, 3, 8])
    np.testing.assert_array_equal(got, paragraph_starts_reference(tokens, [70000, 70001], 2))


def test_paragraph_starts_long_array_matches_reference_for_all_thread_counts():
    # long enough to cover the SIMD block loop, the tail and chunk edges between threads
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 4, size=200_003).astype(np.uint16)  # separators are frequent
    for sep in ([0], [0, 0], [0, 1, 0]):
        ref = paragraph_starts_reference(tokens, sep, 17)
        for threads in (0, 1, 2, 3, 7, 64):
            np.testing.assert_array_equal(fl.paragraph_starts(tokens, sep, 17, threads=threads), ref)


def test_paragraph_starts_memmap(tmp_path):
    path = tmp_path / "train.bin"
    toks([1, 0, 0, 2, 3, 0, 0, 4, 5]).tofile(path)
    tokens = np.memmap(path, dtype=np.uint16, mode="r")
    np.testing.assert_array_equal(fl.paragraph_starts(tokens, [0, 0], 2), [0, 3, 7])


def test_paragraph_starts_errors():
    tokens = toks([1, 0, 0, 2])
    with pytest.raises(ValueError, match="separator must not be empty"):
        fl.paragraph_starts(tokens, [], 1)
    with pytest.raises(ValueError, match="block_size"):
        fl.paragraph_starts(tokens, [0], 0)
    with pytest.raises(ValueError, match="does not fit"):
        fl.paragraph_starts(tokens, [70000], 1)
    with pytest.raises(ValueError, match="does not fit"):
        fl.paragraph_starts(tokens, [-1], 1)
    with pytest.raises(ValueError, match="threads"):
        fl.paragraph_starts(tokens, [0], 1, threads=-1)
    with pytest.raises(TypeError, match="integers"):
        fl.paragraph_starts(tokens, [0.5], 1)


# --- dtype / layout errors shared by all three functions -----------------------------------------


def _calls(tokens):
    return [
        lambda: fl.paragraph_starts(tokens, [0], 1),
        lambda: fl.gather_windows(tokens, [0], 1),
        lambda: fl.gather_documents(tokens, [0, 1], [0], 2, cls_id=1, pad_id=2),
    ]


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.arange(8, dtype=np.int64), "uint16 or uint32"),
        (np.arange(8, dtype=np.int32), "uint16 or uint32"),
        (np.arange(8, dtype=np.uint8), "uint16 or uint32"),
        (np.arange(8, dtype=np.float32), "uint16 or uint32"),
        (np.arange(8, dtype=">u2"), "uint16 or uint32"),  # non-native byte order
        (np.arange(16, dtype=np.uint16)[::2], "C-contiguous"),  # strided view
        (np.arange(8, dtype=np.uint16)[::-1], "C-contiguous"),  # negative stride
        (np.arange(8, dtype=np.uint16).reshape(2, 4), "1-D"),
        (np.asfortranarray(np.arange(8, dtype=np.uint16).reshape(2, 4)), "1-D"),  # Fortran 2-D
        (np.frombuffer(b"\0" * 17, dtype=np.uint16, offset=1), "aligned"),
        ([1, 2, 3], "numpy array"),
    ],
)
def test_wrong_token_arrays_raise_type_error(bad, message):
    for call in _calls(bad):
        with pytest.raises(TypeError, match=message):
            call()


def test_huge_block_size_is_an_error_not_a_crash():
    tokens = toks([1, 0, 0, 2])
    big = 2**63 - 1
    assert fl.paragraph_starts(tokens, [0], big).tolist() == []
    with pytest.raises(IndexError, match="start 0"):
        fl.gather_windows(tokens, [0], big, shift=True)
    assert fl.gather_windows(tokens, [], 2**40, shift=True)[0].shape == (0, 2**40)
    with pytest.raises(ValueError, match="too big"):  # numpy refuses a (0, 2**63 - 1) int64 array
        fl.gather_windows(tokens, [], big)
    with pytest.raises((ValueError, MemoryError)):  # numpy refuses the (1, 2**62) output
        fl.gather_documents(tokens, [0, 4], [0], 2**62, cls_id=1, pad_id=0)


def test_extension_itself_rejects_lists_and_wrong_index_dtypes():
    from mmengine import _fastloader

    tokens = toks([1, 2, 3, 4])
    with pytest.raises(TypeError):
        _fastloader.gather_windows([1, 2, 3], np.zeros(1, np.int64), 1)
    with pytest.raises(TypeError):  # noconvert: int32 starts are not silently converted
        _fastloader.gather_windows(tokens, np.zeros(1, np.int32), 1)
    with pytest.raises(TypeError):
        _fastloader.gather_windows(tokens, np.zeros(4, np.int64)[::2], 1)


# --- scalar and array arguments are taken as written, never coerced ------------------------------

_TOK = np.arange(40, dtype=np.uint16)

# (function, the argument, a call with that argument set to v): every integer argument of every
# function, called through the wrapper
INT_ARGS = [
    ("paragraph_starts", "block_size", lambda v: fl.paragraph_starts(_TOK, [0], v)),
    ("paragraph_starts", "threads", lambda v: fl.paragraph_starts(_TOK, [0], 4, threads=v)),
    ("gather_windows", "block_size", lambda v: fl.gather_windows(_TOK, [0], v)),
    ("gather_windows", "threads", lambda v: fl.gather_windows(_TOK, [0], 4, threads=v)),
    ("gather_documents", "block_size", lambda v: fl.gather_documents(_TOK, [0, 9], [0], v, cls_id=1, pad_id=2)),
    ("gather_documents", "cls_id", lambda v: fl.gather_documents(_TOK, [0, 9], [0], 4, cls_id=v, pad_id=2)),
    ("gather_documents", "pad_id", lambda v: fl.gather_documents(_TOK, [0, 9], [0], 4, cls_id=1, pad_id=v)),
]
INT_ARG_IDS = [f"{f}-{a}" for f, a, _ in INT_ARGS]


@pytest.mark.parametrize("function, name, call", INT_ARGS, ids=INT_ARG_IDS)
@pytest.mark.parametrize("bad", [3.7, 3.0, "8", True, False, np.True_, np.float64(3.0), None, [3], np.array([3])])
def test_integer_arguments_refuse_non_integers(function, name, call, bad):
    """The issue's cases: 3.7 ran as 3, '8' as 8 and True as 1. Each is now one sentence naming the argument."""
    with pytest.raises(TypeError, match=rf"^{name} must be an integer, got "):
        call(bad)


@pytest.mark.parametrize("function, name, call", INT_ARGS, ids=INT_ARG_IDS)
def test_integer_arguments_take_python_and_numpy_integers(function, name, call):
    expected = call(3)
    for ok in (np.int64(3), np.int32(3), np.uint8(3), np.array(3)):
        got = call(ok)
        for g, e in zip(got if isinstance(got, tuple) else (got,),
                        expected if isinstance(expected, tuple) else (expected,)):
            np.testing.assert_array_equal(g, e)
    with pytest.raises(ValueError, match=rf"^{name} must fit in int64"):
        call(2**70)


@pytest.mark.parametrize("bad", [1, 0, "no", None, 1.0, np.int64(1)])
def test_shift_must_be_a_bool(bad):
    with pytest.raises(TypeError, match="^shift must be True or False"):
        fl.gather_windows(_TOK, [0], 4, shift=bad)
    _, y = fl.gather_windows(_TOK, [0], 4, shift=np.True_)
    assert y.tolist() == [[1, 2, 3, 4]]


@pytest.mark.parametrize(
    "call",
    [
        lambda t: fl.paragraph_starts(t, [0], 4),
        lambda t: fl.gather_windows(t, [0], 4),
        lambda t: fl.gather_documents(t, [0, 9], [0], 4, cls_id=1, pad_id=2),
    ],
    ids=["paragraph_starts", "gather_windows", "gather_documents"],
)
def test_masked_and_big_endian_tokens_are_refused(call):
    masked = np.ma.masked_array(_TOK, mask=_TOK % 2 == 0)
    with pytest.raises(TypeError, match="tokens is a masked array"):
        call(masked)
    with pytest.raises(TypeError, match="tokens is a masked array"):
        call(np.ma.masked_array(_TOK))  # even with nothing masked: the caller meant a mask
    for big in (_TOK.astype(">u2"), _TOK.astype(">u4")):
        with pytest.raises(TypeError, match=r"native-endian uint16 or uint32, got big-endian dtype >u[24]"):
            call(big)


@pytest.mark.parametrize(
    "name, call",
    [
        ("separator", lambda a: fl.paragraph_starts(_TOK, a, 4)),
        ("starts", lambda a: fl.gather_windows(_TOK, a, 4)),
        ("doc_offsets", lambda a: fl.gather_documents(_TOK, a, [0], 4, cls_id=1, pad_id=2)),
        ("doc_ids", lambda a: fl.gather_documents(_TOK, [0, 0, 9], a, 4, cls_id=1, pad_id=2)),
    ],
)
def test_masked_index_arrays_are_refused(name, call):
    values = [0, 9] if name == "doc_offsets" else [1]
    for dtype in (np.int64, np.int32):
        with pytest.raises(TypeError, match=f"^{name} is a masked array"):
            call(np.ma.masked_array(np.array(values, dtype=dtype), mask=[True] + [False] * (len(values) - 1)))
    raw = {  # the extension itself refuses them too (pybind11 would have stripped the mask)
        "separator": lambda a: _fastloader.paragraph_starts(_TOK, a, 4),
        "starts": lambda a: _fastloader.gather_windows(_TOK, a, 4),
        "doc_offsets": lambda a: _fastloader.gather_documents(_TOK, a, np.zeros(1, np.int64), 4, cls_id=1, pad_id=2),
        "doc_ids": lambda a: _fastloader.gather_documents(_TOK, np.array([0, 0, 9]), a, 4, cls_id=1, pad_id=2),
    }[name]
    with pytest.raises(TypeError, match=f"^{name} is a masked array"):
        raw(np.ma.masked_array(np.array(values, dtype=np.int64)))


def test_big_endian_index_arrays_are_read_by_value():
    starts = np.array([3, 7], dtype=">i8")
    np.testing.assert_array_equal(fl.gather_windows(_TOK, starts, 2), [[3, 4], [7, 8]])
    sep = np.array([5], dtype=">u4")
    np.testing.assert_array_equal(fl.paragraph_starts(_TOK, sep, 2), paragraph_starts_reference(_TOK, [5], 2))
    x, _ = fl.gather_documents(_TOK, np.array([0, 4, 9], dtype=">i4"), np.array([1], dtype=">u2"), 3, cls_id=1,
                               pad_id=2)
    assert x.tolist() == [[1, 4, 5]]


def test_index_values_beyond_int64_are_named_not_wrapped():
    with pytest.raises(ValueError, match=r"starts holds 18446744073709551615"):
        fl.gather_windows(_TOK, np.array([2**64 - 1], dtype=np.uint64), 2)  # would wrap to -1
    with pytest.raises(ValueError, match="starts holds an integer that does not fit in int64"):
        fl.gather_windows(_TOK, [2**70], 2)
    with pytest.raises(TypeError, match="starts must hold integers, got dtype bool"):
        fl.gather_windows(_TOK, [True], 2)


@pytest.mark.parametrize("dtype", [">i8", ">i4", ">u2", np.dtype(np.int64).newbyteorder(">")])
def test_big_endian_output_dtype_is_refused_not_replaced_by_native(dtype):
    with pytest.raises(TypeError, match="dtype must be in native byte order, got big-endian"):
        fl.gather_windows(_TOK, [0], 2, dtype=dtype)
    with pytest.raises(TypeError, match="dtype must be in native byte order, got big-endian"):
        fl.gather_documents(_TOK, [0, 9], [0], 4, cls_id=1, pad_id=2, dtype=dtype)
    for native in ("<i8", "=i8", np.int64, "int64"):
        assert fl.gather_windows(_TOK, [0], 2, dtype=native).dtype == np.dtype("=i8")


@pytest.mark.parametrize("bad", ["foo", None, float, "float32", "uint32"])
def test_bad_output_dtype_is_one_sentence(bad):
    with pytest.raises(TypeError, match="^dtype must be int64, int32 or uint16, got "):
        fl.gather_windows(_TOK, [0], 2, dtype=bad)


# --- gather_windows ------------------------------------------------------------------------------


@pytest.mark.parametrize("tok_dtype", TOKEN_DTYPES)
@pytest.mark.parametrize("out_dtype", OUT_DTYPES)
@pytest.mark.parametrize("shift", [False, True])
def test_gather_windows_matches_reference(tok_dtype, out_dtype, shift):
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 60000, size=1000).astype(tok_dtype)
    block = 37
    starts = rng.integers(0, len(tokens) - block - 1, size=13)
    starts[0], starts[-1] = 0, len(tokens) - block - 1  # both ends
    got = fl.gather_windows(tokens, starts, block, shift=shift, dtype=out_dtype)
    ref = gather_windows_reference(tokens, starts, block, shift=shift, dtype=out_dtype)
    got, ref = (got, ref) if shift else ((got,), (ref,))
    for g, r in zip(got, ref):
        assert g.dtype == np.dtype(out_dtype) and g.shape == (13, block)
        np.testing.assert_array_equal(g, r)
    if shift:
        np.testing.assert_array_equal(got[0][:, 1:], got[1][:, :-1])


def test_gather_windows_edges():
    tokens = toks([3, 1, 4, 1, 5])
    x = fl.gather_windows(tokens, [0], 5)  # block_size == len
    np.testing.assert_array_equal(x, [[3, 1, 4, 1, 5]])
    x, y = fl.gather_windows(tokens, [0], 4, shift=True)
    np.testing.assert_array_equal(x, [[3, 1, 4, 1]])
    np.testing.assert_array_equal(y, [[1, 4, 1, 5]])
    x = fl.gather_windows(tokens, np.zeros(0, np.int64), 3)  # no starts
    assert x.shape == (0, 3) and x.dtype == np.int64
    x, y = fl.gather_windows(toks([]), [], 2, shift=True)  # empty tokens, no starts
    assert x.shape == y.shape == (0, 2)
    one = fl.gather_windows(toks([9]), [0], 1, dtype=np.uint16)
    assert one.dtype == np.uint16 and one.tolist() == [[9]]


@pytest.mark.parametrize("start", [-1, -100, 3, 4, 10**12, -(2**62)])
def test_gather_windows_out_of_range_start_names_it(start):
    tokens = toks([1, 2, 3, 4, 5])
    with pytest.raises(IndexError, match=rf"start {start} \(starts\[1\]\)"):
        fl.gather_windows(tokens, [0, start], 2, shift=True)
    with pytest.raises(IndexError):
        gather_windows_reference(tokens, [0, start], 2, shift=True)


def test_gather_windows_shift_needs_one_more_token():
    tokens = toks([1, 2, 3, 4])
    fl.gather_windows(tokens, [0], 4)
    with pytest.raises(IndexError, match="start 0"):
        fl.gather_windows(tokens, [0], 4, shift=True)


def test_gather_windows_narrowing_checks_values():
    tokens = toks([1, 70000, 3, 4], np.uint32)
    np.testing.assert_array_equal(fl.gather_windows(tokens, [2], 2, dtype=np.uint16), [[3, 4]])
    with pytest.raises(ValueError, match="does not fit"):
        fl.gather_windows(tokens, [0], 2, dtype=np.uint16)
    big = toks([2**31, 1], np.uint32)
    with pytest.raises(ValueError, match="does not fit"):
        fl.gather_windows(big, [0], 2, dtype=np.int32)
    assert fl.gather_windows(big, [0], 2)[0, 0] == 2**31


def test_gather_windows_bad_arguments():
    tokens = toks([1, 2, 3, 4])
    with pytest.raises(TypeError, match="dtype"):
        fl.gather_windows(tokens, [0], 2, dtype=np.float64)
    with pytest.raises(TypeError, match="dtype"):
        fl.gather_windows(tokens, [0], 2, dtype=np.uint32)
    with pytest.raises(ValueError, match="block_size"):
        fl.gather_windows(tokens, [0], 0)
    with pytest.raises(TypeError, match="starts"):
        fl.gather_windows(tokens, [[0]], 2)


def test_gather_windows_threads_identical():
    rng = np.random.default_rng(2)
    tokens = rng.integers(0, 65535, size=100_000).astype(np.uint16)
    starts = rng.integers(0, len(tokens) - 129, size=257)
    ref = fl.gather_windows(tokens, starts, 128, shift=True, threads=1)
    for threads in (0, 2, 3, 8, 1000):
        got = fl.gather_windows(tokens, starts, 128, shift=True, threads=threads)
        np.testing.assert_array_equal(got[0], ref[0])
        np.testing.assert_array_equal(got[1], ref[1])


# --- gather_documents ----------------------------------------------------------------------------


@pytest.mark.parametrize("tok_dtype", TOKEN_DTYPES)
@pytest.mark.parametrize("out_dtype", OUT_DTYPES)
def test_gather_documents_matches_reference(tok_dtype, out_dtype):
    rng = np.random.default_rng(3)
    tokens = rng.integers(0, 50000, size=500).astype(tok_dtype)
    offsets = np.array([0, 0, 3, 10, 10, 200, 500], dtype=np.int64)  # includes empty documents
    ids = [0, 1, 2, 3, 4, 5, 5, 2]
    for block in (1, 2, 7, 8, 300):
        x, lengths = fl.gather_documents(tokens, offsets, ids, block, cls_id=65000, pad_id=3, dtype=out_dtype)
        rx, rl = gather_documents_reference(tokens, offsets, ids, block, cls_id=65000, pad_id=3, dtype=out_dtype)
        assert x.dtype == np.dtype(out_dtype) and lengths.dtype == np.int64
        np.testing.assert_array_equal(x, rx)
        np.testing.assert_array_equal(lengths, rl)
        assert (x[:, 0] == 65000).all()


def test_gather_documents_layout():
    tokens = toks([5, 6, 7, 8, 9])
    x, lengths = fl.gather_documents(tokens, [0, 2, 5], [1, 0], 4, cls_id=1, pad_id=0)
    np.testing.assert_array_equal(x, [[1, 7, 8, 9], [1, 5, 6, 0]])
    np.testing.assert_array_equal(lengths, [4, 3])
    x, lengths = fl.gather_documents(tokens, [0, 2, 5], [1], 3, cls_id=1, pad_id=0)  # truncated
    np.testing.assert_array_equal(x, [[1, 7, 8]])
    assert lengths.tolist() == [3]
    x, lengths = fl.gather_documents(tokens, [0, 2, 5], [], 3, cls_id=1, pad_id=0)  # no rows
    assert x.shape == (0, 3) and lengths.shape == (0,)
    x, lengths = fl.gather_documents(toks([]), [0], [], 3, cls_id=1, pad_id=0)  # zero documents
    assert x.shape == (0, 3)


@pytest.mark.parametrize(
    "offsets",
    [[], [-1, 2], [0, 3, 2, 5], [0, 6], [1, 0]],
)
def test_gather_documents_bad_offsets(offsets):
    tokens = toks([5, 6, 7, 8, 9])
    with pytest.raises(ValueError, match="doc_offsets"):
        fl.gather_documents(tokens, offsets, [], 4, cls_id=1, pad_id=0)
    with pytest.raises(ValueError):
        gather_documents_reference(tokens, offsets, [], 4, cls_id=1, pad_id=0)


@pytest.mark.parametrize("doc_id", [-1, 2, 10**15])
def test_gather_documents_id_out_of_range_names_it(doc_id):
    tokens = toks([5, 6, 7, 8, 9])
    with pytest.raises(IndexError, match=rf"doc id {doc_id} \(doc_ids\[1\]\)"):
        fl.gather_documents(tokens, [0, 2, 5], [0, doc_id], 4, cls_id=1, pad_id=0)
    with pytest.raises(IndexError):
        gather_documents_reference(tokens, [0, 2, 5], [0, doc_id], 4, cls_id=1, pad_id=0)


def test_gather_documents_bad_special_ids_and_values():
    tokens = toks([5, 70000, 7], np.uint32)
    with pytest.raises(ValueError, match="cls_id"):
        fl.gather_documents(tokens, [0, 3], [0], 4, cls_id=70000, pad_id=0, dtype=np.uint16)
    with pytest.raises(ValueError, match="pad_id"):
        fl.gather_documents(tokens, [0, 3], [0], 4, cls_id=1, pad_id=-1, dtype=np.uint16)
    with pytest.raises(ValueError, match="does not fit"):
        fl.gather_documents(tokens, [0, 3], [0], 4, cls_id=1, pad_id=0, dtype=np.uint16)
    x, _ = fl.gather_documents(tokens, [0, 1, 3], [0], 4, cls_id=1, pad_id=0, dtype=np.uint16)
    assert x.tolist() == [[1, 5, 0, 0]]  # only the copied tokens must fit
    with pytest.raises(ValueError, match="block_size"):
        fl.gather_documents(tokens, [0, 3], [0], 0, cls_id=1, pad_id=0)


# --- property tests ------------------------------------------------------------------------------

small_tokens = st.lists(st.integers(0, 3), max_size=300)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=small_tokens,
    separator=st.lists(st.integers(0, 3), min_size=1, max_size=3),
    block_size=st.integers(1, 12),
    dtype=st.sampled_from(TOKEN_DTYPES),
    threads=st.integers(0, 5),
)
def test_paragraph_starts_property(values, separator, block_size, dtype, threads):
    tokens = toks(values, dtype)
    got = fl.paragraph_starts(tokens, separator, block_size, threads=threads)
    np.testing.assert_array_equal(got, paragraph_starts_reference(tokens, separator, block_size))
    # invariants stated independently of the reference
    assert np.all(np.diff(got) > 0)
    assert np.all(got + block_size <= len(tokens))
    k = len(separator)
    for p in got[1:].tolist():
        assert tokens[p - k : p].tolist() == separator and tokens[p] != separator[0]


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(0, 200),
    block_size=st.integers(1, 20),
    data=st.data(),
    shift=st.booleans(),
    out=st.sampled_from(OUT_DTYPES),
    threads=st.integers(0, 4),
)
def test_gather_windows_property(n, block_size, data, shift, out, threads):
    tokens = np.arange(n, dtype=np.uint16) * 7 % 1000
    starts = data.draw(st.lists(st.integers(-3, n + 3), max_size=10))
    try:
        ref = gather_windows_reference(tokens, starts, block_size, shift=shift, dtype=out)
    except IndexError:
        with pytest.raises(IndexError):
            fl.gather_windows(tokens, starts, block_size, shift=shift, dtype=out, threads=threads)
        return
    got = fl.gather_windows(tokens, starts, block_size, shift=shift, dtype=out, threads=threads)
    for g, r in zip(got if shift else (got,), ref if shift else (ref,)):
        np.testing.assert_array_equal(g, r)


@settings(max_examples=100, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 15), max_size=8),
    block_size=st.integers(1, 20),
    data=st.data(),
)
def test_gather_documents_property(lengths, block_size, data):
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = (np.arange(offsets[-1]) % 50 + 1).astype(np.uint16)
    ids = data.draw(st.lists(st.integers(-1, len(lengths)), max_size=6))
    try:
        ref = gather_documents_reference(tokens, offsets, ids, block_size, cls_id=60, pad_id=0)
    except IndexError:
        with pytest.raises(IndexError):
            fl.gather_documents(tokens, offsets, ids, block_size, cls_id=60, pad_id=0)
        return
    got = fl.gather_documents(tokens, offsets, ids, block_size, cls_id=60, pad_id=0)
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])


# --- crash resistance and import hygiene ---------------------------------------------------------

FUZZ_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    from mmengine import _fastloader as F
    rng = np.random.default_rng(int(__import__("sys").argv[1]))
    EXPECTED = (TypeError, ValueError, IndexError, MemoryError)
    def rand_ints(n, lo, hi):
        return rng.integers(lo, hi, size=n, dtype=np.int64)
    JUNK = [3.7, "8", True, None, np.float64(2.0), 2**70, -2**70, np.True_, [1], np.array([2, 3])]
    def rand_block(n):  # mostly plausible, sometimes extreme (overflow bait) or not an integer at all
        if rng.random() < 0.05:
            return int(rng.choice([2**40, 2**62, 2**63 - 1, -2**63]))
        if rng.random() < 0.03:
            return JUNK[rng.integers(0, len(JUNK))]
        return int(rng.integers(-2, n + 3))
    def rand_tokens():
        n = int(rng.integers(0, 300))
        kind = rng.integers(0, 6)
        dtype = [np.uint16, np.uint32, np.int64, np.uint8, np.float32, np.uint16][kind]
        a = rng.integers(0, 5, size=2 * n + 1).astype(dtype)
        if rng.random() < 0.03:
            return np.ma.masked_array(a[:n], mask=rng.random(n) < 0.5)
        if rng.random() < 0.03:
            return a[:n].astype(a.dtype.newbyteorder(">"))
        return a[::2] if rng.random() < 0.1 else a[:n]
    calls = 0
    for _ in range(3000):
        t = rand_tokens()
        n = len(t)
        try:
            which = rng.integers(0, 3)
            if which == 0:
                F.paragraph_starts(t, rand_ints(int(rng.integers(0, 4)), -2, 6), rand_block(n),
                                   threads=rand_block(9))
            elif which == 1:
                F.gather_windows(t, rand_ints(int(rng.integers(0, 9)), -5, n + 5), rand_block(n),
                                 shift=[True, False, 1, "yes"][rng.integers(0, 4)],
                                 dtype=["int64", "int32", "uint16", "float32", ">i8", None][rng.integers(0, 6)],
                                 threads=rand_block(9))
            else:
                offs = np.sort(rand_ints(int(rng.integers(0, 6)), -2, n + 3))
                if rng.random() < 0.3:
                    rng.shuffle(offs)
                F.gather_documents(t, offs, rand_ints(int(rng.integers(0, 6)), -2, 7), rand_block(11),
                                   cls_id=rand_block(70000), pad_id=rand_block(70000),
                                   dtype=["int64", "int32", "uint16"][rng.integers(0, 3)])
            calls += 1
        except EXPECTED:
            pass
    print("ok", calls)
    """
)


@pytest.mark.slow
def test_fuzz_random_inputs_never_crash():
    """Random (often invalid) arguments: only the documented exceptions, never a crash."""
    for seed in (0, 1):
        proc = subprocess.run(
            [sys.executable, "-c", FUZZ_SCRIPT, str(seed)], check=False, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.startswith("ok")


def test_fastloader_does_not_import_torch():
    code = ("import sys, mmengine.data.fastloader, mmengine.data.reference, mmengine.data.sampler; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


# Calls that each spend ~0.1 s inside C++ (threads=1): a scan where every position is a
# separator candidate, and 32 MB narrowing gathers (uint32 -> int32 runs a range check first).
_ZEROS16 = np.zeros(40_000_000, dtype=np.uint16)  # calloc'd: costs no memory until written
_ZEROS32 = np.zeros(8_000_000, dtype=np.uint32)
LONG_CALLS = {
    "paragraph_starts": lambda: _fastloader.paragraph_starts(_ZEROS16, np.array([0, 0, 0]), 4, threads=1),
    "gather_windows": lambda: _fastloader.gather_windows(
        _ZEROS32, np.zeros(2048, np.int64), 4096, dtype="int32", threads=1
    ),
    "gather_documents": lambda: _fastloader.gather_documents(
        _ZEROS32, np.arange(0, 8_000_001, 4000), np.arange(2000), 4001, cls_id=1, pad_id=0, dtype="int32"
    ),
}


@pytest.mark.parametrize("name", LONG_CALLS)
def test_gil_released_during_work(name):
    """A second Python thread makes progress while the main thread is inside the C++ call.

    The ticker records a timestamp per iteration; ticks stamped strictly between the call's
    start and end can only exist if the call let go of the GIL (a call holding it would stall
    the ticker until it returns: at most a tick or two squeezed in at the edges).
    """
    call = LONG_CALLS[name]
    call()  # warm up (page faults of the first use)
    stamps = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            stamps.append(time.perf_counter())
            time.sleep(0.0002)

    th = threading.Thread(target=ticker)
    th.start()
    try:
        time.sleep(0.01)  # the ticker is running
        t0 = time.perf_counter()
        call()
        t1 = time.perf_counter()
    finally:
        stop.set()
        th.join()
    inside = [t for t in stamps if t0 < t < t1]
    assert len(inside) >= 5, f"{len(inside)} ticks during a {t1 - t0:.3f} s call: the GIL was held"


def test_concurrent_calls_from_python_threads():
    """Several Python threads gathering at once (the GIL released) each get their own correct result."""
    rng = np.random.default_rng(5)
    tokens = rng.integers(0, 65535, size=200_000).astype(np.uint16)
    jobs = [rng.integers(0, len(tokens) - 257, size=64) for _ in range(32)]
    results: dict[int, tuple] = {}

    def work(worker):
        for j in range(worker, len(jobs), 4):
            results[j] = fl.gather_windows(tokens, jobs[j], 256, shift=True, threads=2)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for j, starts in enumerate(jobs):
        ref_x, ref_y = gather_windows_reference(tokens, starts, 256, shift=True)
        np.testing.assert_array_equal(results[j][0], ref_x)
        np.testing.assert_array_equal(results[j][1], ref_y)


def test_outputs_are_independent_writeable_arrays():
    rng = np.random.default_rng(4)
    tokens = rng.integers(0, 65535, size=10_000).astype(np.uint16)
    kept = []
    for step in range(20):
        starts = rng.integers(0, len(tokens) - 65, size=32)
        x, y = fl.gather_windows(tokens, starts, 64, shift=True)
        assert x.flags.writeable and x.flags.c_contiguous and not np.shares_memory(x, y)
        assert not np.shares_memory(x, tokens)
        if step % 2:
            kept.append((starts, x, y))  # the others are freed while later batches are made
        del x, y
    for starts, x, y in kept:
        ref_x, ref_y = gather_windows_reference(tokens, starts, 64, shift=True)
        np.testing.assert_array_equal(x, ref_x)
        np.testing.assert_array_equal(y, ref_y)
    x, _ = fl.gather_documents(tokens, [0, 5, 10], [0, 1], 8, cls_id=1, pad_id=0)
    x[0, 0] = 7  # writeable
    view = x[1]
    del x
    assert view.tolist() == [1, *tokens[5:10].tolist(), 0, 0]  # a view keeps the buffer alive


def test_read_only_memmap_works_everywhere_and_tokens_are_read_in_place(tmp_path):
    """The typical input: a read-only np.memmap. Used in place, never copied.

    A 2 GB sparse file is mapped; the calls touch only its first and last pages. Had any of
    them copied (or converted) the token array, the child process's peak RSS would grow by
    2 GB, not by the few MB allowed (measured as a growth, as sanitizer builds start large).
    """
    path = tmp_path / "train.bin"
    n = 1 << 30  # uint16 tokens: 2 GB, sparse (zeros) except the tail written below
    with open(path, "wb") as f:
        f.truncate(2 * n)
    tail = np.memmap(path, dtype=np.uint16, mode="r+", offset=2 * (n - 8), shape=(8,))
    tail[:] = [1, 0, 0, 2, 3, 0, 0, 4]
    tail.flush()
    del tail
    code = textwrap.dedent(
        f"""
        import resource, numpy as np
        from mmengine.data import fastloader as fl
        peak_mb = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        n = {n}
        t = np.memmap({str(path)!r}, dtype=np.uint16, mode="r")
        before = peak_mb()
        assert not t.flags.writeable
        assert fl.paragraph_starts(t, [0, 0], n - 6).tolist() == [0]  # scans only [2, 7)
        x, y = fl.gather_windows(t, [n - 8], 7, shift=True)
        assert x.tolist() == [[1, 0, 0, 2, 3, 0, 0]] and y.tolist() == [[0, 0, 2, 3, 0, 0, 4]]
        x, lengths = fl.gather_documents(t, np.array([0, n - 8, n]), [1], 4, cls_id=9, pad_id=7)
        assert x.tolist() == [[9, 1, 0, 0]] and lengths.tolist() == [4]
        print(peak_mb() - before)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    grew = int(proc.stdout.split()[-1])
    assert grew < 64, f"peak RSS grew by {grew} MB during the calls: the tokens were copied"

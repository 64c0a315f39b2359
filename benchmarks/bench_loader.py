"""Loader benchmarks: C++ fast loader vs nanoGPT-style get_batch and vectorised numpy.

Run (the main test run only collects tests/, so this file is only run when named):

    python -m pytest benchmarks/bench_loader.py --benchmark-only --benchmark-json=loader.json
    python benchmarks/bench_loader.py loader.json      # markdown table of medians and ratios

MMENGINE_BENCH_1B=1 adds the 1B-token scan (a 2 GB file in the temp dir; ~1 minute more).

Groups:
- ``batch``: B=64, T=1024, x and y as int64 torch tensors from a 50M-token uint16 memmap:
  nanoGPT's get_batch (as written, re-opening the memmap per call, and without that re-open),
  numpy fancy indexing, and ours (gather_windows). Each draws its own random starts.
- ``scan``: paragraph starts ("\\n\\n", two char ids) over 100M tokens, next to np.copyto of the
  same array (the memory-bandwidth limit).
- ``scan-scaling``: the C++ scan at 10M / 100M (/ 1B) tokens.
Token data is the bundled tiny-Shakespeare corpus, char-encoded and tiled to the wanted length.
"""
from __future__ import annotations

import json
import os
import sys
from importlib import resources

import numpy as np
import pytest
import torch

from mmengine.data.fastloader import gather_windows, paragraph_starts

B, T = 64, 1024
BATCH_TOKENS = 50_000_000
SCAN_TOKENS = 100_000_000


def _corpus_ids() -> tuple[np.ndarray, int]:
    text = resources.files("mmengine").joinpath("assets/tinyshakespeare.txt").read_text(encoding="utf-8")
    chars = sorted(set(text))
    lut = np.zeros(0x110000, dtype=np.uint16)
    lut[[ord(c) for c in chars]] = np.arange(len(chars), dtype=np.uint16)
    ids = lut[np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)]
    return ids, chars.index("\n")


def _token_file(directory, n_tokens: int) -> tuple[np.memmap, int]:
    """uint16 memmap of n_tokens (tiled corpus) under directory, written once per session."""
    base, newline = _corpus_ids()
    path = directory / f"tokens_{n_tokens}.bin"
    if not path.exists():
        out = np.memmap(path, dtype=np.uint16, mode="w+", shape=(n_tokens,))
        chunk = np.resize(base, 1 << 24)
        for start in range(0, n_tokens, len(chunk)):
            stop = min(n_tokens, start + len(chunk))
            # rotate each chunk so that the tiled file is not trivially periodic
            out[start:stop] = np.roll(chunk, start // len(chunk))[: stop - start]
        out.flush()
        del out
    return np.memmap(path, dtype=np.uint16, mode="r"), newline


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("bench_loader")


# --- batch assembly ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch_data(data_dir):
    data, _ = _token_file(data_dir, BATCH_TOKENS)
    data[:].max()  # map every page once, as a long training run would have
    return data


def get_batch_nanogpt(data, rng):
    """nanoGPT's train.py get_batch (CPU path), minus the per-call np.memmap re-open."""
    ix = torch.randint(len(data) - T, (B,), generator=rng)
    x = torch.stack([torch.from_numpy((data[i : i + T]).astype(np.int64)) for i in ix])
    y = torch.stack([torch.from_numpy((data[i + 1 : i + 1 + T]).astype(np.int64)) for i in ix])
    return x, y


def get_batch_nanogpt_reopen(path, rng):
    """nanoGPT's get_batch as written: it re-creates the np.memmap on every call (to avoid a leak)."""
    data = np.memmap(path, dtype=np.uint16, mode="r")
    return get_batch_nanogpt(data, rng)


def get_batch_numpy(data, rng):
    """Vectorised numpy: one fancy-indexing gather of (B, T+1), then the two int64 casts."""
    ix = rng.integers(0, len(data) - T, size=B)
    w = data[ix[:, None] + np.arange(T + 1)]  # (B, T+1) uint16
    return torch.from_numpy(w[:, :-1].astype(np.int64)), torch.from_numpy(w[:, 1:].astype(np.int64))


def get_batch_fastloader(data, rng):
    ix = rng.integers(0, len(data) - T, size=B)
    x, y = gather_windows(data, ix, T, shift=True)  # (B, T) int64 each
    return torch.from_numpy(x), torch.from_numpy(y)


def _check_batch(x, y):
    assert tuple(x.shape) == tuple(y.shape) == (B, T)
    assert str(x.dtype) == "torch.int64"
    assert (x[:, 1:] == y[:, :-1]).all()


@pytest.mark.benchmark(group="batch B=64 T=1024 int64 x,y from 50M-token memmap")
def test_batch_nanogpt_get_batch(benchmark, batch_data):
    rng = torch.Generator().manual_seed(0)
    _check_batch(*benchmark(get_batch_nanogpt, batch_data, rng))


@pytest.mark.benchmark(group="batch B=64 T=1024 int64 x,y from 50M-token memmap")
def test_batch_nanogpt_get_batch_reopen(benchmark, batch_data):
    rng = torch.Generator().manual_seed(0)
    _check_batch(*benchmark(get_batch_nanogpt_reopen, batch_data.filename, rng))


@pytest.mark.benchmark(group="batch B=64 T=1024 int64 x,y from 50M-token memmap")
def test_batch_numpy_fancy_indexing(benchmark, batch_data):
    rng = np.random.default_rng(0)
    _check_batch(*benchmark(get_batch_numpy, batch_data, rng))


@pytest.mark.benchmark(group="batch B=64 T=1024 int64 x,y from 50M-token memmap")
def test_batch_fastloader(benchmark, batch_data):
    rng = np.random.default_rng(0)
    _check_batch(*benchmark(get_batch_fastloader, batch_data, rng))


# --- paragraph scan ------------------------------------------------------------------------------


def numpy_paragraph_starts(a, s0, s1, block_size):
    """The vectorised numpy scan for a two-token separator, with the same start filtering."""
    m = (a[:-2] == s0) & (a[1:-1] == s1)  # separator at i, i+1
    p = np.flatnonzero(m) + 2
    p = p[(a[p] != s0) & (p + block_size <= len(a))]
    return np.concatenate([np.zeros(1, dtype=np.int64), p])


@pytest.fixture(scope="module")
def scan_data(data_dir):
    data, newline = _token_file(data_dir, SCAN_TOKENS)
    data[:].max()
    return data, newline


def _gbps(benchmark, nbytes):
    benchmark.extra_info["bytes"] = int(nbytes)
    benchmark.extra_info["GB/s"] = round(nbytes / benchmark.stats.stats.median / 1e9, 2)


@pytest.mark.benchmark(group="scan 100M tokens")
def test_scan_numpy(benchmark, scan_data):
    data, nl = scan_data
    got = benchmark.pedantic(numpy_paragraph_starts, (data, nl, nl, T), rounds=5, warmup_rounds=1)
    np.testing.assert_array_equal(got, paragraph_starts(data, [nl, nl], T))
    _gbps(benchmark, data.nbytes)


@pytest.mark.benchmark(group="scan 100M tokens")
def test_scan_fastloader(benchmark, scan_data):
    data, nl = scan_data
    benchmark.pedantic(paragraph_starts, (data, [nl, nl], T), rounds=10, warmup_rounds=1)
    _gbps(benchmark, data.nbytes)


@pytest.mark.benchmark(group="scan 100M tokens")
def test_scan_fastloader_1thread(benchmark, scan_data):
    data, nl = scan_data
    benchmark.pedantic(paragraph_starts, (data, [nl, nl], T), {"threads": 1}, rounds=10, warmup_rounds=1)
    _gbps(benchmark, data.nbytes)


@pytest.mark.benchmark(group="scan 100M tokens")
def test_scan_memcpy_limit(benchmark, scan_data):
    data, _ = scan_data
    dst = np.empty_like(data)
    dst.fill(0)  # fault the destination in before timing
    benchmark.pedantic(np.copyto, (dst, data), rounds=10, warmup_rounds=1)
    _gbps(benchmark, data.nbytes)


SCALES = [10_000_000, 100_000_000] + ([1_000_000_000] if os.environ.get("MMENGINE_BENCH_1B") == "1" else [])


@pytest.mark.parametrize("n_tokens", SCALES, ids=lambda n: f"{n // 1_000_000}M")
@pytest.mark.benchmark(group="scan-scaling")
def test_scan_scaling(benchmark, data_dir, n_tokens):
    data, nl = _token_file(data_dir, n_tokens)
    benchmark.pedantic(paragraph_starts, (data, [nl, nl], T), rounds=5, warmup_rounds=1)
    benchmark.extra_info["ns/token"] = round(benchmark.stats.stats.median / n_tokens * 1e9, 3)
    _gbps(benchmark, data.nbytes)


# --- summary table -------------------------------------------------------------------------------


def summarize(json_path: str) -> str:
    """Markdown table from --benchmark-json: medians, and how many times faster ours is than each row."""
    report = json.load(open(json_path))
    groups: dict[str, list] = {}
    for b in report["benchmarks"]:
        groups.setdefault(b["group"], []).append(b)
    lines = [
        "| group | benchmark | median | ours is N x faster | GB/s of tokens |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for group, items in groups.items():
        ours = [b for b in items if b["name"] in ("test_batch_fastloader", "test_scan_fastloader")]
        for b in sorted(items, key=lambda b: -b["stats"]["median"]):
            med = b["stats"]["median"]
            shown = f"{med * 1e3:.3f} ms" if med < 1 else f"{med:.3f} s"
            gbps = b.get("extra_info", {}).get("GB/s", "")
            ratio = f"{med / ours[0]['stats']['median']:.1f}" if ours and b is not ours[0] else ""
            lines.append(f"| {group} | {b['name'].removeprefix('test_')} | {shown} | {ratio} | {gbps} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(summarize(sys.argv[1]))

"""Bad input on the command line: an exit code of 1 or 2, exactly one line on stderr naming the
problem, no traceback, and nothing on disk changed.

A case is one row of ``CASES``: the command line after ``python -m`` (``{tmp}`` stands for the
case's own folder), the files to create there first, the expected exit code, and a word that the
message must contain. Everything under the case's folder (inputs, data dirs, out dirs, a foreign
folder given to ``--force``) is hashed before and after the command, so every case also shows that
the mistake harmed nothing and left nothing behind (no temp dir, no half-written out dir).

To add a case (a trainer or checkpoint mistake, ...), append one ``Case(...)``; the builders below
make real files: ``text``, ``prepared`` (a data dir written by ``prepare``, then damaged by
``poke`` / ``append`` / ``set_meta``), ``folder`` (several files at once), ``finished_run`` (the out_dir
of a real training run, its checkpoint then edited by ``ckpt_set`` / ``ckpt_model_args`` / ...),
``in_use`` (a folder whose lock this live test process holds, as a running run would).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

# A file to create: text, bytes, or a function that creates whatever lies at the path it is given.
Content = str | bytes | Callable[[Path], None]


@dataclass(frozen=True)
class Case:
    """One bad command line: ``python -m *argv`` run in a folder holding ``files``."""

    id: str
    argv: tuple[str, ...]
    files: dict[str, Content]
    exit_code: int
    word: str  # must appear in the one-line message
    marks: tuple = field(default=())


# --- builders --------------------------------------------------------------------------------------

CORPUS = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n" * 12
SPANS = [{"text": "a human wrote this line", "spans": [[2, 7, 1]]} for _ in range(6)]
SCORES = [{"text": f"review number {i}: a fine play", "score": i / 10} for i in range(10)]


def text(content: str) -> Content:
    return content


def folder(files: dict[str, Content]) -> Content:
    """A folder holding ``files`` (relative paths; a name ending in '/' is an empty subfolder)."""

    def build(path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        for rel, content in files.items():
            if rel.endswith("/"):
                (path / rel).mkdir(parents=True)
            else:
                _create(path / rel, content)

    return build


def prepared(*edits: Callable[[Path], None], records: list | None = None, corpus: str = CORPUS) -> Content:
    """A char data dir written by ``prepare`` (from ``corpus``, or from JSONL ``records``), then ``edits``."""

    def build(path: Path) -> None:
        from mmengine.data.preparation import prepare_jsonl, prepare_text

        source = path.parent / f"{path.name}.source"
        source.mkdir()
        if records is None:
            (source / "corpus.txt").write_text(corpus, encoding="utf-8")
            prepare_text([source / "corpus.txt"], path, progress=False)
        else:
            (source / "docs.jsonl").write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
            prepare_jsonl([source / "docs.jsonl"], path, progress=False)
        for edit in edits:
            edit(path)

    return build


def _dtype(data_dir: Path, name: str) -> str:
    if name.endswith("_labels.bin"):
        return "int16"
    return json.loads((data_dir / "meta.json").read_text())["token_dtype"]


def poke(name: str, position: int, value: int | str) -> Callable[[Path], None]:
    """Set one value of a data file (token or label file) in place; a str value names a special token."""

    def edit(data_dir: Path) -> None:
        values = np.fromfile(data_dir / name, dtype=_dtype(data_dir, name))
        special_ids = json.loads((data_dir / "meta.json").read_text())["special_ids"]
        values[position] = special_ids[value] if isinstance(value, str) else value
        values.tofile(data_dir / name)

    return edit


def append(name: str, data: bytes) -> Callable[[Path], None]:
    def edit(data_dir: Path) -> None:
        with open(data_dir / name, "ab") as f:
            f.write(data)

    return edit


def truncate(name: str, n_bytes: int) -> Callable[[Path], None]:
    def edit(data_dir: Path) -> None:
        (data_dir / name).write_bytes((data_dir / name).read_bytes()[:-n_bytes])

    return edit


def set_meta(key: str, value) -> Callable[[Path], None]:
    def edit(data_dir: Path) -> None:
        meta = json.loads((data_dir / "meta.json").read_text())
        meta[key] = value
        (data_dir / "meta.json").write_text(json.dumps(meta))

    return edit


def set_scores_split_empty(split: str) -> Callable[[Path], None]:
    """A "scores" data dir whose ``split`` holds no documents (and meta.json counting none)."""

    def edit(data_dir: Path) -> None:
        meta = json.loads((data_dir / "meta.json").read_text())
        np.zeros(0, dtype=meta["token_dtype"]).tofile(data_dir / f"{split}.bin")
        np.save(data_dir / f"{split}_offsets.npy", np.zeros(1, dtype=np.int64))
        np.save(data_dir / f"{split}_scores.npy", np.zeros(0, dtype=np.float32))
        meta["counts"][f"{split}_tokens"] = 0
        (data_dir / "meta.json").write_text(json.dumps(meta))

    return edit


_RUNS: dict[str, Path] = {}


def finished_run(*edits: Callable[[dict], None]) -> Content:
    """The out_dir of a real finished run (TRAIN's settings, on ``prepared()`` data), its ckpt.pt then edited.

    The run is trained once per session (in this process) and copied; each edit changes the loaded checkpoint
    dict in place before it is written back.
    """

    def build(path: Path) -> None:
        import shutil

        import torch

        if "run" not in _RUNS:
            from mmengine.config import load_config
            from mmengine.train import train

            root = Path(__import__("tempfile").mkdtemp(prefix="mmengine-finished-run-"))
            prepared()(root / "data")
            argv = [a.replace("{tmp}", str(root)) for a in TRAIN[1:]]
            train(load_config([*argv, "--train.max_iters=2", "--train.eval_interval=2"]))
            _RUNS["run"] = root / "run"
        shutil.copytree(_RUNS["run"], path)
        if edits:
            ckpt = torch.load(path / "ckpt.pt", weights_only=True)
            for edit in edits:
                edit(ckpt)
            torch.save(ckpt, path / "ckpt.pt")

    return build


def ckpt_set(key: str, value) -> Callable[[dict], None]:
    def edit(ckpt: dict) -> None:
        ckpt[key] = value

    return edit


def ckpt_model_args(**changes) -> Callable[[dict], None]:
    def edit(ckpt: dict) -> None:
        ckpt["model_args"].update(changes)

    return edit


def ckpt_first_moment_reshaped(ckpt: dict) -> None:
    """AdamW's exp_avg of the first parameter cut to half its rows (load_state_dict accepts it)."""
    state = ckpt["optimizer"]["state"][0]
    state["exp_avg"] = state["exp_avg"][: max(1, state["exp_avg"].shape[0] // 2)].clone()


_HELD: list = []  # locks this test process holds, as a live run would, until the test ends


def ckpt_nan_weight(ckpt: dict) -> None:
    ckpt["model"]["transformer.h.0.mlp.c_fc.weight"][0, 0] = float("nan")


def in_use(content: Content) -> Content:
    """``content``, then its lock held by this (live) test process, as a running training run holds it."""

    def build(path: Path) -> None:
        from mmengine.run_dir import OutDirLock

        _create(path, content)
        lock = OutDirLock(path)
        lock.acquire()
        _HELD.append(lock)

    return build


@pytest.fixture(autouse=True)
def _release_held_locks():
    yield
    while _HELD:
        _HELD.pop().release()


def _create(path: Path, content: Content) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if callable(content):
        content(path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")


# --- the cases -------------------------------------------------------------------------------------

PREPARE = ("mmengine.prepare", "{tmp}/in.txt", "--out")
# the smallest run that reaches every check; a case that wrongly trains ends after one step
TRAIN = (
    "mmengine.train", "--run.out_dir={tmp}/run", "--model.n_layer=1", "--model.n_embd=16", "--model.n_head=2",
    "--data.block_size=8", "--data.batch_size=2", "--train.max_iters=1", "--train.eval_interval=1",
    "--train.eval_iters=1", "--log.sample_tokens=0", "--log.progress=false", "--data.dir={tmp}/data",
)
THESIS = folder({"thesis.tex": "\\chapter{One}", "figures/plot.pdf": b"%PDF-1.5", "notes/": ""})

CASES = [
    # prepare: the vocabulary bound (was SIGABRT inside the tokenizers library, and a temp dir left behind)
    Case("prepare-bpe-vocab-1e9", (*PREPARE, "{tmp}/out", "--tokenizer", "bpe", "--vocab-size", "1000000000"),
         {"in.txt": text(CORPUS)}, 2, "vocab size"),
    Case("prepare-bpe-vocab-over-2**20", (*PREPARE, "{tmp}/out", "--tokenizer=bpe", "--vocab-size=1048577"),
         {"in.txt": text(CORPUS)}, 2, "1048576"),
    Case("prepare-vocab-size-not-a-number", (*PREPARE, "{tmp}/out", "--tokenizer=bpe", "--vocab-size=1e6"),
         {"in.txt": text(CORPUS)}, 2, "--vocab-size"),
    # prepare --force: only a data dir or an empty folder (a thesis folder was wiped)
    Case("prepare-force-thesis-folder", (*PREPARE, "{tmp}/thesis", "--force"),
         {"in.txt": text(CORPUS), "thesis": THESIS}, 2, "thesis.tex"),
    Case("prepare-force-nanogpt-source-folder", (*PREPARE, "{tmp}/shakespeare_char", "--force"),
         {"in.txt": text(CORPUS), "shakespeare_char": folder({
             "prepare.py": "# downloads input.txt", "input.txt": CORPUS, "train.bin": b"\0\0", "val.bin": b"\0\0",
             "meta.pkl": b"x"})}, 2, "prepare.py"),
    Case("prepare-force-data-dir-with-notes", (*PREPARE, "{tmp}/data", "--force"),
         {"in.txt": text(CORPUS), "data": prepared(lambda d: (d / "NOTES.md").write_text("mine"))}, 2, "NOTES.md"),
    Case("prepare-force-input-inside-out", ("mmengine.prepare", "{tmp}/data/corpus.txt", "--out", "{tmp}/data",
                                            "--force"),
         {"data": folder({"corpus.txt": CORPUS})}, 2, "lies inside"),
    Case("prepare-non-empty-out-without-force", (*PREPARE, "{tmp}/thesis"),
         {"in.txt": text(CORPUS), "thesis": THESIS}, 2, "--force"),
    # prepare: other arguments
    Case("prepare-seed-negative", (*PREPARE, "{tmp}/out", "--seed=-1"), {"in.txt": text(CORPUS)}, 2, "--seed"),
    Case("prepare-jsonl-seed-negative", ("mmengine.prepare", "{tmp}/docs.jsonl", "--out", "{tmp}/out", "--seed", "-1"),
         {"docs.jsonl": text("\n".join(json.dumps(r) for r in SPANS))}, 2, "--seed"),
    Case("prepare-missing-input", ("mmengine.prepare", "{tmp}/nope.txt", "--out", "{tmp}/out"), {}, 2, "nope.txt"),
    Case("prepare-input-not-utf8", (*PREPARE, "{tmp}/out"), {"in.txt": b"caf\xe9\n"}, 2, "UTF-8"),
    # a data dir that contradicts its metadata: one line when the trainer opens it, not an IndexError in the model
    Case("train-token-id-beyond-vocabulary", TRAIN, {"data": prepared(poke("train.bin", 5, 200))}, 2, "token id 200"),
    Case("train-special-id-in-token-file", TRAIN, {"data": prepared(poke("val.bin", 0, "[MASK]"))}, 2, "[MASK]"),
    Case("train-odd-sized-train-bin", TRAIN, {"data": prepared(append("train.bin", b"\0"))}, 2, "not a multiple"),
    Case("train-truncated-train-bin", TRAIN, {"data": prepared(truncate("train.bin", 2))}, 2, "truncated"),
    Case("train-separator-out-of-range", TRAIN, {"data": prepared(set_meta("separator_ids", [999, 999]))}, 2,
         "separator id 999"),
    Case("train-label-out-of-range", (*TRAIN, "--train.training_type=token_classification",
                                      "--model.attention_type=bidirectional",
                                      "--token_classification.label_source=labels"),
         {"data": prepared(poke("train_labels.bin", 3, 7), records=SPANS)}, 2, "label 7"),
    # The lead's (mmengine/config.py): a negative run seed is a traceback from numpy today.
    Case("train-run-seed-negative", (*TRAIN, "--run.seed=-1"), {"data": prepared()}, 2, "run.seed"),
    # runs must not destroy each other or their history
    Case("train-out-dir-in-use-by-a-live-run", TRAIN, {"data": prepared(), "run": in_use(finished_run())}, 2,
         "in use by another run (pid"),
    Case("train-scratch-over-a-finished-run", TRAIN, {"data": prepared(), "run": finished_run()}, 2,
         "--run.overwrite=true"),
    # wrong data must not be used silently: a data dir of another vocabulary
    Case("train-resume-other-vocabulary", (*TRAIN, "--run.init_from=resume", "--train.max_iters=4"),
         {"data": prepared(corpus=CORPUS.upper()), "run": finished_run()}, 2, "another vocabulary"),
    Case("evaluate-other-vocabulary", ("mmengine.evaluate", "{tmp}/run/ckpt.pt", "--data.dir={tmp}/other"),
         {"other": prepared(corpus=CORPUS + "Zounds! 1, 2, 3?\n\n"), "run": finished_run()}, 2, "another vocabulary"),
    Case("train-separator-not-in-vocabulary", (*TRAIN, "--data.separator=@@", "--data.use_paragraph_boundaries=true"),
         {"data": prepared()}, 2, "data.separator '@@'"),
    # sizes that cannot fit: refused before anything is allocated
    Case("train-block-size-1e12", (*TRAIN, "--data.block_size=1000000000000"), {"data": prepared()}, 2,
         "data.block_size"),
    Case("train-batch-size-beyond-memory", (*TRAIN, "--data.batch_size=100000000000"), {"data": prepared()}, 2,
         "lower data.batch_size"),
    Case("train-n-embd-2e6", (*TRAIN, "--model.n_embd=2000000"), {"data": prepared()}, 2, "of memory on cpu"),
    Case("train-resume-model-args-absurd", (*TRAIN, "--run.init_from=resume", "--train.max_iters=4"),
         {"data": prepared(), "run": finished_run(ckpt_model_args(n_embd=2_000_000))}, 2, "model_args of checkpoint"),
    Case("train-transfer-source-model-args-absurd",
         (*TRAIN, "--run.out_dir={tmp}/new", "--transfer.init_from_checkpoint={tmp}/run/ckpt.pt"),
         {"data": prepared(), "run": finished_run(ckpt_model_args(n_embd=2_000_000))}, 2, "of memory on cpu"),
    Case("evaluate-model-args-absurd", ("mmengine.evaluate", "{tmp}/run/ckpt.pt", "--data.dir={tmp}/data"),
         {"data": prepared(), "run": finished_run(ckpt_model_args(n_layer=1_000_000, n_embd=4096, n_head=2))}, 2,
         "describes a model of"),
    # the remaining tracebacks
    Case("train-out-dir-is-a-file", (*TRAIN, "--run.out_dir={tmp}/notes.txt"),
         {"data": prepared(), "notes.txt": "mine"}, 2, "is a file"),
    Case("train-out-dir-under-a-file", (*TRAIN, "--run.out_dir={tmp}/notes.txt/run"),
         {"data": prepared(), "notes.txt": "mine"}, 2, "which is a file"),
    Case("train-out-dir-in-proc", (*TRAIN, "--run.out_dir=/proc/mmengine-run"), {"data": prepared()}, 2, "/proc"),
    Case("train-out-dir-empty", (*TRAIN, "--run.out_dir="), {"data": prepared()}, 2, "run.out_dir is empty"),
    Case("train-scoring-no-val-documents", (*TRAIN, "--train.training_type=sequence_scoring",
                                            "--sequence_scoring.score_source=documents"),
         {"data": prepared(set_scores_split_empty("val"), records=SCORES)}, 2, "val split"),
    Case("train-scoring-block-size-1", (*TRAIN, "--train.training_type=sequence_scoring", "--data.block_size=1"),
         {"data": prepared()}, 2, "data.block_size=1"),
    Case("train-resume-optimizer-none", (*TRAIN, "--run.init_from=resume", "--train.max_iters=4"),
         {"data": prepared(), "run": finished_run(ckpt_set("optimizer", None))}, 2, "optimizer=None"),
    Case("train-resume-optimizer-state-misshaped", (*TRAIN, "--run.init_from=resume", "--train.max_iters=4"),
         {"data": prepared(), "run": finished_run(ckpt_first_moment_reshaped)}, 2, "optimizer state 'exp_avg'"),
    Case("train-resume-trainer-a-string", (*TRAIN, "--run.init_from=resume", "--train.max_iters=4"),
         {"data": prepared(), "run": finished_run(ckpt_set("trainer", "frozen"))}, 2, "trainer entry is a str"),
    Case("train-resume-iter-num-negative", (*TRAIN, "--run.init_from=resume", "--train.max_iters=4"),
         {"data": prepared(), "run": finished_run(ckpt_set("iter_num", -5))}, 2, "iter_num"),
    Case("train-resume-iter-num-a-string", (*TRAIN, "--run.init_from=resume", "--train.max_iters=4"),
         {"data": prepared(), "run": finished_run(ckpt_set("iter_num", "12"))}, 2, "iter_num"),
    Case("evaluate-trainer-a-string", ("mmengine.evaluate", "{tmp}/run/ckpt.pt", "--data.dir={tmp}/data"),
         {"data": prepared(), "run": finished_run(ckpt_set("trainer", "frozen"))}, 2, "trainer entry is a str"),
    Case("train-dist-timeout-zero", (*TRAIN, "--run.dist_timeout_s=0"), {"data": prepared()}, 2, "run.dist_timeout_s"),
    # inference on a checkpoint: sample, score, classify
    Case("sample-temperature-negative", ("mmengine.sample", "{tmp}/run/ckpt.pt", "--sample.temperature=-1"),
         {"run": finished_run()}, 2, "sample.temperature"),
    Case("sample-nan-weights", ("mmengine.sample", "{tmp}/run/ckpt.pt"), {"run": finished_run(ckpt_nan_weight)}, 2,
         "non-finite weights"),
    Case("sample-other-vocabulary", ("mmengine.sample", "{tmp}/run/ckpt.pt", "--data.dir={tmp}/other"),
         {"other": prepared(corpus=CORPUS + "Zounds! 1, 2, 3?\n\n"), "run": finished_run()}, 2, "another vocabulary"),
    Case("score-a-language-model", ("mmengine.score", "{tmp}/run/ckpt.pt", "{tmp}/notes.txt"),
         {"run": finished_run(), "notes.txt": "some text"}, 2, "not a sequence scorer"),
    Case("classify-missing-file", ("mmengine.classify", "{tmp}/run/ckpt.pt", "{tmp}/nope.txt"),
         {"run": finished_run()}, 2, "does not exist"),
]


# --- the harness -----------------------------------------------------------------------------------


def tree_digest(root: Path) -> dict[str, str]:
    """Every path under ``root`` -> a digest of what it is (file bytes, link target, folder)."""
    digest = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            digest[rel] = "link:" + os.readlink(path)
        elif path.is_dir():
            digest[rel] = "dir"
        else:
            digest[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input_is_one_line_and_harms_nothing(case: Case, tmp_path: Path):
    for rel, content in case.files.items():
        _create(tmp_path / rel, content)
    before = tree_digest(tmp_path)
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in case.argv]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", *argv], check=False, capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=300)
    shown = f"exit {proc.returncode}\nstderr:\n{proc.stderr[-3000:]}\nstdout:\n{proc.stdout[-1000:]}"
    assert "Traceback" not in proc.stderr + proc.stdout, shown
    assert proc.returncode == case.exit_code, shown
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, shown
    assert lines[0].startswith("error: ") and case.word in lines[0], shown
    assert tree_digest(tmp_path) == before, "the command changed files on disk"


def test_every_case_can_fail():
    """The harness itself: ids are unique, exit codes are errors, and each case names its problem."""
    assert len({c.id for c in CASES}) == len(CASES)
    assert all(c.exit_code in (1, 2) and c.word for c in CASES)

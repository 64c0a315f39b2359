"""Runs and their history protected from each other: the out_dir lock, a finished run's history, leftovers, torn
metrics, Ctrl-C while starting. Real processes and real files throughout (nothing mocked but one crash point)."""
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mmengine.config import load_config
from mmengine.errors import UserError
from mmengine.run_dir import LOCK_NAME, OutDirLock, RunDir, stale_leftovers
from mmengine.train import train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(char_data_dir):
    return char_data_dir(40_000)


def tiny(data_dir, out_dir, *extra):
    return [f"--data.dir={data_dir}", f"--run.out_dir={out_dir}", "--model.n_layer=1", "--model.n_embd=32",
            "--model.n_head=2", "--data.block_size=32", "--data.batch_size=4", "--train.eval_iters=1",
            "--train.log_interval=1", "--optim.warmup_iters=2", "--log.sample_tokens=0", "--log.progress=false", *extra]


def run(data_dir, out_dir, *extra):
    return train(load_config(tiny(data_dir, out_dir, *extra)))


def cli(data_dir, out_dir, *extra) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "mmengine.train", *tiny(data_dir, out_dir, *extra)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def records(out_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def wait_for(predicate, seconds: float = 60, what: str = "") -> None:
    deadline = time.time() + seconds
    while not predicate():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def logged_lines(out_dir, n: int):
    path = Path(out_dir) / "metrics.jsonl"
    return lambda: path.exists() and path.read_text().count("\n") >= n


# --- the lock ------------------------------------------------------------------------------------------------------


def test_lock_is_exclusive_names_its_holder_and_goes_away(tmp_path):
    first = OutDirLock(tmp_path)
    first.acquire()
    holder = json.loads((tmp_path / LOCK_NAME).read_text())
    assert holder["pid"] == os.getpid() and holder["host"]
    with pytest.raises(UserError, match=rf"in use by another run \(pid {os.getpid()} on {holder['host']}"):
        OutDirLock(tmp_path).acquire()  # another open file of the same process is another holder
    first.release()
    assert not (tmp_path / LOCK_NAME).exists()
    second = OutDirLock(tmp_path)
    second.acquire()
    assert second.took_over is None  # a lock released properly is no stale lock
    second.release()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True,
                          text=True)
    pid = int(dead.stdout)
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": "elsewhere", "started": 0}))
    lock = OutDirLock(tmp_path)
    lock.acquire()  # nobody holds the flock: the process that wrote the file is gone
    assert lock.took_over["pid"] == pid
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()


@pytest.mark.slow
def test_a_second_run_on_a_busy_out_dir_is_refused_and_the_first_goes_on(data_dir, tmp_path):
    """Two real training processes on one out_dir: the second is refused in one line, the first is unharmed
    (one writer: metrics.jsonl lines whole and in order, ckpt.pt and best.pt from the same model)."""
    out = tmp_path / "run"
    first = cli(data_dir, out, "--train.max_iters=100000", "--train.eval_interval=5")
    try:
        wait_for(lambda: (out / "ckpt.pt").exists() and logged_lines(out, 3)(), what="the first run's checkpoint")
        second = cli(data_dir, out, "--train.max_iters=3", "--run.init_from=resume")
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2, err
        lines = err.splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith(f"error: {out} is in use by another run (pid {first.pid} on {socket.gethostname()}")
        first.send_signal(signal.SIGTERM)  # saves a checkpoint and stops
        _, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
    recs = records(out)
    train_iters = [r["iter"] for r in recs if r["split"] == "train"]
    assert train_iters == list(range(1, len(train_iters) + 1))
    ck = torch.load(out / "ckpt.pt", weights_only=True)
    assert ck["iter_num"] == train_iters[-1]
    best = torch.load(out / "best.pt", weights_only=True)
    assert best["model_args"] == ck["model_args"] and best["config"] == ck["config"]
    assert not (out / LOCK_NAME).exists()


@pytest.mark.slow
def test_a_run_killed_with_sigkill_leaves_a_lock_the_next_run_takes_over(data_dir, tmp_path):
    out = tmp_path / "run"
    victim = cli(data_dir, out, "--train.max_iters=100000", "--train.eval_interval=3")
    try:
        wait_for(lambda: (out / "ckpt.pt").exists(), what="the checkpoint")
    finally:
        victim.kill()
        victim.communicate()
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == victim.pid  # left behind
    nxt = cli(data_dir, out, "--train.max_iters=1", "--run.overwrite=true")
    stdout, stderr = nxt.communicate(timeout=120)
    assert nxt.returncode == 0 and not stderr, stderr
    assert f"was left by a run that is no longer running (pid {victim.pid}" in stdout and "took it over" in stdout
    assert not (out / LOCK_NAME).exists()


# --- history -------------------------------------------------------------------------------------------------------


def test_scratch_run_over_a_finished_run_is_refused_in_process_too(data_dir, tmp_path):
    run(data_dir, tmp_path, "--train.max_iters=2", "--train.eval_interval=2")
    before = digest(tmp_path)
    with pytest.raises(UserError, match="holds an earlier run .*ckpt.pt, best.pt, metrics.jsonl"):
        run(data_dir, tmp_path, "--train.max_iters=2", "--train.eval_interval=2")
    assert digest(tmp_path) == before


@pytest.mark.slow
def test_overwrite_keeps_the_old_history_until_the_first_checkpoint(data_dir, tmp_path):
    """A new run with run.overwrite=true killed before its first checkpoint leaves the earlier run whole (and
    resumable); the next one that gets to its first checkpoint replaces metrics.jsonl and best.pt with its own."""
    run(data_dir, tmp_path, "--train.max_iters=4", "--train.eval_interval=2")
    earlier = digest(tmp_path)
    doomed = cli(data_dir, tmp_path, "--train.max_iters=100000", "--train.eval_interval=100000", "--run.overwrite=true",
                 "--optim.learning_rate=1e-2")
    try:
        wait_for(lambda: [p for p in tmp_path.glob(".metrics.*.jsonl") if p.read_text().count("\n") >= 3],
                 what="the new run's metrics")
    finally:
        doomed.kill()
        doomed.communicate()
    kept = {k: v for k, v in digest(tmp_path).items() if not k.startswith(".metrics.") and k != LOCK_NAME}
    assert kept == earlier  # metrics.jsonl, ckpt.pt, best.pt: the earlier run's, byte for byte
    # ... and it still resumes (the kill's leftovers are cleaned then)
    res = run(data_dir, tmp_path, "--train.max_iters=5", "--train.eval_interval=5", "--run.init_from=resume")
    assert sorted(res.train_losses) == [5]
    assert not list(tmp_path.glob(".metrics.*")) and not (tmp_path / LOCK_NAME).exists()

    new = run(data_dir, tmp_path, "--train.max_iters=3", "--train.eval_interval=3", "--run.overwrite=true")
    recs = records(tmp_path)
    assert [r["iter"] for r in recs if r["split"] == "train"] == [1, 2, 3]  # only the new run's history
    assert torch.load(tmp_path / "best.pt", weights_only=True)["iter_num"] == 3
    assert torch.load(new.checkpoint, weights_only=True)["iter_num"] == 3
    assert not list(tmp_path.glob(".metrics.*"))


def test_a_kill_between_the_first_checkpoint_and_the_history_swap_is_finished_on_resume(data_dir, tmp_path,
                                                                                         monkeypatch):
    run(data_dir, tmp_path, "--train.max_iters=4", "--train.eval_interval=4")
    old_best = (tmp_path / "best.pt").read_bytes()

    def killed(self, path):
        raise KeyboardInterrupt  # the process dies right after ckpt.pt was written

    with monkeypatch.context() as m:
        m.setattr(RunDir, "saved", killed)
        with pytest.raises(KeyboardInterrupt):
            run(data_dir, tmp_path, "--train.max_iters=6", "--train.eval_interval=2", "--run.overwrite=true")
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True)["iter_num"] == 2  # the new run's
    assert (tmp_path / "best.pt").read_bytes() == old_best and len(list(tmp_path.glob(".metrics.*.jsonl"))) == 1
    run(data_dir, tmp_path, "--train.max_iters=3", "--train.eval_interval=3", "--run.init_from=resume")
    assert [r["iter"] for r in records(tmp_path) if r["split"] == "train"] == [1, 2, 3]
    assert not list(tmp_path.glob(".metrics.*"))
    assert torch.load(tmp_path / "best.pt", weights_only=True)["iter_num"] == 3  # the earlier run's best.pt is gone


# --- leftovers and torn metrics ------------------------------------------------------------------------------------


def test_leftovers_of_interrupted_saves_are_removed_and_nothing_else(data_dir, tmp_path, caplog):
    run(data_dir, tmp_path, "--train.max_iters=2", "--train.eval_interval=2")
    ours = [".ckpt.pt.k3j_x9a2.tmp", ".best.pt.0a1b2c3d.tmp", "metrics.jsonl.tmp", "curves.tmp.png",
            ".metrics.0123abcd.jsonl"]
    theirs = ["notes.tmp", ".ckpt.pt.bak", "ckpt.pt.tmp", ".hidden.tmp", "data.tmp.png"]
    for name in ours + theirs:
        (tmp_path / name).write_bytes(b"\0" * 1000)
    assert sorted(p.name for p in stale_leftovers(tmp_path)) == sorted(ours)
    caplog.set_level("INFO", logger="mmengine")
    run(data_dir, tmp_path, "--train.max_iters=3", "--train.eval_interval=3", "--run.init_from=resume")
    assert not any((tmp_path / name).exists() for name in ours)
    assert all((tmp_path / name).exists() for name in theirs)
    assert any("removed 5 leftover file(s)" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("tail", ['{"iter": 5, "split": "tr', "5", '{"iter": 5, "split": "train", "loss": 1.5'])
def test_a_torn_last_line_of_metrics_is_dropped_on_resume(data_dir, tmp_path, tail, caplog):
    """A real torn file (a kill or a full disk mid-write; "5" is the start of a line that still parses)."""
    run(data_dir, tmp_path, "--train.max_iters=4", "--train.eval_interval=4")
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write(tail)  # no newline: the write stopped inside the line
    res = run(data_dir, tmp_path, "--train.max_iters=6", "--train.eval_interval=6", "--run.init_from=resume")
    assert sorted(res.train_losses) == [5, 6]
    assert any("line 6 is torn" in r.getMessage() for r in caplog.records)
    recs = records(tmp_path)  # every line parses
    assert [r["iter"] for r in recs if r["split"] == "train"] == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_the_cli_resumes_over_a_torn_metrics_file_and_says_so(data_dir, tmp_path):
    run(data_dir, tmp_path, "--train.max_iters=4", "--train.eval_interval=4")
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"iter": 5, "split": "tr')
    p = cli(data_dir, tmp_path, "--train.max_iters=6", "--train.eval_interval=6", "--run.init_from=resume")
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 0 and not stderr, stderr
    assert "metrics.jsonl: line 6 is torn" in stdout and "checkpoint: " in stdout
    assert [r["iter"] for r in records(tmp_path) if r["split"] == "train"] == [1, 2, 3, 4, 5, 6]


# --- Ctrl-C while starting -----------------------------------------------------------------------------------------


def _maps(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="watches the start-up through /proc")
@pytest.mark.parametrize("moment", ["importing torch", "opening the run"])
def test_ctrl_c_while_starting_is_one_line_and_exit_130(data_dir, tmp_path, moment):
    out = tmp_path / "run"
    p = cli(data_dir, out, "--train.max_iters=2", "--train.eval_interval=2")
    try:
        if moment == "importing torch":
            wait_for(lambda: "libtorch" in _maps(p.pid) or p.poll() is not None, what="torch's import")
        else:
            wait_for(lambda: (out / LOCK_NAME).exists() or p.poll() is not None, what="the lock")
        p.send_signal(signal.SIGINT)
        _, stderr = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, stderr
    assert stderr.splitlines() == ["interrupted"], stderr
    assert not (out / LOCK_NAME).exists()
    assert not out.exists() or not any(name in ("ckpt.pt", "best.pt") for name in os.listdir(out))
    rerun = run(data_dir, out, "--train.max_iters=1", "--train.eval_interval=1")  # nothing stands in its way
    assert rerun.iter_num == 1

"""A full disk during a save or a metrics write: one line naming the path and what was needed, exit 1, the previous
checkpoint intact. On a real full disk (a small tmpfs, where this machine lets a test mount one) and in process."""
import errno
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

from mmengine.checkpoint import checkpoint_bytes, load_checkpoint, save_checkpoint
from mmengine.errors import TrainingError
from mmengine.model import GPT, GPTConfig
from mmengine.run_dir import disk_full

REPO = Path(__file__).resolve().parents[1]


def tiny_model():
    return GPT(GPTConfig(block_size=8, vocab_size=40, n_layer=1, n_head=2, n_embd=16))


def test_disk_full_is_found_in_the_exception_chain():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    except RuntimeError as e:
        assert disk_full(e)
    assert not disk_full(RuntimeError("other"))
    assert not disk_full(OSError(errno.EACCES, "Permission denied"))


def test_a_full_disk_mid_save_is_one_sentence_and_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    model = tiny_model()
    save_checkpoint(path, model, iter_num=1)
    before = path.read_bytes()
    real_save = torch.save

    def full(obj, f, *args, **kwargs):  # what torch.save does on a full disk: its writer fails, the OSError as context
        real_save({"x": 1}, f)
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(TrainingError) as info:
        save_checkpoint(path, model, iter_num=2)
    message = str(info.value)
    assert message.startswith(f"the disk is full: writing {path} needs about ") and "free there" in message
    assert "the previous checkpoint there is intact" in message and "\n" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained traceback to show
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_checkpoint_bytes_counts_tied_storage_once():
    model = tiny_model()
    state = {"model": model.state_dict()}
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in state["model"].values()}
    expected = sum(storages.values())
    assert checkpoint_bytes(state) == expected
    # the tied embedding / lm_head appears twice in the state dict, once on disk
    assert checkpoint_bytes(state) < sum(t.numel() * t.element_size() for t in state["model"].values())


def test_a_full_disk_during_a_metrics_write_is_one_sentence(tmp_path):
    from types import SimpleNamespace

    from mmengine.run_logging import RunLogger

    rlog = RunLogger(tmp_path, SimpleNamespace(progress=False, tensorboard=False, wandb=False, plots=False))
    rlog.open()
    rlog._file.close()
    rlog._file = open("/dev/full", "w", encoding="utf-8")  # every write: ENOSPC  # noqa: SIM115
    with pytest.raises(TrainingError, match=rf"^the disk is full: writing {tmp_path / 'metrics.jsonl'} needs about "):
        rlog.log({"iter": 1, "split": "train", "loss": 1.0})
    rlog.close()  # closing after the failure does not raise a second error


# --- a real full disk ----------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 400 KB tmpfs (skipped where this process may not mount one)."""
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    if not shutil.which("mount") or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount)],
                                                     capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False, capture_output=True)


def train_cli(data_dir, out_dir, *extra):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    args = [f"--data.dir={data_dir}", f"--run.out_dir={out_dir}", "--model.n_layer=1", "--model.n_embd=48",
            "--model.n_head=2", "--data.block_size=16", "--data.batch_size=2", "--train.eval_iters=1",
            "--log.sample_tokens=0", "--log.progress=false", "--log.save_best=false", *extra]
    return subprocess.run([sys.executable, "-m", "mmengine.train", *args], env=env, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.mark.slow
def test_a_real_full_disk_ends_the_run_in_one_line_with_the_checkpoint_intact(char_data_dir, small_disk):
    out = small_disk / "run"
    # one checkpoint of this model fits the disk, a second one next to it does not: the save at iteration 4 fails
    first = train_cli(char_data_dir(40_000), out, "--train.max_iters=4", "--train.eval_interval=2")
    lines = first.stderr.splitlines()
    assert first.returncode == 1 and len(lines) == 1, first.stderr
    assert lines[0].startswith(f"error: the disk is full: writing {out / 'ckpt.pt'} needs about "), lines
    assert "the previous checkpoint there is intact" in lines[0]
    assert load_checkpoint(out / "ckpt.pt")["iter_num"] == 2
    assert not list(out.glob(".ckpt.pt.*.tmp")) and not (out / "run.lock").exists()

    # now fill it up but one page: the lock fits, the resume's rewrite of metrics.jsonl does not
    filler = small_disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)
    os.truncate(filler, filler.stat().st_size - 4096)
    metrics = (out / "metrics.jsonl").read_bytes()
    again = train_cli(char_data_dir(40_000), out, "--train.max_iters=6", "--train.eval_interval=2",
                      "--run.init_from=resume")
    lines = again.stderr.splitlines()
    assert again.returncode == 1 and len(lines) == 1, again.stderr
    assert lines[0].startswith(f"error: the disk is full: writing {out / 'metrics.jsonl'} needs about "), lines
    assert "Traceback" not in again.stdout + again.stderr
    assert load_checkpoint(out / "ckpt.pt")["iter_num"] == 2 and (out / "metrics.jsonl").read_bytes() == metrics
    assert sorted(p.name for p in out.iterdir()) == ["ckpt.pt", "metrics.jsonl"]  # no temp file, no lock left

    with open(filler, "ab") as f:  # the last page too: not even the lock fits, and no empty lock file is left
        f.write(b"\0" * 4096)
    again = train_cli(char_data_dir(40_000), out, "--train.max_iters=6", "--train.eval_interval=2",
                      "--run.init_from=resume")
    lines = again.stderr.splitlines()
    assert again.returncode == 1 and len(lines) == 1, again.stderr
    assert lines[0].startswith(f"error: the disk is full: writing {out / 'run.lock'} needs about "), lines
    assert sorted(p.name for p in out.iterdir()) == ["ckpt.pt", "metrics.jsonl"]

"""python -m mmengine.evaluate: a checkpoint's validation metrics equal the ones its run logged."""
import json
import subprocess
import sys

import pytest

from mmengine.config import load_config
from mmengine.train import train


@pytest.fixture(scope="module")
def data_dir(char_data_dir):
    """A small char data dir cut from the bundled corpus (fast to prepare, enough for tiny models)."""
    return char_data_dir(30_000)


@pytest.mark.parametrize("mode", ["unmasking", "token_classification"])
def test_evaluate_matches_the_runs_last_eval(data_dir, tmp_path, mode):
    from mmengine.evaluate import evaluate_checkpoint

    res = train(load_config([f"--data.dir={data_dir}", f"--run.out_dir={tmp_path}", f"--train.training_type={mode}",
                             "--model.n_layer=1", "--model.n_embd=32", "--model.n_head=2", "--data.block_size=32",
                             "--data.batch_size=4", "--train.max_iters=4", "--train.eval_interval=4", "--train.eval_iters=2",
                             "--log.sample_tokens=0", "--log.progress=false"]))
    metrics = evaluate_checkpoint(str(res.checkpoint))
    assert metrics["iter"] == 4
    assert abs(metrics["loss"] - res.val[-1]["loss"]) < 1e-5
    if mode == "token_classification":
        assert metrics["confusion"] == res.val[-1]["confusion"]


@pytest.mark.slow
def test_evaluate_cli(data_dir, tmp_path):
    train(load_config([f"--data.dir={data_dir}", f"--run.out_dir={tmp_path}", "--model.n_layer=1", "--model.n_embd=32",
                       "--model.n_head=2", "--data.block_size=32", "--data.batch_size=4", "--train.max_iters=2",
                       "--train.eval_interval=2", "--train.eval_iters=1", "--log.sample_tokens=0", "--log.progress=false"]))
    p = subprocess.run([sys.executable, "-m", "mmengine.evaluate", str(tmp_path / "ckpt.pt"), "--train.eval_iters=2"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "loss_stage0" in json.loads(p.stdout)
    bad = subprocess.run([sys.executable, "-m", "mmengine.evaluate", str(tmp_path / "ckpt.pt"), "--train.eval_itrs=2"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "did you mean" in bad.stderr and "Traceback" not in bad.stderr

"""Checkpoints written before the modes-as-plug-ins layout (tests/fixtures/mmengine-0dc61f1) still resume,
evaluate, sample and load: their model_args' training plans are dropped, their flat trainer state is read,
their config's moved keys are understood."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmengine.checkpoint import load_model
from mmengine.config import load_config
from mmengine.train import train

FIXTURES = Path(__file__).parent / "fixtures" / "mmengine-0dc61f1"
TINY = ["--model.n_layer=1", "--model.n_embd=16", "--model.n_head=2", "--data.block_size=16", "--data.batch_size=4",
        "--train.eval_iters=1", "--log.progress=false", "--log.sample_tokens=0", "--train.eval_interval=2"]


@pytest.fixture(scope="module")
def data_dir(char_data_dir):
    return char_data_dir(30_000)  # the data those runs were trained on


def test_model_args_with_training_plans_load():
    old = torch.load(FIXTURES / "clf_ckpt.pt", weights_only=True)
    assert old["model_args"]["freeze_transformer"] is True and old["model_args"]["init_from_checkpoint"]
    model = load_model(FIXTURES / "clf_ckpt.pt")
    assert model.config.mode.value == "token_classifier" and "freeze_transformer" not in model.config.to_dict()


def test_an_old_run_resumes(data_dir, tmp_path):
    out = tmp_path / "lm"
    out.mkdir()
    shutil.copy(FIXTURES / "lm_ckpt.pt", out / "ckpt.pt")
    shutil.copy(FIXTURES / "lm_metrics.jsonl", out / "metrics.jsonl")
    res = train(load_config([f"--data.dir={data_dir}", f"--run.out_dir={out}", "--run.init_from=resume",
                             "--train.max_iters=6", *TINY]))
    assert res.iter_num == 6 and res.val[-1]["iter"] == 6
    ck = torch.load(out / "ckpt.pt", weights_only=True)
    assert set(ck["trainer"]) >= {"freeze", "mode", "logger", "progress", "data"}  # written in today's layout
    assert [json.loads(line)["iter"] for line in (out / "metrics.jsonl").read_text().splitlines()
            if json.loads(line).get("split") == "val"] == [2, 4, 6]


def test_an_old_frozen_transfer_resumes_frozen(data_dir, tmp_path):
    out = tmp_path / "clf"
    out.mkdir()
    shutil.copy(FIXTURES / "clf_ckpt.pt", out / "ckpt.pt")
    before = torch.load(out / "ckpt.pt", weights_only=True)["model"]
    res = train(load_config([f"--data.dir={data_dir}", f"--run.out_dir={out}", "--run.init_from=resume",
                             "--train.training_type=remasking_binary", "--train.max_iters=6",
                             "--transfer.freeze_transformer=true", "--transfer.unfreeze_at_iteration=8", *TINY]))
    after = torch.load(res.checkpoint, weights_only=True)
    assert after["trainer"]["freeze"]["frozen"] is True
    assert all(torch.equal(after["model"][k], v) for k, v in before.items() if k.startswith("transformer."))
    assert not torch.equal(after["model"]["lm_head.weight"], before["lm_head.weight"])


@pytest.mark.parametrize("name, metric", [("lm_ckpt.pt", "loss_stage0"), ("clf_ckpt.pt", "accuracy")])
def test_old_checkpoints_evaluate_with_their_stored_config(name, metric, data_dir, caplog):
    from mmengine.evaluate import evaluate_checkpoint

    # their stored data dir was the run's temp dir: the same data is given here
    metrics = evaluate_checkpoint(str(FIXTURES / name), [f"--data.dir={data_dir}"], device="cpu")
    assert metric in metrics and metrics["iter"] == 4
    assert "is ignored" not in caplog.text  # the stored config was read (its moved [log] keys included)


@pytest.mark.slow
def test_an_old_lm_samples(tmp_path):
    p = subprocess.run([sys.executable, "-m", "mmengine.sample", str(FIXTURES / "lm_ckpt.pt"), "--length=20",
                        "--num_samples=2"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.rstrip("\n").split("\n---\n")) == 2

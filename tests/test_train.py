"""The training loop: each mode learns on tiny settings, resume is exact, NaN and signals are handled."""
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mmengine.config import load_config
from mmengine.train import TrainingError, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A small char data dir cut from the bundled corpus (fast to prepare, enough for tiny models)."""
    from mmengine.data.dataset import bundled_corpus_path
    from mmengine.prepare import prepare_text

    root = tmp_path_factory.mktemp("data")
    src = root / "small.txt"
    src.write_text(bundled_corpus_path().read_text(encoding="utf-8")[:80_000], encoding="utf-8")
    out = root / "shakespeare"
    prepare_text([src], out, val_fraction=0.1)
    return out


@pytest.fixture(scope="module")
def tiny_lm(data_dir, tmp_path_factory):
    """A tiny trained masked-diffusion LM (source of transfers and of LM corruption)."""
    return run(data_dir, tmp_path_factory.mktemp("lm"), "--train.max_iters=10", "--train.eval_interval=10").checkpoint


def tiny(data_dir, out_dir, *extra):
    """argv of a tiny run (1 layer, 32 wide, block 32, batch 4)."""
    return [f"--data.dir={data_dir}", f"--run.out_dir={out_dir}", "--model.n_layer=1", "--model.n_embd=32",
            "--model.n_head=2", "--data.block_size=32", "--data.batch_size=4", "--train.eval_iters=2",
            "--train.log_interval=1", "--optim.warmup_iters=2", "--optim.learning_rate=1e-2", "--optim.min_lr=1e-3",
            "--log.sample_tokens=0", "--log.progress=false", *extra]


def run(data_dir, out_dir, *extra):
    return train(load_config(tiny(data_dir, out_dir, *extra)))


def falls(losses: dict) -> bool:
    v = [losses[k] for k in sorted(losses)]
    k = max(2, len(v) // 5)
    return sum(v[-k:]) / k < sum(v[:k]) / k


def records(out_dir):
    return [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]


def test_unmasking_learns_and_writes_outputs(data_dir, tmp_path):
    res = run(data_dir, tmp_path, "--train.max_iters=30", "--train.eval_interval=15",
              "--unmasking.stages=[{type=\"random\", max_masked_ratio=0.5}, {type=\"sticky\", target_masked_ratio=0.4, p1=0.1, p2=0.6}]",
              "--unmasking.val_loss_stale_count=1")
    assert res.iter_num == 30 and falls(res.train_losses)
    assert (tmp_path / "ckpt.pt").is_file() and (tmp_path / "best.pt").is_file()
    recs = records(tmp_path)
    train_recs = [r for r in recs if r["split"] == "train"]
    val = [r for r in recs if r["split"] == "val"]
    assert len(train_recs) == 30 and all({"iter", "loss", "lr", "tokens_per_s", "mfu"} <= r.keys() for r in train_recs)
    # the fixed validation set covers every stage, whichever stage is being trained
    assert len(val) == 2 and all("loss_stage0" in r and "loss_stage1" in r for r in val)
    ck = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert ck["iter_num"] == 30 and ck["config"]["train"]["max_iters"] == 30
    assert ck["trainer"]["data_meta"]["vocab_size"] == ck["model_args"]["vocab_size"]


def test_continuous_time_objective_reports_perplexity_bound(data_dir, tmp_path):
    res = run(data_dir, tmp_path, "--train.max_iters=20", "--train.eval_interval=10", "--unmasking.objective=continuous_time")
    assert falls(res.train_losses)
    val = res.val[-1]
    assert val["nll_bound"] == val["loss"] and math.isclose(val["ppl_bound"], math.exp(val["loss"]), rel_tol=1e-9)


def test_sequence_scoring_synthetic_learns(data_dir, tmp_path):
    res = run(data_dir, tmp_path, "--train.training_type=sequence_scoring", "--train.max_iters=30",
              "--train.eval_interval=30", "--optim.learning_rate=3e-3", "--data.batch_size=8")
    assert falls(res.train_losses)
    val = res.val[-1]
    assert {"mse", "mae", "pearson", "spearman", "r2"} <= val.keys()


def test_sequence_scoring_from_documents(tmp_path):
    from mmengine.prepare import prepare_jsonl

    rows = [{"text": "good words " * (1 + i % 5), "score": 0.9} if i % 2 else
            {"text": "bad bad text! " * (1 + i % 4), "score": 0.1} for i in range(60)]
    src = tmp_path / "scores.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows))
    data = tmp_path / "scored"
    prepare_jsonl([src], data, val_fraction=0.2)
    res = run(data, tmp_path / "out", "--train.training_type=sequence_scoring", "--sequence_scoring.score_source=documents",
              "--train.max_iters=25", "--train.eval_interval=25", "--optim.learning_rate=3e-3")
    assert falls(res.train_losses)
    assert res.val[-1]["mse"] < 0.16


def test_token_classification_from_corruption_learns(data_dir, tmp_path):
    res = run(data_dir, tmp_path, "--train.training_type=token_classification", "--train.max_iters=30",
              "--train.eval_interval=30",
              "--token_classification.corruption=[{type=\"random\", rate=0.2}, {type=\"random\", rate=0.1}]")
    assert falls(res.train_losses)
    val = res.val[-1]
    assert len(val["f1"]) == 3 and len(val["confusion"]) == 3 and "macro_f1" in val and "accuracy" in val


def test_token_classification_with_lm_corruption(data_dir, tmp_path, tiny_lm):
    res = run(data_dir, tmp_path, "--train.training_type=token_classification", "--train.max_iters=20",
              "--train.eval_interval=20", f"--token_classification.lm_checkpoint={tiny_lm}",
              "--token_classification.corruption=[{type=\"random\", rate=0.1}, {type=\"lm\", rate=0.2, rate_start=0.05, ramp_iters=10}]")
    assert falls(res.train_losses)
    assert sum(res.val[-1]["confusion"][2]) > 0  # LM-replaced tokens are in the validation set


def test_remasking_binary_from_label_files(tmp_path):
    from mmengine.prepare import prepare_jsonl

    rows = []
    for i in range(80):
        text = "plain words here and there. " * 2 + "SHOUTED BIT " + "more plain words."
        start = text.index("SHOUTED")
        rows.append({"text": text, "spans": [[start, start + len("SHOUTED BIT"), 1]]})
    src = tmp_path / "spans.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows))
    data = tmp_path / "spans"
    prepare_jsonl([src], data, val_fraction=0.2, num_classes=2)
    res = run(data, tmp_path / "out", "--train.training_type=remasking_binary", "--token_classification.label_source=labels",
              "--train.max_iters=25", "--train.eval_interval=25")
    assert falls(res.train_losses)
    assert len(res.val[-1]["precision"]) == 2


def _resume_case(data_dir, tmp_path, extra, stop_at, total):
    full = run(data_dir, tmp_path / "full", f"--train.max_iters={total}", *extra)
    run(data_dir, tmp_path / "part", f"--train.max_iters={stop_at}", *extra)
    resumed = run(data_dir, tmp_path / "part", f"--train.max_iters={total}", "--run.init_from=resume", *extra)
    assert sorted(resumed.train_losses) == list(range(stop_at + 1, total + 1))
    for it in range(stop_at + 1, total + 1):
        assert resumed.train_losses[it] == full.train_losses[it], it  # bit-exact
    return full, resumed


def test_resume_is_exact_with_curriculum_and_accumulation(data_dir, tmp_path):
    # lr_decay_iters is pinned so the shortened first leg has the same schedule as the full run
    extra = ["--optim.lr_decay_iters=16", "--train.eval_interval=4", "--train.gradient_accumulation_steps=2",
             "--unmasking.stages=[{type=\"random\", max_masked_ratio=0.3}, {type=\"random\", max_masked_ratio=0.9}]",
             "--unmasking.val_loss_stale_count=1", "--model.dropout=0.0"]
    full, resumed = _resume_case(data_dir, tmp_path, extra, stop_at=8, total=16)
    assert [r.get("stage") for r in full.val] == [r.get("stage") for r in records(tmp_path / "part") if r["split"] == "val"]


def test_resume_is_exact_for_dropout_and_no_prefetch(data_dir, tmp_path):
    extra = ["--optim.lr_decay_iters=12", "--train.eval_interval=6", "--model.dropout=0.1", "--data.prefetch_depth=0",
             "--data.use_paragraph_boundaries=true", "--data.block_size=16"]
    _resume_case(data_dir, tmp_path, extra, stop_at=6, total=12)


def test_transfer_freeze_then_unfreeze(data_dir, tmp_path, tiny_lm):
    src = torch.load(tiny_lm, weights_only=True)["model"]
    # frozen trunk: only the head moves
    frozen = run(data_dir, tmp_path / "frozen", "--train.training_type=remasking_binary", "--train.max_iters=4",
                 "--train.eval_interval=4", f"--transfer.init_from_checkpoint={tiny_lm}", "--transfer.freeze_transformer=true",
                 "--token_classification.corruption=[{type=\"random\", rate=0.2}]")
    after = torch.load(frozen.checkpoint, weights_only=True)
    for k, v in src.items():
        if k.startswith("transformer."):
            assert torch.equal(after["model"][k], v), k
    assert after["trainer"]["frozen"] is True
    # unfreeze at 4 with a 0.1 multiplier on the trunk; Adam state of the head is kept across the switch
    res = run(data_dir, tmp_path / "tc", "--train.training_type=token_classification", "--train.max_iters=8",
              "--train.eval_interval=8", f"--transfer.init_from_checkpoint={tiny_lm}", "--transfer.freeze_transformer=true",
              "--transfer.unfreeze_at_iteration=4", "--transfer.unfreeze_lr_multiplier=0.1",
              "--token_classification.corruption=[{type=\"random\", rate=0.2}]", "--optim.decay_lr=false")
    ck = torch.load(res.checkpoint, weights_only=True)
    assert ck["trainer"]["unfrozen_at"] == 4 and ck["trainer"]["frozen"] is False
    groups = ck["optimizer"]["param_groups"]
    for g in groups:
        assert math.isclose(g["lr"], 1e-2 * (0.1 if g["trunk"] else 1.0)), g
    steps = {}
    for g in groups:
        for pid in g["params"]:
            steps.setdefault(g["trunk"], set()).add(int(ck["optimizer"]["state"][pid]["step"]))
    assert steps[False] == {8} and steps[True] == {4}  # head: every step; trunk: since the switch
    events = [r for r in records(tmp_path / "tc") if r.get("event") == "unfreeze"]
    assert len(events) == 1 and events[0]["iter"] == 4
    for k, v in src.items():
        if k.startswith("transformer.h."):
            assert not torch.equal(ck["model"][k], v), k


def test_resume_after_unfreeze_is_exact(data_dir, tmp_path, tiny_lm):
    extra = ["--train.training_type=remasking_binary", "--optim.lr_decay_iters=10", "--train.eval_interval=5",
             f"--transfer.init_from_checkpoint={tiny_lm}", "--transfer.freeze_transformer=true",
             "--transfer.unfreeze_at_iteration=3", "--token_classification.corruption=[{type=\"random\", rate=0.2}]"]
    _resume_case(data_dir, tmp_path, extra, stop_at=5, total=10)


def test_nan_loss_stops_naming_the_iteration(data_dir, tmp_path, monkeypatch):
    from mmengine import modes

    original = modes.UnmaskingMode.loss
    calls = {"n": 0}

    def poisoned(self, model, batch):
        logits, loss = original(self, model, batch)
        calls["n"] += 1 if model.training else 0
        return logits, loss * float("nan") if calls["n"] == 5 else loss

    monkeypatch.setattr(modes.UnmaskingMode, "loss", poisoned)
    with pytest.raises(TrainingError, match="at iteration 5"):
        run(data_dir, tmp_path / "stop", "--train.max_iters=8", "--train.eval_interval=4")
    calls["n"] = 0
    res = run(data_dir, tmp_path / "rb", "--train.max_iters=8", "--train.eval_interval=2", "--run.nan_policy=rollback")
    assert res.iter_num == 8 and 5 not in res.train_losses
    assert torch.load(res.checkpoint, weights_only=True)["trainer"]["rollbacks"] == 1


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(data_dir, tmp_path):
    out = tmp_path / "sig"
    proc = subprocess.Popen([sys.executable, "-m", "mmengine.train", *tiny(data_dir, out, "--train.max_iters=100000",
                             "--train.eval_interval=100000")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "SIGTERM" in stdout
    ck = torch.load(out / "ckpt.pt", weights_only=True)
    assert ck["iter_num"] >= 3
    res = run(data_dir, out, f"--train.max_iters={ck['iter_num'] + 2}", "--train.eval_interval=100000", "--run.init_from=resume")
    assert sorted(res.train_losses) == [ck["iter_num"] + 1, ck["iter_num"] + 2]


def test_resume_with_a_different_setup_is_one_clear_error(data_dir, tmp_path):
    from mmengine.config import UserError

    run(data_dir, tmp_path, "--train.max_iters=2", "--train.eval_interval=2")
    with pytest.raises(UserError, match="cannot resume"):
        run(data_dir, tmp_path, "--train.max_iters=4", "--run.init_from=resume",
            "--unmasking.stages=[{type=\"random\", max_masked_ratio=0.3}, {type=\"random\", max_masked_ratio=0.9}]")
    with pytest.raises(UserError, match="cannot resume"):
        run(data_dir, tmp_path, "--train.max_iters=4", "--run.init_from=resume", "--data.batch_size=3",
            "--data.use_paragraph_boundaries=true")


def test_optional_outputs_and_cpu_bfloat16(data_dir, tmp_path, caplog):
    """Plots/TensorBoard/wandb switched on: written when installed, one warning each when not."""
    res = run(data_dir, tmp_path, "--train.max_iters=3", "--train.eval_interval=3", "--run.dtype=bfloat16",
              "--log.plots=true", "--log.tensorboard=true", "--log.wandb=true")
    assert res.iter_num == 3 and all(math.isfinite(v) for v in res.train_losses.values())
    for module, output in (("matplotlib", "curves.png"), ("tensorboard", "tensorboard"), ("wandb", "wandb")):
        try:
            __import__(module)
        except ImportError:
            assert any(module in r.getMessage() and "not installed" in r.getMessage() for r in caplog.records)
        else:
            assert (tmp_path / output).exists()


@pytest.mark.slow
def test_compiled_run_matches_eager(data_dir, tmp_path):
    """--run.compile=true trains the same model (up to float rounding) and saves plain state-dict keys."""
    args = ["--train.max_iters=4", "--train.eval_interval=4"]
    eager = run(data_dir, tmp_path / "eager", *args)
    compiled = run(data_dir, tmp_path / "compiled", "--run.compile=true", *args)
    for it, loss in eager.train_losses.items():
        assert math.isclose(compiled.train_losses[it], loss, rel_tol=1e-3), it
    keys = torch.load(compiled.checkpoint, weights_only=True)["model"].keys()
    assert not any(k.startswith("_orig_mod.") for k in keys)

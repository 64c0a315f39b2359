"""The training loop: each mode learns on tiny settings, resume is exact, NaN and signals are handled."""
import json
import logging
import math
import os
import re
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
def data_dir(char_data_dir):
    """A small char data dir cut from the bundled corpus (fast to prepare, enough for tiny models)."""
    return char_data_dir(80_000)


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


def test_unmasking_learns_and_writes_outputs(data_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="mmengine")
    res = run(data_dir, tmp_path, "--train.max_iters=30", "--train.eval_interval=15",
              "--unmasking.stages=[{type=\"random\", max_masked_ratio=0.5}, "
              "{type=\"sticky\", target_masked_ratio=0.4, p1=0.1, p2=0.6}]",
              "--unmasking.val_loss_stale_count=1")
    console = [r.getMessage() for r in caplog.records if r.name == "mmengine.train"]
    assert re.search(r"iter +30 \| loss [\d.]+ \| lr [\d.e+-]+ \| +\d+ tok/s \| .* ms/it "
                     r"\| MFU [\d.]+%", "\n".join(console))
    assert any(line.startswith("iter    30 | val loss") for line in console)
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
    res = run(data_dir, tmp_path, "--train.max_iters=20", "--train.eval_interval=10",
              "--unmasking.objective=continuous_time")
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
    from mmengine.data.preparation import prepare_jsonl

    rows = [{"text": "good words " * (1 + i % 5), "score": 0.9} if i % 2 else
            {"text": "bad bad text! " * (1 + i % 4), "score": 0.1} for i in range(60)]
    src = tmp_path / "scores.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows))
    data = tmp_path / "scored"
    prepare_jsonl([src], data, val_fraction=0.2)
    res = run(data, tmp_path / "out", "--train.training_type=sequence_scoring",
              "--sequence_scoring.score_source=documents", "--train.max_iters=25", "--train.eval_interval=25",
              "--optim.learning_rate=3e-3")
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
              "--token_classification.corruption=[{type=\"random\", rate=0.1}, "
              "{type=\"lm\", rate=0.2, rate_start=0.05, ramp_iters=10}]")
    assert falls(res.train_losses)
    assert sum(res.val[-1]["confusion"][2]) > 0  # LM-replaced tokens are in the validation set


def test_remasking_binary_from_label_files(tmp_path):
    from mmengine.data.preparation import prepare_jsonl

    rows = []
    for i in range(80):
        text = "plain words here and there. " * 2 + "SHOUTED BIT " + "more plain words."
        start = text.index("SHOUTED")
        rows.append({"text": text, "spans": [[start, start + len("SHOUTED BIT"), 1]]})
    src = tmp_path / "spans.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows))
    data = tmp_path / "spans"
    prepare_jsonl([src], data, val_fraction=0.2, num_classes=2)
    res = run(data, tmp_path / "out", "--train.training_type=remasking_binary",
              "--token_classification.label_source=labels", "--train.max_iters=25", "--train.eval_interval=25")
    assert falls(res.train_losses)
    assert len(res.val[-1]["precision"]) == 2
    # labels of more classes than the run has: said at the start, not when a batch draws a high label
    from mmengine.config import UserError

    prepare_jsonl([src], tmp_path / "spans3", val_fraction=0.2, num_classes=3)
    with pytest.raises(UserError, match="labels have 3 classes but the run has 2"):
        run(tmp_path / "spans3", tmp_path / "out3", "--train.training_type=remasking_binary",
            "--token_classification.label_source=labels", "--train.max_iters=1")


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
    assert [r.get("stage") for r in full.val] == [r.get("stage") for r in records(tmp_path / "part")
                                                  if r["split"] == "val"]


def test_resume_is_exact_for_dropout_and_no_prefetch(data_dir, tmp_path):
    extra = ["--optim.lr_decay_iters=12", "--train.eval_interval=6", "--model.dropout=0.1", "--data.prefetch_depth=0",
             "--data.use_paragraph_boundaries=true", "--data.block_size=16"]
    _resume_case(data_dir, tmp_path, extra, stop_at=6, total=12)


def test_transfer_freeze_then_unfreeze(data_dir, tmp_path, tiny_lm, caplog):
    src = torch.load(tiny_lm, weights_only=True)["model"]
    # frozen trunk: only the head moves
    frozen = run(data_dir, tmp_path / "frozen", "--train.training_type=remasking_binary", "--train.max_iters=4",
                 "--train.eval_interval=4", f"--transfer.init_from_checkpoint={tiny_lm}",
                 "--transfer.freeze_transformer=true",
                 "--token_classification.corruption=[{type=\"random\", rate=0.2}]")
    after = torch.load(frozen.checkpoint, weights_only=True)
    for k, v in src.items():
        if k.startswith("transformer."):
            assert torch.equal(after["model"][k], v), k
    assert after["trainer"]["freeze"]["frozen"] is True
    # unfreeze at 4 with a 0.1 multiplier on the trunk; Adam state of the head is kept across the switch
    caplog.set_level(logging.INFO, logger="mmengine")
    caplog.clear()
    res = run(data_dir, tmp_path / "tc", "--train.training_type=token_classification", "--train.max_iters=8",
              "--train.eval_interval=8", f"--transfer.init_from_checkpoint={tiny_lm}",
              "--transfer.freeze_transformer=true", "--transfer.unfreeze_at_iteration=4",
              "--transfer.unfreeze_lr_multiplier=0.1",
              "--token_classification.corruption=[{type=\"random\", rate=0.2}]", "--optim.decay_lr=false")
    ck = torch.load(res.checkpoint, weights_only=True)
    assert ck["trainer"]["freeze"]["unfrozen_at"] == 4 and ck["trainer"]["freeze"]["frozen"] is False
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
    # parameter status at the start (trunk frozen) and at the switch
    status = [r.getMessage() for r in caplog.records if r.getMessage().startswith("parameters:")]
    assert len(status) == 2 and "(trunk frozen)" in status[0] and "(trunk frozen)" not in status[1]
    for k, v in src.items():
        if k.startswith("transformer.h."):
            assert not torch.equal(ck["model"][k], v), k


def test_resume_after_unfreeze_is_exact(data_dir, tmp_path, tiny_lm):
    extra = ["--train.training_type=remasking_binary", "--optim.lr_decay_iters=10", "--train.eval_interval=5",
             f"--transfer.init_from_checkpoint={tiny_lm}", "--transfer.freeze_transformer=true",
             "--transfer.unfreeze_at_iteration=3", "--token_classification.corruption=[{type=\"random\", rate=0.2}]"]
    _resume_case(data_dir, tmp_path, extra, stop_at=5, total=10)
    # the switch happened before the checkpoint: recorded once, not repeated by the resumed run
    assert [r["iter"] for r in records(tmp_path / "part") if r.get("event") == "unfreeze"] == [3]
    assert torch.load(tmp_path / "part" / "ckpt.pt", weights_only=True)["trainer"]["freeze"]["unfrozen_at"] == 3


def test_curriculum_advances_on_stale_val_loss_and_resumes(data_dir, tmp_path, monkeypatch):
    """Stale validation loss -> next stage (event logged, later batches built for it); exact across a resume."""
    from mmengine import modes
    from mmengine.data.masking import StageCurriculum

    original = StageCurriculum.update
    monkeypatch.setattr(StageCurriculum, "update", lambda self, loss: original(self, math.inf))  # never improves
    built = []
    build = modes.UnmaskingMode.build_batch
    monkeypatch.setattr(modes.UnmaskingMode, "build_batch", lambda self, split, idx, rng, it, st: (
        built.append((split, it, st)), build(self, split, idx, rng, it, st))[1])
    stages = ("--unmasking.stages=[{type=\"random\", max_masked_ratio=0.2}, {type=\"span\", target_masked_ratio=0.5}, "
              "{type=\"random\", max_masked_ratio=1.0}]")
    extra = [stages, "--unmasking.val_loss_stale_count=1", "--train.eval_interval=2", "--optim.lr_decay_iters=6"]
    full, _ = _resume_case(data_dir, tmp_path, extra, stop_at=4, total=6)
    assert [r["stage"] for r in full.val] == [0, 1, 2]  # the stage trained up to each evaluation
    assert ([(r["iter"], r["from_stage"], r["to_stage"]) for r in full.val if r.get("event") == "stage_advanced"]
            == [(2, 0, 1), (4, 1, 2)])
    assert all({"loss_stage0", "loss_stage1", "loss_stage2"} <= r.keys() for r in full.val)
    # the first run's training batches: iterations 0-1 stage 0, 2-3 stage 1 (prefetched stage-0 batches were
    # rebuilt), 4-5 stage 2
    second_run = next(i for i in range(1, len(built)) if built[i][1] == 0 < built[i - 1][1])  # iterations start over
    last_build = {it: st for split, it, st in built[:second_run]}  # a rebuilt batch replaces the prefetched one
    assert {it: last_build[it] for it in range(6)} == {0: 0, 1: 0, 2: 1, 3: 1, 4: 2, 5: 2}


def test_resume_drops_metrics_written_after_the_checkpoint(data_dir, tmp_path):
    run(data_dir, tmp_path, "--train.max_iters=4", "--train.eval_interval=4", "--optim.lr_decay_iters=6")
    with open(tmp_path / "metrics.jsonl", "a") as f:  # a run that died after its checkpoint had logged on
        f.write(json.dumps({"iter": 5, "split": "train", "loss": 9.0, "lr": 0.1}) + "\n")
    run(data_dir, tmp_path, "--train.max_iters=6", "--train.eval_interval=4", "--optim.lr_decay_iters=6",
        "--run.init_from=resume")
    train_iters = [r["iter"] for r in records(tmp_path) if r["split"] == "train"]
    assert train_iters == [1, 2, 3, 4, 5, 6]
    assert all(r["loss"] != 9.0 for r in records(tmp_path))


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
    assert torch.load(res.checkpoint, weights_only=True)["trainer"]["progress"]["rollbacks"] == 1


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(data_dir, tmp_path):
    out = tmp_path / "sig"
    proc = subprocess.Popen([sys.executable, "-m", "mmengine.train", *tiny(data_dir, out, "--train.max_iters=100000",
                             "--train.eval_interval=100000")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
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
    res = run(data_dir, out, f"--train.max_iters={ck['iter_num'] + 2}", "--train.eval_interval=100000",
              "--run.init_from=resume")
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
    with pytest.raises(UserError, match="holds a model with mode='language_model'.*needs 'token_classifier'"):
        run(data_dir, tmp_path, "--train.max_iters=4", "--run.init_from=resume",
            "--train.training_type=token_classification")


def test_warnings_for_settings_that_do_nothing(data_dir, tmp_path, caplog):
    run(data_dir, tmp_path, "--train.max_iters=2", "--train.eval_interval=2",
        "--token_classification.label_source=labels")
    assert any("does not read token_classification.label_source" in r.getMessage() for r in caplog.records)
    caplog.clear()
    run(data_dir, tmp_path, "--train.max_iters=3", "--train.eval_interval=3", "--run.init_from=resume",
        "--optim.learning_rate=5e-3", "--token_classification.label_source=labels")
    assert any(r.getMessage().endswith("differ from the checkpoint's: optim.learning_rate") for r in caplog.records)


def test_optional_outputs_not_installed_warn_once_each(data_dir, tmp_path, caplog, monkeypatch):
    """Plots/TensorBoard/wandb switched on without the package: one warning each, the run goes on (bfloat16 on CPU)."""
    for module in ("matplotlib", "torch.utils.tensorboard", "wandb"):
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    res = run(data_dir, tmp_path, "--train.max_iters=3", "--train.eval_interval=3", "--run.dtype=bfloat16",
              "--log.plots=true", "--log.tensorboard=true", "--log.wandb=true")
    assert res.iter_num == 3 and all(math.isfinite(v) for v in res.train_losses.values())
    for package in ("matplotlib", "tensorboard", "wandb"):
        assert sum(package in r.getMessage() and "not installed" in r.getMessage()
                   for r in caplog.records) == 1, package


def test_plots_at_each_evaluation(data_dir, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from mmengine.run_logging import RunLogger

    sizes = []
    plot = RunLogger.plot
    monkeypatch.setattr(RunLogger, "plot",
                        lambda self: (plot(self), sizes.append((tmp_path / "curves.png").stat().st_size)))
    run(data_dir, tmp_path, "--train.max_iters=4", "--train.eval_interval=2", "--log.plots=true")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(sizes) == 3 and not list(tmp_path.glob("*.tmp.png"))  # at both evaluations (+ the final no-op call)


def test_tensorboard_events(data_dir, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run(data_dir, tmp_path, "--train.max_iters=4", "--train.eval_interval=2", "--log.tensorboard=true")
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]
    assert [e.step for e in events.Scalars("val/loss_stage0")] == [2, 4]


def test_wandb_offline_one_run_across_a_resume(data_dir, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)  # the logger itself must ask for offline mode
    run(data_dir, tmp_path, "--train.max_iters=2", "--train.eval_interval=2", "--log.wandb=true")
    run_id = torch.load(tmp_path / "ckpt.pt", weights_only=True)["trainer"]["logger"]["wandb_id"]
    run(data_dir, tmp_path, "--train.max_iters=3", "--train.eval_interval=3", "--log.wandb=true",
        "--run.init_from=resume")
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True)["trainer"]["logger"]["wandb_id"] == run_id
    # offline-run-<start time to the second>-<id>[-<n> when that folder exists already]: one folder per leg
    runs = [p.name for p in (tmp_path / "wandb").glob("offline-run-*")]
    assert len(runs) == 2 and all(re.fullmatch(rf"offline-run-\d{{8}}_\d{{6}}-{run_id}(-\d+)?", name)
                                  for name in runs), runs


def test_progress_bar(data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MMENGINE_PROGRESS", "1")  # as on a terminal
    run(data_dir, tmp_path, "--train.max_iters=3", "--train.eval_interval=3", "--log.progress=true")
    assert re.search(r"train: +\d+%\|.*\| \d/3 ", capsys.readouterr().err)  # tqdm's line on stderr


def test_grad_scaler_path_and_clipping(data_dir, tmp_path, monkeypatch):
    """The float16 path (GradScaler: scale, unscale before clipping, step) on CPU, with a power-of-two scale:
    bit-identical to the unscaled run; the scaler's state is checkpointed; clipping uses train.grad_clip."""
    from mmengine import train as train_mod

    clips = []
    clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_",
                        lambda params, max_norm: (clips.append(max_norm), clip(params, max_norm))[1])
    args = ["--train.max_iters=4", "--train.eval_interval=4", "--train.grad_clip=0.5",
            "--train.gradient_accumulation_steps=2"]
    plain = run(data_dir, tmp_path / "plain", *args)
    assert clips == [0.5] * 4
    original = train_mod.autocast_context
    monkeypatch.setattr(train_mod, "autocast_context", lambda device, dtype: (
        original(device, dtype)[0], "float32", torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)))
    scaled = run(data_dir, tmp_path / "scaled", *args)
    assert scaled.train_losses == plain.train_losses
    assert torch.load(scaled.checkpoint, weights_only=True)["trainer"]["scaler"]["scale"] == 2.0 ** 10
    run(data_dir, tmp_path / "noclip", "--train.max_iters=1", "--train.eval_interval=1", "--train.grad_clip=0")
    assert len(clips) == 8


def test_schedule_warmup_cosine_and_the_stop_request():
    from mmengine.schedule import lr_at
    from mmengine.train import _StopRequest

    kw = dict(learning_rate=1.0, min_lr=0.1, warmup_iters=4, lr_decay_iters=14)
    lrs = [lr_at(it, **kw) for it in range(16)]
    assert lrs[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8])  # linear warmup
    assert lrs[4] == 1.0 and lrs[9] == pytest.approx(0.55) and lrs[14:] == [0.1, 0.1]  # cosine to min_lr, then flat
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    assert lr_at(3, **kw, decay_lr=False) == 1.0
    with _StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signal == signal.SIGINT  # the first Ctrl-C only asks the loop to save and stop
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # a second one stops at once


def test_sigint_during_training_saves_and_returns(data_dir, tmp_path, monkeypatch):
    from mmengine import train as train_mod

    steps = {"n": 0}
    step = train_mod.Trainer.optimizer_step

    def step_then_ctrl_c(self):
        step(self)
        steps["n"] += 1
        if steps["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(train_mod.Trainer, "optimizer_step", step_then_ctrl_c)
    res = run(data_dir, tmp_path, "--train.max_iters=50", "--train.eval_interval=50")
    # the flag is read once per step (with the NaN check), so the step after the signal is the last
    assert res.interrupted and res.iter_num == 4
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True)["iter_num"] == 4


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

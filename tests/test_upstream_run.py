"""Files of the earlier research trainer (tests/fixtures/upstream) and of nanoGPT in mmengine runs, on a nanoGPT
``shakespeare_char`` data dir: transfer, evaluate, resume (optimizer moments by parameter name, curriculum
position), sampling; the converted config of that trainer trains. Nothing of their code is ever imported."""
from __future__ import annotations

import logging
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import tomllib
import torch

from mmengine.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_upstream_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from mmengine.config import TABLES, load_config
from mmengine.data.dataset import DataDir
from mmengine.data.stream import open_data
from mmengine.evaluate import evaluate_checkpoint
from mmengine.legacy import convert_model_args
from mmengine.model import GPT, GPTConfig
from mmengine.modes import build_mode
from mmengine.train import Trainer, train
from mmengine.transfer import build_run_model
from mmengine.upstream import prepare_for_data
from mmengine.upstream_config import convert_config, tables_to_toml
from mmengine.upstream_run import resume_path

FIXTURES = Path(os.environ.get("MMENGINE_UPSTREAM_FIXTURES",
                               Path(__file__).resolve().parent / "fixtures" / "upstream"))
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"no earlier-trainer fixtures at {FIXTURES}")
ROOT = Path(__file__).resolve().parents[1]

LM = "1616e5b/ckpt_unmasking_20.pt"
LM_OLD = "1c9b72c/ckpt_unmasking_20.pt"
SCORER = "1616e5b/ckpt_sequence_scorer_20.pt"
BINARY = "e0abd98/ckpt_remasking_binary_20.pt"
TEXT = 65


@pytest.fixture(scope="module")
def meta(nanogpt_char_dir):
    return DataDir.open(nanogpt_char_dir).meta


def nanogpt_order(names):
    """nanoGPT's module order: wte, wpe, the blocks, ln_f, lm_head (ours puts wpe after ln_f)."""
    rank = {"transformer.wte": 0, "transformer.wpe": 1, "transformer.h": 2, "transformer.ln_f": 3}
    return sorted(names, key=lambda k: rank.get(".".join(k.split(".")[:2]), 4))  # stable: blocks keep their order


def nanogpt_file(path, vocab=65, block=32):
    """A checkpoint laid out as nanoGPT's train.py writes it (its module order, compiled keys, its model_args and
    flat config, two AdamW groups over named_parameters() after one step): a causal model with learned positions."""
    torch.manual_seed(0)
    args = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": block, "bias": True, "vocab_size": vocab,
            "dropout": 0.0}
    model = GPT(GPTConfig(**args, attention_type="causal", use_rope=False))
    named = dict(model.named_parameters())
    params = [named[k] for k in nanogpt_order(named)]
    opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
                             {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}], lr=1e-3)
    x = torch.randint(0, vocab, (2, block))
    model(x, x)[1].backward()
    opt.step()
    state = model.state_dict()
    torch.save({"model": {"_orig_mod." + k: state[k] for k in nanogpt_order(state)}, "optimizer": opt.state_dict(),
                "model_args": args, "iter_num": 1, "best_val_loss": torch.tensor(4.0),
                "config": {"dataset": "shakespeare_char", "batch_size": 2, "block_size": block}}, path)
    return model


def converted_config(tmp_path, name="lr_unmasking.py") -> Path:
    tables, notes = convert_config(FIXTURES / "configs" / name, TABLES)
    path = tmp_path / f"{name}.toml"
    path.write_text(tables_to_toml(tables, notes))
    return path


QUIET = ["--log.progress=false", "--log.sample_tokens=0"]


# --- one call for every consumer -------------------------------------------------------------------

def test_resume_path_prefers_ckpt_pt_then_the_newest_numbered_file(tmp_path):
    assert resume_path(tmp_path) is None
    for name in ("ckpt_unmasking_20.pt", "ckpt_unmasking_100.pt", "ckpt_sequence_scorer_30.pt", "ckpt_x.pt"):
        (tmp_path / name).write_bytes(b"")
    assert resume_path(tmp_path).name == "ckpt_unmasking_100.pt"  # by iteration, not by name
    (tmp_path / "ckpt.pt").write_bytes(b"")
    assert resume_path(tmp_path).name == "ckpt.pt"


@needs_fixtures
def test_prepare_for_data_maps_foreign_files_and_refuses_other_vocabularies(tmp_path, meta, caplog):
    mapped = prepare_for_data(load_checkpoint(FIXTURES / LM), meta)
    assert mapped["model"]["transformer.wte.weight"].shape == (meta.vocab_size, 32)
    nano = nanogpt_file(tmp_path / "nano.pt")
    state = prepare_for_data(load_checkpoint(tmp_path / "nano.pt"), meta)["model"]
    torch.testing.assert_close(state["transformer.wte.weight"][:TEXT], nano.transformer.wte.weight.detach(),
                               rtol=0, atol=0)
    # an mmengine file of this vocabulary is returned as it is, one of another refused in one sentence
    model = model_from_checkpoint(mapped)
    save_checkpoint(tmp_path / "ours.pt", model, trainer={"data_meta": meta.to_dict()})
    ours = load_checkpoint(tmp_path / "ours.pt")
    assert prepare_for_data(ours, meta) is ours
    with caplog.at_level(logging.WARNING, logger="mmengine.upstream"):
        assert prepare_for_data(ours, meta, cls_token_id=70) is ours
    assert "cls_token_id=70 is not used" in caplog.text
    other = GPT(GPTConfig(vocab_size=50, n_layer=1, n_head=2, n_embd=16, block_size=16))
    save_checkpoint(tmp_path / "other.pt", other)
    with pytest.raises(CheckpointError, match="50-row embedding but the data dir's vocabulary has 69 ids") as info:
        prepare_for_data(load_checkpoint(tmp_path / "other.pt"), meta)
    assert "\n" not in str(info.value)


# --- transfer ------------------------------------------------------------------------------------------

@needs_fixtures
@pytest.mark.parametrize("source, training_type",
                         [(LM, "sequence_scoring"), (SCORER, "unmasking"), (BINARY, "unmasking")])
def test_transfer_from_an_earlier_trainer_file_into_a_nanogpt_data_dir(source, training_type, nanogpt_char_dir, meta,
                                                                       tmp_path):
    """Before: "its vocabulary (80) is larger than the model's (69)"."""
    cfg = load_config([f"--data.dir={nanogpt_char_dir}", f"--train.training_type={training_type}",
                       "--data.block_size=48", f"--transfer.init_from_checkpoint={FIXTURES / source}",
                       f"--run.out_dir={tmp_path}"])
    model = build_run_model(cfg, build_mode(cfg, open_data(cfg)), meta)
    assert model.config.vocab_size == meta.vocab_size and (model.config.n_layer, model.config.n_embd) == (3, 32)
    want = prepare_for_data(load_checkpoint(FIXTURES / source), meta)["model"]
    for key, value in model.state_dict().items():
        if key.startswith("transformer."):
            torch.testing.assert_close(value, want[key], rtol=0, atol=0)


@needs_fixtures
def test_cls_token_id_names_the_cls_row_of_a_file_that_cannot_tell(nanogpt_char_dir, meta, tmp_path):
    layout = load_upstream_checkpoint(FIXTURES / SCORER)
    layout["model_args"]["cls_token_id"] = 81  # its guide's id, outside its 80-row table
    layout["upstream"]["vocabulary"]["cls"] = 81
    torch.save(layout, tmp_path / "scorer81.pt")  # plain values only: it reads back with weights_only
    argv = [f"--data.dir={nanogpt_char_dir}", "--train.training_type=sequence_scoring", "--data.block_size=48",
            f"--transfer.init_from_checkpoint={tmp_path / 'scorer81.pt'}"]
    cfg = load_config(argv)
    with pytest.raises(CheckpointError, match="pass --cls_token_id"):
        build_run_model(cfg, build_mode(cfg, open_data(cfg)), meta)
    cfg = load_config([*argv, "--cls_token_id=70"])  # the flat flag resolves to transfer.cls_token_id
    assert cfg.transfer.cls_token_id == 70
    model = build_run_model(cfg, build_mode(cfg, open_data(cfg)), meta)
    original = load_upstream_checkpoint(FIXTURES / SCORER)["model"]["transformer.wte.weight"]
    torch.testing.assert_close(model.transformer.wte.weight[meta.cls_id], original[70], rtol=0, atol=0)


# --- evaluate --------------------------------------------------------------------------------------

@needs_fixtures
@pytest.mark.parametrize("name, figure", [(LM, "accuracy"), (LM_OLD, "accuracy"), (SCORER, "mse"), (BINARY, "f1")])
def test_evaluate_earlier_trainer_files_on_a_nanogpt_data_dir(name, figure, nanogpt_char_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="mmengine.evaluate"):
        metrics = evaluate_checkpoint(str(FIXTURES / name), [f"--data.dir={nanogpt_char_dir}", "--train.eval_iters=2"],
                                      device="cpu")
    assert figure in metrics and math.isfinite(metrics["loss"]) and metrics["iter"] == 20
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "stored config is ignored" in said[0] and "data.block_size=48" in said[0]
    if figure == "accuracy":  # 20 steps of training: better than a uniform guess over the 65 characters
        assert metrics["loss"] < math.log(TEXT) and metrics["model_vs_uniform"] > 1


def test_evaluate_a_nanogpt_checkpoint(nanogpt_char_dir, tmp_path, caplog):
    nanogpt_file(tmp_path / "ckpt.pt")
    with caplog.at_level(logging.WARNING, logger="mmengine.evaluate"):
        metrics = evaluate_checkpoint(str(tmp_path / "ckpt.pt"),
                                      [f"--data.dir={nanogpt_char_dir}", "--train.eval_iters=1"], device="cpu")
    assert set(metrics) == {"loss", "ppl", "iter"}  # autoregressive, learned positions from the weights
    assert "train.training_type='autoregressive'" in caplog.text and "unknown option" not in caplog.text


def test_evaluate_refuses_an_mmengine_file_of_another_data_dir(nanogpt_char_dir, tmp_path, capsys):
    from mmengine.data.dataset import DataMeta
    from mmengine.evaluate import main

    other = DataMeta.for_vocab(46, tokenizer="char")
    save_checkpoint(tmp_path / "c.pt", GPT(GPTConfig(vocab_size=50, n_layer=1, n_head=2, n_embd=16, block_size=16)),
                    config={"data": {"block_size": 16}}, trainer={"data_meta": other.to_dict()})
    assert main([str(tmp_path / "c.pt"), f"--data.dir={nanogpt_char_dir}"]) == 2
    err = capsys.readouterr().err
    assert "another vocabulary" in err and "46 text tokens, the data dir's 65" in err


# --- sample ----------------------------------------------------------------------------------------

@needs_fixtures
def test_an_earlier_trainer_lm_samples_with_a_nanogpt_data_dir(nanogpt_char_dir, meta):
    from mmengine.generate import SampleConfig, sample_texts
    from mmengine.generate.load import load_for_inference

    loaded = load_for_inference(FIXTURES / LM, "language_model", data_dir=str(nanogpt_char_dir))
    assert loaded.model.config.vocab_size == meta.vocab_size  # its 80 rows mapped onto the data dir's 69
    tok = loaded.tokenizer
    texts = sample_texts(loaded.model, loaded.meta, tok,
                         SampleConfig(num_samples=2, length=24, steps=4, progress=False))
    assert len(texts) == 2 and all(len(t["text"]) == 24 and set(t["text"]) <= set(tok.decode(range(TEXT)))
                                   for t in texts)


# --- resume ----------------------------------------------------------------------------------------

@needs_fixtures
def test_resume_an_earlier_trainer_run_in_its_own_folder(nanogpt_char_dir, tmp_path, caplog):
    out = tmp_path / "out16_unmasking"
    out.mkdir()
    shutil.copy(FIXTURES / LM, out / "ckpt_unmasking_20.pt")
    before = (out / "ckpt_unmasking_20.pt").read_bytes()
    argv = [str(converted_config(tmp_path)), f"--data.dir={nanogpt_char_dir}", f"--run.out_dir={out}",
            "--run.init_from=resume", "--train.max_iters=22", "--train.eval_interval=2", *QUIET]
    with caplog.at_level(logging.INFO, logger="mmengine"):
        res = train(load_config(argv))
    assert res.iter_num == 22 and all(math.isfinite(v) for v in res.train_losses.values())
    said = caplog.text
    assert "resuming from" in said and "iteration 20" in said and "optimizer moments of 20 tensors mapped" in said
    assert "rank(s)" not in said and "restarts" not in said
    assert (out / "ckpt_unmasking_20.pt").read_bytes() == before  # its file is never written
    ours = load_checkpoint(out / "ckpt.pt")
    assert "attention_backend" in ours["model_args"] and ours["model"]["transformer.wte.weight"].shape[0] == 69
    assert ours["trainer"]["mode"]["curriculum"]["num_stages"] == 2
    res = train(load_config([*argv[:-3], "--train.max_iters=24", *QUIET]))  # and on from mmengine's own ckpt.pt
    assert res.iter_num == 24
    assert "training_utils" not in sys.modules and "model" not in sys.modules  # nothing of its code imported


@needs_fixtures
def test_resume_takes_the_curriculum_position_from_its_training_context(nanogpt_char_dir, tmp_path):
    layout = load_upstream_checkpoint(FIXTURES / LM)
    layout["upstream"]["training_context"] = {"current_stage": 1, "val_loss_stale_count": 2,
                                              "best_val_loss_for_stage": 3.5, "entropy_multiplier_ema": 1.0}
    torch.save(layout, tmp_path / "ckpt_unmasking_20.pt")
    trainer = Trainer(load_config([str(converted_config(tmp_path)), f"--data.dir={nanogpt_char_dir}",
                                   f"--run.out_dir={tmp_path}", "--run.init_from=resume", *QUIET]))
    try:
        c = trainer.mode.curriculum
        assert (c.index, c.stale, c.best, c.limit) == (1, 2, 3.5, 10)  # stage 1 waits its own 10 evaluations
        assert trainer.progress.iter_num == 20 and trainer.progress.best_val_loss == pytest.approx(4.0983, abs=1e-4)
    finally:
        trainer.close()


def earlier_layout_model_and_optimizer(layout):
    """The earlier trainer's own model and optimizer, rebuilt: GPT with its 80 rows (outputs identical, see
    test_upstream) and AdamW with nanoGPT's two groups over named_parameters() in module order."""
    model = GPT(GPTConfig(**convert_model_args(layout["model_args"], layout["model"])))
    model.load_state_dict({k: v for k, v in layout["model"].items()})
    params = dict(model.named_parameters())
    opt = torch.optim.AdamW([{"params": [p for p in params.values() if p.dim() >= 2]},
                             {"params": [p for p in params.values() if p.dim() < 2], "weight_decay": 0.0}])
    opt.load_state_dict(layout["optimizer"])  # also checks that this is the order its state was written in
    return model, opt


def one_step(model, optimizer, x, y):
    """A step with the text-only loss (columns 0..64, the same in both layouts) at a fixed lr and weight decay."""
    for group in optimizer.param_groups:
        group["lr"], group["betas"] = 1e-2, (0.9, 0.99)
        group["weight_decay"] = 0.001 if group["weight_decay"] else 0.0
    logits = model(x, all_positions=True)[0][..., :TEXT]
    torch.nn.functional.cross_entropy(logits.reshape(-1, TEXT), y.reshape(-1), ignore_index=-1).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@needs_fixtures
def test_one_step_after_resume_equals_one_step_of_the_earlier_layout(nanogpt_char_dir, tmp_path):
    shutil.copy(FIXTURES / LM, tmp_path / "ckpt_unmasking_20.pt")
    cfg = load_config([str(converted_config(tmp_path)), f"--data.dir={nanogpt_char_dir}", f"--run.out_dir={tmp_path}",
                       "--run.init_from=resume", *QUIET])
    trainer = Trainer(cfg)
    try:
        ours, our_opt = trainer.raw_model, trainer.optimizer
        theirs, their_opt = earlier_layout_model_and_optimizer(load_upstream_checkpoint(FIXTURES / LM))
        gen = torch.Generator().manual_seed(0)
        x = torch.randint(0, TEXT, (4, 48), generator=gen)
        y = torch.where(torch.rand(4, 48, generator=gen) < 0.3, x, -1)
        x = torch.where(y != -1, 65, x)  # [MASK] is row 65 in both layouts
        one_step(ours, our_opt, x, y)
        one_step(theirs, their_opt, x, y)
        row_source = trainer.ckpt["upstream"]["vocabulary_map"]["row_source"]
        mapped = [r for r, s in enumerate(row_source) if s >= 0]
        theirs_state = theirs.state_dict()
        for key, value in ours.state_dict().items():
            want = theirs_state[key]
            if key in ("transformer.wte.weight", "lm_head.weight"):
                value, want = value[mapped], want[[row_source[r] for r in mapped]]
            torch.testing.assert_close(value, want, rtol=0, atol=2e-7, msg=key)
        # the moments matter: the same step from a fresh optimizer lands elsewhere
        fresh, _ = earlier_layout_model_and_optimizer(load_upstream_checkpoint(FIXTURES / LM))
        params = dict(fresh.named_parameters())
        restart = torch.optim.AdamW([{"params": [p for p in params.values() if p.dim() >= 2], "weight_decay": 0.001},
                                     {"params": [p for p in params.values() if p.dim() < 2], "weight_decay": 0.0}])
        one_step(fresh, restart, x, y)
        assert not torch.allclose(fresh.transformer.h[0].attn.c_attn.weight, theirs.transformer.h[0].attn.c_attn.weight)
    finally:
        trainer.close()


@needs_fixtures
def test_an_optimizer_state_that_cannot_be_mapped_restarts_with_one_warning(nanogpt_char_dir, tmp_path, caplog):
    layout = load_upstream_checkpoint(FIXTURES / LM)
    groups = layout["optimizer"]["param_groups"]
    layout["optimizer"]["param_groups"] = [dict(groups[0], params=groups[0]["params"][:5]),
                                           dict(groups[0], params=groups[0]["params"][5:]), groups[1]]
    torch.save(layout, tmp_path / "ckpt_unmasking_20.pt")
    with caplog.at_level(logging.WARNING, logger="mmengine"):
        trainer = Trainer(load_config([str(converted_config(tmp_path)), f"--data.dir={nanogpt_char_dir}",
                                       f"--run.out_dir={tmp_path}", "--run.init_from=resume", *QUIET]))
    try:
        said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(said) == 1 and "optimizer restarts from zero moments" in said[0] and "3 parameter groups" in said[0]
        assert not trainer.optimizer.state and trainer.progress.iter_num == 20
    finally:
        trainer.close()


@needs_fixtures
def test_resume_an_earlier_trainer_scorer_with_its_lm_reconstructions(nanogpt_char_dir, tmp_path, caplog):
    """Its frozen trunk's optimizer held the head alone; its labels come from the earlier LM, read as inert data too."""
    shutil.copy(FIXTURES / SCORER, tmp_path / "ckpt_sequence_scorer_20.pt")
    cfg = load_config([str(converted_config(tmp_path, "lr_scorer.py")), f"--data.dir={nanogpt_char_dir}",
                       f"--run.out_dir={tmp_path}", "--run.init_from=resume", "--train.max_iters=22",
                       "--train.eval_interval=2", f"--sequence_scoring.unmasking_model_checkpoint={FIXTURES / LM}",
                       *QUIET])
    with caplog.at_level(logging.INFO, logger="mmengine"):
        res = train(cfg)
    assert res.iter_num == 22 and math.isfinite(res.val[-1]["mse"])
    assert "optimizer moments of 1 tensors mapped" in caplog.text
    # the labels: the masked share of each window, which the earlier LM filled
    spec = build_mode(cfg, open_data(cfg))
    batch = spec.build_batch("val", np.arange(8), np.random.default_rng(0), 0, None)
    assert (batch["x"][:, 0] == spec.meta.cls_id).all() and batch["x"][:, 1:].max() < TEXT
    assert ((batch["y"] > 0) & (batch["y"] <= 0.5 + 1e-6)).all()  # sticky 0.4 or random up to 0.5


# --- the converted config ----------------------------------------------------------------------------

@needs_fixtures
def test_the_converted_stage_config_trains_on_a_nanogpt_data_dir(nanogpt_char_dir, tmp_path):
    res = train(load_config([str(converted_config(tmp_path)), f"--data.dir={nanogpt_char_dir}",
                             f"--run.out_dir={tmp_path}", "--train.max_iters=4", "--train.eval_interval=2", *QUIET]))
    assert res.iter_num == 4 and all(math.isfinite(v) for v in res.train_losses.values())
    last = res.val[-1]
    assert ({"loss_stage0", "loss_stage1", "accuracy"} <= set(last)
            and "loss_current_stage" not in last)  # its val stages
    # the example in configs/ is what the converter writes today
    shipped = tomllib.loads((ROOT / "configs" / "converted_earlier_trainer_unmasking.toml").read_text())
    assert shipped == tomllib.loads(converted_config(tmp_path).read_text())


def test_resume_a_nanogpt_checkpoint(nanogpt_char_dir, tmp_path, caplog):
    source = nanogpt_file(tmp_path / "ckpt.pt")
    argv = [f"--data.dir={nanogpt_char_dir}", f"--run.out_dir={tmp_path}", "--run.init_from=resume",
            "--train.training_type=autoregressive", "--data.block_size=32", "--data.batch_size=4",
            "--train.eval_iters=1", "--train.max_iters=3", "--train.eval_interval=3", *QUIET]
    with caplog.at_level(logging.INFO, logger="mmengine"):
        trainer = Trainer(load_config(argv))
    try:
        model = trainer.raw_model
        assert not model.config.use_rope and model.config.bias  # from its weights, whatever the run config says
        torch.testing.assert_close(model.transformer.wpe.weight, source.transformer.wpe.weight, rtol=0, atol=0)
        assert "optimizer moments of 16 tensors mapped by parameter name" in caplog.text
        # wpe is the 2nd tensor of nanoGPT's decay group (its module order) and the last one of ours: found by name
        saved = torch.load(tmp_path / "ckpt.pt", weights_only=True)["optimizer"]["state"][1]
        torch.testing.assert_close(trainer.optimizer.state[model.transformer.wpe.weight]["exp_avg"], saved["exp_avg"],
                                   rtol=0, atol=0)
        assert "unknown option" not in caplog.text and "differ from the checkpoint" not in caplog.text
    finally:
        trainer.close()
    assert train(load_config(argv)).iter_num == 3


@needs_fixtures
def test_resume_the_earlier_trainers_binary_token_classifier(nanogpt_char_dir, tmp_path, caplog):
    shutil.copy(FIXTURES / BINARY, tmp_path / "ckpt_remasking_binary_20.pt")
    cfg = load_config([str(converted_config(tmp_path, "lre0_remasking.py")), f"--data.dir={nanogpt_char_dir}",
                       f"--run.out_dir={tmp_path}", "--run.init_from=resume", "--train.max_iters=21",
                       "--train.eval_interval=1", *QUIET])
    with caplog.at_level(logging.INFO, logger="mmengine"):
        res = train(cfg)
    assert res.iter_num == 21 and "f1" in res.val[-1]
    assert "optimizer moments of 21 tensors mapped" in caplog.text  # the lm_head (2 classes) among them


@needs_fixtures
def test_cls_token_id_is_read_by_evaluate_and_resume(nanogpt_char_dir, tmp_path, capsys):
    from mmengine.evaluate import main

    layout = load_upstream_checkpoint(FIXTURES / SCORER)
    layout["model_args"]["cls_token_id"] = None  # a scorer that does not say where its [CLS] is
    layout["upstream"]["vocabulary"]["cls"] = None
    torch.save(layout, tmp_path / "ckpt_sequence_scorer_20.pt")
    path = str(tmp_path / "ckpt_sequence_scorer_20.pt")
    assert main([path, f"--data.dir={nanogpt_char_dir}", "--train.eval_iters=1"]) == 2
    err = capsys.readouterr().err
    assert "records no [CLS] id; pass --cls_token_id" in err and err.count("\n") == 1
    metrics = evaluate_checkpoint(path, [f"--data.dir={nanogpt_char_dir}", "--train.eval_iters=1", "--cls_token_id=70"],
                                  device="cpu")
    want = evaluate_checkpoint(str(FIXTURES / SCORER), [f"--data.dir={nanogpt_char_dir}", "--train.eval_iters=1"],
                               device="cpu")
    assert metrics["mse"] == want["mse"]  # the row it recorded, 70, told instead
    trainer = Trainer(load_config([f"--data.dir={nanogpt_char_dir}", f"--run.out_dir={tmp_path}",
                                   "--run.init_from=resume", "--train.training_type=sequence_scoring",
                                   "--data.block_size=48", "--cls_token_id=70", *QUIET]))
    try:
        original = layout["model"]["transformer.wte.weight"][70]
        torch.testing.assert_close(trainer.raw_model.transformer.wte.weight[trainer.meta.cls_id], original,
                                   rtol=0, atol=0)
    finally:
        trainer.close()

"""Transfer as a run does it (mmengine.transfer): nanoGPT fine-tuning, the trunk's shape from the source,
attention changes announced, the freeze controller."""
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmengine.config import ConfigError, load_config
from mmengine.data.dataset import DataDir
from mmengine.data.stream import open_data
from mmengine.model import GPT, GPTConfig
from mmengine.modes import build_mode
from mmengine.train import train
from mmengine.transfer import (
    FreezeController,
    build_model,
    build_run_model,
    model_config,
)


def nanogpt_checkpoint(path, data_dir, steps=60, block=32):
    """A checkpoint as nanoGPT's train.py writes it, from a small causal model with learned positions
    trained ``steps`` steps on ``data_dir``: ``_orig_mod.`` keys (torch.compile), nanoGPT's model_args and
    flat config, and its two-group AdamW state."""
    torch.manual_seed(0)
    args = dict(n_layer=1, n_head=2, n_embd=32, block_size=block, bias=True, vocab_size=65, dropout=0.0)
    model = GPT(GPTConfig(**args, attention_type="causal", use_rope=False))
    params = dict(model.named_parameters())
    decay = [p for p in params.values() if p.dim() >= 2]
    nodecay = [p for p in params.values() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": nodecay, "weight_decay": 0.0}], lr=3e-3)
    tokens = np.fromfile(data_dir / "train.bin", dtype=np.uint16).astype(np.int64)
    gen = np.random.default_rng(0)
    for _ in range(steps):
        ix = gen.integers(0, len(tokens) - block - 1, 16)
        x = torch.from_numpy(np.stack([tokens[i:i + block] for i in ix]))
        y = torch.from_numpy(np.stack([tokens[i + 1:i + 1 + block] for i in ix]))
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad()
    config = {"out_dir": "out-shakespeare-char", "dataset": "shakespeare_char", "batch_size": 16, "block_size": block,
              "learning_rate": 3e-3, "max_iters": steps, "compile": True, "device": "cpu"}
    torch.save({"model": {"_orig_mod." + k: v for k, v in model.state_dict().items()}, "optimizer": opt.state_dict(),
                "model_args": args, "iter_num": steps, "best_val_loss": torch.tensor(2.5), "config": config}, path)
    return model


def test_a_nanogpt_checkpoint_fine_tunes_as_autoregressive(tmp_path, nanogpt_char_dir, caplog):
    source = nanogpt_checkpoint(tmp_path / "ckpt.pt", nanogpt_char_dir)
    argv = [f"--data.dir={nanogpt_char_dir}", "--train.training_type=autoregressive",
            f"--run.out_dir={tmp_path / 'ft'}", f"--transfer.init_from_checkpoint={tmp_path / 'ckpt.pt'}",
            "--data.block_size=32", "--data.batch_size=8", "--model.n_layer=1", "--model.n_embd=32", "--model.n_head=2",
            "--train.max_iters=30", "--train.eval_interval=30", "--train.eval_iters=4", "--optim.learning_rate=1e-3",
            "--log.sample_tokens=20", "--log.progress=false"]
    cfg = load_config(argv)
    spec = build_mode(cfg, open_data(cfg))
    with caplog.at_level(logging.INFO, logger="mmengine.transfer"):
        model = build_run_model(cfg, spec, spec.meta)
    # the trunk's shape is nanoGPT's: learned positions (never silently switched to RoPE), biases
    assert not model.config.use_rope and model.config.bias and model.config.attention_type == "causal"
    assert "use_rope=False" in caplog.text and "bias=True" in caplog.text
    assert model.transfer_report.embedding_extended == (65, 69) and model.transfer_report.missing == []
    # on text ids the transferred model is the nanoGPT model (the 4 new rows are special ids only)
    x = torch.from_numpy(np.fromfile(nanogpt_char_dir / "val.bin", dtype=np.uint16)[:64].astype(np.int64)).view(2, 32)
    with torch.no_grad():
        got = model.lm_head(model.encode(x))[..., :65]
        want = source.lm_head(source.encode(x))
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    # and it trains from there: its first validation loss is the source's, far below chance
    res = train(cfg)
    assert res.iter_num == 30 and res.val[-1]["loss"] < 3.0 < np.log(65)
    assert res.sample is not None and len(res.sample) == 20


def test_transfer_between_causal_and_bidirectional_is_announced(tmp_path, nanogpt_char_dir, caplog):
    nanogpt_checkpoint(tmp_path / "ar.pt", nanogpt_char_dir, steps=1)
    cfg = load_config([f"--data.dir={nanogpt_char_dir}", f"--transfer.init_from_checkpoint={tmp_path / 'ar.pt'}",
                       "--data.block_size=32"])
    spec = build_mode(cfg, open_data(cfg))
    with caplog.at_level(logging.INFO, logger="mmengine.transfer"):
        model = build_run_model(cfg, spec, spec.meta)
    lines = [r.getMessage() for r in caplog.records if "attention" in r.getMessage()]
    assert len(lines) == 1 and "causal attention" in lines[0] and "bidirectional" in lines[0]
    assert model.config.attention_type == "bidirectional"


def test_learned_positions_fix_the_longest_window(tmp_path, nanogpt_char_dir):
    nanogpt_checkpoint(tmp_path / "ar.pt", nanogpt_char_dir, steps=1, block=32)
    base = [f"--data.dir={nanogpt_char_dir}", "--train.training_type=autoregressive",
            f"--transfer.init_from_checkpoint={tmp_path / 'ar.pt'}"]
    def build(*extra):
        cfg = load_config(base + list(extra))
        spec = build_mode(cfg, open_data(cfg))
        return build_run_model(cfg, spec, spec.meta)

    shorter = build("--data.block_size=16")
    src = torch.load(tmp_path / "ar.pt", weights_only=True)["model"]["_orig_mod.transformer.wpe.weight"]
    assert torch.equal(shorter.transformer.wpe.weight, src[:16])  # the positions a 16-token window uses
    with pytest.raises(ConfigError, match="learned positions for 32 tokens"):
        build("--data.block_size=48")


def test_model_config_without_a_source_follows_the_run_config(char_data_dir):
    data = char_data_dir(30_000)
    cfg = load_config([f"--data.dir={data}", "--model.use_rope=false", "--model.bias=true", "--data.block_size=24"])
    g = model_config(cfg, build_mode(cfg, open_data(cfg)), DataDir.open(data).meta)
    meta = DataDir.open(data).meta
    assert ((g.use_rope, g.bias, g.block_size, g.attention_type, g.vocab_size)
            == (False, True, 24, "bidirectional", meta.vocab_size))


# --- the freeze controller -----------------------------------------------------------------------

class _Transfer:
    def __init__(self, at, mult=0.1):
        self.unfreeze_at_iteration, self.unfreeze_lr_multiplier = at, mult


def _frozen_classifier(tmp_path):
    lm = GPT(GPTConfig(block_size=8, vocab_size=12, n_layer=1, n_head=2, n_embd=16))
    from mmengine.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "lm.pt", lm)
    return build_model(GPTConfig(block_size=8, vocab_size=12, n_layer=1, n_head=2, n_embd=16, mode="token_classifier"),
                       init_from=tmp_path / "lm.pt", freeze=True)


def test_freeze_controller_unfreezes_once_and_scales_only_the_trunk(tmp_path):
    model = _frozen_classifier(tmp_path)
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.99), "cpu")
    fc = FreezeController(model, _Transfer(at=5, mult=0.25))
    assert fc.frozen and not fc.due(4) and fc.due(5) and fc.due(9)
    fc.apply_lr(opt, 1e-3)
    assert all(g["lr"] == 1e-3 for g in opt.param_groups)
    fc.unfreeze(5)
    assert not fc.frozen and not fc.due(6) and fc.unfrozen_at == 5
    fc.apply_lr(opt, 2e-3)
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(2e-3 * (0.25 if g["trunk"] else 1.0))
    # its state restores both the switch and the freeze itself
    fresh = _frozen_classifier(tmp_path)
    fresh.unfreeze_transformer_weights()
    FreezeController(fresh, _Transfer(at=5)).load_state_dict({"frozen": True, "unfrozen_at": None})
    assert fresh.get_frozen_status()
    again = FreezeController(fresh, _Transfer(at=5, mult=0.25))
    again.load_state_dict(fc.state_dict())
    assert again.unfrozen_at == 5 and again.trunk_scale() == 0.25


def test_frozen_trunk_gets_no_gradient_through_the_loss(tmp_path):
    model = _frozen_classifier(tmp_path)
    logits, loss = model(torch.randint(0, 12, (2, 8)), torch.randint(0, 2, (2, 8)))
    loss.backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n.startswith("transformer."))
    assert model.lm_head.weight.grad is not None and F.softmax(logits, -1).shape == (2, 8, 2)

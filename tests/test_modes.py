"""The mode registry and each training type's spec: config checks, batches, loss, metrics, heads.

Every spec is exercised on its own (no trainer): its batches are checked against the data they were
cut from, its loss against an eager formula written here, its metrics against their definition.
"""
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmengine import modes
from mmengine.config import ConfigError, load_config
from mmengine.data.stream import open_data, to_device
from mmengine.errors import UserError
from mmengine.model import GPT
from mmengine.transfer import model_config


@pytest.fixture(scope="module")
def data_dir(char_data_dir):
    return char_data_dir(30_000)


def spec_for(data_dir, *argv):
    cfg = load_config([f"--data.dir={data_dir}", "--data.block_size=16", "--data.batch_size=4", "--train.eval_iters=2",
                       "--model.n_layer=1", "--model.n_embd=16", "--model.n_head=2", *argv])
    return cfg, modes.build_mode(cfg, open_data(cfg))


def model_for(cfg, spec):
    torch.manual_seed(0)
    return GPT(model_config(cfg, spec, spec.meta))


def rng(i=0):
    return np.random.default_rng(i)


# --- the registry --------------------------------------------------------------------------------

def test_registry_holds_five_names_for_four_training_types():
    assert list(modes.REGISTRY) == ["unmasking", "token_classification", "remasking_binary", "sequence_scoring",
                                    "autoregressive"]
    for name, spec in modes.REGISTRY.items():
        assert spec.name == name and issubclass(spec, modes.ModeSpec) and spec.description
    assert modes.REGISTRY["remasking_binary"].fixed_classes == 2
    assert list(modes.mode_tables()) == ["unmasking", "token_classification", "sequence_scoring"]
    with pytest.raises(ConfigError, match="valid ones: unmasking"):
        modes.get_spec("unmask")


def test_no_training_type_branches_outside_the_modes_package():
    """train, evaluate, checkpoint, model and config never compare training-type names."""
    from pathlib import Path

    root = Path(modes.__file__).parent.parent
    names = [n for n in modes.REGISTRY]
    for path in sorted(root.rglob("*.py")):
        if "modes" in path.relative_to(root).parts:
            continue
        text = path.read_text(encoding="utf-8")
        for name in names:
            for quoted in (f'"{name}"', f"'{name}'"):
                assert f"== {quoted}" not in text and f"!= {quoted}" not in text and f"in ({quoted}" not in text, \
                    f"{path.name} branches on training type {name}"


def test_a_new_training_type_is_one_class_and_one_registry_line(tmp_path, char_data_dir):
    """A spec registered before the config is imported trains end to end, with its own TOML table."""
    data = char_data_dir(30_000)
    code = textwrap.dedent(f"""
        from dataclasses import dataclass
        import numpy as np
        from mmengine import modes
        from mmengine.modes.base import ModeSpec
        from mmengine.schema import option

        @dataclass
        class ReverseConfig:
            \"\"\"[reverse] a toy: predict each window's tokens in reverse order.\"\"\"
            flip: bool = option(True, "Reverse the targets.")

        class ReverseMode(ModeSpec):
            name = "reverse"
            table = "reverse"
            settings = ReverseConfig
            description = "toy reversal"
            def build_batch(self, split, idx, rng, iteration, batch_state):
                x = self.windows(split).gather(idx)
                return {{"x": x, "y": np.ascontiguousarray(x[:, ::-1]) if self.cfg.reverse.flip else x}}

        modes.REGISTRY["reverse"] = ReverseMode
        from mmengine.config import load_config
        from mmengine.train import train
        cfg = load_config(["--train.training_type=reverse", "--reverse.flip=true", "--data.dir={data}",
                           "--run.out_dir={tmp_path}", "--model.n_layer=1", "--model.n_embd=16", "--model.n_head=2",
                           "--data.block_size=16", "--data.batch_size=4", "--train.max_iters=4",
                           "--train.eval_interval=4", "--train.eval_iters=1", "--log.progress=false"])
        res = train(cfg)
        print("OK", res.iter_num, res.val[-1]["loss"] > 0)
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "OK 4 True"


# --- config checks, per mode ---------------------------------------------------------------------

@pytest.mark.parametrize("argv, fragment", [
    (["--unmasking.eps=0"], "unmasking.eps"),
    (["--unmasking.stages=[]"], "at least one masking stage"),
    (["--unmasking.val_loss_stale_count=0"], "val_loss_stale_count"),
    (["--training_type=token_classification", "--token_classification.corruption=[{type=\"lm\", rate=0.1}]"],
     "lm_checkpoint"),
    (["--training_type=token_classification", "--num_token_classes=1"], "at least 2"),
    (["--training_type=sequence_scoring", "--sequence_scoring.max_corruption_rate=0"], "max_corruption_rate"),
    (["--training_type=autoregressive", "--model.attention_type=bidirectional"], "causal"),
    (["--training_type=token_classification", "--model.attention_type=causal"], "bidirectional"),
])
def test_each_spec_checks_its_own_settings(argv, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config(argv)


def test_attention_auto_is_what_the_mode_needs(data_dir):
    for tt, want in [("unmasking", "bidirectional"), ("autoregressive", "causal"),
                     ("sequence_scoring", "bidirectional")]:
        cfg, spec = spec_for(data_dir, f"--training_type={tt}")
        assert cfg.model.attention_type == "auto" and model_config(cfg, spec, spec.meta).attention_type == want
    cfg, spec = spec_for(data_dir, "--model.attention_type=causal")  # a causal masked LM stays possible
    assert model_config(cfg, spec, spec.meta).attention_type == "causal"


# --- batches --------------------------------------------------------------------------------------

def test_unmasking_batch_masks_and_targets_agree(data_dir):
    cfg, spec = spec_for(data_dir)
    idx = np.arange(4)
    original = spec.windows("train").gather(idx)
    b = spec.build_batch("train", idx, rng(), 0, spec.batch_state())
    masked = b["y"] != -1
    assert masked.any() and (b["x"][masked] == spec.meta.mask_id).all()
    assert (b["y"][masked] == original[masked]).all() and (b["x"][~masked] == original[~masked]).all()


def test_continuous_time_loss_is_the_weighted_elbo(data_dir):
    cfg, spec = spec_for(data_dir, "--unmasking.objective=continuous_time")
    b = to_device(spec.build_batch("train", np.arange(4), rng(1), 0, spec.batch_state()), "cpu")
    assert b["t"].shape == (4,) and ((b["t"] > 0) & (b["t"] < 1)).all()
    m = model_for(cfg, spec)
    logits, loss = spec.loss(m, b)
    ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)), b["y"].reshape(-1), ignore_index=-1, reduction="none")
    want = (ce.view(4, 16).sum(1) / b["t"]).sum() / (4 * 16)
    torch.testing.assert_close(loss, want)


def test_token_classification_labels_mark_exactly_the_changed_tokens(data_dir):
    cfg, spec = spec_for(data_dir, "--training_type=token_classification", "--num_token_classes=2")
    idx = np.arange(4)
    original = spec.windows("train").gather(idx)
    b = spec.build_batch("train", idx, rng(2), 0, spec.batch_state())
    assert set(np.unique(b["y"])) <= {0, 1} and (b["y"] == 1).any()
    assert (b["x"][b["y"] == 0] == original[b["y"] == 0]).all()
    assert spec.gpt_kwargs() == {"mode": "token_classifier", "num_token_classes": 2}
    assert spec_for(data_dir, "--training_type=remasking_binary")[1].num_classes == 2


def test_sequence_scoring_batch_starts_with_cls_and_scores_the_corruption(data_dir):
    cfg, spec = spec_for(data_dir, "--training_type=sequence_scoring")
    b = spec.build_batch("train", np.arange(4), rng(3), 0, spec.batch_state())
    assert b["x"].shape == (4, 16) and (b["x"][:, 0] == spec.meta.cls_id).all() and (b["lengths"] == 16).all()
    original = spec.windows("train").gather(np.arange(4))
    changed = (b["x"][:, 1:] != original).mean(1)
    np.testing.assert_allclose(b["y"], changed, atol=1e-6)  # the score is the changed fraction


def test_autoregressive_batch_is_the_next_token_shift_of_one_window(data_dir):
    cfg, spec = spec_for(data_dir, "--training_type=autoregressive")
    tokens = spec.data.tokens("train")
    idx = np.array([0, 5, 17, 100])
    b = spec.build_batch("train", idx, rng(), 0, None)
    assert b["x"].shape == b["y"].shape == (4, 16)
    for row, start in enumerate(idx):
        assert (b["x"][row] == tokens[start:start + 16]).all() and (b["y"][row] == tokens[start + 1:start + 17]).all()


# --- loss, metrics, heads -------------------------------------------------------------------------

def test_autoregressive_loss_is_next_token_cross_entropy_and_ppl_is_exact(data_dir):
    cfg, spec = spec_for(data_dir, "--training_type=autoregressive")
    m = model_for(cfg, spec)
    assert m.config.attention_type == "causal"
    batches = [(g, to_device(b, "cpu")) for g, b in spec.val_batches()]
    metrics = spec.evaluate(m, batches)
    nll = []
    with torch.no_grad():
        for _, b in batches:
            logits = m.lm_head(m.encode(b["x"]))  # every position
            nll.append(F.cross_entropy(logits.reshape(-1, logits.size(-1)), b["y"].reshape(-1), reduction="sum"))
    tokens = sum(b["y"].numel() for _, b in batches)
    want = float(sum(nll)) / tokens
    assert metrics["loss"] == pytest.approx(want, rel=1e-5)
    assert metrics["ppl"] == pytest.approx(math.exp(want), rel=1e-5)
    assert set(metrics) == {"loss", "ppl"}


def test_unmasking_metrics_per_stage_and_bound(data_dir):
    cfg, spec = spec_for(data_dir, "--unmasking.stages=[{type=\"random\", max_masked_ratio=0.3}, "
                                   "{type=\"random\", max_masked_ratio=0.9}]")
    out = spec.metrics([("stage0", None, 1.0), ("stage0", None, 3.0), ("stage1", None, 4.0)])
    assert out["loss_stage0"] == 2.0 and out["loss_stage1"] == 4.0 and out["loss"] == 3.0 and out["stage"] == 0
    cfg, spec = spec_for(data_dir, "--unmasking.objective=continuous_time")
    out = spec.metrics([("continuous", None, 2.0)])
    assert out["nll_bound"] == 2.0 and out["ppl_bound"] == pytest.approx(math.exp(2.0))


def test_check_model_refuses_another_head_or_attention(data_dir):
    cfg, lm_spec = spec_for(data_dir)
    lm = model_for(cfg, lm_spec)
    _, clf_spec = spec_for(data_dir, "--training_type=token_classification")
    with pytest.raises(UserError, match="mode='language_model'"):
        clf_spec.check_model(lm, "ckpt.pt")
    _, ar_spec = spec_for(data_dir, "--training_type=autoregressive")
    with pytest.raises(UserError, match="causal attention"):
        ar_spec.check_model(lm, "ckpt.pt")
    lm_spec.check_model(lm, "ckpt.pt")


def test_end_of_run_sample_only_for_language_models(data_dir):
    for tt, heading in [("unmasking", "iterative unmasking"), ("autoregressive", "left to right")]:
        cfg, spec = spec_for(data_dir, f"--training_type={tt}", "--log.sample_tokens=12")
        shown = spec.sample(model_for(cfg, spec), spec.meta, spec.data.tokenizer, cfg)
        assert heading in shown[0] and len(shown[1]) == 12
    cfg, spec = spec_for(data_dir, "--training_type=sequence_scoring")
    assert spec.sample(model_for(cfg, spec), spec.meta, spec.data.tokenizer, cfg) is None


@pytest.mark.parametrize("objective", ["stages", "continuous_time"])
def test_unmasking_softmax_is_over_text_ids_only(data_dir, objective):
    """text_only: no probability is ever put on [MASK] or another special id, so their logits cannot move the loss."""
    cfg, spec = spec_for(data_dir, f"--unmasking.objective={objective}")
    b = to_device(spec.build_batch("train", np.arange(4), rng(5), 0, spec.batch_state()), "cpu")
    m = model_for(cfg, spec)
    V = spec.meta.text_vocab_size
    _, before = spec.loss(m, b)
    with torch.no_grad():
        m.lm_head.weight[V:] *= 50.0  # the special rows of the tied embedding/head (their inputs: [MASK] only)
        masked_input = m.transformer.wte.weight[spec.meta.mask_id].clone()
    full_cfg, full_spec = spec_for(data_dir, f"--unmasking.objective={objective}", "--unmasking.text_only=false")
    logits, full = full_spec.loss(m, b)
    assert logits.shape[-1] == spec.meta.vocab_size and torch.isfinite(full)
    # the text-only loss of the same model equals CE over the text columns, whatever the special rows hold
    logits_all = m(b["x"], all_positions=True)[0]
    nll = F.cross_entropy(logits_all[..., :V].reshape(-1, V), b["y"].reshape(-1), ignore_index=-1, reduction="none")
    got = spec.loss(m, b)[1]
    if objective == "stages":
        torch.testing.assert_close(got, nll.sum() / (b["y"] != -1).sum())
    else:
        torch.testing.assert_close(got, (nll.view(4, 16).sum(1) / b["t"]).sum() / 64)
    assert not torch.isclose(got, full) and masked_input.abs().sum() > 0 and before.isfinite()

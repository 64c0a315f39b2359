"""describe_checkpoint / python -m mmengine.inspect on mmengine, earlier-trainer and nanoGPT files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmengine.checkpoint import CheckpointError, save_checkpoint
from mmengine.data.dataset import DataMeta
from mmengine.inspect import describe_checkpoint, format_description, main
from mmengine.model import GPT, GPTConfig

FIXTURES = Path(os.environ.get("MMENGINE_UPSTREAM_FIXTURES",
                               Path(__file__).resolve().parent / "fixtures" / "upstream"))
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"no earlier-trainer fixtures at {FIXTURES}")
ROOT = Path(__file__).resolve().parents[1]


@needs_fixtures
def test_earlier_trainer_scorer():
    path = FIXTURES / "1616e5b/ckpt_sequence_scorer_20.pt"
    info = describe_checkpoint(path)
    assert info["format"] == "earlier trainer" and info["mode"] == "sequence_scorer"
    assert info["file_size"] == path.stat().st_size and info["iter_num"] == 20
    assert info["architecture"] == {"n_layer": 3, "n_head": 2, "n_embd": 32, "block_size": 48, "vocab_size": 80,
                                    "bias": False, "attention_type": "bidirectional", "use_rope": True, "dropout": 0.0}
    assert info["vocabulary"] == {"rows": 80, "text_ids": 65, "special_ids": {"[MASK]": 65, "[CLS]": 70},
                                  "reserved": "66-69, 71-79"}
    assert info["config"]["__class__"].endswith("RandomStageConfig") and info["config"]["max_masked_ratio"] == 0.5
    assert info["frozen"]["freeze_transformer"] is True and info["frozen"]["optimizer_parameters"] == "1 of 21"
    assert info["losses"]["best_val_loss_of_stage"] == float("inf")
    text = format_description(info)
    assert "its optimizer holds 1 of 21 parameter tensors (the others were frozen when it was built)" in text
    assert "[CLS] 70" in text and "RandomStageConfig: val_loss_stale_count=10" in text


@needs_fixtures
@pytest.mark.parametrize("name, mode, hint", [
    ("1616e5b/ckpt_unmasking_20.pt", "language_model", "pickled model.ModelMode"),
    ("1c9b72c/ckpt_unmasking_20.pt", "language_model", "no mode in model_args"),
    ("e0abd98/ckpt_remasking_binary_20.pt", "token_classifier", "binary_classification"),
])
def test_earlier_trainer_versions(name, mode, hint):
    info = describe_checkpoint(FIXTURES / name)
    assert info["mode"] == mode and any(hint in h for h in info["version_hints"])
    assert info["vocabulary"]["special_ids"] == {"[MASK]": 65} and info["vocabulary"]["reserved"] == "66-79"
    text = format_description(info)
    assert f"mode          {mode}" in text and "80 rows: 65 text ids, [MASK] 65; reserved 66-79" in text


def test_mmengine_checkpoint(tmp_path):
    meta = DataMeta.for_vocab(65, tokenizer="char")
    model = GPT(GPTConfig(block_size=8, vocab_size=meta.vocab_size, n_layer=1, n_head=2, n_embd=8,
                          mode="token_classifier", num_token_classes=3))
    path = save_checkpoint(tmp_path / "ckpt.pt", model, iter_num=7, best_val_loss=0.5,
                           config={"train": {"training_type": "token_classification"}, "run": {"seed": 3}},
                           trainer={"frozen": True, "unfrozen_at": None, "data_meta": meta.to_dict()})
    info = describe_checkpoint(path)
    assert info["format"] == "mmengine" and info["mode"] == "token_classifier" and info["iter_num"] == 7
    assert info["architecture"]["num_token_classes"] == 3 and info["losses"] == {"best_val_loss": 0.5}
    assert info["vocabulary"]["special_ids"] == {"[MASK]": 65, "[CLS]": 66, "[PAD]": 67, "[SEP]": 68}
    assert info["frozen"]["frozen_at_save"] is True
    text = format_description(info)
    assert "config [run]    seed=3" in text and "frozen_at_save=True" in text and "3 token classes" in text


def test_nanogpt_checkpoint(tmp_path):
    config = GPTConfig(block_size=8, vocab_size=65, n_layer=1, n_head=2, n_embd=8, use_rope=False,
                       attention_type="causal")
    state = {f"_orig_mod.{k}": v for k, v in GPT(config).state_dict().items()}
    path = tmp_path / "ckpt.pt"
    torch.save({"model": state, "optimizer": None, "iter_num": 5000, "best_val_loss": torch.tensor(1.47),
                "model_args": {"n_layer": 1, "n_head": 2, "n_embd": 8, "block_size": 8, "bias": True, "vocab_size": 65,
                               "dropout": 0.0},
                "config": {"dataset": "shakespeare_char", "batch_size": 64}}, path)
    info = describe_checkpoint(path)
    assert info["format"] == "nanoGPT" and info["mode"] == "language_model"
    assert info["architecture"]["attention_type"] == "causal" and info["architecture"]["use_rope"] is False
    assert info["vocabulary"] == {"rows": 65, "text_ids": 65, "special_ids": {}, "reserved": None}
    assert info["frozen"] is None and info["losses"]["best_val_loss"] == pytest.approx(1.47)
    assert "learned positions" in format_description(info) and "frozen        not recorded" in format_description(info)


def test_cli(tmp_path, capsys):
    path = save_checkpoint(tmp_path / "ckpt.pt",
                           GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=2, n_embd=8)))
    assert main([str(path)]) == 0
    assert "format        mmengine" in capsys.readouterr().out
    assert main([str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "mmengine"
    assert main([str(tmp_path / "missing.pt")]) == 2
    assert main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0] == f"error: checkpoint {tmp_path / 'missing.pt'} does not exist."
    assert main(["--help"]) == 0 and "usage: python -m mmengine.inspect CKPT" in capsys.readouterr().out


def test_unreadable_file_raises_checkpoint_error(tmp_path):
    path = tmp_path / "x.pt"
    path.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        describe_checkpoint(path)


@needs_fixtures
def test_python_dash_m_on_a_real_file():
    result = subprocess.run([sys.executable, "-m", "mmengine.inspect", str(FIXTURES / "1c9b72c/ckpt_unmasking_20.pt")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "StickyStageConfig" in result.stdout and "no mode in model_args" in result.stdout

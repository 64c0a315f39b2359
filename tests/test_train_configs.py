"""Every shipped config runs a couple of iterations (tiny overrides) on a small slice of the bundled corpus."""
from pathlib import Path

import pytest

from mmengine.config import load_config
from mmengine.train import train

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.toml"))


@pytest.fixture(scope="module")
def data_dir(char_data_dir):
    """A small char data dir cut from the bundled corpus (fast to prepare, enough for tiny models)."""
    return char_data_dir(40_000)


TINY = ["--model.n_layer=1", "--model.n_embd=32", "--model.n_head=2", "--data.block_size=32", "--data.batch_size=4",
        "--train.max_iters=3", "--train.eval_interval=3", "--train.eval_iters=1", "--train.log_interval=1",
        "--log.sample_tokens=8", "--log.progress=false"]


@pytest.fixture(scope="module")
def lm_checkpoint(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cfg_lm")
    return train(load_config([str(ROOT / "configs" / "quickstart.toml"), f"--data.dir={data_dir}",
                              f"--run.out_dir={out}", *TINY])).checkpoint


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_runs(path, data_dir, lm_checkpoint, tmp_path):
    extra = []
    cfg = load_config([str(path)], check_paths=False)
    # checkpoints a config names (out/ckpt.pt of an earlier step) are this test's tiny LM
    if cfg.transfer.init_from_checkpoint or cfg.transfer.freeze_transformer:
        extra.append(f"--transfer.init_from_checkpoint={lm_checkpoint}")
    if cfg.transfer.freeze_transformer:
        extra.append("--transfer.unfreeze_at_iteration=2")
    if cfg.token_classification.lm_checkpoint:
        extra.append(f"--token_classification.lm_checkpoint={lm_checkpoint}")
    if cfg.sequence_scoring.unmasking_model_checkpoint:  # a judge trained on an LM's reconstructions
        extra.append(f"--sequence_scoring.unmasking_model_checkpoint={lm_checkpoint}")
    res = train(load_config([str(path), f"--data.dir={data_dir}", f"--run.out_dir={tmp_path}", *TINY, *extra]))
    assert res.iter_num == 3 and (tmp_path / "ckpt.pt").is_file()
    assert all(v == v for v in res.train_losses.values())  # finite

"""Iterative-unmasking generation: text ids only, any length, seeded; the sample CLI."""
import subprocess
import sys

import pytest
import torch

from mmengine.config import load_config
from mmengine.train import train


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    from mmengine.data.dataset import bundled_corpus_path
    from mmengine.data.preparation import prepare_text

    root = tmp_path_factory.mktemp("sample")
    src = root / "small.txt"
    src.write_text(bundled_corpus_path().read_text(encoding="utf-8")[:30_000], encoding="utf-8")
    prepare_text([src], root / "d", val_fraction=0.1)
    res = train(load_config([f"--data.dir={root / 'd'}", f"--run.out_dir={root / 'out'}", "--model.n_layer=1",
                             "--model.n_embd=32", "--model.n_head=2", "--data.block_size=32", "--data.batch_size=4",
                             "--train.max_iters=5", "--train.eval_interval=5", "--train.eval_iters=1",
                             "--log.sample_tokens=40", "--log.progress=false"]))
    assert res.sample is not None and len(res.sample) == 40  # the run's own sample (char data: 1 token = 1 char)
    return res.checkpoint


def test_generate_text_ids_of_any_length_seeded(lm):
    from mmengine.sample import generate, load_for_sampling

    model, meta, tok = load_for_sampling(lm)
    def gen(seed, length=80, steps=4, prompt=None, order="confidence"):
        g = torch.Generator().manual_seed(seed)
        return generate(model, length=length, mask_id=meta.mask_id, text_vocab_size=meta.text_vocab_size,
                        steps=steps, prompt=prompt, generator=g, order=order)
    a = gen(0)
    assert len(a) == 80 > model.config.block_size  # longer than the context: made chunk by chunk
    assert all(0 <= i < meta.text_vocab_size for i in a)  # never [MASK] or another special id
    assert a == gen(0) and a != gen(1)
    assert len(gen(0, length=5, steps=16, prompt=tok.encode("the "))) == 5  # more steps than tokens
    r = gen(0, order="random")
    assert len(r) == 80 and r == gen(0, order="random") and max(r) < meta.text_vocab_size


def test_causal_model_samples_autoregressively():
    from mmengine.model import GPT, GPTConfig
    from mmengine.sample import generate

    model = GPT(GPTConfig(block_size=16, vocab_size=20, n_layer=1, n_head=2, n_embd=16, attention_type="causal"))
    ids = generate(model, length=20, mask_id=16, text_vocab_size=16, generator=torch.Generator().manual_seed(0))
    assert len(ids) == 20 and max(ids) < 16


@pytest.mark.slow
def test_sample_cli(lm, tmp_path):
    p = subprocess.run([sys.executable, "-m", "mmengine.sample", str(lm), "--length", "30", "--steps", "3",
                        "--prompt", "the ", "--num-samples", "2"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    first = p.stdout.split("\n---\n")[0]
    assert first.startswith("the ") and len(first) == 34
    bad = subprocess.run([sys.executable, "-m", "mmengine.sample", str(tmp_path / "missing.pt")], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_train_cli_prints_sample_and_checkpoint(lm, tmp_path):
    data = lm.parent.parent / "d"
    p = subprocess.run([sys.executable, "-m", "mmengine.train", f"--data.dir={data}", f"--run.out_dir={tmp_path}",
                        "--model.n_layer=1", "--model.n_embd=32", "--model.n_head=2", "--data.block_size=32",
                        "--data.batch_size=4", "--max_iters=3", "--eval_interval=3", "--eval_iters=1",
                        "--log.sample_tokens=25"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "sample (iterative unmasking)" in p.stdout and f"checkpoint: {tmp_path / 'ckpt.pt'}" in p.stdout
    assert "iter     3 | val loss" in p.stdout

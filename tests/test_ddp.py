"""Data parallelism: disjoint data per rank, one writer, agreed stage decisions, exact resume, via torchrun."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmengine.config import load_config


@pytest.fixture(scope="module")
def data_dir(char_data_dir):
    """A small char data dir cut from the bundled corpus (fast to prepare, enough for tiny models)."""
    return char_data_dir(40_000)


def argv(data_dir, out_dir, *extra):
    return [f"--data.dir={data_dir}", f"--run.out_dir={out_dir}", "--model.n_layer=1", "--model.n_embd=32",
            "--model.n_head=2", "--data.block_size=32", "--data.batch_size=4", "--train.eval_iters=2",
            "--train.log_interval=1", "--train.eval_interval=3", "--optim.warmup_iters=2", "--optim.lr_decay_iters=9",
            "--log.sample_tokens=0", "--log.progress=false", "--unmasking.val_loss_stale_count=1",
            "--unmasking.stages=[{type=\"random\", max_masked_ratio=0.3}, "
            "{type=\"random\", max_masked_ratio=0.9}]", *extra]


def test_ranks_draw_disjoint_windows(data_dir):
    """Two ranks' batch streams (as torchrun would build them) never share a window within an epoch."""
    from mmengine.data.stream import BatchStream, open_data
    from mmengine.distributed import DistInfo
    from mmengine.modes import build_mode

    cfg = load_config(argv(data_dir, "unused", "--data.prefetch_depth=0", "--data.use_paragraph_boundaries=true"))
    data = open_data(cfg)
    seen = []
    mode = build_mode(cfg, data)
    for rank in (0, 1):
        stream = BatchStream(mode, cfg, DistInfo(rank=rank, world_size=2), None, mode.batch_state())
        idx = np.concatenate([stream.sampler.next_batch(4) for _ in range(5)])
        seen.append(set(mode.windows("train").offsets(idx).tolist()))
    assert seen[0] and seen[1] and not (seen[0] & seen[1])


def torchrun(*args):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "mmengine.train", *args], capture_output=True, text=True, timeout=120)


def failure(p) -> str:
    """What a failed torchrun said: the ranks' error lines (torchrun's own traceback comes last and says little)."""
    keys = ("Error", "error:", "terminate called", "what()", "Abort", "Signal")
    lines = [line for line in p.stderr.splitlines() if any(k in line for k in keys)]
    return "\n".join(lines[:20]) or p.stderr[-2000:]


def train_losses(out_dir):
    recs = [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]
    return recs, {r["iter"]: r["loss"] for r in recs if r["split"] == "train" and r.get("loss") is not None}


@pytest.mark.slow
def test_two_process_ddp_run_and_exact_resume(data_dir, tmp_path):
    full = torchrun(*argv(data_dir, tmp_path / "full", "--train.max_iters=9"))
    assert full.returncode == 0, failure(full)
    recs, losses = train_losses(tmp_path / "full")
    assert sorted(losses) == list(range(1, 10))  # one writer: each iteration logged once
    val = [r for r in recs if r["split"] == "val"]
    assert len(val) == 3 and all("loss_stage1" in r for r in val)
    ck = torch.load(tmp_path / "full" / "ckpt.pt", weights_only=True)
    assert ck["iter_num"] == 9 and len(ck["trainer"]["data"]) == 2  # every rank's data position

    part = tmp_path / "part"
    first = torchrun(*argv(data_dir, part, "--train.max_iters=6"))
    assert first.returncode == 0, failure(first)
    shutil.copy(part / "ckpt.pt", tmp_path / "at6.pt")
    resumed = torchrun(*argv(data_dir, part, "--train.max_iters=9", "--run.init_from=resume"))
    assert resumed.returncode == 0, failure(resumed)
    _, part_losses = train_losses(part)
    for it in (7, 8, 9):
        assert part_losses[it] == losses[it], it
    # the curriculum decisions (made on rank 0, broadcast) match the uninterrupted run's
    assert torch.load(part / "ckpt.pt", weights_only=True)["trainer"]["mode"] == ck["trainer"]["mode"]


RANKS_AGREE = """
import sys, torch, torch.distributed as dist
from mmengine.config import load_config
from mmengine.train import Trainer
trainer = Trainer(load_config(sys.argv[1:]))
trainer.run()
sums = torch.stack([p.detach().double().sum() for p in trainer.raw_model.parameters()])
both = [torch.zeros_like(sums) for _ in range(2)]
dist.all_gather(both, sums)
if dist.get_rank() == 0:
    print("ranks differ by", (both[0] - both[1]).abs().max().item())
trainer.close()
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_two_process_transfer_and_unfreeze(data_dir, tmp_path):
    """Unfreezing re-wraps the model in DDP (it registers only trainable parameters): the trunk then trains,
    with its gradients averaged over the ranks, so both ranks hold the same weights."""
    from mmengine.train import train

    lm = train(load_config(argv(data_dir, tmp_path / "lm", "--train.max_iters=2",
                                "--train.eval_interval=2"))).checkpoint
    out = tmp_path / "tc"
    script = tmp_path / "ranks_agree.py"
    script.write_text(RANKS_AGREE)
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        str(script), *argv(data_dir, out, "--train.training_type=remasking_binary",
                                           "--train.max_iters=4", f"--transfer.init_from_checkpoint={lm}",
                                           "--transfer.freeze_transformer=true", "--transfer.unfreeze_at_iteration=2")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, failure(p)
    assert float(p.stdout.split("ranks differ by")[1].split()[0]) == 0.0, p.stdout
    recs, _ = train_losses(out)
    assert [r["iter"] for r in recs if r.get("event") == "unfreeze"] == [2]
    src, ck = torch.load(lm, weights_only=True), torch.load(out / "ckpt.pt", weights_only=True)
    assert ck["trainer"]["freeze"]["unfrozen_at"] == 2
    assert not torch.equal(ck["model"]["transformer.h.0.attn.c_attn.weight"],
                           src["model"]["transformer.h.0.attn.c_attn.weight"])

"""The memory lower bound: exact for weights and AdamW state, below what one micro-batch really keeps, and a size
that cannot fit refused in one sentence before anything is allocated."""
import itertools
from pathlib import Path

import pytest
import torch

from mmengine import memory
from mmengine.checkpoint import model_from_checkpoint
from mmengine.errors import CheckpointError, ConfigError
from mmengine.model import GPT, GPTConfig

CONFIGS = [
    GPTConfig(block_size=block, vocab_size=vocab, n_layer=layers, n_head=2, n_embd=width, bias=bias, use_rope=rope,
              mode=mode, num_token_classes=3, cls_token_id=vocab - 1 if mode == "sequence_scorer" else None)
    for (block, vocab, layers, width), bias, rope, mode in itertools.product(
        [(7, 13, 1, 12), (33, 70, 3, 20)], [False, True], [False, True],
        ["language_model", "token_classifier", "sequence_scorer"])
]


def ids(config):
    return f"{config.mode.value}-L{config.n_layer}-C{config.n_embd}-bias{int(config.bias)}-rope{int(config.use_rope)}"


@pytest.mark.parametrize("config", CONFIGS, ids=ids)
def test_parameter_count_and_weight_bytes_are_exact(config):
    model = GPT(config)
    assert memory.parameter_count(config) == sum(p.numel() for p in model.parameters())  # tied weights once
    held = sum(p.numel() * p.element_size() for p in model.parameters())
    held += sum(b.numel() * b.element_size() for b in model.buffers())
    assert memory.weight_bytes(config) == held


@pytest.mark.parametrize("config", CONFIGS[:2] + CONFIGS[-3:], ids=ids)
def test_gradients_and_adamw_state_are_exactly_twelve_bytes_a_parameter(config):
    model = GPT(config)
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.99), "cpu")
    B, T = 2, config.block_size
    x = torch.randint(0, config.vocab_size - 1, (B, T))
    y = torch.rand(B) if config.mode.value == "sequence_scorer" else torch.randint(0, 2, (B, T))
    if config.mode.value == "sequence_scorer":
        x[:, 0] = config.cls_token_id
    model(x, y)[1].backward()
    opt.step()
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters())
    moments = sum(v.numel() * v.element_size() for s in opt.state.values() for k, v in s.items() if k != "step")
    assert memory.training_bytes(config, B, T)["optimizer"] == grads + moments


@pytest.mark.parametrize("config", [c for c in CONFIGS if c.n_layer == 3], ids=ids)
def test_activations_are_a_lower_bound_of_what_backward_keeps(config):
    """The estimate never exceeds the bytes autograd saves for backward in one training forward."""
    model = GPT(config).train()
    B, T = 3, config.block_size
    x = torch.randint(0, config.vocab_size - 1, (B, T))
    if config.mode.value == "sequence_scorer":
        x[:, 0] = config.cls_token_id
    y = torch.rand(B) if config.mode.value == "sequence_scorer" else torch.randint(0, 2, (B, T))
    params = {p.data_ptr() for p in model.parameters()}
    seen, saved = set(), 0

    def pack(t):
        nonlocal saved
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if t.untyped_storage().data_ptr() not in params and key not in seen:  # weights are counted elsewhere
            seen.add(key)
            saved += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x, y)
    assert 0 < memory.training_bytes(config, B, T)["activations"] <= saved


def test_available_memory_is_known_on_this_machine():
    have = memory.available_bytes("cpu")
    total = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0]) * 1024
    assert have is not None and 0 < have <= total


def test_a_run_that_cannot_fit_is_refused_naming_what_to_change(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 10**9)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    wide = GPTConfig(block_size=64, vocab_size=100, n_layer=2, n_head=4, n_embd=8192)  # 1.6e9 parameters
    with pytest.raises(ConfigError, match=r"^this run needs at least .* of memory on cpu \(weights of [\d,]+ "
                                          r"parameters .*\) but 1.0 GB are available; make the model smaller"):
        memory.check_training_fits(wide, batch_size=1, seq_len=64, device="cpu")
    long = GPTConfig(block_size=64, vocab_size=100, n_layer=2, n_head=4, n_embd=64)
    with pytest.raises(ConfigError, match="micro-batch of 100000 x 64 tokens .* lower data.batch_size"):
        memory.check_training_fits(long, batch_size=100_000, seq_len=64, device="cpu")
    with pytest.raises(CheckpointError, match="^resuming checkpoint out/ckpt.pt needs .* the model_args of checkpoint "
                                              "out/ckpt.pt describe a model too large"):
        memory.check_training_fits(wide, batch_size=1, seq_len=64, device="cpu", source="out/ckpt.pt")
    memory.check_training_fits(long, batch_size=32, seq_len=64, device="cpu")  # 0.3 GB: fits
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # eight ranks share this machine's memory
    with pytest.raises(ConfigError, match="for 8 ranks"):
        memory.check_training_fits(long, batch_size=2000, seq_len=64, device="cpu")
    monkeypatch.setattr(memory, "available_bytes", lambda device: None)  # unknown: never refused
    memory.check_training_fits(wide, batch_size=1, seq_len=64, device="cpu")


def test_a_checkpoint_describing_an_absurd_model_is_refused_before_it_is_built():
    model = GPT(GPTConfig(block_size=8, vocab_size=20, n_layer=1, n_head=2, n_embd=8))
    args = {**model.config.to_dict(), "n_embd": 2_000_000, "n_head": 2}
    with pytest.raises(CheckpointError, match=r"^checkpoint c.pt describes a model of [\d,]+ parameters .* that needs "
                                              r"at least .* TB of memory, but .* are available on cpu"):
        model_from_checkpoint({"model": model.state_dict(), "model_args": args}, source="c.pt")

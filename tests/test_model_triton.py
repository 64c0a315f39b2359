"""The model with backend "triton" (kernels run by Triton's CPU interpreter) against "torch".

conftest.py sets TRITON_INTERPRET=1 before triton is imported. Each test skips, saying why,
while mmengine.kernels does not yet provide a working kernel, and runs as soon as it does.
"""
import os

import pytest
import torch

from mmengine.model import GPT, GPTConfig

kernels = pytest.importorskip("mmengine.kernels", reason="mmengine.kernels does not import")

B, T, V = 2, 8, 24


def _require(name):
    if not hasattr(kernels, name):
        pytest.skip(f"mmengine.kernels does not provide {name} yet")
    if not (hasattr(kernels, "triton_available") and kernels.triton_available()):
        pytest.skip("triton is not installed")
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("TRITON_INTERPRET=1 is needed to run the kernels on CPU")


def _probe_cross_entropy():
    try:
        kernels.class_weighted_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1]), weight=None, reduction="sum")
    except NotImplementedError:
        pytest.skip("mmengine.kernels.class_weighted_cross_entropy is not implemented yet")


def _pair(mode, attention, loss, **kw):
    cfg = dict(block_size=16, vocab_size=V, n_layer=1, n_head=2, n_embd=32, dropout=0.0, bias=True,
               attention_type="bidirectional", use_rope=True, mode=mode, num_token_classes=3)
    cfg.update(kw)
    torch.manual_seed(0)
    ref = GPT(GPTConfig(**cfg, attention_backend="torch", loss_backend="torch"))
    fused = GPT(GPTConfig(**cfg, attention_backend=attention, loss_backend=loss))
    fused.load_state_dict(ref.state_dict())
    return ref, fused


def _run(model, idx, targets, lengths):
    model.zero_grad(set_to_none=True)
    logits, loss = model(idx, targets, lengths=lengths)
    loss.backward()
    return logits.detach(), loss.detach(), {n: p.grad for n, p in model.named_parameters()}


def _compare(ref, fused, idx, targets, lengths=None, real=None):
    l1, s1, g1 = _run(ref, idx, targets, lengths)
    l2, s2, g2 = _run(fused, idx, targets, lengths)
    if real is not None:  # padded query rows are unspecified (the kernel writes zeros there)
        l1, l2 = l1[real], l2[real]
    torch.testing.assert_close(l2, l1, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(s2, s1, rtol=1e-4, atol=1e-6)
    for name in g1:
        torch.testing.assert_close(g2[name], g1[name], rtol=1e-3, atol=1e-5, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("attention_type", ["causal", "bidirectional"])
@pytest.mark.parametrize("use_rope", [True, False])
def test_language_model_attention_kernel_matches_torch(attention_type, use_rope):
    _require("rope_attention")
    ref, fused = _pair("language_model", "triton", "torch", attention_type=attention_type, use_rope=use_rope)
    gen = torch.Generator().manual_seed(1)
    idx = torch.randint(0, V, (B, T), generator=gen)
    targets = torch.randint(0, V, (B, T), generator=gen)
    targets[:, ::3] = -1
    _compare(ref, fused, idx, targets)


def test_scorer_with_padding_attention_kernel_matches_torch():
    _require("rope_attention")
    ref, fused = _pair("sequence_scorer", "triton", "torch")
    idx = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(2))
    _compare(ref, fused, idx, torch.tensor([0.2, 0.8]), lengths=torch.tensor([T, 5]))


def test_token_classifier_kernels_match_torch():
    _require("rope_attention")
    _require("class_weighted_cross_entropy")
    _probe_cross_entropy()
    ref, fused = _pair("token_classifier", "triton", "triton")
    gen = torch.Generator().manual_seed(3)
    idx = torch.randint(0, V, (B, T), generator=gen)
    lengths = torch.tensor([T, 6])
    targets = torch.zeros(B, T, dtype=torch.long)
    targets[0, :3] = 2  # class 1 absent
    targets[1, 6:] = -1  # padding is ignored
    real = torch.arange(T)[None, :] < lengths[:, None]
    _compare(ref, fused, idx, targets, lengths=lengths, real=real)


def test_language_model_loss_kernel_matches_torch_including_all_ignored():
    _require("class_weighted_cross_entropy")
    _probe_cross_entropy()
    ref, fused = _pair("language_model", "torch", "triton")
    gen = torch.Generator().manual_seed(4)
    idx = torch.randint(0, V, (B, T), generator=gen)
    targets = torch.randint(0, V, (B, T), generator=gen)
    targets[0] = -1
    _compare(ref, fused, idx, targets)
    _, loss, grads = _run(fused, idx, torch.full_like(targets, -1), None)
    assert loss.item() == 0.0 and all(torch.count_nonzero(g) == 0 for g in grads.values() if g is not None)

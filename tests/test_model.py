"""GPT: layout, config validation, attention paths, padding, losses per mode, freezing."""
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from mmengine import losses
from mmengine.model import (
    GPT,
    GPTConfig,
    ModelMode,
    apply_rope,
    eager_attention,
    rope_cos_sin,
    sdpa_attention,
)

V, T = 40, 12


def tiny(mode="language_model", **kw):
    base = dict(block_size=16, vocab_size=V, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=True,
                attention_type="bidirectional", use_rope=True, mode=mode, num_token_classes=3,
                attention_backend="torch", loss_backend="torch")
    base.update(kw)
    return GPTConfig(**base)


def model(mode="language_model", seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(tiny(mode, **kw)).eval()


def tokens(B=3, seed=1):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


# --- layout and config ----------------------------------------------------------


def test_parameter_names_are_the_nanogpt_layout():
    m = model(use_rope=False, n_layer=1, bias=True, attention_type="causal")
    names = set(m.state_dict())
    assert names == {
        "transformer.wte.weight", "transformer.wpe.weight",
        "transformer.h.0.ln_1.weight", "transformer.h.0.ln_1.bias",
        "transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_attn.bias",
        "transformer.h.0.attn.c_proj.weight", "transformer.h.0.attn.c_proj.bias",
        "transformer.h.0.ln_2.weight", "transformer.h.0.ln_2.bias",
        "transformer.h.0.mlp.c_fc.weight", "transformer.h.0.mlp.c_fc.bias",
        "transformer.h.0.mlp.c_proj.weight", "transformer.h.0.mlp.c_proj.bias",
        "transformer.ln_f.weight", "transformer.ln_f.bias", "lm_head.weight",
    }
    assert m.state_dict()["transformer.h.0.mlp.c_fc.weight"].shape == (128, 32)
    rope_nobias = model(use_rope=True, bias=False, n_layer=1)
    assert not any(k.endswith(".bias") or "wpe" in k for k in rope_nobias.state_dict())
    assert set(model("token_classifier").state_dict()) - set(model().state_dict()) == set()
    assert model("token_classifier").lm_head.weight.shape == (3, 32)
    scorer = set(model("sequence_scorer").state_dict())
    assert "sequence_head.0.weight" in scorer and "lm_head.weight" not in scorer


def test_language_model_head_is_tied_and_init_follows_gpt2():
    # n_layer=3: residual projections get 0.02 / sqrt(6) ~ 0.0082, far from 0.02 / sqrt(3) ~ 0.0115
    m = model(n_embd=64, n_layer=3, bias=True, use_rope=False)
    assert m.lm_head.weight is m.transformer.wte.weight
    for name, p in m.named_parameters():
        if name.endswith("c_proj.weight"):
            assert p.std().item() == pytest.approx(0.02 / math.sqrt(2 * 3), rel=0.1), name
        elif name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight"):
            assert torch.equal(p, torch.ones_like(p)), name
        elif name.endswith(".bias"):
            assert torch.count_nonzero(p) == 0, name
        else:  # wte (= lm_head), wpe, c_attn, c_fc
            assert p.std().item() == pytest.approx(0.02, rel=0.1), name
            assert p.mean().abs().item() < 0.005, name
    classifier = model("token_classifier", n_embd=256, n_head=4, n_layer=1, num_token_classes=4)
    assert classifier.lm_head.weight is not classifier.transformer.wte.weight  # not tied
    assert classifier.lm_head.weight.std().item() == pytest.approx(0.02, rel=0.15)
    assert classifier.lm_head.bias is None
    scorer = model("sequence_scorer", n_embd=256, n_head=4, n_layer=1)
    assert scorer.sequence_head[0].weight.shape == (1, 256) and scorer.sequence_head[0].bias is None
    assert scorer.sequence_head[0].weight.std().item() == pytest.approx(0.002, rel=0.25)
    assert isinstance(scorer.sequence_head[1], torch.nn.Sigmoid)


def test_config_accepts_mode_strings_and_forces_bidirectional_for_classifiers():
    assert tiny("token_classifier").mode is ModelMode.TOKEN_CLASSIFIER
    assert tiny(ModelMode.SEQUENCE_SCORER).mode == "sequence_scorer"
    with pytest.warns(UserWarning, match="bidirectional"):
        cfg = tiny("sequence_scorer", attention_type="causal")
    assert cfg.attention_type == "bidirectional"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tiny(attention_type="causal").attention_type == "causal"
    assert tiny().to_dict()["mode"] == "language_model"


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(n_embd=30, n_head=4), "divisible"),
        (dict(n_embd=30, n_head=10), "even head size"),
        (dict(num_token_classes=1), "num_token_classes"),
        (dict(cls_token_id=V), "cls_token_id"),
        (dict(cls_token_id=-1), "cls_token_id"),
        (dict(cls_token_id="7"), "cls_token_id"),
        (dict(cls_token_id=True), "cls_token_id"),
        (dict(mode="bert"), "unknown model mode"),
        (dict(attention_type="sliding"), "attention_type"),
        (dict(attention_backend="cuda"), "attention_backend"),
        (dict(loss_backend="fast"), "loss_backend"),
        (dict(n_layer=0), "n_layer"),
    ],
)
def test_config_rejects_impossible_values(kw, message):
    with pytest.raises(ValueError, match=message):
        tiny(**kw)


def test_odd_head_size_is_fine_without_rope():
    assert tiny(n_embd=30, n_head=10, use_rope=False).head_dim == 3


def test_cls_token_id_from_numpy_metadata_is_stored_as_a_plain_int():
    np = pytest.importorskip("numpy")
    cfg = tiny("sequence_scorer", cls_token_id=np.int64(V - 1))
    assert type(cfg.cls_token_id) is int and cfg.to_dict()["cls_token_id"] == V - 1


# --- the whole forward against the architecture written out independently -----------------


def reference_forward(m: GPT, idx: torch.Tensor, lengths=None) -> torch.Tensor:
    """The issue's architecture in float64 from the state dict alone, sharing no code with
    mmengine.model: RoPE as a complex rotation of the pairs (i, i + D/2), erf GELU, explicit masks.
    Returns logits (B, T, V|C) for the token modes and scores (B,) for the scorer."""
    cfg = m.config
    sd = {k: v.double() for k, v in m.state_dict().items()}
    B, T = idx.shape
    C, H = cfg.n_embd, cfg.n_head
    D = C // H

    def norm(x, name):
        return F.layer_norm(x, (C,), sd[name + ".weight"], sd.get(name + ".bias"), eps=1e-5)

    def linear(x, name):
        return F.linear(x, sd[name + ".weight"], sd.get(name + ".bias"))

    angle = torch.arange(T, dtype=torch.float64)[:, None] / 10000.0 ** (torch.arange(0, D, 2, dtype=torch.float64) / D)

    def rotate(t):  # (B, H, T, D)
        z = torch.complex(t[..., : D // 2], t[..., D // 2:]) * torch.exp(1j * angle)
        return torch.cat([z.real, z.imag], dim=-1)

    allowed = torch.ones(T, T, dtype=torch.bool)
    if cfg.attention_type == "causal":
        allowed = allowed.tril()
    allowed = allowed.expand(B, 1, T, T)
    rows = torch.ones(B, 1, T, 1, dtype=torch.float64)
    if lengths is not None:
        allowed = allowed & (torch.arange(T)[None, :] < lengths[:, None])[:, None, None, :]
        # the engine's one padding rule: a query row past its length outputs zero attention
        rows = (torch.arange(T)[None, :] < lengths[:, None]).double()[:, None, :, None]

    x = sd["transformer.wte.weight"][idx]
    if not cfg.use_rope:
        x = x + sd["transformer.wpe.weight"][:T]
    for i in range(cfg.n_layer):
        p = f"transformer.h.{i}."
        qkv = linear(norm(x, p + "ln_1"), p + "attn.c_attn").view(B, T, 3, H, D).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if cfg.use_rope:
            q, k = rotate(q), rotate(k)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(D)
        attn = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
        x = x + linear((attn @ v * rows).transpose(1, 2).reshape(B, T, C), p + "attn.c_proj")
        h = linear(norm(x, p + "ln_2"), p + "mlp.c_fc")
        x = x + linear(0.5 * h * (1 + torch.erf(h / math.sqrt(2))), p + "mlp.c_proj")
    x = norm(x, "transformer.ln_f")
    if cfg.mode is ModelMode.SEQUENCE_SCORER:
        return torch.sigmoid(x[:, 0] @ sd["sequence_head.0.weight"][0])
    return x @ sd["lm_head.weight"].T


REFERENCE_CASES = [
    dict(mode="language_model", attention_type="causal", use_rope=True, bias=True),
    dict(mode="language_model", attention_type="causal", use_rope=True, bias=False, lengths=True),
    dict(mode="language_model", attention_type="bidirectional", use_rope=False, bias=False, lengths=True),
    dict(mode="token_classifier", use_rope=True, bias=False, lengths=True),
    dict(mode="token_classifier", use_rope=False, bias=True),
    dict(mode="sequence_scorer", use_rope=True, bias=True, lengths=True),
    dict(mode="sequence_scorer", use_rope=False, bias=False),
]


@pytest.mark.parametrize("backend", ["torch", "eager"])
@pytest.mark.parametrize("case", REFERENCE_CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_forward_matches_an_independent_reference(case, backend):
    case = dict(case)
    lengths = torch.tensor([T, 7, 3]) if case.pop("lengths", False) else None
    m = model(n_layer=2, attention_backend=backend, **case)
    # weights far from their small init, so that every part of the formula moves the logits
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.5 if p.dim() > 1 else 0.3) + (p.dim() == 1))
        if m.config.mode is ModelMode.SEQUENCE_SCORER:
            m.sequence_head[0].weight.mul_(0.3)  # keep the sigmoid out of saturation
    idx = tokens()
    want = reference_forward(m, idx, lengths)
    dummy = None if m.config.mode is ModelMode.SEQUENCE_SCORER else torch.zeros_like(idx)  # all positions
    got = m(idx, dummy, lengths=lengths)[0]
    # a comparison of near-constant numbers would prove nothing
    assert want.std() > 0.02
    if m.config.mode is ModelMode.SEQUENCE_SCORER:
        assert ((want > 0.02) & (want < 0.98)).all()
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)


# --- RoPE and attention ------------------------------------------------------------


def test_rope_matches_complex_rotation_of_half_pairs():
    D, n = 8, 5
    x = torch.randn(1, 1, n, D, dtype=torch.float64)
    cos, sin = rope_cos_sin(n, D)
    got = apply_rope(x, cos.double(), sin.double())
    # pair (i, i + D/2) as a complex number, rotated by position * 10000^(-2i/D)
    z = torch.complex(x[..., : D // 2], x[..., D // 2:])
    theta = torch.arange(n, dtype=torch.float64)[:, None] * 10000.0 ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    r = z * torch.exp(1j * theta)
    torch.testing.assert_close(got, torch.cat([r.real, r.imag], -1), rtol=1e-6, atol=1e-6)


def test_rope_scores_depend_only_on_relative_position():
    D = 16
    cos, sin = rope_cos_sin(12, D)
    q, k = torch.randn(D, dtype=torch.float64), torch.randn(D, dtype=torch.float64)

    def score(i, j):
        qi = apply_rope(q.expand(1, 1, 12, D), cos.double(), sin.double())[0, 0, i]
        kj = apply_rope(k.expand(1, 1, 12, D), cos.double(), sin.double())[0, 0, j]
        return (qi * kj).sum()

    torch.testing.assert_close(score(3, 1), score(9, 7))
    torch.testing.assert_close(score(0, 4), score(5, 9))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_sdpa_matches_eager_attention(causal, with_lengths):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, T, 8, generator=gen, dtype=torch.float64) for _ in range(3))
    lengths = torch.tensor([T, 5, 1]) if with_lengths else None
    want = eager_attention(q, k, v, causal=causal, lengths=lengths)
    got = sdpa_attention(q, k, v, causal=causal, lengths=lengths)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("mode", ["language_model", "token_classifier", "sequence_scorer"])
@pytest.mark.parametrize("use_rope", [True, False])
def test_model_sdpa_and_eager_paths_agree(mode, use_rope):
    idx, lengths = tokens(), torch.tensor([T, 7, 3])
    for attention_type in ("bidirectional", "causal") if mode == "language_model" else ("bidirectional",):
        a = model(mode, use_rope=use_rope, attention_type=attention_type, attention_backend="torch")
        b = model(mode, use_rope=use_rope, attention_type=attention_type, attention_backend="eager")
        b.load_state_dict(a.state_dict())
        for lens in (None, lengths):
            torch.testing.assert_close(a(idx, lengths=lens)[0], b(idx, lengths=lens)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend, sdpa_calls", [("auto", 2), ("torch", 2), ("eager", 0)])
def test_cpu_attention_is_sdpa_on_rotated_queries_and_keys(monkeypatch, backend, sdpa_calls):
    m = model("token_classifier", attention_backend=backend)  # n_layer=2
    idx = tokens()
    calls = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        calls.append((q, k))
        return real(q, k, v, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    m(idx)
    assert len(calls) == sdpa_calls
    if calls:  # RoPE comes before SDPA: the queries it gets are the rotated ones
        block = m.transformer.h[0]
        x = m.transformer.wte(idx)
        q, k, _ = block.attn.c_attn(block.ln_1(x)).split(32, dim=2)
        q = q.view(3, T, 2, 16).transpose(1, 2)
        cos, sin = rope_cos_sin(T, 16)
        torch.testing.assert_close(calls[0][0], apply_rope(q, cos, sin))


def test_causal_model_ignores_the_future_and_bidirectional_does_not():
    idx = tokens(B=1)
    changed = idx.clone()
    changed[0, 8] = (changed[0, 8] + 1) % V
    causal = model(attention_type="causal")
    h1, h2 = causal.encode(idx), causal.encode(changed)
    torch.testing.assert_close(h1[:, :8], h2[:, :8])
    assert not torch.allclose(h1[:, 8:], h2[:, 8:])
    bidir = model(attention_type="bidirectional")
    assert not torch.allclose(bidir.encode(idx)[:, :8], bidir.encode(changed)[:, :8])


@pytest.mark.parametrize("backend", ["torch", "eager"])
def test_padding_does_not_change_scores_or_real_positions(backend):
    gen = torch.Generator().manual_seed(4)
    lengths = torch.tensor([T, 6, 2, 0])
    a = torch.randint(0, V, (4, T), generator=gen)
    b = a.clone()
    pad = torch.arange(T)[None, :] >= lengths[:, None]
    b[pad] = torch.randint(0, V, (int(pad.sum()),), generator=gen)  # different junk in the padding
    scorer = model("sequence_scorer", attention_backend=backend)
    sa, sb = scorer(a, lengths=lengths)[0], scorer(b, lengths=lengths)[0]
    torch.testing.assert_close(sa[:3], sb[:3])
    assert torch.isfinite(sa).all() and torch.isfinite(sb).all()
    assert not torch.allclose(scorer(a)[0][1:3], scorer(b)[0][1:3])  # without lengths the junk matters
    clf = model("token_classifier", attention_backend=backend)
    la, lb = clf(a, lengths=lengths)[0], clf(b, lengths=lengths)[0]
    real = ~pad
    torch.testing.assert_close(la[real], lb[real])
    assert torch.isfinite(la).all()  # query rows beyond the length stay finite


@pytest.mark.parametrize("mode", ["language_model", "token_classifier", "sequence_scorer"])
def test_training_step_never_reads_values_back_to_the_host(mode):
    """On the meta device nothing has a value: .item(), torch.unique, bincount, nonzero and
    boolean-mask indexing all raise there, so a step that runs never syncs a GPU either."""
    with torch.device("meta"):
        m = GPT(tiny(mode))
    idx = torch.randint(0, V, (3, T), device="meta")
    targets = {
        "language_model": torch.randint(0, V, (3, T), device="meta"),
        "token_classifier": torch.randint(0, 3, (3, T), device="meta"),
        "sequence_scorer": torch.rand(3, device="meta"),
    }[mode]
    logits, loss = m(idx, targets, lengths=torch.tensor([T, 5, 1], device="meta"))
    loss.backward()
    assert loss.shape == () and all(p.grad is not None for p in m.parameters())


def test_padded_scorer_batch_has_finite_gradients():
    scorer = model("sequence_scorer").train()
    lengths = torch.tensor([T, 3, 1])
    _, loss = scorer(tokens(), torch.tensor([0.1, 0.5, 0.9]), lengths=lengths)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in scorer.parameters())


# --- outputs and losses per mode ------------------------------------------------------


def test_outputs_without_targets():
    idx = tokens()
    logits, loss = model(attention_type="causal")(idx)
    assert logits.shape == (3, 1, V) and loss is None  # generation: last position only
    assert model(attention_type="bidirectional")(idx)[0].shape == (3, T, V)
    assert model("token_classifier")(idx)[0].shape == (3, T, 3)
    scores, loss = model("sequence_scorer")(idx)
    assert scores.shape == (3,) and loss is None and ((scores > 0) & (scores < 1)).all()


def test_causal_last_position_matches_full_logits():
    m = model(attention_type="causal")
    idx = tokens()
    full, _ = m(idx, torch.zeros_like(idx))
    last, _ = m(idx)
    torch.testing.assert_close(last[:, 0], full[:, -1])


def test_language_model_losses():
    m = model()
    idx = tokens()
    targets = tokens(seed=9)
    targets[:, ::2] = -1  # only "masked" positions count
    logits, loss = m(idx, targets)
    torch.testing.assert_close(loss, F.cross_entropy(logits.view(-1, V), targets.view(-1), ignore_index=-1))
    soft = torch.softmax(torch.randn(3, T, V), -1)
    logits, soft_loss = m(idx, soft)
    torch.testing.assert_close(soft_loss, -(soft * torch.log_softmax(logits, -1)).sum(-1).mean())
    with pytest.raises(ValueError, match="shape"):
        m(idx, targets[:, :4])


def test_token_classifier_uses_class_balanced_loss():
    m = model("token_classifier")
    idx = tokens()
    targets = torch.zeros(3, T, dtype=torch.long)
    targets[0, :2] = 2  # class 1 absent, class 2 rare
    targets[1, 5:] = -1
    logits, loss = m(idx, targets)
    w = losses.class_balanced_weights(targets, 3)
    assert w[1] == 0 and w[2] > w[0]
    torch.testing.assert_close(
        loss, F.cross_entropy(logits.view(-1, 3), targets.view(-1), weight=w, ignore_index=-1)
    )
    _, all_ignored = m(idx, torch.full_like(targets, -1))
    assert all_ignored.item() == 0.0
    soft = torch.softmax(torch.randn(3, T, 3), -1)
    logits, soft_loss = m(idx, soft)
    torch.testing.assert_close(soft_loss, -(soft * torch.log_softmax(logits, -1)).sum(-1).mean())


def test_sequence_scorer_mse_on_cls_position():
    m = model("sequence_scorer")
    idx = tokens()
    target = torch.tensor([0.0, 0.5, 1.0])
    scores, loss = m(idx, target)
    torch.testing.assert_close(loss, F.mse_loss(scores, target))
    torch.testing.assert_close(scores, m.sequence_head(m.encode(idx)[:, 0]).squeeze(-1))


def test_sequence_longer_than_block_is_rejected():
    with pytest.raises(ValueError, match="block_size"):
        model()(torch.zeros(1, 17, dtype=torch.long))


# --- freezing and the optimizer -------------------------------------------------------


def _train_steps(m, opt, n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(n):
        idx = torch.randint(0, V, (2, T), generator=gen)
        target = torch.rand(2, generator=gen)
        opt.zero_grad(set_to_none=True)
        m(idx, target)[1].backward()
        opt.step()


def test_unfreezing_keeps_adam_state_and_frozen_params_do_not_move():
    m = model("sequence_scorer").train()
    m.freeze_transformer_weights()
    assert m.get_frozen_status()
    opt = m.configure_optimizers(weight_decay=0.1, learning_rate=1e-2, betas=(0.9, 0.95), device_type="cpu")
    all_params = {id(p) for g in opt.param_groups for p in g["params"]}
    assert all_params == {id(p) for p in m.parameters()}  # frozen ones included
    trunk_before = {k: v.clone() for k, v in m.transformer.state_dict().items()}
    head = m.sequence_head[0].weight
    head_before = head.detach().clone()
    _train_steps(m, opt, 3)
    for k, v in m.transformer.state_dict().items():
        assert torch.equal(v, trunk_before[k]), k
    assert not torch.equal(head, head_before)
    assert int(opt.state[head]["step"]) == 3
    assert not any(p in opt.state for p in m.transformer.parameters())
    exp_avg = opt.state[head]["exp_avg"].clone()

    m.unfreeze_transformer_weights()
    assert not m.get_frozen_status()
    _train_steps(m, opt, 1, seed=1)
    assert int(opt.state[head]["step"]) == 4  # same optimizer, state continued
    assert not torch.equal(opt.state[head]["exp_avg"], exp_avg)
    wte = m.transformer.wte.weight
    assert int(opt.state[wte]["step"]) == 1
    assert not torch.equal(wte, trunk_before["wte.weight"])


def test_freezing_drops_stale_trunk_gradients():
    m = model("token_classifier")
    m(tokens(), torch.zeros(3, T, dtype=torch.long))[1].backward()
    m.freeze_transformer_weights()
    assert all(p.grad is None for p in m.transformer.parameters())
    assert m.lm_head.weight.grad is not None


def test_freezing_a_language_model_keeps_the_tied_embedding_trainable():
    m = model()
    m.freeze_transformer_weights()
    assert m.transformer.wte.weight.requires_grad
    assert not m.transformer.h[0].attn.c_attn.weight.requires_grad
    assert m.get_frozen_status()
    status = m.print_parameter_status()
    assert status["trunk_trainable"] == V * 32 and status["frozen"]


def test_parameter_status_figures():
    m = model("token_classifier")
    full = m.print_parameter_status()
    assert full["head_total"] == full["head_trainable"] == 3 * 32
    assert full["trunk_trainable"] == full["trunk_total"] and full["total"] == sum(p.numel() for p in m.parameters())
    m.freeze_transformer_weights()
    frozen = m.print_parameter_status()
    assert frozen["trunk_trainable"] == 0 and frozen["trainable"] == 3 * 32 and frozen["frozen"]


def test_configure_optimizers_decays_matrices_only():
    m = model("token_classifier")
    opt = m.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    names = {g["name"]: g for g in opt.param_groups}
    assert set(names) == {"trunk_decay", "trunk_no_decay", "head_decay"}
    for g in opt.param_groups:
        assert all((p.dim() >= 2) == (g["weight_decay"] == 0.1) for p in g["params"])
        assert g["lr_scale"] == 1.0 and g["trunk"] == g["name"].startswith("trunk")
    n = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n == sum(p.numel() for p in m.parameters())


# --- accounting --------------------------------------------------------------------------


def test_num_params_and_flops():
    m = model(use_rope=False)
    total = sum(p.numel() for p in m.parameters())
    assert m.get_num_params(non_embedding=False) == total
    assert m.get_num_params() == total - 16 * 32
    N = m.get_num_params()
    assert m.flops_per_token() == 6 * N + 12 * 2 * 2 * 16 * 16
    mfu = m.estimate_mfu(fwdbwd_per_iter=4, dt=0.5, peak_flops=1e12)
    assert mfu == pytest.approx(m.flops_per_token() * 16 * 4 / 0.5 / 1e12)


def test_triton_forced_with_attention_dropout_is_refused():
    m = GPT(tiny(dropout=0.1, attention_backend="triton")).train()
    kernels = pytest.importorskip("mmengine.kernels")
    if not hasattr(kernels, "rope_attention"):
        with pytest.raises(RuntimeError, match="rope_attention"):
            m(tokens())
    else:
        with pytest.raises(ValueError, match="dropout"):
            m(tokens())


def test_auto_backend_uses_torch_on_cpu(monkeypatch):
    kernels = pytest.importorskip("mmengine.kernels")

    def boom(*a, **k):
        raise AssertionError("kernel called for a CPU tensor under 'auto'")

    for name in ("rope_attention", "class_weighted_cross_entropy"):
        monkeypatch.setattr(kernels, name, boom, raising=False)
    monkeypatch.setattr(kernels, "triton_available", lambda: True, raising=False)
    m = model("token_classifier", attention_backend="auto", loss_backend="auto")
    m(tokens(), torch.zeros(3, T, dtype=torch.long))

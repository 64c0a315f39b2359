"""Checkpoints: round trips, atomic saves, clear errors, every legacy conversion, transfer."""
import logging
import os
import warnings

import pytest
import torch

import mmengine.checkpoint as ckpt_mod
from mmengine.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from mmengine.model import GPT, GPTConfig, ModelMode
from mmengine.transfer import build_model, load_trunk

V, T = 30, 10


def config(mode="language_model", **kw):
    base = dict(block_size=16, vocab_size=V, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=True,
                attention_type="bidirectional", use_rope=True, mode=mode, num_token_classes=3,
                attention_backend="torch", loss_backend="torch")
    base.update(kw)
    return GPTConfig(**base)


def model(mode="language_model", seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(config(mode, **kw)).eval()


def idx(B=2, vocab=V, seed=1):
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


def logits(m, x=None):
    with torch.no_grad():
        return m.eval()(idx() if x is None else x)[0]


# --- round trips ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["language_model", "token_classifier", "sequence_scorer"])
def test_round_trip_reproduces_logits_and_state(tmp_path, mode):
    m = model(mode)
    opt = m.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    m.train()
    target = {"language_model": idx(seed=5), "token_classifier": idx(seed=5) % 3,
              "sequence_scorer": torch.rand(2)}[mode]
    m(idx(), target)[1].backward()
    opt.step()
    path = save_checkpoint(tmp_path / "ckpt.pt", m, opt, iter_num=7, best_val_loss=1.25,
                           config={"lr": 1e-3}, sampler={"epoch": 1, "position": 4})
    raw = torch.load(path, weights_only=True)  # plain values only
    assert raw["model_args"]["mode"] == mode and isinstance(raw["model_args"]["mode"], str)
    assert ((raw["iter_num"], raw["best_val_loss"], raw["config"], raw["sampler"])
            == (7, 1.25, {"lr": 1e-3}, {"epoch": 1, "position": 4}))
    loaded = load_model(path)
    torch.testing.assert_close(logits(loaded), logits(m), rtol=0, atol=0)
    opt2 = loaded.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    opt2.load_state_dict(raw["optimizer"])
    assert int(opt2.state_dict()["state"][0]["step"]) == 1
    assert loaded.config == m.config


def test_tied_weights_survive_save_and_load(tmp_path):
    m = model()
    save_checkpoint(tmp_path / "lm.pt", m)
    loaded = load_model(tmp_path / "lm.pt")
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    with torch.no_grad():
        loaded.transformer.wte.weight[0].add_(1.0)
    assert torch.equal(loaded.lm_head.weight[0], loaded.transformer.wte.weight[0])


def test_load_model_overrides(tmp_path):
    save_checkpoint(tmp_path / "a.pt", model(dropout=0.1))
    loaded = load_model(tmp_path / "a.pt", dropout=0.0, attention_backend="eager")
    assert loaded.config.dropout == 0.0 and loaded.config.attention_backend == "eager"
    with pytest.raises(ValueError, match="unknown model overrides"):
        load_model(tmp_path / "a.pt", n_layers=3)
    with pytest.raises(CheckpointError, match="missing keys transformer.h.2"):
        load_model(tmp_path / "a.pt", n_layer=3)


def test_save_refuses_values_the_safe_loader_could_not_read(tmp_path):
    with pytest.raises(TypeError, match="'extra'"):
        save_checkpoint(tmp_path / "x.pt", model(), extra=object())
    with pytest.raises(TypeError, match="model_args"):
        save_checkpoint(tmp_path / "x.pt", model(), model_args={"n_layer": 5})
    assert list(tmp_path.iterdir()) == []


def test_save_converts_enums_paths_and_dataclasses(tmp_path):
    save_checkpoint(tmp_path / "x.pt", model(), config={"mode": ModelMode.SEQUENCE_SCORER, "out": tmp_path},
                    model_config=config("sequence_scorer"))
    raw = torch.load(tmp_path / "x.pt", weights_only=True)
    assert raw["config"] == {"mode": "sequence_scorer", "out": str(tmp_path)}
    assert raw["model_config"]["mode"] == "sequence_scorer"


# --- atomic save ---------------------------------------------------------------------------


def test_failure_mid_save_keeps_the_old_checkpoint_and_leaves_no_litter(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    old = model(seed=0)
    save_checkpoint(path, old, iter_num=1)
    before = path.read_bytes()
    real_save = torch.save

    def crash_halfway(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.seek(len(before) // 2)
        f.truncate()  # half of a checkpoint is on disk ...
        raise OSError("disk full")  # ... when the writer dies

    monkeypatch.setattr(torch, "save", crash_halfway)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model(seed=1), iter_num=2)
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]
    assert load_checkpoint(path)["iter_num"] == 1


def test_save_fsyncs_the_data_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.fstat(fd).st_size)), real_fsync(fd)))
    monkeypatch.setattr(os, "replace",
                        lambda a, b: (events.append(("replace", os.path.dirname(a))), real_replace(a, b)))
    path = save_checkpoint(tmp_path / "ckpt.pt", model())
    size = path.stat().st_size
    # the whole file reaches the disk, then the rename happens in the same folder (then the folder is synced)
    assert events[:2] == [("fsync", size), ("replace", str(tmp_path))]


def test_save_replaces_and_creates_folders(tmp_path):
    path = tmp_path / "run" / "ckpt.pt"
    save_checkpoint(path, model(seed=0), iter_num=1)
    save_checkpoint(path, model(seed=1), iter_num=2)
    assert load_checkpoint(path)["iter_num"] == 2
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt.pt"]


# --- clear errors ------------------------------------------------------------------------------


class Foreign:
    pass


def _zip_of_text(path):
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        z.writestr("notes.txt", "a zip file, but not a torch checkpoint")


def _corrupt_middle(path, good):
    data = bytearray(good.read_bytes())
    data[len(data) // 2: len(data) // 2 + 256] = bytes(256)
    path.write_bytes(bytes(data))


# (file name, how to write it from a good checkpoint, what the error says after the file name)
BAD_FILES = [
    ("empty.pt", lambda p, good: p.write_bytes(b""), "is empty"),
    ("notes.pt", lambda p, good: p.write_text("hello, not a checkpoint\n"), "cannot be read"),
    ("archive.pt", lambda p, good: _zip_of_text(p),
     "cannot be read; it is truncated, corrupt or not a torch checkpoint"),
    ("corrupt.pt", _corrupt_middle, "is corrupt: the bytes of its record .* do not match the checksum"),
    ("unsafe.pt", lambda p, good: torch.save({"model": {}, "thing": Foreign()}, p),
     "holds objects other than tensors.*Foreign"),
    ("list.pt", lambda p, good: torch.save([1, 2, 3], p), "holds a list"),
    ("nomodel.pt", lambda p, good: torch.save({"step": 1}, p), "has no 'model' entry"),
]


@pytest.mark.parametrize("name, write, message", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_unreadable_or_foreign_files_name_the_file(tmp_path, name, write, message):
    good = save_checkpoint(tmp_path / "good.pt", model())
    write(tmp_path / name, good)
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.") + " " + message):
        load_model(tmp_path / name)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.99, -1])
def test_truncated_file_names_the_file(tmp_path, keep):
    good = save_checkpoint(tmp_path / "good.pt", model())
    data = good.read_bytes()
    size = len(data) - 1 if keep == -1 else int(len(data) * keep)  # -1: only the last byte lost
    (tmp_path / "cut.pt").write_bytes(data[:size])
    with pytest.raises(CheckpointError, match=r"cut\.pt cannot be read; it is truncated"):
        load_model(tmp_path / "cut.pt")


def test_missing_file_and_folder_name_the_path(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.pt does not exist"):
        load_model(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="is not a file"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match=r"nope\.pt does not exist"):
        build_model(config(), init_from=str(tmp_path / "nope.pt"))


def test_every_load_is_weights_only(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "a.pt", model())
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_model(tmp_path / "a.pt")
    build_model(config("token_classifier"), init_from=str(tmp_path / "a.pt"))
    assert calls == [True, True]


def test_checkpoint_saved_without_crc_still_loads(tmp_path):
    writer = model()
    torch.serialization.set_crc32_options(False)
    try:
        save_checkpoint(tmp_path / "nocrc.pt", writer)
    finally:
        torch.serialization.set_crc32_options(True)
    torch.testing.assert_close(logits(load_model(tmp_path / "nocrc.pt")), logits(writer), rtol=0, atol=0)


def test_pre_zip_serialization_still_loads(tmp_path):
    """torch.save before PyTorch 1.6 (or with _use_new_zipfile_serialization=False)."""
    writer = model("token_classifier")
    path = tmp_path / "old-format.pt"
    torch.save({"model": writer.state_dict(), "model_args": writer.config.to_dict()}, path,
               _use_new_zipfile_serialization=False)
    torch.testing.assert_close(logits(load_model(path)), logits(writer), rtol=0, atol=0)
    (tmp_path / "old-cut.pt").write_bytes(path.read_bytes()[:-40])
    with pytest.raises(CheckpointError, match=r"old-cut\.pt cannot be read; it is truncated"):
        load_model(tmp_path / "old-cut.pt")


def test_weights_that_do_not_fit_are_listed(tmp_path):
    m = model()
    state = m.state_dict()
    state["transformer.h.0.mlp.c_fc.weight"] = torch.zeros(64, 32)
    del state["transformer.ln_f.weight"]
    state["transformer.extra"] = torch.zeros(1)
    torch.save({"model": state, "model_args": m.config.to_dict()}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "bad.pt")
    message = str(err.value)
    for part in ("bad.pt", "missing keys transformer.ln_f.weight", "unexpected keys transformer.extra",
                 "transformer.h.0.mlp.c_fc.weight (64, 32) vs model (128, 32)"):
        assert part in message


# --- legacy conversions ---------------------------------------------------------------------------


def legacy_file(tmp_path, writer, args, *, prefix="", drop=(), extra_state=None, name="legacy.pt"):
    """A checkpoint as older code wrote it: writer's weights, the given model_args only."""
    state = {prefix + k: v.clone() for k, v in writer.state_dict().items()}
    state.update(extra_state or {})
    model_args = {k: v for k, v in args.items() if k not in drop}
    path = tmp_path / name
    torch.save({"model": state, "model_args": model_args, "iter_num": 100, "best_val_loss": 2.0,
                "config": {"dataset": "shakespeare_char"}}, path)
    return path


NANOGPT_ARGS = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, bias=True, vocab_size=V, dropout=0.0)


def test_nanogpt_checkpoint_loads_as_causal_lm_with_learned_positions(tmp_path):
    writer = model(attention_type="causal", use_rope=False)
    # nanoGPT without flash attention also saved its causal mask buffer as attn.bias
    masks = {f"_orig_mod.transformer.h.{i}.attn.bias": torch.ones(1, 1, 16, 16).tril() for i in range(2)}
    path = legacy_file(tmp_path, writer, NANOGPT_ARGS, prefix="_orig_mod.", extra_state=masks)
    loaded = load_model(path)
    cfg = loaded.config
    assert (cfg.mode, cfg.attention_type, cfg.use_rope, cfg.bias) == (ModelMode.LANGUAGE_MODEL, "causal", False, True)
    x = idx()
    torch.testing.assert_close(loaded(x, torch.zeros_like(x))[0], writer(x, torch.zeros_like(x))[0], rtol=0, atol=0)
    assert loaded.lm_head.weight is loaded.transformer.wte.weight


def test_orig_mod_prefix_is_stripped(tmp_path):
    writer = model()
    path = legacy_file(tmp_path, writer, writer.config.to_dict(), prefix="_orig_mod.")
    torch.testing.assert_close(logits(load_model(path)), logits(writer), rtol=0, atol=0)


def test_binary_classification_becomes_a_two_class_token_classifier(tmp_path):
    writer = model("token_classifier", num_token_classes=2)
    args = dict(NANOGPT_ARGS, binary_classification=True, use_rope=True, attention_type="bidirectional")
    loaded = load_model(legacy_file(tmp_path, writer, args))
    assert loaded.config.mode is ModelMode.TOKEN_CLASSIFIER and loaded.config.num_token_classes == 2
    assert loaded.lm_head.weight.shape == (2, 32)
    torch.testing.assert_close(logits(loaded), logits(writer), rtol=0, atol=0)


@pytest.mark.parametrize("stored", [None, "causal"])
def test_old_classifiers_load_bidirectional_without_a_warning(tmp_path, stored):
    # the old code ran classifiers bidirectionally whatever attention_type said (or lacked):
    # loading one is a conversion, not a user mistake to warn about
    writer = model("token_classifier", num_token_classes=2)
    args = dict(NANOGPT_ARGS, binary_classification=True, use_rope=True)
    if stored:
        args["attention_type"] = stored
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_model(legacy_file(tmp_path, writer, args))
    assert loaded.config.attention_type == "bidirectional"
    torch.testing.assert_close(logits(loaded), logits(writer), rtol=0, atol=0)


def test_missing_mode_means_language_model(tmp_path):
    writer = model(attention_type="bidirectional")
    args = writer.config.to_dict()
    loaded = load_model(legacy_file(tmp_path, writer, args, drop=("mode",)))
    assert loaded.config.mode is ModelMode.LANGUAGE_MODEL
    torch.testing.assert_close(logits(loaded), logits(writer), rtol=0, atol=0)


def test_missing_attention_type_means_causal(tmp_path):
    writer = model(attention_type="causal")
    loaded = load_model(legacy_file(tmp_path, writer, writer.config.to_dict(), drop=("attention_type",)))
    assert loaded.config.attention_type == "causal"
    x = idx()
    torch.testing.assert_close(loaded(x, torch.zeros_like(x))[0], writer(x, torch.zeros_like(x))[0], rtol=0, atol=0)


@pytest.mark.parametrize("mode, key, value", [
    ("sequence_scorer", "use_rope", True),  # no transformer.wpe.weight: RoPE
    ("sequence_scorer", "use_rope", False),  # transformer.wpe.weight: learned positions (nanoGPT)
    ("token_classifier", "bias", True),  # LayerNorm bias keys present
    ("token_classifier", "bias", False),
])
def test_missing_use_rope_and_bias_are_inferred_from_the_weights(tmp_path, mode, key, value):
    writer = model(mode, **{key: value})
    loaded = load_model(legacy_file(tmp_path, writer, writer.config.to_dict(), drop=(key,)))
    assert getattr(loaded.config, key) is value
    torch.testing.assert_close(logits(loaded), logits(writer), rtol=0, atol=0)


@pytest.mark.parametrize("position_encoding, use_rope", [("rotary", True), ("absolute", False)])
def test_older_position_encoding_key(tmp_path, position_encoding, use_rope):
    writer = model(use_rope=use_rope)
    args = dict(writer.config.to_dict(), position_encoding=position_encoding, ignore_index=-100)
    loaded = load_model(legacy_file(tmp_path, writer, args, drop=("use_rope",)))
    assert loaded.config.use_rope is use_rope
    torch.testing.assert_close(logits(loaded), logits(writer), rtol=0, atol=0)


def test_mode_written_as_enum_name(tmp_path):
    writer = model("sequence_scorer")
    args = dict(writer.config.to_dict(), mode="ModelMode.SEQUENCE_SCORER")
    loaded = load_model(legacy_file(tmp_path, writer, args))
    assert loaded.config.mode is ModelMode.SEQUENCE_SCORER
    torch.testing.assert_close(logits(loaded), logits(writer), rtol=0, atol=0)


# --- transfer learning ---------------------------------------------------------------------------


def test_transfer_into_a_larger_vocabulary_keeps_old_rows(tmp_path, caplog):
    source = model("language_model")
    save_checkpoint(tmp_path / "lm.pt", source)
    cfg = config("sequence_scorer", vocab_size=V + 2, cls_token_id=V)
    with caplog.at_level(logging.INFO, logger="mmengine.transfer"):
        m = build_model(cfg, init_from=str(tmp_path / "lm.pt"))
    summaries = [r for r in caplog.records if r.name == "mmengine.transfer" and "transferred" in r.message]
    assert len(summaries) == 1 and "extended from 30 to 32" in summaries[0].getMessage()
    report = m.transfer_report
    assert report.embedding_extended == (V, V + 2) and report.missing == [] and report.unexpected == []
    assert report.skipped_heads == ["lm_head.weight"]
    wte = m.transformer.wte.weight
    assert torch.equal(wte[:V], source.transformer.wte.weight)
    assert wte[V:].abs().sum() > 0  # new rows initialised, not zero
    for k, v in source.transformer.state_dict().items():
        if k != "wte.weight":
            assert torch.equal(m.transformer.state_dict()[k], v), k
    assert not m.get_frozen_status()


def test_classifier_head_is_not_transferred_into_a_language_model(tmp_path):
    source = model("token_classifier")
    save_checkpoint(tmp_path / "clf.pt", source)
    m = build_model(config(), init_from=str(tmp_path / "clf.pt"))
    assert m.transfer_report.skipped_heads == ["lm_head.weight"]
    assert m.lm_head.weight is m.transformer.wte.weight
    assert torch.equal(m.lm_head.weight, source.transformer.wte.weight)


def test_build_model_freezes_and_saved_model_never_needs_its_source(tmp_path):
    source_path = tmp_path / "lm.pt"
    save_checkpoint(source_path, model("language_model"))
    m = build_model(config("token_classifier"), init_from=str(source_path), freeze=True)
    assert m.get_frozen_status()
    save_checkpoint(tmp_path / "clf.pt", m)
    source_path.unlink()  # the transfer source is gone
    loaded = load_model(tmp_path / "clf.pt")
    assert "init_from_checkpoint" not in loaded.config.to_dict()  # a training plan, not a model property
    assert not loaded.get_frozen_status()  # load_model leaves freezing to the trainer
    torch.testing.assert_close(logits(loaded), logits(m), rtol=0, atol=0)


def test_transfer_between_rope_and_learned_positions_reports_keys(tmp_path):
    save_checkpoint(tmp_path / "rope.pt", model(use_rope=True))
    report = load_trunk(model(use_rope=False), tmp_path / "rope.pt")
    assert report.missing == ["transformer.wpe.weight"] and report.unexpected == []
    save_checkpoint(tmp_path / "wpe.pt", model(use_rope=False))
    report = load_trunk(model(use_rope=True), tmp_path / "wpe.pt")
    assert report.unexpected == ["transformer.wpe.weight"]
    assert "unexpected 1 (transformer.wpe.weight)" in report.summary()


@pytest.mark.parametrize("kw, message", [
    (dict(vocab_size=V - 1), "vocabulary \\(30\\) is larger than the model's \\(29\\)"),
    (dict(n_embd=64), "vs model"),
])
def test_transfer_that_cannot_fit_changes_nothing(tmp_path, kw, message):
    save_checkpoint(tmp_path / "src.pt", model())
    target = model("token_classifier", seed=3, **kw)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError, match=message):
        load_trunk(target, tmp_path / "src.pt")
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())


def test_transfer_from_a_nanogpt_checkpoint(tmp_path):
    writer = model(attention_type="causal", use_rope=False)
    path = legacy_file(tmp_path, writer, NANOGPT_ARGS, prefix="_orig_mod.")
    m = build_model(config("token_classifier", use_rope=False, vocab_size=V + 1), init_from=str(path))
    assert torch.equal(m.transformer.wpe.weight, writer.transformer.wpe.weight)
    assert m.transfer_report.embedding_extended == (V, V + 1)


def test_module_exports():
    from mmengine.errors import MMEngineError

    # one error family: a CheckpointError is an MMEngineError, which is a ValueError
    assert ckpt_mod.CheckpointError.__mro__[1:3] == (MMEngineError, ValueError)


# --- the research codebase's extras --------------------------------------------------------------


def test_mode_stored_as_the_old_enum_object_loads_safely(tmp_path, monkeypatch):
    import enum
    import sys
    import types

    old_module = types.ModuleType("model")

    class OldMode(enum.Enum):  # the research codebase's model.ModelMode, a plain Enum
        LANGUAGE_MODEL = "language_model"
        TOKEN_CLASSIFIER = "token_classifier"
        SEQUENCE_SCORER = "sequence_scorer"

    OldMode.__module__, OldMode.__qualname__ = "model", "ModelMode"
    old_module.ModelMode = OldMode
    monkeypatch.setitem(sys.modules, "model", old_module)
    writer = model("token_classifier")
    args = dict(writer.config.to_dict(), mode=OldMode.TOKEN_CLASSIFIER)
    path = legacy_file(tmp_path, writer, args)
    monkeypatch.delitem(sys.modules, "model")  # the old code is not importable here
    loaded = load_model(path)
    assert loaded.config.mode is ModelMode.TOKEN_CLASSIFIER
    torch.testing.assert_close(logits(loaded), logits(writer), rtol=0, atol=0)


def test_dedicated_cls_embedding_becomes_the_cls_row(tmp_path):
    cls_id = 7
    writer = model("sequence_scorer", cls_token_id=cls_id)
    cls_vector = torch.randn(32)
    x = idx()
    x[:, 0] = cls_id

    def swap_in_cls(module, inputs, output):  # what the old model did with its cls_embedding
        return torch.where((inputs[0] == cls_id)[..., None], cls_vector, output)

    handle = writer.transformer.wte.register_forward_hook(swap_in_cls)
    want = logits(writer, x)
    handle.remove()
    path = legacy_file(tmp_path, writer, writer.config.to_dict(), extra_state={"cls_embedding": cls_vector})
    loaded = load_model(path)
    torch.testing.assert_close(logits(loaded, x), want, rtol=0, atol=0)
    assert not torch.equal(want, logits(writer, x))  # the conversion mattered


def test_auxiliary_critic_head_is_dropped(tmp_path):
    writer = model(attention_type="bidirectional")
    args = dict(writer.config.to_dict(), add_critic_head=True, critic_alpha=0.5)
    path = legacy_file(tmp_path, writer, args, extra_state={"critic_head.weight": torch.randn(1, 32)})
    torch.testing.assert_close(logits(load_model(path)), logits(writer), rtol=0, atol=0)

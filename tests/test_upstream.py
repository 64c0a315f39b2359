"""Real checkpoints of the earlier research trainer (tests/fixtures/upstream) and nanoGPT-layout files:
recognised, read into mmengine's layout, mapped onto an mmengine vocabulary, with the original outputs."""
from __future__ import annotations

import copy
import logging
import os
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmengine.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_upstream_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from mmengine.data.dataset import DataMeta
from mmengine.model import GPT, GPTConfig
from mmengine.upstream import (
    FORMAT_EARLIER_TRAINER,
    FORMAT_MMENGINE,
    FORMAT_NANOGPT,
    map_vocabulary,
    recognise_format,
)

FIXTURES = Path(os.environ.get("MMENGINE_UPSTREAM_FIXTURES",
                               Path(__file__).resolve().parent / "fixtures" / "upstream"))
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"no earlier-trainer fixtures at {FIXTURES}")

SCORER = "1616e5b/ckpt_sequence_scorer_20.pt"
LM_1616 = "1616e5b/ckpt_unmasking_20.pt"
LM_1C9B = "1c9b72c/ckpt_unmasking_20.pt"
BINARY = "e0abd98/ckpt_remasking_binary_20.pt"
ALL = [SCORER, LM_1616, LM_1C9B, BINARY]
TEXT, MASK_FILE, CLS_FILE = 65, 65, 70  # the earlier trainer's layout of its 80-row embedding


@pytest.fixture(scope="module")
def meta():
    """The vocabulary of an mmengine data dir for the 65-character Shakespeare text: [MASK] 65 ... [SEP] 68."""
    return DataMeta.for_vocab(TEXT, tokenizer="char")


def expected(name):
    return torch.load(FIXTURES / name.replace(".pt", ".expected.pt"), weights_only=True)


def forward(checkpoint, ids, backend="eager"):
    model = model_from_checkpoint(checkpoint, attention_backend=backend).eval()
    with torch.no_grad():
        return model(ids)[0]


# --- reading and recognising ---------------------------------------------------------------------


@needs_fixtures
@pytest.mark.parametrize("name, mode, hint, config_class", [
    (SCORER, "sequence_scorer", "pickled model.ModelMode Enum", "training_utils.training_config.RandomStageConfig"),
    (LM_1616, "language_model", "pickled model.ModelMode Enum", "training_utils.training_config.StickyStageConfig"),
    (LM_1C9B, None, "no mode in model_args", "training_utils.training_config.StickyStageConfig"),
    (BINARY, None, "binary_classification flag", None),
])
def test_fixtures_read_into_plain_mmengine_layout(name, mode, hint, config_class):
    ck = load_upstream_checkpoint(FIXTURES / name)
    up = ck["upstream"]
    assert up["format"] == FORMAT_EARLIER_TRAINER
    assert any(hint in h for h in up["version_hints"]), up["version_hints"]
    assert ck["model_args"].get("mode") == mode  # the Enum became its string value
    assert ck["iter_num"] == 20 and isinstance(ck["best_val_loss"], float)
    assert ck["config"].get("__class__") == config_class
    if config_class:
        assert ck["config"]["val_loss_stale_count"] in (6, 10)
        context = up["training_context"]
        assert context["current_stage"] == 0 and isinstance(context["best_val_loss_for_stage"], float)
    else:
        assert ck["config"]["training_type"] == "remasking_binary" and up["training_context"] is None
    assert up["vocabulary"]["rows"] == 80 and up["vocabulary"]["text"] == TEXT and up["vocabulary"]["mask"] == MASK_FILE
    assert up["cls_token_id"] == (CLS_FILE if name == SCORER else None)
    assert not any(k.startswith("_orig_mod.") for k in ck["model"])
    assert "training_utils" not in sys.modules and "model" not in sys.modules  # nothing of its code imported


@needs_fixtures
@pytest.mark.parametrize("name", [SCORER, LM_1616, LM_1C9B])
def test_load_checkpoint_falls_back_once_for_pickled_classes(name, caplog):
    with caplog.at_level(logging.INFO, logger="mmengine"):
        ck = load_checkpoint(FIXTURES / name)
    said = [r for r in caplog.records if "earlier research trainer" in r.getMessage()]
    assert len(said) == 1 and "StageConfig kept as inert data" in said[0].getMessage()
    assert ck["upstream"]["format"] == FORMAT_EARLIER_TRAINER and isinstance(ck["config"], dict)


@needs_fixtures
def test_a_file_weights_only_reads_never_takes_the_fallback(caplog):
    with caplog.at_level(logging.INFO, logger="mmengine"):
        ck = load_checkpoint(FIXTURES / BINARY)
    assert "upstream" not in ck and not caplog.records
    assert recognise_format(ck)[0] == FORMAT_EARLIER_TRAINER


# --- the outputs of that code's model --------------------------------------------------------------


@needs_fixtures
@pytest.mark.parametrize("backend", ["eager", "torch"])
@pytest.mark.parametrize("name", ALL)
def test_mapped_fixture_reproduces_the_logits_of_its_own_model(name, backend, meta, caplog):
    exp = expected(name)
    with caplog.at_level(logging.INFO, logger="mmengine.upstream"):
        mapped = map_vocabulary(load_upstream_checkpoint(FIXTURES / name), meta)
    said = [r.getMessage() for r in caplog.records if "vocabulary mapped" in r.getMessage()]
    assert len(said) == 1 and "from 80 to 69 rows" in said[0], said
    assert mapped["model_args"]["vocab_size"] == meta.vocab_size == 69
    ids = exp["input"].clone()
    if name == SCORER:
        assert (ids[:, 0] == CLS_FILE).all()
        ids[:, 0] = meta.cls_id  # its [CLS] 70 is our 66
    logits = forward(mapped, ids, backend)
    want = exp["logits"]
    if name in (LM_1616, LM_1C9B):  # (B, T, 80) -> (B, T, 69): text and [MASK] columns are the same
        assert logits.shape == (2, 32, 69)
        torch.testing.assert_close(logits[..., :TEXT], want[..., :TEXT], rtol=0, atol=1e-5)
        torch.testing.assert_close(logits[..., meta.mask_id], want[..., MASK_FILE], rtol=0, atol=1e-5)
        torch.testing.assert_close(logits[..., meta.cls_id], want[..., CLS_FILE], rtol=0, atol=1e-5)
    else:
        assert logits.shape == want.shape
        torch.testing.assert_close(logits, want, rtol=0, atol=1e-5)


@needs_fixtures
def test_the_1c9b72c_file_without_mode_is_the_bidirectional_lm_its_config_says(meta):
    mapped = map_vocabulary(load_upstream_checkpoint(FIXTURES / LM_1C9B), meta)
    model = model_from_checkpoint(mapped)
    assert model.config.mode.value == "language_model" and model.config.attention_type == "bidirectional"
    assert model.lm_head.weight is model.transformer.wte.weight
    # a causal reading would not reproduce its logits: position 0 would see only itself
    causal = copy.deepcopy(mapped)
    causal["model_args"]["attention_type"] = "causal"
    causal_model = model_from_checkpoint(causal, attention_backend="eager").eval()
    with torch.no_grad():
        got = causal_model.lm_head(causal_model.encode(expected(LM_1C9B)["input"]))
    assert not torch.allclose(got[..., :TEXT], expected(LM_1C9B)["logits"][..., :TEXT], atol=1e-3)


@needs_fixtures
def test_mapping_keeps_the_tied_head_moves_the_optimizer_and_leaves_the_input_alone(meta):
    ck = load_upstream_checkpoint(FIXTURES / LM_1616)
    before = ck["model"]["transformer.wte.weight"].clone()
    mapped = map_vocabulary(ck, meta)
    state = mapped["model"]
    assert state["lm_head.weight"] is state["transformer.wte.weight"] and state["lm_head.weight"].shape == (69, 32)
    torch.testing.assert_close(state["transformer.wte.weight"][:TEXT], before[:TEXT], rtol=0, atol=0)
    torch.testing.assert_close(state["transformer.wte.weight"][meta.cls_id], before[CLS_FILE], rtol=0, atol=0)
    assert (ck["model"]["transformer.wte.weight"].shape == (80, 32)
            and torch.equal(ck["model"]["transformer.wte.weight"], before))
    assert mapped["optimizer"] is None and mapped["upstream"]["optimizer"] is ck["optimizer"]
    vmap = mapped["upstream"]["vocabulary_map"]
    assert vmap["dropped"] == [66, 67, 68, 69, *range(71, 80)] and vmap["new"] == ["[PAD] 67", "[SEP] 68"]
    # new rows are drawn like mmengine's initialisation, the same on every call
    again = map_vocabulary(ck, meta)["model"]["transformer.wte.weight"]
    torch.testing.assert_close(again, state["transformer.wte.weight"], rtol=0, atol=0)
    assert 0.005 < state["transformer.wte.weight"][meta.pad_id].std() < 0.05
    assert map_vocabulary(mapped, meta) is mapped  # already mapped


# --- the [CLS] id ----------------------------------------------------------------------------------


@needs_fixtures
def test_guide_cls_81_outside_the_table_is_refused_until_told(meta):
    ck = load_upstream_checkpoint(FIXTURES / SCORER)
    ck["model_args"]["cls_token_id"] = 81
    ck["upstream"]["vocabulary"]["cls"] = 81
    with pytest.raises(CheckpointError, match=r"records \[CLS\] id 81 in its model_args.*pass --cls_token_id") as info:
        map_vocabulary(ck, meta)
    assert "\n" not in str(info.value)
    exp = expected(SCORER)
    ids = exp["input"].clone()
    ids[:, 0] = meta.cls_id
    torch.testing.assert_close(forward(map_vocabulary(ck, meta, cls_token_id=70), ids), exp["logits"],
                               rtol=0, atol=1e-5)


@needs_fixtures
def test_scorer_without_a_recorded_cls_needs_cls_token_id(meta):
    ck = load_upstream_checkpoint(FIXTURES / SCORER)
    ck["model_args"]["cls_token_id"] = None
    ck["upstream"]["vocabulary"]["cls"] = None
    with pytest.raises(CheckpointError, match=r"sequence scorer that records no \[CLS\] id; "
                                              r"pass --cls_token_id .*used 70"):
        map_vocabulary(ck, meta)
    # the wrong row gives another score: the choice matters and is not guessed
    ids = expected(SCORER)["input"].clone()
    ids[:, 0] = meta.cls_id
    right = forward(map_vocabulary(ck, meta, cls_token_id=70), ids)
    wrong = forward(map_vocabulary(ck, meta, cls_token_id=66), ids)
    torch.testing.assert_close(right, expected(SCORER)["logits"], rtol=0, atol=1e-5)
    assert not torch.allclose(right, wrong, atol=1e-6)


@needs_fixtures
@pytest.mark.parametrize("bad", [5, 65, 80, -1, True])
def test_cls_token_id_must_name_a_reserved_row(meta, bad):
    ck = load_upstream_checkpoint(FIXTURES / SCORER)
    with pytest.raises(CheckpointError, match="does not name a \\[CLS\\] row .* reserved ids 66-79"):
        map_vocabulary(ck, meta, cls_token_id=bad)


@needs_fixtures
def test_dedicated_cls_embedding_becomes_the_cls_row(meta):
    """Scorers from September 2025 on swapped a cls_embedding vector in wherever the input was [CLS]."""
    ck = load_upstream_checkpoint(FIXTURES / SCORER)
    vector = torch.randn(32, generator=torch.Generator().manual_seed(1)) * 0.5
    ck["model"]["cls_embedding"] = vector
    ck["upstream"]["vocabulary"]["cls_embedding"] = True
    # that code's forward: the [CLS] position reads the vector instead of row 70
    reference = copy.deepcopy(ck)
    reference["model"].pop("cls_embedding")
    reference["model"]["transformer.wte.weight"] = reference["model"]["transformer.wte.weight"].clone()
    reference["model"]["transformer.wte.weight"][CLS_FILE] = vector
    ids = expected(SCORER)["input"]
    want = forward(reference, ids)
    mapped = map_vocabulary(ck, meta)
    assert "cls_embedding" not in mapped["model"]
    ours = ids.clone()
    ours[:, 0] = meta.cls_id
    torch.testing.assert_close(forward(mapped, ours), want, rtol=0, atol=1e-6)
    assert not torch.allclose(want, expected(SCORER)["logits"], atol=1e-4)  # the vector did change the score


# --- refusals ------------------------------------------------------------------------------------------


@needs_fixtures
def test_another_text_vocabulary_is_refused(meta):
    ck = load_upstream_checkpoint(FIXTURES / LM_1616)
    with pytest.raises(CheckpointError, match="has 65 text ids .* but the data dir has 60; it was trained on another"):
        map_vocabulary(ck, DataMeta.for_vocab(60, tokenizer="char"))


@needs_fixtures
def test_an_untied_lm_head_is_refused(meta):
    ck = load_upstream_checkpoint(FIXTURES / LM_1616)
    ck["model"]["lm_head.weight"] = ck["model"]["lm_head.weight"] + 1.0
    with pytest.raises(CheckpointError, match="LM head is not its token embedding"):
        map_vocabulary(ck, meta)


# --- nanoGPT and mmengine files ------------------------------------------------------------------------


def nanogpt_checkpoint(vocab: int, seed: int = 0) -> tuple[dict, GPT]:
    """A checkpoint in nanoGPT's layout (compile prefixes, causal-mask buffers) and the model it holds."""
    torch.manual_seed(seed)
    config = GPTConfig(block_size=16, vocab_size=vocab, n_layer=2, n_head=2, n_embd=16, bias=True, use_rope=False,
                       attention_type="causal", attention_backend="eager")
    model = GPT(config).eval()
    state = {f"_orig_mod.{k}": v for k, v in model.state_dict().items()}
    for i in range(config.n_layer):
        state[f"_orig_mod.transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(16, 16)).view(1, 1, 16, 16)
    model_args = {"n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 16, "bias": True, "vocab_size": vocab,
                  "dropout": 0.0}
    checkpoint = {"model": state, "optimizer": {"state": {}, "param_groups": []}, "model_args": model_args,
                  "iter_num": 250, "best_val_loss": torch.tensor(1.25),
                  "config": {"dataset": "shakespeare_char", "learning_rate": 1e-3, "always_save_checkpoint": False}}
    return checkpoint, model


def test_nanogpt_checkpoint_maps_onto_the_mmengine_vocabulary_with_the_same_text_logits(tmp_path, meta, caplog):
    raw, model = nanogpt_checkpoint(TEXT)
    torch.save(raw, tmp_path / "ckpt.pt")
    ck = load_upstream_checkpoint(tmp_path / "ckpt.pt")
    assert ck["upstream"]["format"] == FORMAT_NANOGPT and ck["best_val_loss"] == 1.25 and ck["iter_num"] == 250
    with caplog.at_level(logging.INFO, logger="mmengine.upstream"):
        mapped = map_vocabulary(ck, meta)
    assert "[MASK] 65, [CLS] 66, [PAD] 67, [SEP] 68 new" in caplog.text
    ids = torch.randint(0, TEXT, (3, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = model(ids)[0]  # causal: the next-token distribution at the last position
    got = forward(mapped, ids)
    assert got.shape == (3, 1, 69)
    torch.testing.assert_close(got[..., :TEXT], want, rtol=0, atol=1e-5)


def test_nanogpt_padding_rows_are_dropped_but_a_smaller_vocabulary_is_refused(tmp_path):
    raw, model = nanogpt_checkpoint(128)  # nanoGPT pads 100 text ids to a multiple of 64
    ck = load_upstream_checkpoint_from(tmp_path, raw)
    mapped = map_vocabulary(ck, DataMeta.for_vocab(100, tokenizer="char"))
    ids = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = model(ids)[0][..., :100]
    torch.testing.assert_close(forward(mapped, ids)[..., :100], want, rtol=0, atol=1e-5)
    with pytest.raises(CheckpointError, match="has 128 text ids .* data dir has 60"):
        map_vocabulary(ck, DataMeta.for_vocab(60, tokenizer="char"))


def load_upstream_checkpoint_from(tmp_path, raw):
    torch.save(raw, tmp_path / "ckpt.pt")
    return load_upstream_checkpoint(tmp_path / "ckpt.pt")


def test_mmengine_checkpoint_is_recognised_and_left_as_it_is(tmp_path, meta):
    model = GPT(GPTConfig(block_size=8, vocab_size=meta.vocab_size, n_layer=1, n_head=2, n_embd=8))
    path = save_checkpoint(tmp_path / "ckpt.pt", model, config={"run": {"seed": 1}},
                           trainer={"frozen": False, "data_meta": meta.to_dict()})
    ck = load_upstream_checkpoint(path)
    assert ck["upstream"]["format"] == FORMAT_MMENGINE and ck["config"] == {"run": {"seed": 1}}
    assert map_vocabulary(ck, meta) is ck
    with pytest.raises(CheckpointError, match="69-row embedding but the data dir's vocabulary has 64"):
        map_vocabulary(ck, DataMeta.for_vocab(60, tokenizer="char"))


def test_a_stored_config_of_the_earlier_trainer_outweighs_nanogpt_shaped_model_args(tmp_path):
    raw, _ = nanogpt_checkpoint(80)
    assert load_upstream_checkpoint_from(tmp_path, raw)["upstream"]["format"] == FORMAT_NANOGPT
    raw["config"]["training_type"] = "unmasking"
    ck = load_upstream_checkpoint_from(tmp_path, raw)
    assert ck["upstream"]["format"] == FORMAT_EARLIER_TRAINER
    assert ck["upstream"]["vocabulary"]["text"] == 65 and ck["upstream"]["vocabulary"]["mask"] == 65


@settings(max_examples=12, deadline=None)
@given(text=st.integers(6, 40), n_head=st.sampled_from([1, 2]), head_dim=st.sampled_from([2, 4]),
       n_layer=st.integers(1, 2), mode=st.sampled_from(["language_model", "token_classifier", "sequence_scorer"]),
       seq=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_any_earlier_trainer_layout_maps_with_the_same_outputs(text, n_head, head_dim, n_layer, mode, seq, seed):
    """Odd vocabularies and shapes: the mapped model equals the file's own on text ids (and its [CLS])."""
    torch.manual_seed(seed)
    rows, cls = text + 15, text + 5
    config = GPTConfig(block_size=12, vocab_size=rows, n_layer=n_layer, n_head=n_head, n_embd=n_head * head_dim,
                       mode=mode, num_token_classes=3, cls_token_id=cls if mode == "sequence_scorer" else None,
                       attention_backend="eager")
    original = GPT(config).eval()
    model_args = {"n_layer": n_layer, "n_head": n_head, "n_embd": n_head * head_dim, "block_size": 12,
                  "vocab_size": rows, "bias": True, "dropout": 0.0, "attention_type": "bidirectional",
                  "use_rope": True, "mode": mode, "num_token_classes": 3, "cls_token_id": config.cls_token_id}
    raw = {"model": original.state_dict(), "model_args": model_args, "iter_num": 1, "best_val_loss": 2.0,
           "config": {"training_type": "unmasking"}, "training_context": {"current_stage": 0}}
    meta = DataMeta.for_vocab(text, tokenizer="char")
    mapped = model_from_checkpoint(map_vocabulary(raw, meta), attention_backend="eager").eval()
    ids = torch.randint(0, text, (2, seq), generator=torch.Generator().manual_seed(seed))
    ours = ids.clone()
    if mode == "sequence_scorer":
        ids[:, 0], ours[:, 0] = cls, meta.cls_id
    with torch.no_grad():
        want, got = original(ids)[0], mapped(ours)[0]
    if mode == "language_model":
        torch.testing.assert_close(got[..., :text], want[..., :text], rtol=0, atol=1e-5)
        torch.testing.assert_close(got[..., meta.mask_id], want[..., text], rtol=0, atol=1e-5)
    else:
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)

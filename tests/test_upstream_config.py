"""Python configs of the earlier trainer and nanoGPT -> mmengine TOML tables, read with ast, never run."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import tomllib
from hypothesis import given, settings
from hypothesis import strategies as st

from mmengine.config import TABLES, ConfigError, from_dict, main, validate
from mmengine.data.masking import MaskingStage
from mmengine.upstream_config import (
    _CONVERTED,
    _DIRECT,
    read_assignments,
    tables_to_toml,
)
from mmengine.upstream_config import convert_config as _convert


def convert_config(path):
    return _convert(path, TABLES)

FIXTURES = Path(os.environ.get("MMENGINE_UPSTREAM_FIXTURES",
                               Path(__file__).resolve().parent / "fixtures" / "upstream"))
CONFIGS = FIXTURES / "configs"
needs_fixtures = pytest.mark.skipif(not CONFIGS.is_dir(), reason=f"no earlier-trainer configs at {CONFIGS}")

# nanoGPT's config/train_shakespeare_char.py: the same assignments (its comments left out)
NANOGPT_SHAKESPEARE_CHAR = """
out_dir = 'out-shakespeare-char'
eval_interval = 250
eval_iters = 200
log_interval = 10
always_save_checkpoint = False
wandb_log = False
wandb_project = 'shakespeare-char'
wandb_run_name = 'mini-gpt'
dataset = 'shakespeare_char'
gradient_accumulation_steps = 1
batch_size = 64
block_size = 256
n_layer = 6
n_head = 6
n_embd = 384
dropout = 0.2
learning_rate = 1e-3
max_iters = 5000
lr_decay_iters = 5000
min_lr = 1e-4
beta2 = 0.99
warmup_iters = 100
# device = 'cpu'
# compile = False
"""

STICKY = {"type": "sticky", "target_masked_ratio": 0.4, "p1": 0.15, "p2": 0.3}
RANDOM = {"type": "random", "max_masked_ratio": 0.5}


def supported_part(tables: dict, notes) -> dict:
    """The tables without the keys listed as needing mmengine support (what today's schema must accept)."""
    out = copy.deepcopy(tables)
    for line in notes.needs_support:
        if line.startswith("stage key "):
            key, table_key = line.split()[2], line.split()[4]
            table, name = table_key.split(".")
            for stage in out.get(table, {}).get(name, []):
                stage.pop(key, None)
        elif line.startswith("train.training_type"):
            out["train"].pop("training_type")
        else:
            table, name = line.split()[0].split(".")
            out.get(table, {}).pop(name, None)
    return out


def assert_accepted_by_the_schema(tables: dict, notes) -> None:
    cfg = from_dict(supported_part(tables, notes))
    validate(cfg, check_paths=False)


@needs_fixtures
@pytest.mark.parametrize("name", ["lr_unmasking.py", "lr1c_unmasking.py"])
def test_unmasking_stage_config(name):
    tables, notes = convert_config(CONFIGS / name)
    assert notes.source_format == "earlier trainer"
    assert tables["model"] == {"n_layer": 3, "n_head": 2, "n_embd": 32, "dropout": 0.0, "bias": False,
                               "attention_type": "bidirectional", "use_rope": True}
    assert tables["train"]["training_type"] == "unmasking" and tables["train"]["max_iters"] == 20
    assert tables["optim"] == {"learning_rate": 1e-3, "min_lr": 1e-4, "warmup_iters": 5, "lr_decay_iters": 20}
    assert tables["data"] == {"block_size": 48, "batch_size": 8, "dir": "data/shakespeare_char"}
    # mmengine's stage format, the per-stage stale counts kept (they differ: 6 and 10)
    assert tables["unmasking"]["stages"] == [{**STICKY, "val_loss_stale_count": 6},
                                             {**RANDOM, "val_loss_stale_count": 10}]
    assert tables["unmasking"]["validation_stages"] == [STICKY, RANDOM]
    assert tables["unmasking"]["stage_mixing"] == "all"  # its use_all_stages_for_training = True: every stage, always
    assert notes.needs_support == []  # every key of the earlier trainer's stage config has its mmengine setting now
    assert any("validation_stages[1].val_loss_stale_count" in x for x in notes.ignored)
    for stage in supported_part(tables, notes)["unmasking"]["stages"]:
        MaskingStage.from_dict(stage)
    assert_accepted_by_the_schema(tables, notes)


@needs_fixtures
def test_scorer_config_carries_the_transfer_and_the_reconstruction_lm():
    tables, notes = convert_config(CONFIGS / "lr_scorer.py")
    assert tables["train"]["training_type"] == "sequence_scoring"
    assert tables["transfer"] == {"init_from_checkpoint": "out/out16_unmasking/ckpt_unmasking_20.pt"}
    # its labels: the frozen LM's reconstructions of text masked with its stages
    # (mixed: use_all_stages_for_training = True)
    assert tables["sequence_scoring"] == {"score_source": "reconstruction",
                                          "unmasking_model_checkpoint": "out/out16_unmasking/ckpt_unmasking_20.pt",
                                          "stages": [STICKY, RANDOM], "validation_stages": [STICKY, RANDOM]}
    assert "unmasking" not in tables and notes.needs_support == []
    assert any("unmasking_stages[0].val_loss_stale_count (a scorer has no curriculum)" == x for x in notes.ignored)
    assert_accepted_by_the_schema(tables, notes)


def test_a_scorer_without_use_all_stages_keeps_stage_0_and_lm_recipes_are_listed(tmp_path):
    path = tmp_path / "scorer.py"
    path.write_text("training_type = 'sequence_scoring'\nunmasking_model_checkpoint = 'lm.pt'\n"
                    "uncertainty_factor = 0.1\n"
                    "unmasking_stages = [{'type': 'random', 'max_masked_ratio': 0.3, 'val_loss_stale_count': 2}, "
                    "{'type': 'span', 'spans_count': 2, 'val_loss_stale_count': 2}]\n")
    tables, notes = convert_config(path)
    assert tables["sequence_scoring"]["stages"] == [{"type": "random", "max_masked_ratio": 0.3}]
    assert any("stage 0 only" in r for r in notes.remarks)
    assert "uncertainty_factor (a recipe of the language model; training_type is 'sequence_scoring')" in notes.ignored


def test_without_use_all_stages_its_batches_mixed_stages_up_to_the_current_one(tmp_path):
    path = tmp_path / "lm.py"
    stages = ("[{'type': 'random', 'max_masked_ratio': 0.3, 'val_loss_stale_count': 2}, "
              "{'type': 'span', 'spans_count': 2, 'val_loss_stale_count': 2}]")
    for flag, want in [("", "up_to_current"), ("use_all_stages_for_training = False\n", "up_to_current"),
                       ("use_all_stages_for_training = True\n", "all")]:
        path.write_text(f"training_type = 'unmasking'\n{flag}unmasking_stages = {stages}\n")
        tables, notes = convert_config(path)
        assert tables["unmasking"]["stage_mixing"] == want and notes.needs_support == []
    path.write_text("training_type = 'unmasking'\nuse_all_stages_for_training = True\n")
    assert "use_all_stages_for_training (the file lists no unmasking_stages)" in convert_config(path)[1].ignored


def test_entropy_penalty_without_its_start_gets_the_earlier_default(tmp_path):
    path = tmp_path / "lm.py"
    path.write_text("training_type = 'unmasking'\nmax_iters = 8000\nenable_entropy_penalty = True\n")
    tables, notes = convert_config(path)
    assert tables["unmasking"] == {"enable_entropy_penalty": True, "entropy_penalty_start_iter": 6000}
    assert_accepted_by_the_schema(tables, notes)


@needs_fixtures
def test_binary_remasking_config_lists_what_has_no_meaning():
    tables, notes = convert_config(CONFIGS / "lre0_remasking.py")
    assert tables["train"]["training_type"] == "remasking_binary"
    assert {"class_0_pct", "class_1_pct", "guaranteed_unmasked_max", "guaranteed_unmasked_min",
            "random_mask_warmup"} <= set(notes.ignored)
    assert any("binary_classification = True" in r for r in notes.remarks)
    assert_accepted_by_the_schema(tables, notes)


@needs_fixtures
@pytest.mark.parametrize("name", ["lr_unmasking.py", "lr1c_unmasking.py", "lr_scorer.py", "lre0_remasking.py"])
def test_every_key_of_the_file_is_converted_or_listed(name):
    values, skipped = read_assignments((CONFIGS / name).read_text())
    assert not skipped
    _, notes = convert_config(CONFIGS / name)
    listed = {line.split()[0].split("[")[0] for line in notes.ignored}
    for key in values:
        assert key in _DIRECT or key in _CONVERTED or key in listed, key


@needs_fixtures
@pytest.mark.parametrize("name", ["lr_unmasking.py", "lr_scorer.py", "lre0_remasking.py"])
def test_toml_round_trip(name):
    tables, notes = convert_config(CONFIGS / name)
    text = tables_to_toml(tables, notes)
    assert tomllib.loads(text) == tables
    assert text.startswith("# converted from an earlier trainer config")


def test_nanogpt_shakespeare_char(tmp_path):
    path = tmp_path / "train_shakespeare_char.py"
    path.write_text(NANOGPT_SHAKESPEARE_CHAR)
    tables, notes = convert_config(path)
    assert notes.source_format == "nanoGPT"
    assert tables["train"]["training_type"] == "autoregressive"
    assert tables["model"] == {"n_layer": 6, "n_head": 6, "n_embd": 384, "dropout": 0.2, "attention_type": "causal",
                               "use_rope": False}
    assert tables["optim"]["beta2"] == 0.99 and tables["data"]["block_size"] == 256
    assert tables["log"] == {"wandb": False, "wandb_project": "shakespeare-char"}
    assert {"always_save_checkpoint", "wandb_run_name"} <= set(notes.ignored)
    assert tomllib.loads(tables_to_toml(tables, notes)) == tables
    assert_accepted_by_the_schema(tables, notes)


def test_malicious_values_are_listed_and_never_run(tmp_path):
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.py"
    path.write_text(f"""
import os
n_layer = 2
n_head = __import__('os').system('touch {marker}')
n_embd = eval("open({str(marker)!r}, 'w')")
exec("open({str(marker)!r}, 'w')")
learning_rate = (lambda: open({str(marker)!r}, 'w'))
batch_size = 4 * 8
out_dir = f"{{os.getcwd()}}"
dropout = -0.0
training_type = 'unmasking'
n_layer = open({str(marker)!r}, 'w')
""")
    tables, notes = convert_config(path)
    assert not marker.exists()
    text = "\n".join(notes.unconvertible)
    for what in ("n_head = __import__", "(a call)", "exec(", "(a lambda)", "(arithmetic)", "(an f-string)",
                 "import os"):
        assert what in text, what
    # a later non-literal assignment means the earlier literal n_layer = 2 would not survive a run
    assert "n_layer" not in tables.get("model", {}) and tables["model"] == {"dropout": -0.0}
    assert not marker.exists()


def test_values_that_do_not_fit_the_schema_are_listed(tmp_path):
    path = tmp_path / "c.py"
    path.write_text("training_type = 'unmasking'\nn_layer = 'six'\nunfreeze_at_iteration = None\n"
                    "position_encoding = 'rotary'\nmax_iters = None\nunmasking_stages = [{'type': 'span', "
                    "'spans_count': 3, 'colour': 'red', 'val_loss_stale_count': 4}]\n")
    tables, notes = convert_config(path)
    assert "n_layer = 'six' does not fit model.n_layer" in notes.unconvertible
    assert tables["transfer"]["unfreeze_at_iteration"] == -1 and tables["model"]["use_rope"] is True
    assert any(x.startswith("max_iters = None") for x in notes.ignored)
    # one stale count for all stages is mmengine's own setting; spans_count is the span stage's
    assert tables["unmasking"]["val_loss_stale_count"] == 4
    assert tables["unmasking"]["stages"] == [{"type": "span", "spans_count": 3}]
    assert "unmasking_stages[0].colour" in notes.ignored
    assert notes.needs_support == []


def test_not_python_and_missing_files_are_one_sentence(tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text("n_layer = = 3\n")
    with pytest.raises(ConfigError, match=r"is not valid Python \(line 1"):
        convert_config(bad)
    assert main(["--from-upstream", str(bad)]) == 2
    assert main(["--from-upstream", str(tmp_path / "missing.py")]) == 2
    assert main(["--from-upstream"]) == 2
    assert main(["--from-upstream", str(bad), str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("error: ") for line in err)


@needs_fixtures
def test_cli_prints_toml(capsys):
    assert main(["--from-upstream", str(CONFIGS / "lr_unmasking.py")]) == 0
    out = capsys.readouterr().out
    assert tomllib.loads(out)["unmasking"]["stages"][0]["p1"] == 0.15
    assert "needs mmengine support" not in out and "does not pass" not in out
    assert main([f"--from-upstream={CONFIGS / 'lr_scorer.py'}"]) == 0
    assert tomllib.loads(capsys.readouterr().out)["sequence_scoring"]["score_source"] == "reconstruction"


def test_cli_says_when_the_converted_config_does_not_pass_the_checks(tmp_path, capsys):
    path = tmp_path / "c.py"
    path.write_text("training_type = 'unmasking'\nmax_iters = 100\nenable_entropy_penalty = True\n")  # starts at 6000
    assert main(["--from-upstream", str(path)]) == 0
    out = capsys.readouterr().out
    assert "# note: as converted it does not pass mmengine's checks yet: " in out and "would never apply" in out
    assert "--from-upstream CONFIG.py" in main_help(capsys)


def main_help(capsys):
    assert main(["--help"]) == 0
    return capsys.readouterr().out


scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
literals = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)), max_leaves=8)


@settings(max_examples=60, deadline=None)
@given(value=literals)
def test_any_literal_reads_back_as_written(value):
    values, skipped = read_assignments(f"x = {value!r}\n")
    assert not skipped and values == {"x": value}


def _no_none(value):
    if value is None:
        return False
    if isinstance(value, list):
        return all(_no_none(v) for v in value)
    if isinstance(value, dict):
        return all(_no_none(v) for v in value.values())
    return True


@settings(max_examples=60, deadline=None)
@given(value=literals.filter(_no_none))
def test_any_literal_survives_the_toml_writer(value):
    tables = {"unmasking": {"x": value}}
    assert tomllib.loads(tables_to_toml(tables)) == tables

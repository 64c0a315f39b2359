"""Config: TOML + CLI precedence, legacy flags, validation messages, printing, the shipped configs."""
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mmengine.config import (
    TABLES,
    Config,
    ConfigError,
    from_dict,
    help_text,
    load_config,
    to_dict,
    to_toml,
)

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.toml"))


def write(tmp_path, text, name="c.toml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_defaults_and_every_field_documented():
    cfg = load_config([])
    assert cfg == Config()
    for table, cls in TABLES.items():
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{table}.{f.name} has no help string"
    text = help_text()
    for table, cls in TABLES.items():
        assert f"[{table}]" in text
        for f in dataclasses.fields(cls):
            assert f"--{table}.{f.name}=" in text


def test_the_issues_tables_and_fields():
    listed = {"run": "out_dir seed device dtype compile init_from",
              "data": "dir block_size batch_size use_paragraph_boundaries separator",
              "model": "n_layer n_head n_embd dropout bias attention_type use_rope attention_backend loss_backend",
              "train": "training_type max_iters eval_interval eval_iters log_interval gradient_accumulation_steps "
                       "grad_clip",
              "optim": "learning_rate min_lr warmup_iters lr_decay_iters weight_decay beta1 beta2",
              "transfer": "init_from_checkpoint freeze_transformer unfreeze_at_iteration unfreeze_lr_multiplier",
              "unmasking": "", "token_classification": "", "sequence_scoring": "", "log": "",
              "sample": "num_samples length steps schedule temperature top_k top_p repetition_penalty remasking "
                        "inspector judge best_of prompt infill out"}
    assert list(TABLES) == list(listed)
    for table, names in listed.items():
        assert set(names.split()) <= {f.name for f in dataclasses.fields(TABLES[table])}, table
    types = dataclasses.fields(TABLES["train"])[0].metadata["choices"]
    assert types == ("unmasking", "token_classification", "remasking_binary", "sequence_scoring", "autoregressive")


def test_precedence_cli_over_file_over_defaults(tmp_path):
    path = write(tmp_path, "[optim]\nlearning_rate = 1e-3\nmin_lr = 1e-5\n[data]\nbatch_size = 8\n")
    cfg = load_config([path, "--optim.learning_rate=2e-3"])
    assert cfg.optim.learning_rate == 2e-3  # CLI wins
    assert cfg.optim.min_lr == 1e-5  # file wins over the default
    assert cfg.data.batch_size == 8
    assert cfg.model.n_layer == Config().model.n_layer  # default


def test_cli_values_are_toml_values():
    cfg = load_config(["--unmasking.stages=[{type=\"random\", max_masked_ratio=0.5}, "
                       "{type=\"sticky\", target_masked_ratio=0.4, p1=0.1, p2=0.6}]",
                       "--run.out_dir=out/lm", "--optim.learning_rate", "1e-3", "--run.compile"])
    assert cfg.unmasking.stages[0] == {"type": "random", "max_masked_ratio": 0.5}
    assert cfg.unmasking.stages[1]["type"] == "sticky"
    assert cfg.run.out_dir == "out/lm"
    assert cfg.optim.learning_rate == 1e-3
    assert cfg.run.compile is True
    assert load_config(["--optim.learning_rate=1"]).optim.learning_rate == 1.0  # int accepted for a float


def test_toml_list_typed_unquoted_in_a_shell():
    """The issue's override typed as it stands into bash arrives split at the space, without its quotes."""
    literal = '--unmasking.stages=[{type="random", max_masked_ratio=0.5}]'
    argv = subprocess.run(["bash", "-c", f"printf '%s\\n' {literal} --max_iters=3"], capture_output=True, text=True,
                          check=True).stdout.splitlines()
    assert argv == ["--unmasking.stages=[{type=random,", "max_masked_ratio=0.5}]", "--max_iters=3"]
    cfg = load_config(argv)
    assert cfg.unmasking.stages == [{"type": "random", "max_masked_ratio": 0.5}] and cfg.train.max_iters == 3
    two = load_config(["--unmasking.stages", "[{type=sticky,", "target_masked_ratio=0.4,", "p1=0.1,", "p2=0.6},",
                       "{type=span,", "target_masked_ratio=0.3}]", "--run.compile"])
    assert [s["type"] for s in two.unmasking.stages] == ["sticky", "span"] and two.run.compile is True
    # bash brace-expands it when there is no space: the message says to quote it
    with pytest.raises(ConfigError, match="quoted for the shell"):
        load_config(["--unmasking.stages=[type=random]", "--unmasking.stages=[max_masked_ratio=0.5]"])


def test_legacy_command_line_of_the_issue(tmp_path):
    """train_run.py's command line, as the issue writes it, resolves (3 classes -> 2 default corruption kinds)."""
    ck = tmp_path / "ckpt.pt"
    ck.write_bytes(b"x")
    cfg = load_config(["--training_type=token_classification", "--num_token_classes=3", f"--init_from_checkpoint={ck}",
                       "--freeze_transformer=True", "--unfreeze_at_iteration=2000", "--unfreeze_lr_multiplier=0.1",
                       "--attention_type=bidirectional", "--block_size=512", "--max_iters=5000"])
    assert [k["type"] for k in cfg.token_classification.corruption] == ["random", "swap"]
    assert cfg.transfer.unfreeze_lr_multiplier == 0.1 and cfg.model.attention_type == "bidirectional"
    assert (load_config(["--training_type=remasking_binary"]).token_classification.corruption
            == [{"type": "random", "rate": 0.15}])
    with pytest.raises(ConfigError, match="list them in token_classification.corruption"):
        load_config(["--training_type=token_classification", "--num_token_classes=6"])


def test_ignored_settings_and_resume_without_the_transfer_source(tmp_path):
    from mmengine.config import ignored_settings

    cfg = load_config(["--token_classification.label_source=labels", "--sequence_scoring.max_corruption_rate=0.3"])
    assert ignored_settings(cfg) == ["token_classification.label_source", "sequence_scoring.max_corruption_rate"]
    assert ignored_settings(load_config(["--training_type=sequence_scoring",
                                         "--sequence_scoring.max_corruption_rate=0.3"])) == []
    # on resume the trunk is in ckpt.pt; the transfer source may have been deleted since
    (tmp_path / "ckpt.pt").write_bytes(b"x")
    load_config([f"--run.out_dir={tmp_path}", "--run.init_from=resume", "--init_from_checkpoint=gone.pt",
                 "--freeze_transformer=true"])


def test_legacy_flat_flags(tmp_path):
    ck = tmp_path / "ckpt.pt"
    ck.write_bytes(b"x")
    cfg = load_config(["--training_type=token_classification", "--num_token_classes=3", f"--init_from_checkpoint={ck}",
                       "--freeze_transformer=True", "--unfreeze_at_iteration=2000", "--unfreeze_lr_multiplier=0.1",
                       "--attention_type=bidirectional", "--block_size=512", "--max_iters=5000",
                       "--token_classification.corruption=[{type=\"random\", rate=0.1}, {type=\"random\", rate=0.05}]"])
    assert cfg.train.training_type == "token_classification"
    assert cfg.token_classification.num_token_classes == 3
    assert cfg.transfer.init_from_checkpoint == str(ck)
    assert cfg.transfer.freeze_transformer is True
    assert cfg.transfer.unfreeze_at_iteration == 2000
    assert cfg.data.block_size == 512 and cfg.train.max_iters == 5000
    assert load_config(["--compile=False"]).run.compile is False


@pytest.mark.parametrize("argv, fragment", [
    (["--optim.learnin_rate=1"], "did you mean 'optim.learning_rate'"),
    (["--data.batch_size"], "--data.batch_size needs a value"),
    (["--run"], "names a table"),
    (["--optimm.learning_rate=1"], "did you mean 'optim'"),
    (["--max_iter=5"], "did you mean 'max_iters'"),
    (["--train.max_iters=ten"], "train.max_iters must be an integer"),
    (["--run.compile=1"], "run.compile must be true or false"),
    (["--train.training_type=token_clasification"], "did you mean 'token_classification'"),
    (["--transfer.unfreeze_at_iteration=5"], "nothing to unfreeze"),
    (["--token_classification.num_token_classes=3"], "applies only to token classification"),
    (["--training_type=remasking_binary", "--num_token_classes=3"], "2 classes"),
    (["--model.n_embd=30"], "divisible"),
    (["--data.dir=/nonexistent/data"], "does not exist"),
    (["--transfer.freeze_transformer=true"], "needs transfer.init_from_checkpoint"),
    (["--unmasking.stages=[{type=\"random\", max_masked_ratio=2.0}]"], "unmasking.stages[0]"),
    (["--unmasking.stages=[{tpe=\"random\"}]"], "unmasking.stages[0]"),
    (["--training_type=sequence_scoring", "--attention_type=causal"], "bidirectional"),
    (["--optim.min_lr=1.0"], "must not exceed"),
    (["--training_type=token_classification", "--token_classification.corruption=[{type=\"rnd\", rate=0.1}]"],
     "corruption[0]"),
    (["--training_type=token_classification", "--token_classification.corruption=[{type=\"lm\", rate=0.1}]"],
     "lm_checkpoint"),
    (["--training_type=token_classification",
      "--token_classification.corruption=[{type=\"random\", rate=0.1, rate_start=0.8, ramp_iters=9}, "
      "{type=\"swap\", rate=0.3}]"],
     "sum to 1.1 at iteration 0"),
])
def test_bad_values_are_one_sentence(argv, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(argv)
    msg = str(e.value)
    assert fragment in msg
    assert "\n" not in msg


def test_file_errors(tmp_path):
    bad = write(tmp_path, "[run]\nseed = 1\n[data\nblock_size = 3\n")
    with pytest.raises(ConfigError, match=r"c\.toml.*line 3"):
        load_config([bad])
    unknown = write(tmp_path, "[data]\nblok_size = 3\n", "u.toml")
    with pytest.raises(ConfigError, match="did you mean 'data.block_size'"):
        load_config([unknown])
    table = write(tmp_path, "[trainer]\nmax_iters = 3\n", "t.toml")
    with pytest.raises(ConfigError, match="did you mean 'train'"):
        load_config([table])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config([str(tmp_path / "missing.toml")])


def test_toml_round_trip():
    cfg = load_config(["--unmasking.stages=[{type=\"span\", target_masked_ratio=0.3, span_length=4.0}]",
                       "--run.seed=7"])
    text = to_toml(cfg, comments=True)
    again = from_dict(tomllib.loads(text))
    assert again == cfg
    assert to_dict(again) == to_dict(cfg)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_validate(path):
    cfg = load_config([str(path)], check_paths=False)
    assert isinstance(cfg, Config)


def test_quickstart_is_the_default():
    cfg = load_config([str(ROOT / "configs" / "quickstart.toml")])
    assert cfg == Config()


@pytest.mark.slow
def test_cli_errors_exit_2_without_traceback(tmp_path):
    bad = write(tmp_path, "[run]\nseed = = 1\n")
    for module, args in [("mmengine.train", ["--optim.learnin_rate=1"]),
                         ("mmengine.train", [bad]),
                         ("mmengine.train", ["--data.dir=/nonexistent/dir"]),
                         ("mmengine.config", ["--model.n_head=5"])]:
        p = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=tmp_path)
        assert p.returncode == 2, (module, args, p.stderr)
        assert "Traceback" not in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert p.stderr.startswith("error: ")


@pytest.mark.slow
def test_config_command_prints_resolved_toml(tmp_path):
    p = subprocess.run([sys.executable, "-m", "mmengine.config", "--max_iters=7", "--run.out_dir=x"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    doc = tomllib.loads(p.stdout)
    assert doc["train"]["max_iters"] == 7 and doc["run"]["out_dir"] == "x"
    h = subprocess.run([sys.executable, "-m", "mmengine.train", "--help"], capture_output=True, text=True)
    assert h.returncode == 0 and "[unmasking]" in h.stdout and "--transfer.unfreeze_lr_multiplier" in h.stdout


def test_training_md_commands_resolve():
    """Every train/config command of docs/TRAINING.md parses and validates (paths aside): no stale option."""
    import shlex

    text = (ROOT / "docs" / "TRAINING.md").read_text().replace("\\\n", " ")
    commands = re.findall(r"-m mmengine\.(?:train|config)\b([^`\n|#]*)", text)
    assert len(commands) >= 10
    for args in commands:
        argv = [str(ROOT / a) if a.startswith("configs/") else a for a in shlex.split(args)]
        if "--from-upstream" in argv:
            continue  # converts a Python config (tests/test_upstream_config.py): no run config to resolve
        if "--help" not in argv and "..." not in argv:
            load_config(argv, check_paths=False)

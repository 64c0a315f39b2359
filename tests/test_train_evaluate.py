"""python -m mmengine.evaluate: a checkpoint's validation metrics equal the ones its run logged."""
import json
import subprocess
import sys

import pytest

from mmengine.config import load_config
from mmengine.train import train


@pytest.fixture(scope="module")
def data_dir(char_data_dir):
    """A small char data dir cut from the bundled corpus (fast to prepare, enough for tiny models)."""
    return char_data_dir(30_000)


@pytest.mark.parametrize("mode", ["unmasking", "token_classification"])
def test_evaluate_matches_the_runs_last_eval(data_dir, tmp_path, mode):
    from mmengine.evaluate import evaluate_checkpoint

    res = train(load_config([f"--data.dir={data_dir}", f"--run.out_dir={tmp_path}", f"--train.training_type={mode}",
                             "--model.n_layer=1", "--model.n_embd=32", "--model.n_head=2", "--data.block_size=32",
                             "--data.batch_size=4", "--train.max_iters=4", "--train.eval_interval=4",
                             "--train.eval_iters=2", "--log.sample_tokens=0", "--log.progress=false"]))
    metrics = evaluate_checkpoint(str(res.checkpoint))
    assert metrics["iter"] == 4
    assert abs(metrics["loss"] - res.val[-1]["loss"]) < 1e-5
    if mode == "token_classification":
        assert metrics["confusion"] == res.val[-1]["confusion"]


@pytest.mark.slow
def test_evaluate_cli(data_dir, tmp_path):
    train(load_config([f"--data.dir={data_dir}", f"--run.out_dir={tmp_path}", "--model.n_layer=1", "--model.n_embd=32",
                       "--model.n_head=2", "--data.block_size=32", "--data.batch_size=4", "--train.max_iters=2",
                       "--train.eval_interval=2", "--train.eval_iters=1", "--log.sample_tokens=0",
                       "--log.progress=false"]))
    p = subprocess.run([sys.executable, "-m", "mmengine.evaluate", str(tmp_path / "ckpt.pt"), "--train.eval_iters=2"],
                       check=False, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "loss_stage0" in json.loads(p.stdout)
    bad = subprocess.run([sys.executable, "-m", "mmengine.evaluate", str(tmp_path / "ckpt.pt"), "--train.eval_itrs=2"],
                         check=False, capture_output=True, text=True)
    assert bad.returncode == 2 and "did you mean" in bad.stderr and "Traceback" not in bad.stderr


def test_one_checkpoint_without_a_judge_is_still_its_validation_metrics(data_dir, tmp_path, capsys):
    from mmengine.evaluate import evaluate_checkpoint, main

    res = train(load_config([f"--data.dir={data_dir}", f"--run.out_dir={tmp_path}", "--model.n_layer=1",
                             "--model.n_embd=32", "--model.n_head=2", "--data.block_size=32", "--data.batch_size=4",
                             "--train.max_iters=2", "--train.eval_interval=2", "--train.eval_iters=1",
                             "--log.sample_tokens=0", "--log.progress=false"]))
    want = evaluate_checkpoint(str(res.checkpoint), ["--train.eval_iters=2"])
    # the checkpoint first or last, values after '=' or as the next word, flat names that the run config has
    for argv in ([res.checkpoint, "--train.eval_iters=2"], ["--train.eval_iters", "2", res.checkpoint],
                 [res.checkpoint, "--eval_iters=2", "--run.device=cpu", "--log.progress"]):
        assert main([str(a) for a in argv]) == 0
        assert json.loads(capsys.readouterr().out) == want
    assert main([str(res.checkpoint), "--train.eval_itrs=2"]) == 2
    assert "did you mean" in capsys.readouterr().err


def test_arguments_split_into_files_and_options_in_any_order():
    from mmengine.evaluate import split_args

    assert split_args(["A.pt", "--ground_truth", "B.pt", "--judge", "J.pt", "t.toml"]) == (
        ["A.pt", "B.pt", "t.toml"], [("ground_truth", None), ("judge", "J.pt")])
    assert split_args(["--ground_truth", "false", "A.pt", "--tournament.elbo", "B.pt"]) == (
        ["A.pt", "B.pt"], [("ground_truth", "false"), ("tournament.elbo", None)])
    assert split_args(["--train.eval-iters", "2", "A.pt", "--run.compile"]) == (
        ["A.pt"], [("train.eval_iters", "2"), ("run.compile", None)])
    # an unquoted TOML list arrives split at its spaces
    assert split_args(["--sample.custom_schedule=[0.5,", "0.25,", "0.0]", "A.pt"]) == (
        ["A.pt"], [("sample.custom_schedule", "[0.5, 0.25, 0.0]")])


def test_help_lists_the_tournament_the_sampler_and_the_run_settings(capsys):
    from mmengine.evaluate import main

    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: python -m mmengine.evaluate CKPT")
    for option in ("--tournament.judge=", "--tournament.judge_kind=", "--tournament.ground_truth=",
                   "--tournament.samples_per_model=16", "--tournament.margin=", "--tournament.rounds=",
                   "--tournament.out=", "--tournament.seed=", "--sample.temperature=", "--sample.remasking=",
                   "--data.dir=", "--train.eval_iters=", "--unmasking.objective=", "[[entrant]]"):
        assert option in text, option


def test_training_md_evaluate_commands_name_real_options():
    """Every python -m mmengine.evaluate command of docs/TRAINING.md parses: files that exist in the repository,
    options of [tournament] / [sample] for a tournament, of the run config for one checkpoint."""
    import re
    import shlex
    from pathlib import Path

    from mmengine.config import Config, apply_overrides
    from mmengine.evaluate import _asks_for_tournament, _route, split_args
    from mmengine.tournament import read_tournament_file

    root = Path(__file__).resolve().parents[1]
    text = (root / "docs" / "TRAINING.md").read_text().replace("\\\n", " ")
    commands = re.findall(r"-m mmengine\.evaluate\b([^`\n|#]*)", text)
    assert len(commands) >= 4
    tournaments = 0
    for args in commands:
        positional, options = split_args(shlex.split(args))
        if any(p.endswith(".toml") for p in positional) or len(positional) > 1 or any(
                _asks_for_tournament(k) for k, _ in options):
            tournaments += 1
            for path in positional:
                if path.endswith(".toml"):
                    read_tournament_file(root / path)
            for key, _ in options:
                _route(key)
        elif options != [("help", None)]:
            apply_overrides(Config(), [(k, v) for k, v in options])
    assert tournaments >= 3

"""The inference commands end to end: sample (with its [sample] table), score and classify on files and stdin,
the end-of-run sample of train, and their one-line refusals."""
import json
import math
import subprocess
import sys

import pytest
import torch

from mmengine.config import load_config
from mmengine.train import train

TINY = ["--model.n_layer=1", "--model.n_embd=32", "--model.n_head=2", "--data.block_size=32", "--data.batch_size=4",
        "--train.eval_iters=1", "--log.progress=false"]


@pytest.fixture(scope="module")
def data_dir(char_data_dir):
    return char_data_dir(30_000)


@pytest.fixture(scope="module")
def lm(data_dir, tmp_path_factory):
    res = train(load_config([f"--data.dir={data_dir}", f"--run.out_dir={tmp_path_factory.mktemp('lm')}", *TINY,
                             "--train.max_iters=5", "--train.eval_interval=5", "--log.sample_tokens=40"]))
    assert res.sample is not None and len(res.sample) == 40  # the run's own sample (char data: 1 token = 1 char)
    return res.checkpoint


@pytest.fixture(scope="module")
def scorer(data_dir, tmp_path_factory):
    return train(load_config([f"--data.dir={data_dir}", f"--run.out_dir={tmp_path_factory.mktemp('scorer')}", *TINY,
                              "--train.training_type=sequence_scoring", "--train.max_iters=3",
                              "--train.eval_interval=3", "--log.sample_tokens=0"])).checkpoint


@pytest.fixture(scope="module")
def classifier(data_dir, tmp_path_factory):
    return train(load_config([f"--data.dir={data_dir}", f"--run.out_dir={tmp_path_factory.mktemp('clf')}", *TINY,
                              "--train.training_type=remasking_binary", "--train.max_iters=3",
                              "--train.eval_interval=3", "--log.sample_tokens=0"])).checkpoint


def run(module, *args, stdin=None):
    return subprocess.run([sys.executable, "-m", f"mmengine.{module}", *map(str, args)], capture_output=True, text=True,
                          input=stdin, timeout=300)


def one_line_error(p, code=2):
    assert p.returncode == code, p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1 and p.stderr.startswith("error:")
    return p.stderr


@pytest.mark.slow
def test_sample_cli_flat_flags_prompt_and_count(lm):
    p = run("sample", lm, "--length", "30", "--steps", "3", "--prompt", "the ", "--num-samples", "2")
    assert p.returncode == 0, p.stderr
    texts = p.stdout.rstrip("\n").split("\n---\n")
    assert len(texts) == 2 and all(t.startswith("the ") and len(t) == 34 for t in texts)
    again = run("sample", lm, "--length", "30", "--steps", "3", "--prompt", "the ", "--num-samples", "2")
    assert again.stdout == p.stdout  # seeded
    other = run("sample", lm, "--length", "30", "--steps", "3", "--prompt", "the ", "--num-samples", "2", "--seed", "1")
    assert other.stdout != p.stdout


@pytest.mark.slow
def test_sample_cli_toml_table_and_jsonl_out(lm, tmp_path):
    (tmp_path / "s.toml").write_text('[sample]\nnum_samples = 3\nlength = 24\nsteps = 6\nschedule = "cosine"\n'
                                     'remasking = "low_confidence"\ntop_p = 0.9\ntemperature = 0.7\n')
    p = run("sample", lm, tmp_path / "s.toml", "--sample.repetition_penalty=1.3",
            f"--sample.out={tmp_path / 'o.jsonl'}")
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for r in rows:
        assert set(r) == {"text", "self_confidence", "judge_score", "steps", "seconds"}
        assert (len(r["text"]) == 24 and r["judge_score"] is None and r["steps"] == 6
                and math.isfinite(r["self_confidence"]))


@pytest.mark.slow
def test_sample_cli_with_a_judge_keeps_the_best_of(lm, scorer, tmp_path):
    p = run("sample", lm, "--length=20", "--steps=4", "--num_samples=2", "--best_of=3", f"--sample.judge={scorer}",
            f"--sample.out={tmp_path / 'o.jsonl'}")
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(isinstance(r["judge_score"], float) for r in rows)


@pytest.mark.slow
@pytest.mark.parametrize("extra, fragment", [
    (["--temperature=-1"], "temperature"),
    (["--sample.remasking=sideways"], "remasking"),
    (["--sample.remasking=inspector"], "sample.inspector"),
    (["--model.n_layer=3"], "does not read"),
    (["--sample.judge=/nonexistent/judge.pt"], "does not exist"),
])
def test_sample_cli_refuses_bad_settings_in_one_line(lm, extra, fragment):
    assert fragment in one_line_error(run("sample", lm, *extra))


@pytest.mark.slow
def test_sample_cli_refuses_other_heads_missing_files_and_nan_weights(lm, scorer, tmp_path):
    assert "sequence scorer checkpoint" in one_line_error(run("sample", scorer))
    one_line_error(run("sample", tmp_path / "missing.pt"))
    ck = torch.load(lm, weights_only=True)
    ck["model"]["transformer.h.0.mlp.c_fc.weight"][0, 0] = float("nan")
    torch.save(ck, tmp_path / "nan.pt")
    assert "non-finite" in one_line_error(run("sample", tmp_path / "nan.pt"))


@pytest.mark.slow
def test_a_nanogpt_checkpoint_samples_without_a_prompt(tmp_path, nanogpt_char_dir):
    """A causal 65-token model and a nanoGPT data dir: it starts from the newline, as nanoGPT's sampler does."""
    from mmengine.model import GPT, GPTConfig

    args = dict(n_layer=1, n_head=2, n_embd=16, block_size=16, bias=True, vocab_size=65, dropout=0.0)
    model = GPT(GPTConfig(**args, attention_type="causal", use_rope=False))
    torch.save({"model": model.state_dict(), "model_args": args, "iter_num": 0,
                "config": {"dataset": "shakespeare_char"}},
               tmp_path / "ckpt.pt")
    p = run("sample", tmp_path / "ckpt.pt", f"--data.dir={nanogpt_char_dir}", "--length=40", "--num_samples=2")
    assert p.returncode == 0, p.stderr
    texts = p.stdout.rstrip("\n").split("\n---\n")
    assert len(texts) == 2 and all(len(t) >= 40 for t in texts)
    assert "holds no data description" in one_line_error(run("sample", tmp_path / "ckpt.pt"))


@pytest.mark.slow
def test_train_cli_prints_sample_and_checkpoint(data_dir, tmp_path):
    p = subprocess.run([sys.executable, "-m", "mmengine.train", f"--data.dir={data_dir}", f"--run.out_dir={tmp_path}",
                        "--model.n_layer=1", "--model.n_embd=32", "--model.n_head=2", "--data.block_size=32",
                        "--data.batch_size=4", "--max_iters=3", "--eval_interval=3", "--eval_iters=1",
                        "--log.sample_tokens=25"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "sample (iterative unmasking)" in p.stdout and f"checkpoint: {tmp_path / 'ckpt.pt'}" in p.stdout
    assert "iter     3 | val loss" in p.stdout


# --- modes 2 and 3 on new text -------------------------------------------------------------------------

@pytest.mark.slow
def test_score_cli_on_files_lines_and_stdin(scorer, tmp_path):
    (tmp_path / "a.txt").write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 5)
    (tmp_path / "b.txt").write_text("zzzz qqqq xxxx\nhear me\n")
    p = run("score", scorer, tmp_path / "a.txt", tmp_path / "b.txt")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert [line.split("\t")[1] for line in lines] == [str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]
    assert all(0.0 <= float(line.split("\t")[0]) <= 1.0 for line in lines) and "is good for this scorer" in p.stderr
    p = run("score", scorer, "-", "--lines", f"--out={tmp_path / 's.jsonl'}", stdin="one line\n\nanother line\n")
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [r["name"] for r in rows] == ["<stdin>:1", "<stdin>:3"] and all(r["windows"] == 1 for r in rows)
    assert "does not exist" in one_line_error(run("score", scorer, tmp_path / "nope.txt"))
    assert "token classifier" not in one_line_error(run("score", scorer))  # no files: argparse, one line


@pytest.mark.slow
def test_classify_cli_marks_tokens_and_writes_probabilities(classifier, lm, tmp_path):
    (tmp_path / "a.txt").write_text("hear me speak")
    p = run("classify", classifier, tmp_path / "a.txt", "--colour=always")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[0].startswith(f"== {tmp_path / 'a.txt'}:") and "hear" in p.stdout.replace("\033", "")
    p = run("classify", classifier, "-", f"--out={tmp_path / 't.jsonl'}", stdin="abc")
    assert p.returncode == 0, p.stderr
    row = json.loads((tmp_path / "t.jsonl").read_text())
    assert [t["text"] for t in row["tokens"]] == ["a", "b", "c"]
    assert all(len(t["probs"]) == 2 and abs(sum(t["probs"]) - 1) < 1e-5 for t in row["tokens"])
    assert ("language model checkpoint, not a token classifier"
            in one_line_error(run("classify", lm, tmp_path / "a.txt")))

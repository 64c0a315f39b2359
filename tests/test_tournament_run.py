"""python -m mmengine.evaluate as a tournament, end to end on tiny models: it ranks, it is reproducible, it refuses.

The models: a masked-diffusion LM trained for 60 steps, the same architecture at iteration 0 (its initial
weights), and an autoregressive LM trained for 60 steps as the judge (1 layer, 32 wide, 32-token context,
on 30k characters of the bundled corpus). Random remasking at temperature 1: confidence-ordered or
low-temperature samples of a tiny LM are repetitive enough that generative perplexity prefers them to real
text (measured: perplexity 15 against 18.6 for real text), the known weakness of that judge.
"""
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from mmengine.config import load_config
from mmengine.evaluate import main as evaluate_main
from mmengine.train import train

TINY = ["--model.n_layer=1", "--model.n_embd=32", "--model.n_head=2", "--data.block_size=32", "--data.batch_size=16",
        "--train.eval_iters=1", "--optim.warmup_iters=5", "--log.sample_tokens=0", "--log.progress=false"]
#: 6 samples of 32 characters per entrant, 16 steps, random remasking at temperature 1 (not the sampler's defaults,
#: which may change), few bootstrap resamples: a run takes about a second.
SMALL = ["--samples_per_model=6", "--length=32", "--steps=16", "--remasking=random", "--temperature=1.0",
         "--bootstrap=200"]
UPSTREAM = Path(__file__).resolve().parent / "fixtures" / "upstream"  # the earlier trainer's real files

try:
    import matplotlib  # noqa: F401

    HAVE_MATPLOTLIB = True
except ImportError:  # an optional extra: the results go without ratings.png
    HAVE_MATPLOTLIB = False


def iteration_zero(source: Path, path: Path) -> Path:
    """``source``'s run with the weights it had before its first step: a freshly initialised model of its config."""
    from mmengine.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
    from mmengine.model import GPT

    ckpt = load_checkpoint(source)
    torch.manual_seed(0)
    fresh = GPT(model_from_checkpoint(ckpt).config)
    return save_checkpoint(path, fresh, iter_num=0, config=ckpt["config"], trainer=ckpt["trainer"])


@pytest.fixture(scope="module")
def models(char_data_dir, tmp_path_factory):
    data = char_data_dir(30_000)
    root = tmp_path_factory.mktemp("tournament")

    def run(name, *extra):
        return train(load_config([f"--data.dir={data}", f"--run.out_dir={root / name}", *TINY, "--train.max_iters=60",
                                  "--train.eval_interval=60", *extra])).checkpoint

    lm = run("lm")
    return SimpleNamespace(data=data, root=root, lm=lm, untrained=iteration_zero(lm, root / "untrained.pt"),
                           ar=run("ar", "--train.training_type=autoregressive"))


def cli(capsys, *args):
    """``python -m mmengine.evaluate ARGS`` in this process: (exit code, stdout, stderr)."""
    code = evaluate_main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


# ----------------------------------------------------------------------------- it ranks


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["perplexity", "self_confidence"])
def test_real_text_ranks_above_a_trained_lm_which_ranks_above_an_untrained_one(models, tmp_path, capsys, kind):
    out = tmp_path / "results"
    code, stdout, err = cli(capsys, models.untrained, models.lm, f"--judge={models.ar}", f"--judge_kind={kind}",
                            "--ground_truth", *SMALL, f"--out={out}")
    assert code == 0, err
    doc = results(out)
    names = [e["name"] for e in doc["entrants"]]
    assert names == ["ground_truth", str(models.lm), str(models.untrained)]  # best Bradley-Terry rating first
    bt = [e["bt"] for e in doc["entrants"]]
    assert bt[0] > bt[1] > bt[2]
    by_name = {e["name"]: e for e in doc["entrants"]}
    assert by_name["ground_truth"]["losses"] == 0 and by_name[str(models.untrained)]["wins"] == 0
    assert doc["judge"] == f"{kind}:{models.ar}" and doc["higher_is_better"] is (kind == "self_confidence")
    assert doc["settings"]["judge_kind"] == kind and doc["settings"]["rounds"] == 3  # ceil(6 samples / 2 opponents)
    assert doc["settings"]["ground_truth_text"] == {"data_dir": str(models.data), "length": 32}
    required = {"name", "checkpoint", "sampler", "elo", "bt", "bt_ci", "wins", "draws", "losses", "judge_mean",
                "tokens_per_s", "entropy"}
    for e in doc["entrants"]:
        assert required <= set(e) and e["bt_ci"][0] <= e["bt"] <= e["bt_ci"][1]
        assert e["wins"] + e["draws"] + e["losses"] == 6 and len(e["top_samples"]) == 3
    assert by_name["ground_truth"]["checkpoint"] is None and by_name["ground_truth"]["tokens_per_s"] is None
    assert by_name[str(models.lm)]["tokens_per_s"] > 0
    assert by_name[str(models.lm)]["sampler"] == {"seed": 0, "length": 32, "steps": 16, "remasking": "random",
                                                  "temperature": 1.0}
    # the ELBO bound of the masked-diffusion entrants: training lowers it
    assert by_name[str(models.lm)]["elbo_ppl"] < by_name[str(models.untrained)]["elbo_ppl"]
    assert "elbo_ppl" not in by_name["ground_truth"]
    assert len(doc["matches"]) == 9 and {m["result"] for m in doc["matches"]} <= {"a", "b", "draw"}
    assert all(len(t["text"]) == 32 for e in doc["entrants"] for t in e["top_samples"])  # characters
    table = stdout.splitlines()
    assert table[0].startswith(f"judge: {kind}:") and [line.split()[1] for line in table[3:]] == names
    report = (out / "report.md").read_text()
    assert "## Standings" in report and "| ground_truth | (validation text) | {} |" in report
    if HAVE_MATPLOTLIB:
        assert (out / "ratings.png").read_bytes()[:4] == b"\x89PNG"
    else:
        assert not (out / "ratings.png").exists()


@pytest.mark.slow
def test_same_seed_same_results(models, tmp_path, capsys):
    def run(seed, out):
        code, _, err = cli(capsys, models.lm, models.untrained, f"--judge={models.ar}", "--ground_truth", *SMALL,
                           f"--seed={seed}", f"--out={out}", "--margin=0.5")
        assert code == 0, err
        doc = results(out)
        for e in doc["entrants"]:
            e.pop("tokens_per_s")  # measured: the one figure that differs between runs
        return doc

    first = run(3, tmp_path / "a")
    assert first == run(3, tmp_path / "b")
    other = run(4, tmp_path / "c")
    assert other["matches"] != first["matches"]
    assert other["settings"]["seed"] == 4
    assert all(e["sampler"]["seed"] == 4 for e in other["entrants"] if e["checkpoint"])


@pytest.mark.slow
def test_a_tournament_file_enters_one_lm_with_different_sampler_settings(models, tmp_path, capsys, caplog):
    file = tmp_path / "tournament.toml"
    file.write_text(f"""
[tournament]
judge = "{models.ar}"
samples_per_model = 4
bootstrap = 100
out = "{tmp_path / 'results'}"

[sample]
length = 24
steps = 8

[[entrant]]
name = "random"
checkpoint = "{models.lm}"

[[entrant]]
name = "low-confidence"
checkpoint = "{models.lm}"
sample = {{ remasking = "low_confidence", temperature = 0.5, steps = 12 }}

[[entrant]]
name = "iteration-0"
checkpoint = "{models.untrained}"
""")
    code, _, err = cli(capsys, file, "--sample.steps=6", "--rounds=2")
    assert code == 0, err
    doc = results(tmp_path / "results")
    by_name = {e["name"]: e for e in doc["entrants"]}
    assert set(by_name) == {"random", "low-confidence", "iteration-0"} and doc["settings"]["rounds"] == 2
    assert len(doc["matches"]) == 2 * 3
    # shared [sample] < the entrant's own table < the command line
    assert by_name["random"]["sampler"] == {"seed": 0, "length": 24, "steps": 6}
    assert by_name["low-confidence"]["sampler"] == {"seed": 0, "length": 24, "steps": 6, "remasking": "low_confidence",
                                                    "temperature": 0.5}
    assert "--sample.steps=6 replaces its own setting 12" in caplog.text
    # one checkpoint, one ELBO evaluation: the same figure for both of its entrants
    assert by_name["random"]["elbo_ppl"] == by_name["low-confidence"]["elbo_ppl"]
    assert by_name["low-confidence"]["entropy"] < by_name["random"]["entropy"]  # cooler, confidence-ordered: repetitive
    assert all(len(t["text"]) == 24 for e in doc["entrants"] for t in e["top_samples"])


@pytest.mark.slow
def test_a_sequence_scorer_judges_in_the_direction_its_checkpoint_records(models, tmp_path, capsys):
    from mmengine.generate import score_texts
    from mmengine.generate.load import load_for_inference

    scorer = train(load_config([f"--data.dir={models.data}", f"--run.out_dir={tmp_path / 'scorer'}", *TINY,
                                "--train.training_type=sequence_scoring", "--train.max_iters=20",
                                f"--transfer.init_from_checkpoint={models.lm}", "--train.eval_interval=20"])).checkpoint
    out = tmp_path / "results"
    code, _, err = cli(capsys, models.lm, models.untrained, f"--judge={scorer}", "--ground_truth", *SMALL,
                       f"--out={out}")
    assert code == 0, err
    doc = results(out)
    assert doc["judge"] == f"scorer:{scorer}" and doc["settings"]["judge_kind"] == "scorer"
    assert doc["higher_is_better"] is False  # synthetic scores: the corrupted fraction
    loaded = load_for_inference(scorer, "sequence_scorer")
    for e in doc["entrants"]:  # the judge's scores are the scorer's own
        shown = e["top_samples"] + e["worst_samples"]
        texts = [t["text"] for t in shown]
        want = [r["score"] for r in score_texts(loaded.model, loaded.meta, loaded.tokenizer, texts)]
        assert [t["score"] for t in shown] == pytest.approx(want, abs=1e-5)
    for m in doc["matches"]:  # ... and the lower one wins
        assert m["result"] == ("a" if m["score_a"] < m["score_b"] else "b" if m["score_b"] < m["score_a"] else "draw")


@pytest.mark.slow
def test_a_judge_that_learned_the_lms_mistakes_ranks_the_untrained_lm_last(models, tmp_path, capsys):
    """configs/judge_lm_mistakes.toml at the tiny size: a scorer on the LM's trunk, labels from that LM's own
    reconstructions. It puts the iteration-0 LM's samples last by far; real text and the trained LM's samples it
    scores alike at this size (measured 0.065 vs 0.066, the order between them changing with the judge's
    learning rate), so only the clear part of the ranking is asserted."""
    config = Path(__file__).resolve().parents[1] / "configs" / "judge_lm_mistakes.toml"
    judge = train(load_config([str(config), f"--data.dir={models.data}", f"--run.out_dir={tmp_path / 'judge'}", *TINY,
                               f"--transfer.init_from_checkpoint={models.lm}", "--transfer.unfreeze_at_iteration=50",
                               f"--sequence_scoring.unmasking_model_checkpoint={models.lm}", "--train.max_iters=150",
                               "--train.eval_interval=150"])).checkpoint
    out = tmp_path / "results"
    code, _, err = cli(capsys, models.lm, models.untrained, f"--judge={judge}", "--ground_truth", *SMALL,
                       f"--out={out}")
    assert code == 0, err
    doc = results(out)
    assert doc["settings"]["judge_kind"] == "scorer" and doc["higher_is_better"] is False  # the share it got wrong
    last = doc["entrants"][-1]
    assert last["name"] == str(models.untrained) and last["wins"] == 0
    means = {e["name"]: e["judge_mean"] for e in doc["entrants"]}
    assert means[str(models.untrained)] > max(means["ground_truth"], means[str(models.lm)])


@pytest.mark.slow
def test_entrants_write_with_an_inspector_and_keep_a_scorers_best_of_n(models, tmp_path, capsys):
    def run(name, *extra):
        return train(load_config([f"--data.dir={models.data}", f"--run.out_dir={tmp_path / name}", *TINY,
                                  f"--transfer.init_from_checkpoint={models.lm}", "--train.max_iters=5",
                                  "--train.eval_interval=5", *extra])).checkpoint

    inspector = run("inspector", "--train.training_type=remasking_binary")
    scorer = run("scorer", "--train.training_type=sequence_scoring")
    file = tmp_path / "t.toml"
    file.write_text(f"""
[sample]
length = 16
steps = 4
remasking = "inspector"
inspector = "{inspector}"

[[entrant]]
name = "inspector"
checkpoint = "{models.lm}"

[[entrant]]
name = "inspector-best-of-3"
checkpoint = "{models.lm}"
sample = {{ best_of = 3, judge = "{scorer}" }}
""")
    code, _, err = cli(capsys, file, f"--judge={models.ar}", "--samples_per_model=3", "--bootstrap=20",
                       f"--out={tmp_path / 'r'}")
    assert code == 0, err
    by_name = {e["name"]: e for e in results(tmp_path / "r")["entrants"]}
    assert by_name["inspector-best-of-3"]["sampler"] == {"seed": 0, "length": 16, "steps": 4, "remasking": "inspector",
                                                         "inspector": str(inspector), "best_of": 3,
                                                         "judge": str(scorer)}
    assert all(e["tokens_per_s"] > 0 and e["wins"] + e["draws"] + e["losses"] == 3 for e in by_name.values())


# ----------------------------------------------------------------------------- it refuses


def refusal_cases(m, tmp_path):
    """(argv, words of the one-line error) for mistakes a user can make."""
    ok = [m.lm, m.untrained, f"--judge={m.ar}", "--samples_per_model=2", "--length=8"]
    return [
        ([m.lm, m.untrained, *SMALL], "a tournament needs a judge"),
        ([m.lm, f"--judge={m.ar}"], "needs at least two entrants, got 1 and no ground truth (add --ground_truth)"),
        ([m.lm, tmp_path / "missing.pt", f"--judge={m.ar}"], "checkpoint '" + str(tmp_path / "missing.pt")),
        ([m.lm, m.untrained, f"--judge={tmp_path / 'nope.pt'}"], "the judge checkpoint"),
        ([m.lm, m.untrained, f"--judge={m.lm}", "--judge_kind=perplexity"], "needs an autoregressive (causal)"),
        ([*ok, "--judge_kind=scorer"], "judge_kind 'scorer' needs a sequence-scorer checkpoint"),
        ([*ok, "--sample.num_samples=3"], "sample.num_samples is the tournament's to set"),
        ([*ok, "--sample.temprature=0.5"], "did you mean '--sample.temperature'"),
        ([*ok, "--temperature=-1"], "sample.temperature must be 0 (greedy) or positive"),
        ([*ok, "--remasking=inspector"], "needs sample.inspector"),
        ([*ok, "--train.max_iters=3"], "is a setting of [train], which a tournament does not read"),
        ([*ok, "--samples_per_model=0"], "tournament.samples_per_model must be at least 1"),
        ([*ok, "--margin=-1"], "tournament.margin must be a finite number >= 0"),
        ([*ok, "--ground_truth", "--samples_per_model=3000"], "too few for 3000 distinct ground-truth"),
        ([m.lm, m.lm, f"--judge={m.ar}"], "is given twice"),
        ([*ok, tmp_path / "a.toml", tmp_path / "b.toml"], "at most one tournament file"),
        ([*ok, tmp_path / "missing.toml"], "does not exist"),
    ]


@pytest.mark.slow
def test_mistakes_are_one_sentence_and_write_nothing(models, tmp_path, capsys):
    out = tmp_path / "results"
    for argv, words in refusal_cases(models, tmp_path):
        code, stdout, err = cli(capsys, *argv, f"--out={out}")
        assert code == 2 and words in err, (argv, err)
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and stdout == "", (argv, err)
        assert not out.exists(), argv


@pytest.mark.slow
def test_a_results_folder_that_is_a_file_is_refused_before_anything_runs(models, tmp_path, capsys):
    target = tmp_path / "results"
    target.write_text("keep me")
    code, _, err = cli(capsys, models.lm, models.untrained, f"--judge={models.ar}", f"--out={target}")
    assert code == 2 and "is not a folder" in err and target.read_text() == "keep me"


@pytest.mark.slow
def test_a_vocabulary_the_judge_cannot_read_is_refused(models, char_data_dir, tmp_path, capsys):
    other = train(load_config([f"--data.dir={char_data_dir(3_000)}", f"--run.out_dir={tmp_path / 'other'}", *TINY,
                               "--data.block_size=16", "--train.max_iters=1", "--train.eval_interval=1",
                               "--train.training_type=autoregressive"])).checkpoint
    code, _, err = cli(capsys, models.lm, models.untrained, f"--judge={other}", f"--out={tmp_path / 'r'}")
    assert code == 2 and "a judge must read the entrants' tokenizer" in err


@pytest.mark.slow
def test_the_command_line_refuses_in_one_line_without_a_traceback(models, tmp_path):
    p = subprocess.run([sys.executable, "-m", "mmengine.evaluate", str(models.lm), str(models.untrained),
                        f"--judge={models.lm}", "--judge_kind=perplexity", f"--out={tmp_path / 'r'}"],
                       check=False, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.startswith("error: ") and len(p.stderr.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- other trainers' checkpoints


@pytest.mark.slow
def test_earlier_trainer_and_nanogpt_lms_compete_under_an_earlier_scorer(nanogpt_char_dir, char_data_dir, tmp_path,
                                                                         capsys):
    if not (UPSTREAM / "1616e5b" / "ckpt_sequence_scorer_20.pt").exists():
        pytest.skip("the earlier trainer's fixtures are not here")
    from mmengine.model import GPT, GPTConfig

    args = {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16, "bias": True, "vocab_size": 65, "dropout": 0.0}
    torch.manual_seed(0)
    nano = GPT(GPTConfig(**args, attention_type="causal", use_rope=False))
    torch.save({"model": nano.state_dict(), "model_args": args, "iter_num": 0,
                "config": {"dataset": "shakespeare_char"}}, tmp_path / "nano.pt")
    earlier_lm = UPSTREAM / "1616e5b" / "ckpt_unmasking_20.pt"
    earlier_scorer = UPSTREAM / "1616e5b" / "ckpt_sequence_scorer_20.pt"
    base = [earlier_lm, tmp_path / "nano.pt", f"--judge={earlier_scorer}", "--samples_per_model=3", "--length=20",
            "--steps=4", "--bootstrap=50", "--ground_truth", f"--out={tmp_path / 'r'}"]
    # without their data dir these files cannot be read, and the earlier scorer does not record its direction
    code, _, err = cli(capsys, *base)
    assert code == 2 and "holds no data description" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli(capsys, *base, f"--data.dir={nanogpt_char_dir}")
    assert code == 2 and "--judge_direction=higher or lower" in err
    # a data dir of other characters: their embeddings would hold its ids, but their 65 text ids are not its 58
    code, _, err = cli(capsys, earlier_lm, tmp_path / "nano.pt", "--judge=" + str(tmp_path / "nano.pt"),
                       "--ground_truth", f"--data.dir={char_data_dir(30_000)}", f"--out={tmp_path / 'r'}")
    assert code == 2 and "has 65 text ids" in err and "trained on another vocabulary" in err
    code, _, err = cli(capsys, *base, f"--data.dir={nanogpt_char_dir}", "--judge_direction=lower")
    assert code == 0, err
    doc = results(tmp_path / "r")
    assert doc["judge"] == f"scorer:{earlier_scorer}" and doc["higher_is_better"] is False
    assert {e["name"] for e in doc["entrants"]} == {str(earlier_lm), str(tmp_path / "nano.pt"), "ground_truth"}
    assert all("elbo_ppl" not in e for e in doc["entrants"])  # only mmengine's own runs store what the bound needs
    assert all(len(t["text"]) == 20 for e in doc["entrants"] for t in e["top_samples"])


def test_the_shipped_tournament_file_is_valid():
    from mmengine.generate import SampleConfig
    from mmengine.tournament import read_tournament_file
    from mmengine.tournament_run import check_sample_keys, entrant_sampler_settings

    path = Path(__file__).resolve().parents[1] / "configs" / "tournament" / "whole_loop.toml"
    doc = read_tournament_file(path)
    assert doc.settings.validate().ground_truth and doc.settings.judge == "out-ar/ckpt.pt"
    check_sample_keys(doc.sample, "[sample]")
    assert len({e.name for e in doc.entrants}) == len(doc.entrants) >= 3
    for e in doc.entrants:
        settings = entrant_sampler_settings(e.sampler, doc.sample, {}, seed=0, where=e.name)
        SampleConfig(**settings, num_samples=doc.settings.samples_per_model).validate()


def test_a_judge_and_an_entrant_share_a_vocabulary_when_their_text_tokens_agree():
    from mmengine.data.dataset import DataMeta
    from mmengine.tournament_run import _same_vocabulary

    def chars(text):
        return DataMeta.for_vocab(len(text), tokenizer="char", tokenizer_config={"type": "char", "chars": list(text)})

    unknown = DataMeta.for_vocab(3, tokenizer="unknown")  # a nanoGPT dir without meta.pkl: only the size is known
    assert _same_vocabulary(chars("abc"), chars("abc")) and _same_vocabulary(chars("abc"), unknown)
    assert not _same_vocabulary(chars("abc"), chars("abd"))  # same size, other characters
    assert not _same_vocabulary(chars("abc"), chars("abcd"))

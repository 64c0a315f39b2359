"""The earlier research trainer's recipes in mmengine, each off by default and each shown to do what it says:
mixed-stage batches, validation stages, label smoothing over the text ids, mask-ratio weighting, the
wrong-answer entropy penalty (training only; the validation loss and the continuous-time bound untouched),
the LM validation metrics, scorer labels from a frozen LM's reconstructions, numbered checkpoints."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmengine import modes
from mmengine.checkpoint import load_checkpoint, save_checkpoint
from mmengine.config import ConfigError, load_config
from mmengine.data.stream import open_data, to_device
from mmengine.model import GPT
from mmengine.modes.sequence_scoring import ReconstructionLM
from mmengine.modes.unmasking import RECIPE_KEY, smoothed_token_loss, wrong_answer_entropy_gap
from mmengine.train import train
from mmengine.transfer import model_config

STAGES3 = ("--unmasking.stages=[{type=\"sticky\", target_masked_ratio=0.25}, "
           "{type=\"sticky\", target_masked_ratio=0.5}, {type=\"sticky\", target_masked_ratio=0.75}]")


@pytest.fixture(scope="module")
def data_dir(char_data_dir):
    return char_data_dir(30_000)


def spec_for(data_dir, *argv):
    cfg = load_config([f"--data.dir={data_dir}", "--data.block_size=16", "--data.batch_size=6", "--train.eval_iters=2",
                       "--model.n_layer=1", "--model.n_embd=16", "--model.n_head=2", "--train.max_iters=30", *argv])
    return cfg, modes.build_mode(cfg, open_data(cfg))


def model_for(cfg, spec, seed=0):
    torch.manual_seed(seed)
    return GPT(model_config(cfg, spec, spec.meta))


def rng(i=0):
    return np.random.default_rng(i)


def train_batch(spec, seed=0, iteration=0, state=None):
    return to_device(spec.train_batch(np.arange(spec.batch_size), rng(seed), iteration,
                                      spec.batch_state() if state is None else state), "cpu")


def plain_loss(model, batch, text_vocab):
    """Mean cross-entropy of the true token over the masked positions, softmax over the text ids."""
    logits = model(batch["x"], all_positions=True)[0][..., :text_vocab]
    return F.cross_entropy(logits.reshape(-1, text_vocab), batch["y"].reshape(-1), ignore_index=-1)


# --- stages -----------------------------------------------------------------------------------------

def masked_per_row(spec, current, seed=0):
    b = spec.build_batch("train", np.arange(6), rng(seed), 0, current)
    per_row = (b["y"] != -1).sum(1)
    return dict(zip(*np.unique(per_row, return_counts=True)))


def test_mixed_batches_hold_every_stage_up_to_the_current_one(data_dir):
    _, spec = spec_for(data_dir, STAGES3, "--unmasking.stage_mixing=up_to_current")
    # 16 x 0.25 / 0.5 / 0.75 = 4 / 8 / 12 masked: stage 0 alone, then 0 and 1, then all three, split evenly
    assert [masked_per_row(spec, c) for c in (0, 1, 2)] == [{4: 6}, {4: 3, 8: 3}, {4: 2, 8: 2, 12: 2}]
    orders = {tuple((spec.build_batch("train", np.arange(6), rng(s), 0, 2)["y"] != -1).sum(1)) for s in range(10)}
    assert len(orders) > 3  # rows of each stage in random order
    assert "mix stages" in spec.describe()


def test_mixing_every_stage_and_the_default_current_stage(data_dir):
    _, every = spec_for(data_dir, STAGES3, "--unmasking.stage_mixing=all")  # the earlier use_all_stages_for_training
    assert all(masked_per_row(every, c, c) == {4: 2, 8: 2, 12: 2} for c in (0, 1, 2))
    _, single = spec_for(data_dir, STAGES3)
    assert [masked_per_row(single, c) for c in (0, 1, 2)] == [{4: 6}, {8: 6}, {12: 6}]


def test_validation_stages_are_their_own_and_the_curriculum_follows_their_mean(data_dir):
    _, spec = spec_for(data_dir, STAGES3, "--unmasking.validation_stages=[{type=\"sticky\", target_masked_ratio=0.5}]",
                         "--unmasking.val_loss_stale_count=1")
    groups = [g for g, _ in spec.val_batches()]
    assert set(groups) == {"stage0"}
    assert all(((b["y"] != -1).sum(1) == 8).all() for _, b in spec.val_batches())
    out = spec.metrics([("stage0", None, 2.0)])
    assert "loss_current_stage" not in out and out["loss"] == 2.0
    assert spec.observe_eval(out) is None and spec.observe_eval(out) is not None  # stale once -> stage 2
    assert spec.stage_index() == 1


# --- label smoothing --------------------------------------------------------------------------------

def smoothed_target(y, K, V, u):
    """(N, V): 1 - u on the true token, u / (K - 1) on every other text id, nothing on the specials."""
    q = torch.full((len(y), V), u / (K - 1))
    q[:, K:] = 0.0
    q[torch.arange(len(y)), y] = 1.0 - u
    return q


@pytest.mark.parametrize("V", [11, 15])  # softmax over the 11 text ids only, or over 4 specials too
def test_label_smoothing_is_cross_entropy_against_the_smoothed_target(V):
    K, u = 11, 0.2
    torch.manual_seed(0)
    logits = torch.randn(3, 5, V) * 3
    y = torch.randint(0, K, (3, 5))
    y[0, :2] = -1
    got = smoothed_token_loss(logits, y, u, K)
    keep = y != -1
    want = -(smoothed_target(y[keep], K, V, u) * torch.log_softmax(logits[keep], -1)).sum(-1)
    torch.testing.assert_close(got[keep], want)
    assert (got[~keep] == 0).all()


def test_label_smoothing_gives_no_mass_to_special_ids():
    """The gradient of softmax cross-entropy is p - q: read the target q back from it."""
    K, V, u = 9, 13, 0.3
    torch.manual_seed(1)
    logits = torch.randn(2, 4, V, requires_grad=True)
    y = torch.randint(0, K, (2, 4))
    smoothed_token_loss(logits, y, u, K).sum().backward()
    q = torch.softmax(logits.detach(), -1) - logits.grad
    assert q[..., K:].abs().max() < 1e-6  # [MASK], [CLS], ... get nothing
    torch.testing.assert_close(q.gather(-1, y[..., None]).squeeze(-1), torch.full((2, 4), 1 - u))
    torch.testing.assert_close(q[..., :K].sum(-1), torch.ones(2, 4))


def test_spec_loss_applies_smoothing_to_training_batches_only(data_dir):
    cfg, spec = spec_for(data_dir, "--unmasking.uncertainty_factor=0.1")
    m = model_for(cfg, spec)
    b = train_batch(spec)
    assert RECIPE_KEY in b
    K = spec.meta.text_vocab_size
    logits = m(b["x"], all_positions=True)[0][..., :K]
    keep = b["y"] != -1
    want = smoothed_token_loss(logits, b["y"], 0.1, K)[keep].mean()
    torch.testing.assert_close(spec.loss(m, b)[1], want)
    val = {k: v for k, v in b.items() if k != RECIPE_KEY}  # a validation batch carries no recipe key
    torch.testing.assert_close(spec.loss(m, val)[1], plain_loss(m, val, K))
    assert not torch.isclose(want, plain_loss(m, val, K))


# --- mask-ratio weighting and the entropy penalty -------------------------------------------------

def test_weight_loss_by_mask_ratio(data_dir):
    cfg, spec = spec_for(data_dir, "--unmasking.weight_loss_by_mask_ratio=true",
                         "--unmasking.stages=[{type=\"sticky\", target_masked_ratio=0.25}]")
    m = model_for(cfg, spec)
    b = train_batch(spec)
    plain = plain_loss(m, b, spec.meta.text_vocab_size)
    torch.testing.assert_close(spec.loss(m, b)[1], plain * math.sqrt(1 / 0.25))  # 4 of 16 masked in every row


def test_entropy_penalty_ramps_from_its_start_to_max_iters(data_dir):
    _, spec = spec_for(data_dir, "--unmasking.enable_entropy_penalty=true", "--unmasking.entropy_penalty_start_iter=10",
                         "--unmasking.max_entropy_penalty=0.5")
    assert [spec.entropy_lambda(i) for i in (0, 9, 10, 20, 30, 45)] == [0.0, 0.0, 0.0, 0.25, 0.5, 0.5]
    assert float(spec.train_batch(np.arange(6), rng(), 20, 0)[RECIPE_KEY]) == 0.25
    _, off = spec_for(data_dir)
    assert RECIPE_KEY not in off.train_batch(np.arange(6), rng(), 20, 0) and off.entropy_lambda(20) == 0.0


def entropy_gap_reference(logits: np.ndarray, y: np.ndarray) -> float:
    gaps = []
    for row, target in zip(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)):
        if target < 0:
            continue
        p = np.exp(row - row.max())
        p /= p.sum()
        wrong = np.delete(p, target)
        wrong /= wrong.sum()
        gaps.append(-(wrong * np.log(wrong)).sum())
    h_max = math.log(logits.shape[-1] - 1)
    return (h_max - float(np.mean(gaps))) / h_max


def test_wrong_answer_entropy_gap_is_its_definition_and_its_extremes():
    torch.manual_seed(2)
    logits = torch.randn(3, 6, 10) * 2
    y = torch.randint(0, 10, (3, 6))
    y[1] = -1
    got = wrong_answer_entropy_gap(logits, y)
    assert float(got) == pytest.approx(entropy_gap_reference(logits.double().numpy(), y.numpy()), rel=1e-5)
    # wrong answers spread evenly: no penalty; all wrong mass on one token: the full penalty
    even = torch.zeros(1, 1, 10)
    even[0, 0, 3] = 5.0
    assert float(wrong_answer_entropy_gap(even, torch.tensor([[3]]))) == pytest.approx(0.0, abs=1e-6)
    peaked = torch.full((1, 1, 10), -30.0)
    peaked[0, 0, 3], peaked[0, 0, 7] = 5.0, 4.0
    assert float(wrong_answer_entropy_gap(peaked, torch.tensor([[3]]))) == pytest.approx(1.0, abs=1e-3)
    # probabilities that underflow to exactly 0 (and a true token at 0) keep the gradient finite
    hard = torch.full((2, 3, 10), -200.0)
    hard[..., 4], hard[..., 5] = 0.0, 300.0
    hard.requires_grad_(True)
    wrong_answer_entropy_gap(hard, torch.tensor([[4, 5, 1], [5, -1, 4]])).backward()
    assert torch.isfinite(hard.grad).all()


def test_spec_loss_with_the_entropy_penalty(data_dir):
    cfg, spec = spec_for(data_dir, "--unmasking.enable_entropy_penalty=true", "--unmasking.max_entropy_penalty=2.0")
    m = model_for(cfg, spec)
    b = train_batch(spec, iteration=15)  # lambda = 2.0 * 15 / 30
    K = spec.meta.text_vocab_size
    logits = m(b["x"], all_positions=True)[0][..., :K]
    want = plain_loss(m, b, K) * (1 + 1.0 * wrong_answer_entropy_gap(logits, b["y"]))
    got = spec.loss(m, b)[1]
    torch.testing.assert_close(got, want)
    assert got > plain_loss(m, b, K)
    got.backward()  # differentiable through H_wrong, as in the earlier trainer
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_recipes_need_what_they_act_on():
    for argv, fragment in [(["--unmasking.uncertainty_factor=1.0"], "uncertainty_factor"),
                           (["--unmasking.enable_entropy_penalty=true", "--unmasking.entropy_penalty_start_iter=1000"],
                            "would never apply"),
                           (["--unmasking.objective=continuous_time", "--unmasking.stage_mixing=all"],
                            "does not use"),
                           (["--unmasking.max_entropy_penalty=-1"], "must not be negative")]:
        with pytest.raises(ConfigError, match=fragment):
            load_config(argv)


# --- what validation reports ------------------------------------------------------------------------

ALL_RECIPES = ["--unmasking.uncertainty_factor=0.2", "--unmasking.weight_loss_by_mask_ratio=true",
               "--unmasking.enable_entropy_penalty=true", "--unmasking.max_entropy_penalty=1.0"]


@pytest.mark.parametrize("objective", ["stages", "continuous_time"])
def test_recipes_change_the_training_loss_but_not_validation_nor_the_bound(data_dir, objective):
    cfg, plain = spec_for(data_dir, f"--unmasking.objective={objective}")
    _, recipes = spec_for(data_dir, f"--unmasking.objective={objective}", *ALL_RECIPES)
    m = model_for(cfg, plain)
    batches = [(g, to_device(b, "cpu")) for g, b in plain.val_batches()]
    assert all(RECIPE_KEY not in b for _, b in recipes.val_batches())
    a, b = plain.evaluate(m, batches), recipes.evaluate(m, batches)
    assert a == b
    if objective == "continuous_time":
        assert a["nll_bound"] == b["nll_bound"]
    t = train_batch(recipes, iteration=20)
    stripped = {k: v for k, v in t.items() if k != RECIPE_KEY}
    assert not torch.isclose(recipes.loss(m, t)[1], plain.loss(m, stripped)[1])


def test_lm_validation_metrics_are_their_definitions(data_dir):
    cfg, spec = spec_for(data_dir, STAGES3)
    m = model_for(cfg, spec)
    batches = [(g, to_device(b, "cpu")) for g, b in spec.val_batches()]
    out = spec.evaluate(m, batches)
    K = spec.meta.text_vocab_size
    hits, probs, ratios = [], [], []
    with torch.no_grad():
        for _, b in batches:
            logits = m(b["x"], all_positions=True)[0][..., :K]
            keep = b["y"] != -1
            p = torch.softmax(logits[keep], -1)
            hits += (p.argmax(-1) == b["y"][keep]).tolist()
            probs += p[torch.arange(len(p)), b["y"][keep]].tolist()
            ratios += keep.float().mean(1).tolist()
    assert out["accuracy"] == pytest.approx(np.mean(hits))
    assert out["p_correct"] == pytest.approx(np.mean(probs), rel=1e-5)
    assert out["model_vs_uniform"] == pytest.approx(np.mean(probs) * K, rel=1e-5)  # uniform over the text ids
    assert (out["mask_ratio_min"], out["mask_ratio_mean"], out["mask_ratio_max"]) == pytest.approx(
        (min(ratios), np.mean(ratios), max(ratios)))
    assert out["mask_ratio_min"] == 0.25 and out["mask_ratio_max"] == 0.75  # one stage each
    _, full = spec_for(data_dir, STAGES3, "--unmasking.text_only=false")
    assert full.evaluate(m, batches)["model_vs_uniform"] == pytest.approx(
        full.evaluate(m, batches)["p_correct"] * spec.meta.vocab_size)


# --- scorer labels from a frozen LM's reconstructions --------------------------------------------

class FillWith:
    """A stand-in LM: every masked position becomes ``token`` (so the rewritten and the wrong share differ)."""

    block_size = 1024

    def __init__(self, token):
        self.token = token
        self.calls = []

    def __call__(self, x, mask):
        self.calls.append(mask.copy())
        return np.where(mask, self.token, x)


RECON = ["--training_type=sequence_scoring", "--sequence_scoring.score_source=reconstruction",
         "--sequence_scoring.unmasking_model_checkpoint=lm.pt",
         "--sequence_scoring.stages=[{type=\"sticky\", target_masked_ratio=0.25}, "
         "{type=\"sticky\", target_masked_ratio=0.5}]"]


@pytest.mark.parametrize("label", ["rewritten", "wrong"])
def test_reconstruction_labels(data_dir, label):
    cfg = load_config([f"--data.dir={data_dir}", "--data.block_size=17", "--data.batch_size=6", *RECON,
                       f"--sequence_scoring.reconstruction_label={label}"], check_paths=False)
    # the commonest: often right
    lm = FillWith(token=int(np.bincount(open_data(cfg).tokens("train")[:10_000]).argmax()))
    spec = modes.SequenceScoringMode(cfg, open_data(cfg), reconstruction_lm=lm)
    b = spec.build_batch("train", np.arange(6), rng(4), 0, None)
    original = spec.windows("train").gather(np.arange(6))
    mask = lm.calls[-1]
    assert (b["x"][:, 0] == spec.meta.cls_id).all() and (b["x"][:, 1:][~mask] == original[~mask]).all()
    assert sorted(mask.sum(1).tolist()) == [4, 4, 4, 8, 8, 8]  # the two stages mixed: 16 x 0.25 and 16 x 0.5
    want = mask.mean(1) if label == "rewritten" else (b["x"][:, 1:] != original).mean(1)
    np.testing.assert_allclose(b["y"], want, atol=1e-6)
    if label == "wrong":
        assert (b["y"] <= mask.mean(1) + 1e-6).all() and (b["y"] < mask.mean(1)).any()  # right guesses are not mistakes


def test_reconstruction_lm_fills_masked_positions_with_its_argmax_over_text_ids(data_dir, tmp_path):
    cfg, spec = spec_for(data_dir)
    lm = model_for(cfg, spec, seed=3).eval()
    with torch.no_grad():
        lm.lm_head.weight[spec.meta.pad_id] += 5.0  # a special id would win the argmax over all ids
    save_checkpoint(tmp_path / "lm.pt", lm, trainer={"data_meta": spec.meta.to_dict()})
    recon = ReconstructionLM(str(tmp_path / "lm.pt"), spec.meta)
    x = spec.windows("val").gather(np.arange(4))
    mask = rng(5).random(x.shape) < 0.4
    filled = recon(x, mask)
    with torch.no_grad():
        logits = lm(torch.from_numpy(np.where(mask, spec.meta.mask_id, x)))[0]
    want = logits[..., :spec.meta.text_vocab_size].argmax(-1).numpy()
    assert (filled[mask] == want[mask]).all() and (filled[~mask] == x[~mask]).all()
    assert filled.max() < spec.meta.text_vocab_size


def test_reconstruction_settings_are_checked():
    with pytest.raises(ConfigError, match="needs sequence_scoring.unmasking_model_checkpoint"):
        load_config(["--training_type=sequence_scoring", "--sequence_scoring.score_source=reconstruction"])
    with pytest.raises(ConfigError, match="unmasking_model_checkpoint 'missing.pt' does not exist"):
        load_config(["--training_type=sequence_scoring", "--sequence_scoring.score_source=reconstruction",
                     "--sequence_scoring.unmasking_model_checkpoint=missing.pt"])
    with pytest.raises(ConfigError, match="applies only to score_source='reconstruction'"):
        load_config(["--training_type=sequence_scoring", "--sequence_scoring.reconstruction_label=wrong"])


def test_a_judge_trains_on_its_lms_reconstructions(data_dir, tmp_path):
    tiny = [f"--data.dir={data_dir}", "--model.n_layer=1", "--model.n_embd=16", "--model.n_head=2",
            "--data.block_size=16", "--data.batch_size=4", "--train.eval_iters=1", "--log.progress=false",
            "--log.sample_tokens=0"]
    lm = train(load_config([*tiny, f"--run.out_dir={tmp_path / 'lm'}", "--train.max_iters=4",
                            "--train.eval_interval=4"]))
    judge = train(load_config([*tiny, f"--run.out_dir={tmp_path / 'judge'}", "--train.max_iters=4",
                               "--train.eval_interval=2", "--training_type=sequence_scoring",
                               "--sequence_scoring.score_source=reconstruction",
                               f"--sequence_scoring.unmasking_model_checkpoint={lm.checkpoint}",
                               f"--transfer.init_from_checkpoint={lm.checkpoint}", "--log.keep_every=2"]))
    assert judge.iter_num == 4 and all(math.isfinite(r["mse"]) for r in judge.val)
    assert load_checkpoint(judge.checkpoint)["config"]["sequence_scoring"]["score_source"] == "reconstruction"
    # log.keep_every: numbered files next to ckpt.pt, each the state of its iteration
    kept = sorted(p.name for p in (tmp_path / "judge").glob("ckpt_*.pt"))
    assert kept == ["ckpt_sequence_scoring_2.pt", "ckpt_sequence_scoring_4.pt"]
    assert load_checkpoint(tmp_path / "judge" / "ckpt_sequence_scoring_2.pt")["iter_num"] == 2
    assert not list((tmp_path / "lm").glob("ckpt_*.pt"))  # off by default


def test_keep_every_must_fall_on_evaluations():
    with pytest.raises(ConfigError, match="multiple of train.eval_interval"):
        load_config(["--train.eval_interval=10", "--log.keep_every=15"])
    assert load_config(["--train.eval_interval=10", "--keep_every=30"]).log.keep_every == 30  # a flat flag too


def test_a_run_with_every_recipe_trains(data_dir, tmp_path):
    """Through the prefetcher and gradient accumulation, with mixed stages, per-stage stale counts and all loss
    recipes."""
    res = train(load_config([f"--data.dir={data_dir}", f"--run.out_dir={tmp_path}", "--model.n_layer=1",
                             "--model.n_embd=16", "--model.n_head=2", "--data.block_size=16", "--data.batch_size=4",
                             "--train.eval_iters=2", "--train.max_iters=6", "--train.eval_interval=2",
                             "--train.gradient_accumulation_steps=2", "--log.progress=false", "--log.sample_tokens=0",
                             *ALL_RECIPES, "--unmasking.entropy_penalty_start_iter=2",
                             "--unmasking.stage_mixing=up_to_current",
                             ("--unmasking.stages=[{type=\"random\", max_masked_ratio=0.3, val_loss_stale_count=1}, "
                              "{type=\"span\", spans_count=2}]")]))
    assert res.iter_num == 6 and all(math.isfinite(v) for v in res.train_losses.values())
    assert {"accuracy", "p_correct", "model_vs_uniform", "mask_ratio_mean", "loss_stage1"} <= set(res.val[-1])

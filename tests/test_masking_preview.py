"""python -m mmengine.masking_preview: each stage's masks on real text, marked, with their statistics."""
import re

import numpy as np
import pytest

from mmengine.data.masking import MaskingStage, make_mask
from mmengine.masking_preview import main, mask_statistics, render_row


@pytest.fixture(scope="module")
def data_dir(char_data_dir):
    return char_data_dir(30_000)


def test_statistics_are_their_definitions():
    mask = np.array([[1, 1, 0, 1, 0, 0], [0, 0, 0, 0, 0, 1], [1, 1, 1, 1, 1, 1]], dtype=bool)
    s = mask_statistics(mask)
    assert s["mean"] == pytest.approx(np.mean([3 / 6, 1 / 6, 1.0])) and (s["min"], s["max"]) == (1 / 6, 1.0)
    assert s["std"] == pytest.approx(np.std([3 / 6, 1 / 6, 1.0]))
    assert s["runs_per_row"] == pytest.approx(4 / 3) and s["mean_run"] == pytest.approx(10 / 4)  # runs: 2+1, 1, 6


def test_rendering_marks_exactly_the_masked_tokens():
    pieces = ["ab", "\n", "c", "d", "e"]
    masked = np.array([True, False, True, True, False])
    assert render_row(pieces, masked, "plain") == "ab\u21b5cde\n^^ ^^"
    assert render_row(pieces, masked, "ansi") == "\x1b[7mab\x1b[0m\u21b5\x1b[7mcd\x1b[0me"
    assert render_row(["x"], np.array([True]), "ansi") == "\x1b[7mx\x1b[0m"


def test_preview_of_every_stage(data_dir, tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text(f'[data]\ndir = "{data_dir}"\nblock_size = 40\n[unmasking]\nstages = [\n'
                      '  {type = "random", max_masked_ratio = 0.5},\n'
                      '  {type = "sticky", target_masked_ratio = 0.5, p1_probability = 0.1, p2_probability = 0.6},\n'
                      '  {type = "span", spans_count = 2},\n]\n'
                      'validation_stages = [{type = "sticky", target_masked_ratio = 0.25, p1 = 0.2, p2 = 0.2}]\n')
    assert main([str(config), "--rows", "200", "--show=3", "--style", "plain"]) == 0
    out = capsys.readouterr().out
    heads = re.findall(r"^(training|validation) stage (\d): (\w+)", out, re.MULTILINE)
    assert heads == [("training", "0", "random"), ("training", "1", "sticky"), ("training", "2", "span"),
                     ("validation", "0", "sticky")]
    shares = [float(m) for m in re.findall(r"masked share per row: mean ([\d.]+)", out)]
    assert shares[1] == 0.5 and shares[3] == 0.25 and 0.15 < shares[0] < 0.35  # sticky: exact; random: about 0.25
    # each shown row: 40 characters, and under them a ^ per masked character (sticky 0.5: 20 of 40)
    block = out.split("training stage 1")[1].split("training stage 2")[0].splitlines()[2:8]
    texts, marks = block[0::2], block[1::2]
    assert len(texts) == 3 and all(len(t) == 40 for t in texts) and all(m.count("^") == 20 for m in marks)
    # the same windows and masks each time (seeded); --stage picks one training stage
    assert main([str(config), "--rows", "200", "--show=3", "--style", "plain"]) == 0 and capsys.readouterr().out == out
    assert main([str(config), "--stage", "2", "--style=plain", "--show", "1"]) == 0
    one = capsys.readouterr().out
    assert re.findall(r"^\w+ stage \d", one, re.MULTILINE) == ["training stage 2"]


def test_the_masks_shown_are_the_stages_masks(data_dir, tmp_path, capsys):
    """The marked positions are make_mask's for that stage (the preview draws with a documented seed)."""
    from mmengine.data.dataset import DataDir

    config = tmp_path / "c.toml"
    config.write_text(f'[data]\ndir = "{data_dir}"\nblock_size = 24\n'
                      '[unmasking]\nstages = [{type = "sticky", target_masked_ratio = 0.3, p1 = 0.2, p2 = 0.5}]\n')
    assert main([str(config), "--style=plain", "--rows=5", "--show=5", "--seed=7"]) == 0
    lines = capsys.readouterr().out.splitlines()[4:]
    tokens = DataDir.open(data_dir).tokens("val")
    starts = np.random.default_rng(7).integers(0, len(tokens) - 24 + 1, size=5)
    x = np.asarray(tokens[starts[:, None] + np.arange(24)])
    mask = make_mask(MaskingStage(type="sticky", target_masked_ratio=0.3, p1=0.2, p2=0.5), x.shape,
                     np.random.default_rng([7, 0, 0]))
    for r in range(5):
        shown = np.array([c == "^" for c in lines[2 * r + 1].ljust(24)])
        np.testing.assert_array_equal(shown, mask[r])


@pytest.mark.parametrize("argv, fragment", [
    (["--stage", "5"], "--stage must be between 0 and 0"),
    (["--stage", "one"], "--stage must be an integer"),
    (["--style", "bold"], "--style must be"),
    (["--rows", "0"], "--rows must be at least 1"),
    (["--unmasking.objective=continuous_time"], "masks with no stages"),
    (["--training_type=sequence_scoring"], "masks with no stages"),
    (["--unmasking.stagez=[]"], "unknown key"),
])
def test_mistakes_are_one_sentence(data_dir, tmp_path, capsys, argv, fragment):
    config = tmp_path / "c.toml"
    config.write_text(f'[data]\ndir = "{data_dir}"\n')
    assert main([str(config), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and fragment in err and "\n" not in err
    assert main(["--stage", "1"]) == 2 and "give the run's config" in capsys.readouterr().err
    assert main(["--help"]) == 0 and "--stage N" in capsys.readouterr().out

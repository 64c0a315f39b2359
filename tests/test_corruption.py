"""mmengine.data.corruption: corruption kinds, labels, ramps, synthetic scores."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmengine.data.corruption import CorruptionKind, Corruptor, corruption_score


def rng(seed=0):
    return np.random.default_rng(seed)


def test_kind_from_dict_and_errors():
    k = CorruptionKind.from_dict({"type": "random", "rate": 0.2, "rate_start": 0.0, "ramp_iters": 100})
    assert k.rate_at(0) == 0.0 and k.rate_at(50) == pytest.approx(0.1) and k.rate_at(1000) == 0.2
    assert CorruptionKind.from_dict(k.to_dict()) == k
    with pytest.raises(ValueError, match=r"unknown corruption key.*ratio.*valid keys"):
        CorruptionKind.from_dict({"type": "random", "ratio": 0.1})
    with pytest.raises(ValueError, match="must be one of"):
        CorruptionKind.from_dict({"type": "shuffle"})
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\]"):
        CorruptionKind.from_dict({"type": "random", "rate": 1.2})
    with pytest.raises(TypeError, match="rate must be a number"):
        CorruptionKind.from_dict({"type": "random", "rate": "0.1"})
    with pytest.raises(ValueError, match="ramp_iters"):
        CorruptionKind.from_dict({"type": "random", "ramp_iters": -1})
    with pytest.raises(ValueError, match="ramp_iters = 50 needs rate_start"):
        CorruptionKind.from_dict({"type": "random", "rate": 0.3, "ramp_iters": 50})
    with pytest.raises(TypeError, match="must be a table"):
        CorruptionKind.from_dict(["random", 0.1])


def test_corruptor_errors():
    with pytest.raises(ValueError, match="sum to"):
        Corruptor([{"type": "random", "rate": 0.6}, {"type": "repeat", "rate": 0.6}], 10)
    with pytest.raises(ValueError, match="sum to.*iteration 10"):
        Corruptor([{"type": "random", "rate": 0.9, "rate_start": 0.0, "ramp_iters": 10},
                   {"type": "repeat", "rate": 0.5}], 10)
    # The sum peaks at an intermediate breakpoint (iteration 100), neither at 0 nor at the last ramp end.
    with pytest.raises(ValueError, match="sum to 1.440 at iteration 100"):
        Corruptor([{"type": "random", "rate": 0.6, "rate_start": 0.0, "ramp_iters": 100},
                   {"type": "repeat", "rate": 0.3, "rate_start": 0.9, "ramp_iters": 1000}], 10)
    with pytest.raises(ValueError, match="lm_sampler"):
        Corruptor([{"type": "lm", "rate": 0.1}], 10)
    with pytest.raises(ValueError, match="at least one"):
        Corruptor([], 10)
    with pytest.raises(ValueError, match=">= 2"):
        Corruptor([{"type": "random"}], 1)


@settings(max_examples=40, deadline=None)
@given(
    B=st.integers(1, 5), T=st.integers(1, 40), V=st.integers(2, 30),
    rates=st.lists(st.floats(0.0, 0.3), min_size=3, max_size=3), seed=st.integers(0, 2**31),
)
def test_labels_describe_changes(B, T, V, rates, seed):
    kinds = [{"type": "random", "rate": rates[0]}, {"type": "swap", "rate": rates[1]},
             {"type": "repeat", "rate": rates[2]}]
    c = Corruptor(kinds, V)
    x = rng(seed).integers(0, V, (B, T))
    out, labels = c.corrupt(x, rng(seed + 1))
    assert out.shape == labels.shape == (B, T) and labels.dtype == np.int64
    assert ((out != x) == (labels > 0)).all()
    assert labels.min() >= 0 and labels.max() <= 3 and c.num_classes == 4
    assert out.min() >= 0 and out.max() < V
    # Each kind did what its label says.
    r, col = np.nonzero(labels == 3)
    assert (col > 0).all() and (out[r, col] == x[r, col - 1]).all()
    # Swapped pairs do not overlap, so pairing labelled positions left to right recovers them.
    for i in range(B):
        j = 0
        while j < T:
            if labels[i, j] == 2:
                assert j + 1 < T and labels[i, j + 1] == 2
                assert out[i, j] == x[i, j + 1] and out[i, j + 1] == x[i, j]
                j += 2
            else:
                j += 1


def test_random_rate_and_never_original():
    c = Corruptor([{"type": "random", "rate": 0.25}], 3)
    x = rng().integers(0, 3, (100, 400))
    out, labels = c.corrupt(x, rng(1))
    assert abs((labels == 1).mean() - 0.25) < 0.01
    assert ((labels == 1) == (out != x)).all()
    # Replacements are uniform over the other two ids.
    changed = labels == 1
    diffs = (out[changed] - x[changed]) % 3
    assert abs((diffs == 1).mean() - 0.5) < 0.02


def test_rate_zero_and_ramp():
    c = Corruptor([{"type": "random", "rate": 0.5, "rate_start": 0.0, "ramp_iters": 100}], 10)
    x = rng().integers(0, 10, (50, 200))
    _, l0 = c.corrupt(x, rng(1), iteration=0)
    _, l50 = c.corrupt(x, rng(1), iteration=50)
    _, l200 = c.corrupt(x, rng(1), iteration=200)
    assert l0.sum() == 0
    assert abs(l50.astype(bool).mean() - 0.25) < 0.02 and abs(l200.astype(bool).mean() - 0.5) < 0.02


def test_deterministic_from_rng():
    c = Corruptor([{"type": "random", "rate": 0.2}, {"type": "swap", "rate": 0.1}], 20)
    x = rng().integers(0, 20, (4, 64))
    a = c.corrupt(x, rng(9), 5)
    b = c.corrupt(x, rng(9), 5)
    assert (a[0] == b[0]).all() and (a[1] == b[1]).all()


def test_repeat_and_swap_skip_equal_neighbours():
    c = Corruptor([{"type": "repeat", "rate": 0.5}, {"type": "swap", "rate": 0.5}], 5)
    x = np.full((3, 50), 2)
    out, labels = c.corrupt(x, rng())
    assert (out == x).all() and (labels == 0).all()


def test_lm_kind_uses_sampler_and_labels_only_changes():
    calls = []

    def sampler(x, positions):
        calls.append((x.shape, positions.sum()))
        out = np.where(positions, (x + 1) % 10, x)
        out[0, :] = x[0, :]  # row 0: the "LM" reproduces the original -> label 0
        return out

    c = Corruptor([{"type": "random", "rate": 0.1}, {"type": "lm", "rate": 0.3}], 10, lm_sampler=sampler)
    x = rng().integers(0, 10, (4, 100))
    out, labels = c.corrupt(x, rng(1))
    assert len(calls) == 1 and calls[0][0] == (4, 100)
    assert (labels[0] != 2).all()
    assert ((labels == 2) == ((out - x) % 10 == 1) & (labels != 1)).all()
    assert abs((labels[1:] == 2).mean() - 0.3) < 0.08

    # A sampler returning one id per position works too; bad shapes and ids are rejected.
    c2 = Corruptor([{"type": "lm", "rate": 0.5}], 10, lm_sampler=lambda x, p: np.zeros(int(p.sum()), dtype=np.int64))
    out2, labels2 = c2.corrupt(np.ones((2, 20), dtype=np.int64), rng())
    assert ((labels2 == 1) == (out2 == 0)).all()
    with pytest.raises(ValueError, match="returned shape"):
        Corruptor([{"type": "lm", "rate": 0.5}], 10,
                  lm_sampler=lambda x, p: np.zeros(3)).corrupt(np.ones((2, 20)), rng())
    with pytest.raises(ValueError, match="outside the text vocabulary"):
        Corruptor([{"type": "lm", "rate": 0.5}], 10, lm_sampler=lambda x, p: x + 100).corrupt(np.ones((2, 20)), rng())


def test_row_scale_spreads_scores():
    c = Corruptor([{"type": "random", "rate": 1.0}], 10)
    x = rng().integers(0, 10, (8, 500))
    scale = np.linspace(0, 1, 8)
    _, labels = c.corrupt(x, rng(1), row_scale=scale)
    s = corruption_score(labels)
    assert s.dtype == np.float32 and s[0] == 0.0 and s[-1] == 1.0
    assert np.allclose(s, scale, atol=0.07) and (np.diff(s) > 0).all()


def test_corruption_score_hand_computed():
    labels = np.array([[0, 1, 2, 0], [0, 0, 0, 0], [1, -1, 0, 3]])
    assert corruption_score(labels).tolist() == [0.5, 0.0, 0.5]
    assert corruption_score(labels, lengths=[2, 0, 1]).tolist() == [0.5, 0.0, 1.0]
    with pytest.raises(ValueError, match="lengths"):
        corruption_score(labels, lengths=[5, 0, 0])
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        corruption_score(np.zeros(3))

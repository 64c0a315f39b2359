"""mmengine.metrics against hand-computed values and textbook formulas, and against scipy / scikit-learn
where they are installed (they are not dependencies of mmengine)."""
import json
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmengine.metrics import average_ranks, classification_metrics, regression_metrics


def test_classification_hand_computed():
    target = np.array([0, 0, 1, 1, 1, 2, -1, 2])
    pred = np.array([0, 1, 1, 1, 0, 2, 2, 1])
    m = classification_metrics(pred, target, 3)
    # confusion (rows true, cols pred): [[1,1,0],[1,2,0],[0,1,1]]; the ignored position is dropped
    assert m["confusion"] == [[1, 1, 0], [1, 2, 0], [0, 1, 1]]
    assert m["count"] == 7 and m["support"] == [2, 3, 2]
    assert m["accuracy"] == pytest.approx(4 / 7)
    assert m["precision"] == pytest.approx([1 / 2, 2 / 4, 1 / 1])
    assert m["recall"] == pytest.approx([1 / 2, 2 / 3, 1 / 2])
    f1 = [0.5, 2 * 0.5 * (2 / 3) / (0.5 + 2 / 3), 2 * 1 * 0.5 / 1.5]
    assert m["f1"] == pytest.approx(f1)
    assert m["macro_f1"] == pytest.approx(sum(f1) / 3)
    json.dumps(m)  # plain Python values


def test_classification_missing_classes_no_nan_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # class 2 never occurs; class 1 predicted but absent from targets
        m = classification_metrics([0, 1, 0], [0, 0, 0], 3)
    assert m["precision"] == [1.0, 0.0, 0.0] and m["recall"] == [pytest.approx(2 / 3), 0.0, 0.0]
    assert m["f1"][1] == 0.0 and m["f1"][2] == 0.0
    # macro over classes present in targets or predictions: (F1_0 + F1_1) / 2
    assert m["macro_f1"] == pytest.approx((0.8 + 0.0) / 2)
    assert not any(np.isnan(v) for v in m["precision"] + m["recall"] + m["f1"])


def test_classification_all_ignored():
    m = classification_metrics([1, 2], [-1, -1], 3)
    assert m["accuracy"] == 0.0 and m["macro_f1"] == 0.0 and m["count"] == 0
    assert m["confusion"] == [[0] * 3] * 3


def test_classification_2d_and_custom_ignore():
    t = np.array([[0, 1], [9, 1]])
    p = np.array([[0, 1], [0, 0]])
    m = classification_metrics(p, t, 2, ignore_index=9)
    assert m["count"] == 3 and m["accuracy"] == pytest.approx(2 / 3)


def test_classification_errors():
    with pytest.raises(ValueError, match="pred holds class 3"):
        classification_metrics([3], [0], 3)
    with pytest.raises(ValueError, match="target holds class -2"):
        classification_metrics([0], [-2], 3)
    with pytest.raises(ValueError, match="entries"):
        classification_metrics([0, 1], [0], 3)
    with pytest.raises(TypeError, match="integer class ids"):
        classification_metrics([0.5], [0], 3)
    with pytest.raises(ValueError, match="num_classes"):
        classification_metrics([0], [0], 0)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(-1, 3)), min_size=1, max_size=60))
def test_classification_matches_definitions(pairs):
    pred = np.array([p for p, _ in pairs])
    target = np.array([t for _, t in pairs])
    m = classification_metrics(pred, target, 4)
    keep = target != -1
    for c in range(4):
        tp = int(((pred == c) & (target == c) & keep).sum())
        fp = int(((pred == c) & (target != c) & keep).sum())
        fn = int(((pred != c) & (target == c) & keep).sum())
        assert m["precision"][c] == pytest.approx(tp / (tp + fp) if tp + fp else 0.0)
        assert m["recall"][c] == pytest.approx(tp / (tp + fn) if tp + fn else 0.0)
    assert sum(map(sum, m["confusion"])) == int(keep.sum())
    if keep.any():
        assert m["accuracy"] == pytest.approx(float((pred[keep] == target[keep]).mean()))


def test_average_ranks_ties():
    assert average_ranks([10, 20, 20, 5, 20]).tolist() == [2.0, 4.0, 4.0, 1.0, 4.0]
    assert average_ranks([]).tolist() == []


def test_regression_hand_computed():
    pred, target = [1.0, 2.0, 3.0, 3.0], [1.0, 1.0, 2.0, 5.0]
    m = regression_metrics(pred, target)
    assert m["mse"] == pytest.approx((0 + 1 + 1 + 4) / 4)
    assert m["mae"] == pytest.approx((0 + 1 + 1 + 2) / 4)
    # Pearson from the textbook formula.
    p, t = np.array(pred), np.array(target)
    r = ((p - p.mean()) * (t - t.mean())).sum() / np.sqrt(((p - p.mean()) ** 2).sum() * ((t - t.mean()) ** 2).sum())
    assert m["pearson"] == pytest.approx(r)
    # Spearman = Pearson of average ranks: ranks p = [1, 2, 3.5, 3.5], t = [1.5, 1.5, 3, 4] -> 8/9
    assert m["spearman"] == pytest.approx(8 / 9)
    assert m["r2"] == pytest.approx(1 - 6 / 10.75)  # SS_tot = 1.5625 * 2 + 0.0625 + 7.5625
    assert m["count"] == 4
    json.dumps(m)


def test_regression_perfect_and_monotone():
    x = np.linspace(0, 1, 20)
    m = regression_metrics(x, x)
    assert m["mse"] == 0 and m["pearson"] == pytest.approx(1) and m["spearman"] == pytest.approx(1) and m["r2"] == 1
    m = regression_metrics(x ** 3, x)
    assert m["spearman"] == pytest.approx(1.0) and m["pearson"] < 1.0
    assert regression_metrics(-x, x)["spearman"] == pytest.approx(-1.0)


def test_regression_constant_inputs_no_nan_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = regression_metrics([0.5, 0.5, 0.5], [0.1, 0.4, 0.9])
        assert m["pearson"] == 0.0 and m["spearman"] == 0.0 and np.isfinite(m["r2"])
        m = regression_metrics([0.1, 0.4, 0.9], [0.3, 0.3, 0.3])
        assert m["pearson"] == 0.0 and m["r2"] == 0.0
        m = regression_metrics([0.3] * 3, [0.3] * 3)
        assert m["r2"] == 1.0 and m["mse"] == 0.0
        m = regression_metrics([0.1] * 7, [0.1] * 7)  # mean has rounding error
        assert m["pearson"] == 0.0
        m = regression_metrics([0.7], [0.2])  # a single sample
        assert m["pearson"] == 0.0 and m["mae"] == pytest.approx(0.5)


def test_regression_errors():
    with pytest.raises(ValueError, match="at least one"):
        regression_metrics([], [])
    with pytest.raises(ValueError, match="finite"):
        regression_metrics([np.nan], [0.0])
    with pytest.raises(ValueError, match="entries"):
        regression_metrics([1.0, 2.0], [1.0])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=2, max_size=40))
def test_spearman_matches_rank_formula(pairs):
    a = np.array([p for p, _ in pairs], dtype=float)
    b = np.array([q for _, q in pairs], dtype=float)
    m = regression_metrics(a, b)
    assert -1.0 <= m["spearman"] <= 1.0 and -1.0 <= m["pearson"] <= 1.0
    ra, rb = average_ranks(a), average_ranks(b)
    if ra.std() > 0 and rb.std() > 0:
        assert m["spearman"] == pytest.approx(np.corrcoef(ra, rb)[0, 1], abs=1e-9)
    else:
        assert m["spearman"] == 0.0


@pytest.mark.filterwarnings("ignore::UserWarning")  # scikit-learn on one-class inputs
def test_classification_matches_scikit_learn():
    skm = pytest.importorskip("sklearn.metrics")
    r = np.random.default_rng(0)
    for _ in range(40):
        C, n = int(r.integers(1, 6)), int(r.integers(1, 60))
        target, pred = r.integers(-1, C, n), r.integers(0, C, n)
        m = classification_metrics(pred, target, C)
        t, p = target[target != -1], pred[target != -1]
        if t.size == 0:
            continue
        labels = list(range(C))
        prec, rec, f1, support = skm.precision_recall_fscore_support(t, p, labels=labels, zero_division=0)
        assert m["accuracy"] == pytest.approx(skm.accuracy_score(t, p))
        assert np.allclose(m["precision"], prec) and np.allclose(m["recall"], rec) and np.allclose(m["f1"], f1)
        assert m["support"] == support.tolist()
        assert m["confusion"] == skm.confusion_matrix(t, p, labels=labels).tolist()
        # macro-F1 over the classes present in targets or predictions (see the module docstring).
        present = sorted(set(t.tolist()) | set(p.tolist()))
        assert m["macro_f1"] == pytest.approx(skm.f1_score(t, p, labels=present, average="macro", zero_division=0))


def test_regression_matches_scipy_and_scikit_learn():
    stats = pytest.importorskip("scipy.stats")
    skm = pytest.importorskip("sklearn.metrics")
    r = np.random.default_rng(1)
    for i in range(40):
        n = int(r.integers(3, 50))
        target, pred = r.random(n), r.random(n) + 0.5 * r.random() * np.arange(n)
        if i % 2:  # ties exercise the average ranks of Spearman
            target, pred = np.round(target, 1), np.round(pred, 1)
        m = regression_metrics(pred, target)
        assert m["mse"] == pytest.approx(skm.mean_squared_error(target, pred))
        assert m["mae"] == pytest.approx(skm.mean_absolute_error(target, pred))
        assert m["r2"] == pytest.approx(skm.r2_score(target, pred))
        assert m["pearson"] == pytest.approx(stats.pearsonr(pred, target)[0])
        assert m["spearman"] == pytest.approx(stats.spearmanr(pred, target)[0])

"""Evaluation metrics for the token classifier and the sequence scorer (numpy only).

The trainer converts tensors with ``.cpu().numpy()``; lists work too. Every returned value is a
plain Python float/int/list, so the dicts go straight into ``metrics.jsonl``.

Conventions for undefined values (no NaN, no warnings, finite JSON):

* classification: precision of a class never predicted, recall of a class absent from the targets,
  and F1 when precision + recall = 0 are all 0.0. ``macro_f1`` averages F1 over the classes that
  occur in the targets *or* the predictions (a class absent from both, e.g. an unused corruption
  kind in a small eval batch, is left out instead of dragging the mean to 0; a class predicted but
  never present still counts with F1 = 0). With no counted tokens at all, accuracy and macro_f1 are 0.0.
* regression: Pearson / Spearman correlation with a constant input (zero variance) is 0.0;
  R^2 with constant targets is 1.0 for a perfect prediction and 0.0 otherwise (scikit-learn's
  ``force_finite`` convention).
"""
from __future__ import annotations

import numpy as np


def classification_metrics(pred, target, num_classes: int, ignore_index: int = -1) -> dict:
    """Accuracy, per-class precision/recall/F1, macro-F1 and the confusion matrix.

    ``pred`` and ``target`` are class ids of the same shape (any shape; flattened); positions where
    ``target == ignore_index`` are skipped. Returns::

        {"accuracy": float, "precision": [C floats], "recall": [C], "f1": [C], "support": [C ints],
         "macro_f1": float, "confusion": C x C list (row = true class, column = predicted), "count": int}
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    C = int(num_classes)
    p = np.asarray(pred).reshape(-1)
    t = np.asarray(target).reshape(-1)
    if p.shape != t.shape:
        raise ValueError(f"pred has {p.size} entries but target has {t.size}")
    if p.size and not np.issubdtype(p.dtype, np.integer):
        raise TypeError(f"pred must hold integer class ids, got dtype {p.dtype}")
    if t.size and not np.issubdtype(t.dtype, np.integer):
        raise TypeError(f"target must hold integer class ids, got dtype {t.dtype}")
    keep = t != ignore_index
    p, t = p[keep].astype(np.int64), t[keep].astype(np.int64)
    for name, a in (("target", t), ("pred", p)):
        if a.size and (a.min() < 0 or a.max() >= C):
            bad = a[(a < 0) | (a >= C)][0]
            raise ValueError(f"{name} holds class {bad}, outside [0, {C}) (ignore_index={ignore_index})")
    confusion = np.bincount(t * C + p, minlength=C * C).reshape(C, C)  # (true, pred)
    tp = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros(C), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(C), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(C), where=denom > 0)
    present = (support > 0) | (predicted > 0)
    total = int(support.sum())
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "support": support.astype(int).tolist(),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "confusion": confusion.astype(int).tolist(),
        "count": total,
    }


def average_ranks(a) -> np.ndarray:
    """1-based ranks of ``a`` with ties given their average rank (as scipy.stats.rankdata)."""
    a = np.asarray(a).reshape(-1)
    order = np.argsort(a, kind="mergesort")
    sorted_a = a[order]
    # Start of each run of equal values in sorted order.
    new_run = np.concatenate([[True], sorted_a[1:] != sorted_a[:-1]]) if a.size else np.zeros(0, bool)
    run_id = np.cumsum(new_run) - 1
    starts = np.flatnonzero(new_run)
    counts = np.diff(np.concatenate([starts, [a.size]]))
    avg = starts + (counts - 1) / 2.0 + 1.0  # average 1-based rank of each run
    ranks = np.empty(a.size, dtype=np.float64)
    ranks[order] = avg[run_id]
    return ranks


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    xc, yc = x - x.mean(), y - y.mean()
    sx, sy = np.sqrt((xc * xc).sum()), np.sqrt((yc * yc).sum())
    # Relative threshold: a "constant" input with rounding noise must not produce a wild value.
    if sx <= 1e-12 * max(1.0, np.abs(x).max()) or sy <= 1e-12 * max(1.0, np.abs(y).max()):
        return 0.0
    return float(np.clip((xc * yc).sum() / (sx * sy), -1.0, 1.0))


def regression_metrics(pred, target) -> dict:
    """MSE, MAE, Pearson, Spearman (average ranks for ties) and R^2 of ``pred`` against ``target``.

    Inputs of any matching shape (flattened), finite. Returns
    ``{"mse", "mae", "pearson", "spearman", "r2", "count"}`` (see the module docstring for constants).
    """
    p = np.asarray(pred).reshape(-1).astype(np.float64)
    t = np.asarray(target).reshape(-1).astype(np.float64)
    if p.shape != t.shape:
        raise ValueError(f"pred has {p.size} entries but target has {t.size}")
    if p.size == 0:
        raise ValueError("regression metrics need at least one prediction")
    if not (np.isfinite(p).all() and np.isfinite(t).all()):
        raise ValueError("pred and target must be finite (found NaN or inf)")
    err = p - t
    mse = float((err * err).mean())
    ss_res = float((err * err).sum())
    tc = t - t.mean()
    ss_tot = float((tc * tc).sum())
    if ss_tot > 0:
        r2 = 1.0 - ss_res / ss_tot
    else:
        r2 = 1.0 if ss_res == 0 else 0.0
    return {
        "mse": mse,
        "mae": float(np.abs(err).mean()),
        "pearson": _pearson(p, t),
        "spearman": _pearson(average_ranks(p), average_ranks(t)),
        "r2": float(r2),
        "count": int(p.size),
    }

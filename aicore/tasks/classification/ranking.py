"""Binary ranking metrics in numpy: ROC AUC and average precision, with ties handled as
scikit-learn handles them (its functions are the reference in tests/test_ranking.py).

The evaluator computes one of each per class after every epoch; calling scikit-learn for that
cost its import (a second or more at start-up) and its argument validation on every call.
"""
from __future__ import annotations

import numpy as np


def roc_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve = P(score of a random positive > score of a random negative),
    ties counting one half (Mann-Whitney U from average ranks). Needs both classes present."""
    y = np.asarray(positive, bool).ravel()
    s = np.asarray(scores, np.float64).ravel()
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("roc_auc needs at least one positive and one negative sample")
    order = np.argsort(s, kind="mergesort")
    ss = s[order]
    bounds = np.flatnonzero(np.diff(ss)) + 1
    starts, ends = np.r_[0, bounds], np.r_[bounds, ss.size]
    ranks = np.empty(ss.size)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)  # 1-based average ranks
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(positive: np.ndarray, scores: np.ndarray) -> float:
    """Sum over distinct score thresholds (high to low) of precision x recall gained there,
    i.e. the step-wise area under the precision-recall curve. Needs a positive sample."""
    y = np.asarray(positive, bool).ravel()
    s = np.asarray(scores, np.float64).ravel()
    if not y.any():
        raise ValueError("average_precision needs at least one positive sample")
    order = np.argsort(-s, kind="mergesort")
    sd, yd = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(sd)), sd.size - 1]  # last index of each threshold
    tps = np.cumsum(yd)[last]
    precision = tps / (last + 1.0)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))

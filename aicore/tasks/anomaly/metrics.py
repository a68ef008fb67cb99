"""Anomaly metrics that scikit-learn does not have: the PRO curve and its area (AUPRO), and the
F1-optimal threshold. AUROC comes from ``sklearn.metrics.roc_auc_score``.

PRO (per-region overlap, Bergmann et al., MVTec AD): at a threshold t, PRO(t) is the mean over
every connected defect region (8-connected, in every image) of the fraction of the region's
pixels scoring >= t, and FPR(t) the fraction of defect-free pixels scoring >= t. Unlike pixel
AUROC, a large defect does not outweigh a small one. The metric is the area under PRO(FPR) for
FPR in [0, limit] (limit 0.3 by convention), divided by the limit so it lies in [0, 1].
"""
from __future__ import annotations

from bisect import bisect

import numpy as np
from scipy import ndimage
from sklearn.metrics import precision_recall_curve

EIGHT_CONNECTED = np.ones((3, 3), dtype=int)


def pro_curve(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, PRO) at every distinct threshold, from the highest score down, starting at (0, 0).

    maps: (N, H, W) scores; masks: (N, H, W), non-zero = defect. One sort of all pixels: each
    defect pixel carries 1 / (its region's size * number of regions), each good pixel
    1 / (number of good pixels), and cumulative sums in score order give both curves exactly.
    """
    maps = np.asarray(maps)
    masks = np.asarray(masks).astype(bool)
    weights = np.zeros(maps.shape, np.float64)
    n_regions = 0
    for i in range(len(masks)):
        labeled, n = ndimage.label(masks[i], structure=EIGHT_CONNECTED)
        if n:
            sizes = np.bincount(labeled.ravel()).astype(np.float64)
            inv = np.where(sizes > 0, 1.0 / np.maximum(sizes, 1), 0.0)
            inv[0] = 0.0  # background
            weights[i] = inv[labeled]
            n_regions += n
    good = ~masks
    n_good = int(good.sum())
    if n_regions == 0 or n_good == 0:
        raise ValueError("PRO needs defect pixels and defect-free pixels")
    scores = maps.ravel()
    order = np.argsort(-scores, kind="stable")
    scores = scores[order]
    fpr = np.cumsum(good.ravel()[order]) / n_good
    pro = np.cumsum(weights.ravel()[order]) / n_regions
    last_of_tie = np.r_[scores[1:] != scores[:-1], True]  # a threshold takes all equal scores
    return np.r_[0.0, fpr[last_of_tie]], np.r_[0.0, pro[last_of_tie]]


def area_under(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoidal area under y(x) for x in [0, x_max], interpolating y linearly at x_max.
    x must be non-decreasing, starting at 0."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    correction = 0.0
    if x_max not in x:
        i = bisect(x.tolist(), x_max)
        if i == len(x):  # the curve stops before x_max: integrate what there is
            x_max = float(x[-1])
        else:
            y_at = y[i - 1] + (y[i] - y[i - 1]) * (x_max - x[i - 1]) / (x[i] - x[i - 1])
            correction = 0.5 * (y_at + y[i - 1]) * (x_max - x[i - 1])
    keep = x <= x_max
    x, y = x[keep], y[keep]
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction)


def pro_score(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3) -> float:
    """AUPRO up to `fpr_limit`, normalised to [0, 1]."""
    fpr, pro = pro_curve(maps, masks)
    return area_under(fpr, pro, fpr_limit) / fpr_limit


def f1_max(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """The best F1 over all thresholds and that threshold (predict defect when score >= it).
    Among thresholds with the same F1 the lowest wins: it misses the fewest defects."""
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    best = int(np.argmax(f1))
    return float(f1[best]), float(thresholds[best])

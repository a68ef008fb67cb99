"""The classification evaluator's ROC AUC and average precision against scikit-learn's, on
scores with and without ties, balanced and rare positives; and the train_batch.jpg grid."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from aicore.tasks.classification.ranking import average_precision, roc_auc


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("levels", [None, 5, 2])  # continuous scores, heavy ties, two values
@pytest.mark.parametrize("rate", [0.5, 0.03])
def test_ranking_metrics_equal_sklearn(seed, levels, rate):
    rng = np.random.default_rng(seed)
    n = 400
    y = rng.random(n) < rate
    y[:2] = [True, False]  # both classes present
    s = rng.random(n) + 0.4 * y
    if levels is not None:
        s = np.round(s * levels) / levels
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_ranking_metrics_edge_cases():
    y = np.array([1, 1, 0, 0], bool)
    assert roc_auc(y, [0.9, 0.8, 0.1, 0.2]) == 1.0
    assert roc_auc(y, [0.1, 0.2, 0.9, 0.8]) == 0.0
    assert roc_auc(y, [0.5] * 4) == 0.5
    assert average_precision(y, [0.5] * 4) == pytest.approx(average_precision_score(y, [0.5] * 4))
    with pytest.raises(ValueError):
        roc_auc([True, True], [0.1, 0.2])
    with pytest.raises(ValueError):
        average_precision([False, False], [0.1, 0.2])


def test_train_batch_grid_is_drawn_with_labels(tmp_path):
    import cv2
    import torch
    from aicore.data.transforms import Normalize, default_mean_std
    from aicore.tasks.classification.visualize import save_batch_grid
    norm = Normalize(*default_mean_std(3, None, None))
    x = torch.zeros(10, 3, 32, 32)  # the ImageNet mean colour after de-normalisation
    save_batch_grid(x, [f"class{i}" for i in range(9)] + ["cat 0.6\ndog 0.4"], norm,
                    tmp_path / "b.jpg")
    img = cv2.imread(str(tmp_path / "b.jpg"))
    # 32 px tiles are drawn at 128 px; 8 per row, 4 px apart: 2 rows
    assert img.shape == (2 * 128 + 4, 8 * 128 + 7 * 4, 3)
    tile = img[:128, :128]
    assert (tile[:10, :40] > 200).any() and (tile[:10, :40] < 30).any()  # a caption box
    bgr = tile[100:, 100:].reshape(-1, 3).mean(0)
    assert np.abs(bgr - [0.406 * 255, 0.456 * 255, 0.485 * 255]).max() < 6  # de-normalised, BGR
    last = img[132:, 128 + 4:2 * 128 + 4]
    assert (last[30:45, :30] > 200).any()  # the second caption line of the mixed sample

"""Classification metrics, accumulated over the whole split and gathered over DDP ranks."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from aicore.engine import dist
from aicore.registry import EVALUATORS


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    return np.bincount(y_true * n + y_pred, minlength=n * n).reshape(n, n)


def cohen_kappa(cm: np.ndarray) -> float:
    total = cm.sum()
    if total == 0:
        return 0.0
    po = np.trace(cm) / total
    pe = (cm.sum(0) * cm.sum(1)).sum() / total ** 2
    return float((po - pe) / (1 - pe)) if pe != 1 else 1.0


def per_class_prf(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 per class; 0 where undefined (as scikit-learn's zero_division=0)."""
    tp = np.diag(cm).astype(np.float64)
    pred, true = cm.sum(0), cm.sum(1)
    precision = np.divide(tp, pred, out=np.zeros_like(tp), where=pred > 0)
    recall = np.divide(tp, true, out=np.zeros_like(tp), where=true > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return precision, recall, f1


def f_beta(precision: np.ndarray, recall: np.ndarray, beta: float) -> np.ndarray:
    """F-beta: beta < 1 weighs precision more (few false alarms), beta > 1 recall (few misses)."""
    b2 = beta * beta
    denom = b2 * precision + recall
    return np.divide((1 + b2) * precision * recall, denom, out=np.zeros_like(precision),
                     where=denom > 0)


def one_vs_rest_auc(probs: np.ndarray, targets: np.ndarray, n: int) -> tuple[list, list]:
    """Per-class ROC AUC and average precision (area under the PR curve), one class against
    the rest; None where a class has no positive or no negative sample."""
    from aicore.tasks.classification.ranking import average_precision, roc_auc
    auc, aupr = [], []
    for c in range(n):
        y = targets == c
        if y.all() or not y.any():
            auc.append(None)
            aupr.append(None)
            continue
        auc.append(roc_auc(y, probs[:, c]))
        aupr.append(average_precision(y, probs[:, c]))
    return auc, aupr


@EVALUATORS.register("ClassificationEvaluator")
class ClassificationEvaluator:
    """top1, top-k (``top5``; only with more classes than k, where it is not always 1),
    precision/recall/F1 per class and macro-averaged, Cohen's kappa.

    Macro averages are over the classes present in the split (a class with no true and no
    predicted samples has no defined recall and would drag the mean to zero).
    Probabilities and sample indices are kept so eval can write per-image predictions.
    """


    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None,
                 topk: int = 5) -> None:
        self.num_classes = num_classes
        self.class_names = list(class_names or range(num_classes))
        self.topk = topk
        #: the numbers compute() returns; train.best_metric must be one of them
        self.metric_names = ("top1",) + ((f"top{topk}",) if num_classes > topk else ()) + (
            "precision_macro", "recall_macro", "f1_macro", "kappa")
        self.reset()

    def reset(self) -> None:
        self._probs: list[np.ndarray] = []
        self._targets: list[np.ndarray] = []
        self._indices: list[np.ndarray] = []

    def update(self, outputs: torch.Tensor, targets: Any) -> None:
        """outputs: (N, C) logits; targets: (N,) class indices, or (labels, sample indices)."""
        if isinstance(targets, (tuple, list)):
            targets, indices = targets
            self._indices.append(np.asarray(indices.cpu() if torch.is_tensor(indices) else indices))
        probs = torch.softmax(outputs.float(), dim=1).cpu().numpy()
        self._probs.append(probs)
        self._targets.append(targets.cpu().numpy() if torch.is_tensor(targets) else
                             np.asarray(targets))

    def gathered(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        local = (_cat(self._probs, (0, self.num_classes)), _cat(self._targets, (0,), np.int64),
                 _cat(self._indices, (0,), np.int64))
        parts = dist.all_gather_object(local)
        probs, targets, indices = (np.concatenate([p[i] for p in parts]) for i in range(3))
        return probs, targets.astype(np.int64), indices.astype(np.int64)

    def compute(self) -> dict[str, Any]:
        probs, targets, indices = self.gathered()
        self.probs, self.targets, self.indices = probs, targets, indices
        n = self.num_classes
        if len(targets) == 0:
            return {"top1": 0.0}
        preds = probs.argmax(1)
        cm = confusion_matrix(targets, preds, n)
        self.cm = cm
        precision, recall, f1 = per_class_prf(cm)
        f05, f2 = f_beta(precision, recall, 0.5), f_beta(precision, recall, 2.0)
        auc, aupr = one_vs_rest_auc(probs, targets, n)
        present = (cm.sum(0) + cm.sum(1)) > 0
        topk = {}
        if n > self.topk:
            best_k = np.argsort(-probs, axis=1)[:, :self.topk]
            topk = {f"top{self.topk}": float((best_k == targets[:, None]).any(1).mean())}
        return {
            "top1": float((preds == targets).mean()),
            **topk,
            "precision_macro": float(precision[present].mean()),
            "recall_macro": float(recall[present].mean()),
            "f1_macro": float(f1[present].mean()),
            "kappa": cohen_kappa(cm),
            "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]),
                                 "f0.5": float(f05[i]), "f1": float(f1[i]), "f2": float(f2[i]),
                                 "auc": auc[i], "aupr": aupr[i], "support": int(cm[i].sum())}
                          for i, name in enumerate(self.class_names)},
        }


def _cat(arrays: list[np.ndarray], empty_shape: tuple, dtype=np.float32) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.zeros(empty_shape, dtype)

"""Classification eval report: confusion matrix, per-image predictions, correct/wrong lists,
a per-class metrics table and a t-SNE map of the penultimate features."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from loguru import logger

from aicore.engine.plots import save_confusion_matrix
from aicore.tasks.classification.visualize import plot_tsne

PREDICTION_COLUMNS = ["path", "true", "predicted", "probability", "true_probability", "correct"]


def write_all(trainer, model, evaluator, dataset, metrics: dict, out: Path) -> None:
    names = list(trainer.classes)
    save_confusion_matrix(evaluator.cm, names, out)
    rows = prediction_rows(evaluator, dataset, names)
    _write_csv(out / "predictions.csv", rows)
    # the mistakes first and most confident first: those are the ones to look at
    _write_csv(out / "wrong.csv", sorted((r for r in rows if r[-1] == 0), key=lambda r: -float(r[3])))
    _write_csv(out / "correct.csv", sorted((r for r in rows if r[-1] == 1), key=lambda r: float(r[3])))
    write_per_class_table(metrics["per_class"], out)
    if trainer.cfg.eval.tsne:
        tsne_plot(trainer, model, dataset, evaluator, out / "tsne.png")


def prediction_rows(evaluator, dataset, names: list[str]) -> list[list]:
    rows = []
    for j in np.argsort(evaluator.indices):
        i, p = int(evaluator.indices[j]), evaluator.probs[j]
        t, k = int(evaluator.targets[j]), int(p.argmax())
        rows.append([dataset.samples[i][0], names[t], names[k], f"{p[k]:.6f}", f"{p[t]:.6f}",
                     int(t == k)])
    return rows


def _write_csv(path: Path, rows: list[list]) -> None:
    with open(path, "w", newline="", encoding="utf-8",
              errors="backslashreplace") as f:
        w = csv.writer(f)
        w.writerow(PREDICTION_COLUMNS)
        w.writerows(rows)


def write_per_class_table(per_class: dict, out: Path) -> None:
    cols = ["precision", "recall", "f0.5", "f1", "f2", "auc", "aupr", "support"]
    with open(out / "per_class.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["class"] + cols)
        for name, m in per_class.items():
            w.writerow([name] + [m.get(c, "") for c in cols])
    lines = ["| class | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, m in per_class.items():
        cells = [f"{m[c]:.4f}" if isinstance(m.get(c), float) else str(m.get(c, "")) for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    (out / "per_class.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


@torch.no_grad()
def tsne_plot(trainer, model, dataset, evaluator, path: Path, limit: int = 2000) -> None:
    """Penultimate features of up to `limit` images, embedded in 2-D with t-SNE."""
    from sklearn.manifold import TSNE
    from aicore.tasks.classification.models import penultimate_features
    if not (hasattr(model, "forward_features") and hasattr(model, "forward_head")):
        logger.info("t-SNE skipped: the model has no forward_features/forward_head (timm API)")
        return
    n = min(len(dataset), limit)
    if n < 5:
        return
    idx = np.random.default_rng(0).permutation(len(dataset))[:n]
    feats, labels = [], []
    for start in range(0, n, 64):
        chunk = [dataset[int(i)] for i in idx[start:start + 64]]
        x = torch.stack([c[0] for c in chunk]).to(trainer.device)
        with trainer.autocast():
            feats.append(penultimate_features(model, x).float().flatten(1).cpu().numpy())
        labels += [int(c[1]) for c in chunk]
    emb = TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), init="pca",
               random_state=0).fit_transform(np.concatenate(feats))
    plot_tsne(emb, np.asarray(labels), list(trainer.classes), path)

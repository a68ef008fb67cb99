"""Confusion matrix plot and label drawing."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_confusion_matrix(cm: np.ndarray, names: Sequence[str], path: Path) -> None:
    n = len(names)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = min(20, 2 + 0.5 * n)
    fig, ax = plt.subplots(figsize=(size, size * 0.85), dpi=100)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{cm[i, j]}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class")
    ax.set_title("confusion matrix (counts; colour = row-normalised)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def draw_label(rgb: np.ndarray, text: str) -> np.ndarray:
    out = rgb.copy()
    if out.shape[0] < 128:  # upscale tiny images so the text is readable
        scale = int(np.ceil(128 / out.shape[0]))
        out = cv2.resize(out, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    fs = max(0.4, out.shape[0] / 500)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, fs, 1)
    cv2.rectangle(out, (0, 0), (tw + 6, th + base + 6), (0, 0, 0), -1)
    cv2.putText(out, text, (3, th + 3), cv2.FONT_HERSHEY_SIMPLEX, fs, (255, 255, 255), 1,
                cv2.LINE_AA)
    return out

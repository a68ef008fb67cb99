"""Confusion matrix plot and label drawing."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


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


def overlay_heatmap(rgb: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """A [0, 1] heat map (any size) blended over a uint8 RGB image with the JET colour map."""
    heat = cv2.resize(heat.astype(np.float32), (rgb.shape[1], rgb.shape[0]))
    colour = cv2.applyColorMap((heat.clip(0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    colour = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB)
    return (rgb * (1 - alpha) + colour * alpha).clip(0, 255).astype(np.uint8)


def save_batch_grid(images, labels: Sequence[str], normalize, path: Path, max_images: int = 32) -> None:
    """The first training batch after augmentation, de-normalised, with labels: what the model
    actually sees (a wrong crop or colour transform shows up here at once)."""
    import torch
    x = images[:max_images].float()
    mean = torch.from_numpy(normalize.mean.reshape(-1, 1, 1))
    std = torch.from_numpy(1.0 / normalize.inv_std.reshape(-1, 1, 1))
    x = (x * std + mean).clamp(0, 1)
    n = x.shape[0]
    cols = min(8, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.6, rows * 1.8), dpi=100, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        img = x[i].permute(1, 2, 0).numpy()
        ax = axes.flat[i]
        ax.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray" if img.shape[2] == 1 else None,
                  vmin=0, vmax=1)
        ax.set_title("\n".join(line[:14] for line in str(labels[i]).splitlines()), fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_tsne(emb: np.ndarray, labels: np.ndarray, names: Sequence[str], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
    cmap = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    for i, name in enumerate(names):
        sel = labels == i
        if sel.any():
            ax.scatter(emb[sel, 0], emb[sel, 1], s=8, color=cmap(i % cmap.N), label=name)
    ax.set_title("t-SNE of penultimate features")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, markerscale=2, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

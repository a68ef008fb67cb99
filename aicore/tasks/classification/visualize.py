"""Label drawing, the train_batch.jpg preview and the t-SNE plot."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from aicore.engine.mpl import pyplot


def draw_label(rgb: np.ndarray, text: str) -> np.ndarray:
    """`text` (one box per line) in the top-left corner, white on black."""
    out = rgb.copy()
    if out.shape[0] < 128:  # upscale tiny images so the text is readable
        scale = int(np.ceil(128 / out.shape[0]))
        out = cv2.resize(out, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    fs = max(0.4, out.shape[0] / 500)
    for k, line in enumerate(str(text).splitlines() or [""]):
        (tw, th), base = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, fs, 1)
        y0 = k * (th + base + 6)
        cv2.rectangle(out, (0, y0), (tw + 6, y0 + th + base + 6), (0, 0, 0), -1)
        cv2.putText(out, line, (3, y0 + th + 3), cv2.FONT_HERSHEY_SIMPLEX, fs, (255, 255, 255),
                    1, cv2.LINE_AA)
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
    from aicore.data.tiles import tile_images
    x = images[:max_images].float()
    mean = torch.from_numpy(normalize.mean.reshape(-1, 1, 1))
    std = torch.from_numpy(1.0 / normalize.inv_std.reshape(-1, 1, 1))
    x = (x * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    tiles = [draw_label(np.ascontiguousarray(img),
                        "\n".join(line[:14] for line in str(label).splitlines()))
             for img, label in zip(x, labels)]
    cv2.imwrite(str(path), cv2.cvtColor(tile_images(tiles, 8), cv2.COLOR_RGB2BGR))


def plot_tsne(emb: np.ndarray, labels: np.ndarray, names: Sequence[str], path: Path) -> None:
    plt = pyplot()
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

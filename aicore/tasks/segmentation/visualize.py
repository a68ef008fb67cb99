"""Colour overlays of class masks and the per-class IoU / Dice bar chart."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from aicore.engine.mpl import pyplot

IGNORE_INDEX = 255


def palette(n: int) -> np.ndarray:
    """(n, 3) uint8 RGB colours: the PASCAL VOC colour map (class 0 black), which users of VOC
    masks already read fluently, and which never repeats within 256 classes."""
    out = np.zeros((max(n, 1), 3), np.uint8)
    for i in range(max(n, 1)):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out[i] = (r, g, b)
    return out[:n]


def overlay(rgb: np.ndarray, mask: np.ndarray, names: Sequence[str], alpha: float = 0.5,
            background: int | None = 0) -> np.ndarray:
    """The mask's classes blended over an RGB uint8 image, with contours and a legend of the
    classes present. `background` (class 0 by default) is left unpainted so the part stays
    visible; None paints every class."""
    out = rgb.copy()
    if mask.shape != rgb.shape[:2]:
        mask = cv2.resize(mask.astype(np.uint8), (rgb.shape[1], rgb.shape[0]),
                          interpolation=cv2.INTER_NEAREST)
    if out.shape[0] < 256:  # upscale small images so overlay, contours and legend are readable
        scale = int(np.ceil(256 / out.shape[0]))
        out = cv2.resize(out, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        mask = cv2.resize(mask.astype(np.uint8), (out.shape[1], out.shape[0]),
                          interpolation=cv2.INTER_NEAREST)
    colours = palette(len(names))
    present = [int(c) for c in np.unique(mask) if c < len(names) and c != background]
    paint = np.zeros_like(out)
    sel = np.zeros(mask.shape, bool)
    for c in present:
        m = mask == c
        paint[m] = colours[c]
        sel |= m
    out[sel] = (out[sel].astype(np.float32) * (1 - alpha) + paint[sel] * alpha).astype(np.uint8)
    for c in present:
        contours, _ = cv2.findContours((mask == c).astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, tuple(int(v) for v in colours[c]), 1, cv2.LINE_AA)
    fs = max(0.4, out.shape[0] / 700)
    y = 4
    for c in present:
        text = str(names[c])
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, fs, 1)
        cv2.rectangle(out, (2, y), (th + tw + 12, y + th + base + 4), (0, 0, 0), -1)
        cv2.rectangle(out, (5, y + 3), (5 + th, y + 3 + th), tuple(int(v) for v in colours[c]), -1)
        cv2.putText(out, text, (th + 9, y + th + 2), cv2.FONT_HERSHEY_SIMPLEX, fs,
                    (255, 255, 255), 1, cv2.LINE_AA)
        y += th + base + 6
    return out


def plot_per_class(per_class: dict[str, dict], path: Path) -> None:
    """Horizontal bars of IoU and Dice per class (classes absent from the split are marked)."""
    names = list(per_class)
    iou = [per_class[n]["IoU"] for n in names]
    dice = [per_class[n]["Dice"] for n in names]
    h = max(2.8, 0.35 * len(names) + 1.5)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, min(h, 40)), dpi=100)
    y = np.arange(len(names))
    ax.barh(y - 0.2, [v or 0 for v in iou], height=0.4, label="IoU", color="#1f77b4")
    ax.barh(y + 0.2, [v or 0 for v in dice], height=0.4, label="Dice", color="#ff7f0e")
    for k, (i, d) in enumerate(zip(iou, dice)):
        ax.text(0.005 if i is None else min(i, 0.9) + 0.01, k - 0.2,
                "absent" if i is None else f"{i:.3f}", va="center", fontsize=7)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("score")
    valid = [v for v in iou if v is not None]
    ax.set_title(f"per-class IoU / Dice (mIoU {np.mean(valid) if valid else 0:.3f})")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_pred_masks(masks: Sequence[tuple[str, np.ndarray]], out: Path, source: Path) -> None:
    """demo/pred_masks/<name>.png for each (source file, class-index mask): a palette PNG whose
    pixel values are the class indices (viewers show the colours). Written the same way by
    mode=demo and `aicore.deploy predict`."""
    from PIL import Image
    flat = palette(256).reshape(-1).tolist()
    for name, mask in masks:
        name = Path(name)
        rel = name.relative_to(source) if source.is_dir() else Path(name.name)
        target = out / "pred_masks" / rel.with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        im = Image.fromarray(mask.astype(np.uint8))
        im.putpalette(flat)  # an 8-bit grey image with a palette becomes mode 'P'
        im.save(target)

"""Synthetic classification data (python -m aicore.tools.demo_data OUT --task classification):
four shape classes (circle, square, triangle, cross) of random size, position,
rotation and colour on a noisy textured background, like parts on a conveyor.
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

SHAPES = ("circle", "square", "triangle", "cross")


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.uniform(40, 120)
    bg = np.full((size, size, 3), base, np.float32)
    bg += rng.normal(0, 12, (size, size, 1))  # grain
    gx = np.linspace(-1, 1, size, dtype=np.float32)
    bg += (rng.uniform(-20, 20) * gx[None, :, None] + rng.uniform(-20, 20) * gx[:, None, None])
    return bg


def _polygon(center, radius, angle, n):
    return np.array([(center[0] + radius * math.cos(angle + 2 * math.pi * k / n),
                      center[1] + radius * math.sin(angle + 2 * math.pi * k / n))
                     for k in range(n)], np.int32)


def draw_shape(img: np.ndarray, shape: str, rng: np.random.Generator) -> None:
    size = img.shape[0]
    r = rng.uniform(0.2, 0.32) * size
    c = rng.uniform(r + 1, size - r - 1, 2)
    color = tuple(float(v) for v in rng.uniform(150, 255, 3))
    angle = rng.uniform(0, 2 * math.pi)
    if shape == "circle":
        cv2.circle(img, (int(c[0]), int(c[1])), int(r), color, -1, cv2.LINE_AA)
    elif shape == "square":
        cv2.fillPoly(img, [_polygon(c, r * 1.15, angle, 4)], color, cv2.LINE_AA)
    elif shape == "triangle":
        cv2.fillPoly(img, [_polygon(c, r * 1.2, angle, 3)], color, cv2.LINE_AA)
    else:  # cross: two bars
        t = max(2, int(r * 0.45))
        for a in (angle, angle + math.pi / 2):
            p1 = (int(c[0] + r * math.cos(a)), int(c[1] + r * math.sin(a)))
            p2 = (int(c[0] - r * math.cos(a)), int(c[1] - r * math.sin(a)))
            cv2.line(img, p1, p2, color, t, cv2.LINE_AA)


def make(out: Path, layout: str = "folder", channels: int = 3, size: int = 32,
                        n_train: int = 150, n_val: int = 30, n_test: int = 20,
                        seed: int = 0) -> Path:
    """n_* are images per class."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    lists: dict[str, list[str]] = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        lists[split] = []
        for shape in SHAPES:
            for i in range(n):
                img = _background(rng, size)
                draw_shape(img, shape, rng)
                img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
                if channels == 1:
                    img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
                rel = (Path(split) / shape if layout == "folder" else Path(shape)) / \
                    f"{split}_{i:04d}.png"
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(out / rel), img)
                lists[split].append(rel.as_posix())
    if layout == "list":
        for split, rels in lists.items():
            (out / f"{split}.txt").write_text("\n".join(rels) + "\n", encoding="utf-8")
        (out / "labels.txt").write_text("\n".join(SHAPES) + "\n", encoding="utf-8")
    return out

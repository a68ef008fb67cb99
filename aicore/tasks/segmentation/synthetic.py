"""Synthetic segmentation data (python -m aicore.tools.demo_data OUT --task segmentation):
dark "stain" blobs and bright "chip" polygons on a textured, unevenly lit metal-like surface,
in the layout of notes/contract.md (``images/``, ``masks/``, ``{train,val,test}.txt``,
``labels.txt``).

A one-pixel band around every object is marked 255 (ignore), as VOC does for its object
borders: anti-aliased edge pixels belong to neither class with certainty, so a model is neither
trained nor scored on them. Test images are twice the side of train/val images with objects of
the same pixel size, so they show what sliding-window inference is for.
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("background", "stain", "chip")
IGNORE = 255
# VOC-style palette for --layout palette: index -> RGB (VOC's first colours)
PALETTE = [(0, 0, 0), (128, 0, 0), (0, 128, 0)]


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Grey surface with a slight tint, low-frequency shading and grain."""
    base = rng.uniform(95, 140)
    tint = rng.uniform(-8, 8, 3)
    bg = np.full((h, w, 3), base, np.float32) + tint
    low = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), max(h, w) / 8)
    low *= 14 / max(1e-6, float(np.abs(low).max()))
    bg += low[:, :, None]
    bg += rng.normal(0, 7, (h, w, 1))
    return bg


def _blob(rng: np.random.Generator, center: np.ndarray, radius: float) -> np.ndarray:
    """An irregular closed contour (a wobbly ellipse)."""
    n = 24
    angles = np.linspace(0, 2 * math.pi, n, endpoint=False)
    ax = radius * rng.uniform(0.6, 1.0)
    ay = radius * rng.uniform(0.6, 1.0)
    rot = rng.uniform(0, math.pi)
    wobble = 1 + 0.18 * np.sin(angles * rng.integers(2, 5) + rng.uniform(0, 2 * math.pi))
    x, y = ax * np.cos(angles) * wobble, ay * np.sin(angles) * wobble
    xr = x * math.cos(rot) - y * math.sin(rot) + center[0]
    yr = x * math.sin(rot) + y * math.cos(rot) + center[1]
    return np.stack([xr, yr], 1).round().astype(np.int32)


def _polygon(rng: np.random.Generator, center: np.ndarray, radius: float) -> np.ndarray:
    """A rotated triangle, quadrilateral or pentagon with uneven corners."""
    k = int(rng.integers(3, 6))
    angles = np.linspace(0, 2 * math.pi, k, endpoint=False) + rng.uniform(0, 2 * math.pi)
    r = radius * rng.uniform(0.75, 1.05, k)
    pts = np.stack([center[0] + r * np.cos(angles), center[1] + r * np.sin(angles)], 1)
    return pts.round().astype(np.int32)


def make_sample(rng: np.random.Generator, h: int, w: int, object_scale: int,
                channels: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """One (image, mask) pair: image uint8 HxW(x3, BGR), mask uint8 HxW of class indices."""
    img = _background(rng, h, w)
    mask = np.zeros((h, w), np.uint8)
    area_scale = (h * w) / float(object_scale * object_scale)
    n_objects = int(rng.integers(1, 4) * max(1.0, area_scale) ** 0.5 + 0.5)
    for _ in range(n_objects):
        cls = int(rng.integers(1, len(CLASSES)))
        radius = rng.uniform(0.10, 0.2) * object_scale
        center = rng.uniform([radius, radius], [w - radius, h - radius])
        if cls == 1:  # stain: darker, brownish, soft-edged
            pts = _blob(rng, center, radius)
            shade = np.array([-rng.uniform(45, 75)] * 3, np.float32) + rng.uniform(-6, 6, 3)
        else:  # chip: brighter, sharp-edged, with a highlight
            pts = _polygon(rng, center, radius)
            shade = np.array([rng.uniform(55, 90)] * 3, np.float32) + rng.uniform(-6, 6, 3)
        obj = np.zeros((h, w), np.uint8)
        cv2.fillPoly(obj, [pts], 1)
        sel = obj.astype(bool)
        if not sel.any():
            continue
        layer = np.zeros_like(img)
        layer[sel] = shade
        if cls == 1:
            layer = cv2.GaussianBlur(layer, (3, 3), 0)
        img = img + layer
        mask[sel] = cls
        cv2.polylines(mask, [pts], True, IGNORE, 1)  # the uncertain border, VOC style
    img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    if channels == 1:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return img, mask


def _save_mask(path: Path, mask: np.ndarray, palette: bool) -> None:
    if palette:
        from PIL import Image
        im = Image.fromarray(mask)  # putpalette turns it into mode 'P'
        flat = [c for rgb in PALETTE for c in rgb]
        flat += [224, 224, 192] * (256 - len(PALETTE))  # VOC draws "ignore" in this colour
        im.putpalette(flat[:768])
        im.save(path)
    else:
        cv2.imwrite(str(path), mask)


def make(out: Path, channels: int = 3, seed: int = 0, size: int = 64, n_train: int = 240,
         n_val: int = 40, n_test: int = 12, layout: str = "index", test_scale: int = 2) -> Path:
    """Write the data set to ``out`` and return it.

    layout: "index" (8-bit grey PNG masks of class indices) or "palette" (VOC-style palette
    PNG masks, mode 'P'); both read the same. test_scale: test images are that many times the
    side of train/val images.
    """
    if layout not in ("index", "palette"):
        raise ValueError(f"segmentation layout {layout!r}: use 'index' or 'palette'")
    rng = np.random.default_rng(seed)
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        side = size * (test_scale if split == "test" else 1)
        stems = []
        for i in range(n):
            stem = f"{split}_{i:04d}"
            img, mask = make_sample(rng, side, side, size, channels)
            cv2.imwrite(str(out / "images" / f"{stem}.png"), img)
            _save_mask(out / "masks" / f"{stem}.png", mask, layout == "palette")
            stems.append(stem)
        (out / f"{split}.txt").write_text("\n".join(stems) + "\n", encoding="utf-8")
    (out / "labels.txt").write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    return out

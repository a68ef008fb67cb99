"""Synthetic detection data (python -m aicore.tools.demo_data OUT --task detection): 1-5 shapes
(circle, square, triangle) of random size, colour and rotation per image on a noisy, shaded
background, like parts on a conveyor; a few images hold no object at all. Written in the YOLO
layout; ``layout="coco"`` also writes COCO JSON for the same images.

Each box is the tight bounding box of the pixels its shape actually covers, and shapes are
placed so they barely overlap, so the labels are exact.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np

SHAPES = ("circle", "square", "triangle")


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.uniform(30, 110)
    bg = np.full((size, size, 3), base, np.float32)
    bg += rng.normal(0, 10, (size, size, 1))  # grain
    g = np.linspace(-1, 1, size, dtype=np.float32)
    bg += rng.uniform(-20, 20) * g[None, :, None] + rng.uniform(-20, 20) * g[:, None, None]
    return bg


def _shape_mask(shape: str, size: int, center: np.ndarray, r: float, angle: float) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    if shape == "circle":
        cv2.circle(mask, (int(center[0]), int(center[1])), int(r), 255, -1, cv2.LINE_AA)
    else:
        n, rr = (4, r * 1.2) if shape == "square" else (3, r * 1.3)
        pts = np.array([(center[0] + rr * math.cos(angle + 2 * math.pi * k / n),
                         center[1] + rr * math.sin(angle + 2 * math.pi * k / n))
                        for k in range(n)], np.int32)
        cv2.fillPoly(mask, [pts], 255, cv2.LINE_AA)
    return mask


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def make_image(rng: np.random.Generator, size: int, n_objects: int, classes: tuple[str, ...]
               ) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """One image (uint8 BGR) and its [(class index, xyxy box)]."""
    img = _background(rng, size)
    objects: list[tuple[int, np.ndarray]] = []
    for _ in range(n_objects):
        for _attempt in range(20):  # find a spot that overlaps the others only slightly
            cls = int(rng.integers(len(classes)))
            r = rng.uniform(0.07, 0.17) * size
            c = rng.uniform(r + 1, size - r - 1, 2)
            mask = _shape_mask(classes[cls], size, c, r, rng.uniform(0, 2 * math.pi))
            ys, xs = np.nonzero(mask > 127)
            if len(xs) < 4:
                continue
            box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
            if all(_iou(box, b) < 0.1 for _, b in objects):
                break
        else:
            continue
        color = rng.uniform(140, 255, 3).astype(np.float32)
        alpha = (mask.astype(np.float32) / 255.0)[:, :, None]
        img = img * (1 - alpha) + color[None, None] * alpha
        objects.append((cls, box))
    img = np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8)
    return img, objects


def make(out: Path, channels: int = 3, seed: int = 0, size: int = 128, n_train: int = 240,
         n_val: int = 60, n_test: int = 20, num_classes: int = 3, empty_fraction: float = 0.05,
         layout: str = "yolo") -> Path:
    """Write the data set under `out` (YOLO layout) and return `out`.

    n_*: images per split; num_classes 2 or 3 (the first shapes of circle, square,
    triangle); empty_fraction: share of images without objects; layout "yolo", or "coco" to
    also write annotations/instances_<split>.json for the same images."""
    if not 1 <= num_classes <= len(SHAPES):
        raise ValueError(f"num_classes must be 1..{len(SHAPES)}")
    if layout not in ("yolo", "coco"):
        raise ValueError(f"layout must be 'yolo' or 'coco', got {layout!r}")
    coco = layout == "coco"
    classes = SHAPES[:num_classes]
    rng = np.random.default_rng(seed)
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    (out / "labels.txt").write_text("\n".join(classes) + "\n", encoding="utf-8")
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        lines, coco_images, coco_anns = [], [], []
        for i in range(n):
            k = 0 if rng.random() < empty_fraction else int(rng.integers(1, 6))
            img, objects = make_image(rng, size, k, classes)
            if channels == 1:
                img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
            name = f"{split}_{i:04d}.png"
            cv2.imwrite(str(out / "images" / name), img)
            rows = [f"{c} {(b[0] + b[2]) / 2 / size:.6f} {(b[1] + b[3]) / 2 / size:.6f} "
                    f"{(b[2] - b[0]) / size:.6f} {(b[3] - b[1]) / size:.6f}" for c, b in objects]
            (out / "labels" / f"{split}_{i:04d}.txt").write_text(
                "".join(r + "\n" for r in rows), encoding="utf-8")
            lines.append(f"images/{name}")
            coco_images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
            for c, b in objects:
                w, h = float(b[2] - b[0]), float(b[3] - b[1])
                coco_anns.append({"id": len(coco_anns) + 1, "image_id": i + 1,
                                  "category_id": c + 1, "bbox": [float(b[0]), float(b[1]), w, h],
                                  "area": w * h, "iscrowd": 0})
        (out / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        if coco:
            (out / "annotations").mkdir(exist_ok=True)
            (out / "annotations" / f"instances_{split}.json").write_text(json.dumps({
                "images": coco_images, "annotations": coco_anns,
                "categories": [{"id": k + 1, "name": c} for k, c in enumerate(classes)]}),
                encoding="utf-8")
    return out

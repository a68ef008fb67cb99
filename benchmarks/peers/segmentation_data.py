"""Real-texture segmentation set: regions of scikit-image's texture photographs, with masks.

Every image is a mosaic of real photographs that scikit-image ships (``skimage.data.gravel``,
``grass``, ``brick``; 512 x 512 grey, no download): a gravel background with 1-3 random
regions (ellipses and polygons) filled with grass or brick. The mask holds the class of every
pixel (0 gravel, 1 grass, 2 brick). Training crops come from the upper 60 % of each
photograph, validation crops from the lower 40 %, so no texture pixel is shared between them.
Each crop is randomly rescaled (0.9-1.2) and its brightness varied by +-8 %, so the classes have
to be told apart by texture, not by grey level. Layout (AICore's ``SegmentationDataset``)::

    OUT/images/<stem>.png   OUT/masks/<stem>.png   OUT/train.txt   OUT/val.txt   OUT/labels.txt

Usage: ``python benchmarks/peers/segmentation_data.py OUT [--train 280] [--val 80] [--size 64]``
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("gravel", "grass", "brick")


def photographs() -> list[np.ndarray]:
    import skimage.data

    return [getattr(skimage.data, name)().astype(np.float32) for name in CLASSES]


def crop(src: np.ndarray, rows: tuple[int, int], size: int, rng: np.random.Generator) -> np.ndarray:
    side = min(int(round(size * 2 * rng.uniform(0.9, 1.2))), rows[1] - rows[0], src.shape[1])
    y = int(rng.integers(rows[0], rows[1] - side + 1))
    x = int(rng.integers(0, src.shape[1] - side + 1))
    out = cv2.resize(src[y:y + side, x:x + side], (size, size), interpolation=cv2.INTER_AREA)
    return out * rng.uniform(0.92, 1.08)


def region(size: int, rng: np.random.Generator) -> np.ndarray:
    """A random filled ellipse or polygon (uint8 0/1) covering roughly 8-35 % of the image."""
    m = np.zeros((size, size), np.uint8)
    c = rng.uniform(0.2, 0.8, 2) * size
    if rng.random() < 0.5:
        axes = (int(rng.uniform(0.12, 0.35) * size), int(rng.uniform(0.12, 0.35) * size))
        cv2.ellipse(m, (int(c[0]), int(c[1])), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    else:
        n = int(rng.integers(3, 7))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = rng.uniform(0.15, 0.4, n) * size
        pts = np.stack([c[0] + rad * np.cos(ang), c[1] + rad * np.sin(ang)], 1)
        cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1)
    return m


def sample(photos: list[np.ndarray], split: str, size: int, rng: np.random.Generator):
    h = photos[0].shape[0]
    rows = (0, int(h * 0.6)) if split == "train" else (int(h * 0.6), h)
    img = crop(photos[0], rows, size, rng)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        cls = int(rng.integers(1, len(CLASSES)))
        m = region(size, rng).astype(bool)
        img[m] = crop(photos[cls], rows, size, rng)[m]
        mask[m] = cls
    img = np.clip(img, 0, 255).astype(np.uint8)
    return cv2.merge([img, img, img]), mask


def make(out: Path, n_train: int = 280, n_val: int = 80, size: int = 64, seed: int = 0) -> None:
    photos = photographs()
    rng = np.random.default_rng(seed)
    if out.exists():
        shutil.rmtree(out)
    (out / "images").mkdir(parents=True)
    (out / "masks").mkdir()
    for split, n in (("train", n_train), ("val", n_val)):
        stems = []
        for i in range(n):
            img, mask = sample(photos, split, size, rng)
            stem = f"{split}_{i:04d}"
            cv2.imwrite(str(out / "images" / f"{stem}.png"), img)
            cv2.imwrite(str(out / "masks" / f"{stem}.png"), mask)
            stems.append(stem)
        (out / f"{split}.txt").write_text("".join(s + "\n" for s in stems))
    (out / "labels.txt").write_text("".join(c + "\n" for c in CLASSES))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--train", type=int, default=280)
    p.add_argument("--val", type=int, default=80)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    make(a.out, a.train, a.val, a.size, a.seed)
    print(f"{a.train} train + {a.val} val images ({a.size} px, classes {', '.join(CLASSES)}) -> {a.out}")


if __name__ == "__main__":
    main()

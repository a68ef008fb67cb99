"""Real-texture anomaly dataset in MVTec AD layout, from the photographs scikit-image ships.

Each category is one texture photograph (``skimage.data.brick``, ``grass``, ``gravel``; 512 x 512
grey). Training images are random crops from the upper 60 % of the photograph, test images from
the lower 40 % (no pixel is shared between train and test), each crop rescaled by a random factor
and brightness, then resized to ``--size`` px. A third of the defective test images each carry
one of three painted defects, with its mask:

* ``scratch``: a thin bright or dark anti-aliased curve across part of the crop;
* ``spot``: a soft-edged elliptical stain (darker, tinted brown);
* ``crack``: a dark jagged random walk with a branch.

Defect contrast follows the crop's own standard deviation, so every texture gets defects of
comparable visibility. Usage::

    python benchmarks/peers/texture_data.py OUT [--train 60] [--good 20] [--defects 10]
        [--size 128] [--seed 0] [--categories brick grass gravel]
"""
from __future__ import annotations

import argparse
import math
import shutil
from pathlib import Path

import cv2
import numpy as np

CATEGORIES = ("brick", "grass", "gravel")
DEFECTS = ("scratch", "spot", "crack")


def texture(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    return img.astype(np.float32)


def crop(src: np.ndarray, rows: tuple[int, int], size: int, rng: np.random.Generator) -> np.ndarray:
    """A random crop inside the row band, scale 0.9-1.2 of 1.5x `size`, brightness +-6 %."""
    side = int(round(size * 1.5 * rng.uniform(0.9, 1.2)))
    side = min(side, rows[1] - rows[0], src.shape[1])
    y = int(rng.integers(rows[0], rows[1] - side + 1))
    x = int(rng.integers(0, src.shape[1] - side + 1))
    out = cv2.resize(src[y:y + side, x:x + side], (size, size), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.clip(out * rng.uniform(0.94, 1.06), 0, 255)


def _curve(size: int, rng: np.random.Generator, jagged: bool) -> np.ndarray:
    """Points of a smooth (scratch) or jagged (crack) path inside the image."""
    n = 24
    start = rng.uniform(0.15, 0.85, 2) * size
    angle = rng.uniform(0, 2 * math.pi)
    length = rng.uniform(0.35, 0.6) * size
    pts = [start]
    for _ in range(n):
        angle += rng.normal(0, 0.5 if jagged else 0.08)
        step = length / n
        nxt = pts[-1] + step * np.array([math.cos(angle), math.sin(angle)])
        pts.append(np.clip(nxt, 2, size - 3))
    return np.array(pts)


def paint(img: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Image with one painted defect of `kind`, and its mask (uint8 0/255)."""
    size = img.shape[0]
    std = float(img.std()) + 1.0
    scale = 8  # draw at 8x for anti-aliasing, then area-downsample to get alpha
    alpha = np.zeros((size * scale, size * scale), np.uint8)
    colour = np.zeros(3, np.float32)
    if kind in ("scratch", "crack"):
        pts = _curve(size, rng, jagged=kind == "crack")
        width = rng.uniform(1.0, 2.0) if kind == "scratch" else rng.uniform(1.2, 2.2)
        paths = [pts]
        if kind == "crack":
            k = int(rng.integers(6, 18))
            branch = _curve(size, rng, jagged=True)[:12]
            paths.append(branch - branch[0] + pts[k])
        for p in paths:
            cv2.polylines(alpha, [np.round(np.clip(p, 0, size - 1) * scale).astype(np.int32)],
                          False, 255, thickness=max(1, int(width * scale)), lineType=cv2.LINE_AA)
        sign = rng.choice([-1.0, 1.0]) if kind == "scratch" else -1.0
        colour[:] = sign * rng.uniform(1.2, 2.0) * std
    else:  # spot
        centre = tuple(int(v * scale) for v in rng.uniform(0.2, 0.8, 2) * size)
        axes = tuple(int(v * scale) for v in rng.uniform(3, 9, 2))
        cv2.ellipse(alpha, centre, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1,
                    lineType=cv2.LINE_AA)
        alpha = cv2.GaussianBlur(alpha, (0, 0), 1.5 * scale)
        colour[:] = -rng.uniform(0.8, 1.4) * std * np.array([0.7, 1.0, 1.3])  # brownish stain
    a = cv2.resize(alpha, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    out = np.clip(img + a[..., None] * colour[None, None], 0, 255)
    mask = (a >= 0.35).astype(np.uint8) * 255
    return out, mask


def write(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.round(img).astype(np.uint8)[..., ::-1] if img.ndim == 3 else img)


def make_category(out: Path, name: str, n_train: int, n_good: int, n_defect: int, size: int,
                  seed: int) -> None:
    src = texture(name)
    rng = np.random.default_rng([seed, CATEGORIES.index(name) if name in CATEGORIES else 99])
    split = int(src.shape[0] * 0.6)
    root = out / name
    for i in range(n_train):
        write(root / "train" / "good" / f"{i:03d}.png", crop(src, (0, split), size, rng))
    for i in range(n_good):
        write(root / "test" / "good" / f"{i:03d}.png", crop(src, (split, src.shape[0]), size, rng))
    for kind in DEFECTS:
        for i in range(n_defect):
            img, mask = paint(crop(src, (split, src.shape[0]), size, rng), kind, rng)
            write(root / "test" / kind / f"{i:03d}.png", img)
            write(root / "ground_truth" / kind / f"{i:03d}_mask.png", mask)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--train", type=int, default=60)
    ap.add_argument("--good", type=int, default=20)
    ap.add_argument("--defects", type=int, default=10, help="images per defect type")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--categories", nargs="+", default=list(CATEGORIES))
    args = ap.parse_args(argv)
    for name in args.categories:
        if (args.out / name).exists():
            shutil.rmtree(args.out / name)
        make_category(args.out, name, args.train, args.good, args.defects, args.size, args.seed)
    print(f"wrote {len(args.categories)} categories to {args.out}")


if __name__ == "__main__":
    main()

"""Synthetic anomaly-detection data in the MVTec AD layout
(python -m aicore.tools.demo_data OUT --task anomaly).

Two regular textures, as on an inspection line for fabric or wire mesh, each a category:

- ``weave``: a plain weave of two thread colours (over/under checkerboard of rounded threads);
- ``grid``: a metal wire mesh on a dark backing.

Good images differ by pattern phase, period (+-4 %), lighting gradient and sensor noise, so the
models must learn the texture, not one fixed picture. Test images carry one painted defect each,
with its mask in ``ground_truth``:

- ``scratch``: a thin bright or dark curved line;
- ``spot``: a stain (a tinted, blurred ellipse);
- ``missing``: a hole where the texture is absent (the backing shows through).
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

CATEGORIES = ("weave", "grid")
DEFECTS = ("scratch", "spot", "missing")


def _coords(rng: np.random.Generator, size: int, period: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates in units of the pattern period, with a random phase and period."""
    p = period * rng.uniform(0.96, 1.04)
    ox, oy = rng.uniform(0, 2 * p, 2)
    x = (np.arange(size, dtype=np.float32) + ox) / p
    y = (np.arange(size, dtype=np.float32) + oy) / p
    return np.meshgrid(x, y)


def _weave(rng: np.random.Generator, size: int) -> np.ndarray:
    x, y = _coords(rng, size, size / 8)
    i, j = np.floor(x), np.floor(y)
    u, v = x - i, y - j
    warp = ((i + j) % 2 == 0)[..., None]
    # rounded threads: bright in the middle, dark at the gaps between threads
    across_warp = np.clip(np.sin(np.pi * u), 0, 1) ** 0.7
    across_weft = np.clip(np.sin(np.pi * v), 0, 1) ** 0.7
    c_warp = np.array([70, 150, 200], np.float32) + rng.normal(0, 4, 3)
    c_weft = np.array([200, 190, 150], np.float32) + rng.normal(0, 4, 3)
    shade = np.where(warp, across_warp[..., None], across_weft[..., None])
    return 25 + shade * np.where(warp, c_warp, c_weft)


def _grid(rng: np.random.Generator, size: int) -> np.ndarray:
    x, y = _coords(rng, size, size / 10)
    u, v = x - np.floor(x), y - np.floor(y)
    width = 0.22
    wire_v = np.clip(1 - np.abs(u - 0.5) / width, 0, 1)  # profile across a vertical wire
    wire_h = np.clip(1 - np.abs(v - 0.5) / width, 0, 1)
    wire = np.maximum(wire_v, wire_h) ** 0.5
    metal = np.array([185, 185, 195], np.float32) + rng.normal(0, 4, 3)
    backing = np.array([40, 35, 30], np.float32)
    return backing + wire[..., None] * (metal - backing)


TEXTURES = {"weave": _weave, "grid": _grid}


def _lighting_and_noise(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    size = img.shape[0]
    g = np.linspace(-1, 1, size, dtype=np.float32)
    gain = 1 + rng.uniform(-0.08, 0.08) * g[None, :, None] + rng.uniform(-0.08, 0.08) * g[:, None, None]
    img = img * gain * rng.uniform(0.93, 1.07) + rng.normal(0, 5, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _scratch(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray) -> None:
    size = img.shape[0]
    length = rng.uniform(0.3, 0.6) * size
    angle = rng.uniform(0, math.pi)
    d = np.array([math.cos(angle), math.sin(angle)]) * length / 2
    c = rng.uniform(length / 2 + 2, size - length / 2 - 2, 2) if length < size - 4 else \
        np.array([size / 2, size / 2])
    bend = rng.normal(0, 0.15 * length, 2)
    t = np.linspace(0, 1, 40)[:, None]
    p0, p2, p1 = c - d, c + d, c + bend  # quadratic Bezier
    pts = ((1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2)
    pts = np.clip(pts, 0, size - 1).astype(np.int32)[None]
    thickness = max(1, int(round(rng.uniform(1.5, 3.0) * size / 128)))
    color = (245.0,) * 3 if rng.random() < 0.5 else (15.0,) * 3
    cv2.polylines(img, pts, False, color, thickness, cv2.LINE_AA)
    cv2.polylines(mask, pts, False, 255, thickness)


def _spot(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray) -> None:
    size = img.shape[0]
    axes = (rng.uniform(0.05, 0.11, 2) * size).astype(int) + 2
    c = rng.uniform(axes.max() + 1, size - axes.max() - 1, 2).astype(int)
    angle = rng.uniform(0, 180)
    stain = np.zeros(img.shape[:2], np.float32)
    cv2.ellipse(stain, tuple(c), tuple(axes), angle, 0, 360, 1.0, -1)
    cv2.ellipse(mask, tuple(c), tuple(axes), angle, 0, 360, 255, -1)
    alpha = cv2.GaussianBlur(stain, (0, 0), 1.0)[..., None] * rng.uniform(0.6, 0.85)
    tint = np.array([rng.uniform(90, 140), rng.uniform(60, 90), rng.uniform(20, 50)], np.float32)
    img[:] = img * (1 - alpha) + tint * alpha


def _missing(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray) -> None:
    size = img.shape[0]
    r = rng.uniform(0.07, 0.13) * size
    c = rng.uniform(r * 1.3 + 1, size - r * 1.3 - 1, 2)
    n = int(rng.integers(6, 10))
    angles = np.sort(rng.uniform(0, 2 * math.pi, n))
    radii = r * rng.uniform(0.7, 1.3, n)
    poly = np.stack([c[0] + radii * np.cos(angles), c[1] + radii * np.sin(angles)], 1)
    poly = poly.astype(np.int32)[None]
    cv2.fillPoly(img, poly, (20.0, 18.0, 16.0))
    cv2.fillPoly(mask, poly, 255)


PAINTERS = {"scratch": _scratch, "spot": _spot, "missing": _missing}


def _write(path: Path, img: np.ndarray, channels: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if channels == 1 and img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    elif img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"cannot write {path}")


def make(out: Path, channels: int = 3, seed: int = 0, size: int = 128, n_train: int = 100,
         n_test_good: int = 20, n_test_defect: int = 10,
         categories: tuple[str, ...] = CATEGORIES, **other_tasks_options) -> Path:
    """Write ``out/<category>/{train/good, test/{good,<defect>}, ground_truth/<defect>}``.

    n_test_defect is per defect type. The same seed always gives the same files. Options of
    other tasks' generators (``layout``, from ``demo_data --task all --layout ...``) are
    ignored: this layout has no variants.
    """
    out = Path(out)
    for ci, category in enumerate(categories):
        if category not in TEXTURES:
            raise ValueError(f"unknown synthetic category {category!r}; choose from "
                             f"{', '.join(TEXTURES)}")
        rng = np.random.default_rng([seed, ci])
        texture = TEXTURES[category]
        root = out / category

        def good() -> np.ndarray:
            return texture(rng, size)

        for i in range(n_train):
            _write(root / "train" / "good" / f"{i:03d}.png",
                   _lighting_and_noise(rng, good()), channels)
        for i in range(n_test_good):
            _write(root / "test" / "good" / f"{i:03d}.png",
                   _lighting_and_noise(rng, good()), channels)
        for defect in DEFECTS:
            for i in range(n_test_defect):
                img = good().astype(np.float32)
                mask = np.zeros((size, size), np.uint8)
                PAINTERS[defect](rng, img, mask)
                _write(root / "test" / defect / f"{i:03d}.png", _lighting_and_noise(rng, img),
                       channels)
                _write(root / "ground_truth" / defect / f"{i:03d}_mask.png", mask, 1)
    return out

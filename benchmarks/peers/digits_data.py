"""Real-image classification set: scikit-learn's handwritten digits in AICore's folder layout.

``sklearn.datasets.load_digits`` ships 1,797 real 8x8 scans of handwritten digits (16 grey
levels, no download). Each is upscaled to ``--size`` px with bicubic interpolation, written as
an RGB PNG, and split per class into train / val (stratified, seeded)::

    OUT/train/<digit>/<n>.png    OUT/val/<digit>/<n>.png    OUT/labels.txt

Both AICore (``ClassificationDataset``) and torchvision's ``ImageFolder`` read this layout.
Usage: ``python benchmarks/peers/digits_data.py OUT [--size 32] [--val 0.2] [--seed 0]``
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import cv2
import numpy as np


def make(out: Path, size: int = 32, val: float = 0.2, seed: int = 0) -> dict[str, int]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    if out.exists():
        shutil.rmtree(out)
    counts = {"train": 0, "val": 0}
    for label in range(10):
        idx = np.flatnonzero(digits.target == label)
        rng.shuffle(idx)
        n_val = int(round(len(idx) * val))
        for split, part in (("val", idx[:n_val]), ("train", idx[n_val:])):
            folder = out / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            for i in part:
                img = (digits.images[i] * (255.0 / 16.0)).astype(np.float32)
                img = cv2.resize(img, (size, size), interpolation=cv2.INTER_CUBIC)
                img = np.clip(img, 0, 255).astype(np.uint8)
                cv2.imwrite(str(folder / f"{i:04d}.png"), cv2.merge([img, img, img]))
                counts[split] += 1
    (out / "labels.txt").write_text("".join(f"{d}\n" for d in range(10)))
    return counts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--val", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    print(make(a.out, a.size, a.val, a.seed), "->", a.out)


if __name__ == "__main__":
    main()

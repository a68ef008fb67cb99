"""Small real-image detection set (YOLO txt layout) from the photographs scikit-image and
scikit-learn ship, for the YOLOX-nano vs Ultralytics comparison (issue 13).

Three classes, each cut out of a real image with a real mask, pasted at a random scale, flip,
rotation (0/90/180/270) and brightness onto random crops of real photographs:

* ``coin``: the 24 coins of ``skimage.data.coins`` (Otsu threshold + connected regions);
* ``logo``: the scikit-image logo (``skimage.data.logo``, its alpha channel is the mask);
* ``horse``: the silhouette of ``skimage.data.horse`` filled with a crop of the cat photograph
  (``skimage.data.chelsea``) — a real texture in a real shape.

Backgrounds: crops of brick, grass, gravel, moon, camera, hubble_deep_field,
immunohistochemistry, coffee (scikit-image) and china, flower (scikit-learn). Train and val use
different halves of every background photograph, so no background pixel is shared. Each image
gets 1-4 objects of 14-48 px, overlapping each other by at most 30 % of the smaller box.

Layout (read by AICore's YOLODetectionDataset and by Ultralytics)::

    OUT/images/{train,val}/*.png   OUT/labels/{train,val}/*.txt   ("class cx cy w h", normalised)
    OUT/train.txt OUT/val.txt      (paths relative to OUT)      OUT/labels.txt (class names)
    OUT/ultralytics.yaml           (Ultralytics' data file, absolute paths)

    python benchmarks/peers/detection_data.py OUT [--train 300] [--val 100] [--size 128]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("coin", "logo", "horse")


def _objects() -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Per class: (RGB uint8 image, float mask in [0, 1]) cut-outs."""
    import skimage.data as d
    from skimage.filters import threshold_otsu
    from skimage.measure import label, regionprops

    coins = d.coins()
    regions = label(coins > threshold_otsu(coins))
    cut = []
    for r in regionprops(regions):
        if r.area < 400:
            continue
        y0, x0, y1, x1 = r.bbox
        m = (regions[y0:y1, x0:x1] == r.label).astype(np.float32)
        m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
        cut.append((np.repeat(coins[y0:y1, x0:x1, None], 3, 2), m))
    logo = d.logo()
    ys, xs = np.nonzero(logo[..., 3] > 0)
    logo = logo[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    horse = ~d.horse()
    ys, xs = np.nonzero(horse)
    horse = horse[ys.min():ys.max() + 1, xs.min():xs.max() + 1].astype(np.float32)
    fur = cv2.resize(d.chelsea()[40:260, 120:340], horse.shape[::-1])
    return {"coin": cut, "logo": [(logo[..., :3], logo[..., 3] / 255.0)],
            "horse": [(fur, horse)]}


def _backgrounds() -> list[np.ndarray]:
    import skimage.data as d
    from sklearn.datasets import load_sample_images

    out = []
    for name in ("brick", "grass", "gravel", "moon", "camera", "hubble_deep_field",
                 "immunohistochemistry", "coffee"):
        img = getattr(d, name)()
        out.append(np.repeat(img[..., None], 3, 2) if img.ndim == 2 else img[..., :3])
    return out + list(load_sample_images().images)


def _overlap(a: list[int], b: list[int]) -> float:
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / max(small, 1)


def make_image(objs, backs, half: int, size: int, rng: np.random.Generator):
    back = backs[rng.integers(len(backs))]
    h = back.shape[0] // 2
    rows = (0, h) if half == 0 else (h, back.shape[0])
    side = int(rng.integers(size // 2, min(h, back.shape[1]) + 1))
    y = int(rng.integers(rows[0], rows[1] - side + 1))
    x = int(rng.integers(0, back.shape[1] - side + 1))
    img = cv2.resize(back[y:y + side, x:x + side], (size, size), interpolation=cv2.INTER_AREA)
    img = img.astype(np.float32)
    boxes: list[list[int]] = []
    for _ in range(int(rng.integers(1, 5))):
        cls = int(rng.integers(len(CLASSES)))
        src, mask = objs[CLASSES[cls]][rng.integers(len(objs[CLASSES[cls]]))]
        k = int(rng.integers(4))
        src, mask = np.rot90(src, k), np.rot90(mask, k)
        if rng.random() < 0.5:
            src, mask = src[:, ::-1], mask[:, ::-1]
        longest = int(rng.integers(14, 49))
        s = longest / max(src.shape[:2])
        w, hh = max(4, round(src.shape[1] * s)), max(4, round(src.shape[0] * s))
        src = cv2.resize(np.ascontiguousarray(src), (w, hh), interpolation=cv2.INTER_AREA)
        mask = cv2.resize(np.ascontiguousarray(mask, np.float32), (w, hh),
                          interpolation=cv2.INTER_AREA)
        for _try in range(20):
            x0, y0 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - hh + 1))
            box = [x0, y0, x0 + w, y0 + hh]
            if all(_overlap(box, b[1:]) <= 0.3 for b in boxes):
                break
        else:
            continue
        gain = rng.uniform(0.7, 1.3)
        m = mask[..., None]
        img[y0:y0 + hh, x0:x0 + w] = (img[y0:y0 + hh, x0:x0 + w] * (1 - m)
                                      + np.clip(src * gain, 0, 255) * m)
        ys, xs = np.nonzero(mask > 0.5)
        if len(ys) == 0:
            continue
        boxes.append([cls, x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1])
    return np.clip(img, 0, 255).astype(np.uint8), boxes


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--train", type=int, default=300)
    ap.add_argument("--val", type=int, default=100)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    objs, backs = _objects(), _backgrounds()
    out = args.out.resolve()
    for half, (split, n) in enumerate((("train", args.train), ("val", args.val))):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        names = []
        for i in range(n):
            img, boxes = make_image(objs, backs, half, args.size, rng)
            stem = f"{split}_{i:04d}"
            cv2.imwrite(str(out / "images" / split / f"{stem}.png"), img[..., ::-1])
            s = float(args.size)
            lines = [f"{c} {(x0 + x1) / 2 / s:.6f} {(y0 + y1) / 2 / s:.6f} {(x1 - x0) / s:.6f} "
                     f"{(y1 - y0) / s:.6f}" for c, x0, y0, x1, y1 in boxes]
            (out / "labels" / split / f"{stem}.txt").write_text("".join(f"{l}\n" for l in lines))
            names.append(f"images/{split}/{stem}.png")
        (out / f"{split}.txt").write_text("".join(f"{p}\n" for p in names))
        (out / f"ultralytics_{split}.txt").write_text("".join(f"{out / p}\n" for p in names))
    (out / "labels.txt").write_text("".join(f"{c}\n" for c in CLASSES))
    (out / "ultralytics.yaml").write_text(
        f"path: {out}\ntrain: {out / 'ultralytics_train.txt'}\nval: {out / 'ultralytics_val.txt'}\n"
        "names:\n" + "".join(f"  {i}: {c}\n" for i, c in enumerate(CLASSES)))
    print(f"{out}: {args.train} train / {args.val} val images, classes {', '.join(CLASSES)}")


if __name__ == "__main__":
    main()

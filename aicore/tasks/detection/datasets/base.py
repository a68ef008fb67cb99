"""What every detection dataset shares, whatever its annotation format.

Every annotation is parsed and checked when the dataset is built, so a malformed line, an
unknown class or a box outside its image stops the run before anything is written, with the
file (and line) to fix. Images without boxes are allowed (pure background examples).

A sample is ``(image CHW float tensor, {"boxes": (n, 4) xyxy input pixels, "labels": (n,)},
meta)``: the image is letterboxed to ``input_size`` (see boxes.py), then the split's
albumentations pipeline runs with boxes following the image. Training can add mosaic (four
images in one) and mixup (two samples blended); their randomness comes from a generator that
the shared loader reseeds per epoch and worker (``reseed_hooks``), so runs are reproducible.
``meta`` keeps the letterbox scale and the original boxes, which evaluation compares against.

A format subclasses ``DetectionDataset`` and implements ``read_records``; one file per
format sits next to this one (yolo.py, coco.py, voc.py).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from aicore.data.io import dataset_root, imread
from aicore.data.transforms import Normalize, default_mean_std
from aicore.errors import ConfigError, DataError
from aicore.tasks.detection.boxes import PAD_VALUE, letterbox, letterbox_scale


#: albumentations bbox settings used by every detection pipeline: boxes in pixel xyxy, clipped
#: to the image after each geometric step; a box that keeps less than 20% of its area (e.g.
#: cropped away) is dropped together with its label.
BBOX_PARAMS = {"format": "pascal_voc", "label_fields": ["labels"], "clip": True,
               "min_visibility": 0.2, "filter_invalid_bboxes": True}

#: how far (fraction of the image side) a box may stick out before it is an error rather than
#: rounding in the annotation tool; smaller overshoots are clipped.
OUTSIDE_TOLERANCE = 0.01


@dataclass
class Record:
    """One image and its boxes in original pixels (xyxy). ``crowd`` marks boxes that must be
    neither learned nor counted as misses (COCO iscrowd, VOC difficult)."""
    path: str
    size: tuple[int, int]  # (h, w)
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    crowd: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))


def image_hw(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) read from the file header (no pixel decoding)."""
    try:
        with Image.open(path) as im:
            w, h = im.size
        return h, w
    except FileNotFoundError:
        raise DataError(f"image not found: {path}") from None
    except (OSError, ValueError, Image.DecompressionBombError):
        img = imread(path, 3)  # let OpenCV try; raises DataError if it cannot decode either
        return img.shape[0], img.shape[1]


def check_box(box: Sequence[float], hw: tuple[int, int], where: str) -> np.ndarray:
    """Validate one xyxy pixel box against its image; return it clipped to the image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    h, w = hw
    if not all(np.isfinite([x1, y1, x2, y2])):
        raise DataError(f"{where}: box has a non-numeric coordinate {list(box)}")
    if x2 <= x1 or y2 <= y1:
        raise DataError(f"{where}: box {[round(v, 2) for v in (x1, y1, x2, y2)]} has zero or "
                        f"negative width/height; fix or delete the annotation")
    tx, ty = OUTSIDE_TOLERANCE * w, OUTSIDE_TOLERANCE * h
    if x1 < -tx or y1 < -ty or x2 > w + tx or y2 > h + ty:
        raise DataError(f"{where}: box (x1={x1:.1f}, y1={y1:.1f}, x2={x2:.1f}, y2={y2:.1f}) lies "
                        f"outside the {w}x{h} image; fix the annotation (boxes must be inside the "
                        f"image they belong to)")
    return np.array([max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2)],
                    np.float32)


class DetectionDataset(Dataset):
    """Shared loading, letterboxing, augmentation and mosaic/mixup; subclasses only parse
    their annotation format into ``self.records`` and ``self.classes``.

    cache: keep decoded images in RAM (small datasets). verify: decode every image when the
    dataset is built, so a corrupt file or an image whose size differs from its annotation fails
    now rather than mid-training.
    mosaic / mixup: probability per training sample (put them under data.train.dataset);
    mosaic_scale: random zoom range applied to the 2x2 mosaic before it is cropped to the input
    size; min_box_size: boxes narrower or lower than this (input pixels) after augmentation are
    dropped.
    """

    def __init__(self, root: str, split: str, in_channels: int = 3, transform: Any = None,
                 input_size: Sequence[int] | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, cache: bool = False, verify: bool = True,
                 mosaic: float = 0.0, mixup: float = 0.0,
                 mosaic_scale: Sequence[float] = (0.5, 1.5), min_box_size: float = 2.0,
                 classes: Sequence[str] | None = None) -> None:
        self.root = dataset_root(root, "detection")
        if input_size is None:
            raise ConfigError("data.input_size must be set for detection ([H, W], multiples of 32)")
        for name, p in (("mosaic", mosaic), ("mixup", mixup)):
            if not 0.0 <= float(p) <= 1.0:
                raise ConfigError(f"data.{split}.dataset.{name} = {p}: a probability in [0, 1]")
        if len(mosaic_scale) != 2 or not 0 < mosaic_scale[0] <= mosaic_scale[1]:
            raise ConfigError(f"data.{split}.dataset.mosaic_scale = {list(mosaic_scale)}: "
                              f"expected [low, high] with 0 < low <= high")
        self.split, self.in_channels = split, int(in_channels)
        self.transform = transform
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.normalize = Normalize(*default_mean_std(self.in_channels, mean, std))
        self.mosaic, self.mixup = float(mosaic), float(mixup)
        self.mosaic_scale = (float(mosaic_scale[0]), float(mosaic_scale[1]))
        self.min_box_size = float(min_box_size)
        #: switched off by CloseMosaicHook for the last epochs (clean images to finish on)
        self.strong_aug = True
        self.classes: list[str] = list(classes) if classes else []
        self.records: list[Record] = self.read_records()
        if not self.records:
            raise DataError(f"{self.root}: split '{split}' has no images")
        if not self.classes:
            raise DataError(f"{self.root}: no class names found (labels.txt / categories)")
        counts = np.zeros(len(self.classes), np.int64)
        for r in self.records:
            np.add.at(counts, r.labels[~r.crowd], 1)
        self.class_counts = counts.tolist()
        self.rng = np.random.default_rng(0)
        # the shared loader calls these with a (seed, epoch, worker)-derived seed
        self.reseed_hooks = [self.reseed]
        self.cache: list[np.ndarray] | None = None
        if cache or verify:
            images = self._decode_all()
            self.cache = images if cache else None

    # -- format specific -------------------------------------------------------------------

    def read_records(self) -> list[Record]:
        """Parse the annotations of self.split (and set self.classes)."""
        raise NotImplementedError

    # -- loading -----------------------------------------------------------------------------

    @property
    def samples(self) -> list[tuple[str, int]]:
        """(image path, number of boxes) per image, for reports."""
        return [(r.path, len(r.boxes)) for r in self.records]

    def reseed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.records)

    def _decode_all(self) -> list[np.ndarray]:
        def load(rec: Record) -> np.ndarray:
            img = imread(rec.path, self.in_channels)
            if tuple(img.shape[:2]) != tuple(rec.size):
                raise DataError(f"{rec.path}: image is {img.shape[1]}x{img.shape[0]} but its "
                                f"annotation says {rec.size[1]}x{rec.size[0]}; re-export the "
                                f"annotations for this image")
            return img
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            return list(pool.map(load, self.records))

    def load_image(self, i: int) -> np.ndarray:
        if self.cache is not None:
            return self.cache[i]
        return imread(self.records[i].path, self.in_channels)

    def _trainable(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Boxes and labels used for training (crowd / difficult boxes left out)."""
        rec = self.records[i]
        keep = ~rec.crowd
        return rec.boxes[keep].copy(), rec.labels[keep].copy()

    def _letterboxed(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        img = self.load_image(i)
        boxes, labels = self._trainable(i)
        img, r = letterbox(img, self.input_size)
        return img, boxes * r, labels, r

    # -- mosaic / mixup ----------------------------------------------------------------------

    def _mosaic(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Four images around a random centre on a 2H x 2W canvas, then a random zoom about
        the canvas centre cropped to H x W. Objects appear at new scales, positions and next
        to new neighbours, which matters most when a dataset has few images."""
        H, W = self.input_size
        rng = self.rng
        yc, xc = int(rng.uniform(0.5 * H, 1.5 * H)), int(rng.uniform(0.5 * W, 1.5 * W))
        first = self.load_image(i)
        pad = PAD_VALUE if first.dtype == np.uint8 else PAD_VALUE / 255.0
        canvas = np.full((2 * H, 2 * W, first.shape[2]), pad, first.dtype)
        all_boxes, all_labels = [], []
        for k, j in enumerate([i] + rng.integers(0, len(self), 3).tolist()):
            img = first if k == 0 else self.load_image(j)
            boxes, labels = self._trainable(j)
            r = letterbox_scale(img.shape[:2], (H, W))
            h, w = max(1, round(img.shape[0] * r)), max(1, round(img.shape[1] * r))
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if r < 1 else
                             cv2.INTER_LINEAR).reshape(h, w, -1)
            if k == 0:    # top-left quadrant: the image's bottom-right corner at the centre
                xa1, ya1, xa2, ya2 = max(xc - w, 0), max(yc - h, 0), xc, yc
                xb1, yb1 = w - (xa2 - xa1), h - (ya2 - ya1)
            elif k == 1:  # top-right
                xa1, ya1, xa2, ya2 = xc, max(yc - h, 0), min(xc + w, 2 * W), yc
                xb1, yb1 = 0, h - (ya2 - ya1)
            elif k == 2:  # bottom-left
                xa1, ya1, xa2, ya2 = max(xc - w, 0), yc, xc, min(yc + h, 2 * H)
                xb1, yb1 = w - (xa2 - xa1), 0
            else:         # bottom-right
                xa1, ya1, xa2, ya2 = xc, yc, min(xc + w, 2 * W), min(yc + h, 2 * H)
                xb1, yb1 = 0, 0
            canvas[ya1:ya2, xa1:xa2] = img[yb1:yb1 + (ya2 - ya1), xb1:xb1 + (xa2 - xa1)]
            dx, dy = xa1 - xb1, ya1 - yb1
            all_boxes.append(boxes * r + np.array([dx, dy, dx, dy], np.float32))
            all_labels.append(labels)
        boxes, labels = np.concatenate(all_boxes), np.concatenate(all_labels)
        # zoom by s about the canvas centre (W, H), which lands on the output centre, plus a
        # small shift; axis-aligned, so boxes transform exactly by their corners
        s = rng.uniform(*self.mosaic_scale)
        tx, ty = rng.uniform(-0.1, 0.1) * W, rng.uniform(-0.1, 0.1) * H
        ox, oy = W / 2 - s * W + tx, H / 2 - s * H + ty
        M = np.array([[s, 0, ox], [0, s, oy]], np.float32)
        out = cv2.warpAffine(canvas, M, (W, H), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=(pad,) * 3)
        out = out.reshape(H, W, -1)
        moved = boxes * s + np.array([ox, oy, ox, oy], np.float32)
        return out, *self._clip_boxes(moved, labels, (H, W))

    def _clip_boxes(self, boxes: np.ndarray, labels: np.ndarray, hw: tuple[int, int]
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Clip to the image; drop boxes that became tiny or lost most of their area."""
        if not len(boxes):
            return boxes.reshape(0, 4).astype(np.float32), labels
        area0 = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        clipped = boxes.copy()
        clipped[:, 0::2] = clipped[:, 0::2].clip(0, hw[1])
        clipped[:, 1::2] = clipped[:, 1::2].clip(0, hw[0])
        w, h = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
        keep = (w >= self.min_box_size) & (h >= self.min_box_size) & \
            (w * h >= BBOX_PARAMS["min_visibility"] * np.maximum(area0, 1e-6))
        return clipped[keep].astype(np.float32), labels[keep]

    def _train_sample(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        use_mosaic = self.strong_aug and self.mosaic > 0 and self.rng.random() < self.mosaic
        if use_mosaic:
            img, boxes, labels = self._mosaic(i)
        else:
            img, boxes, labels, _ = self._letterboxed(i)
        if self.strong_aug and self.mixup > 0 and self.rng.random() < self.mixup:
            j = int(self.rng.integers(0, len(self)))
            if use_mosaic:
                img2, boxes2, labels2 = self._mosaic(j)
            else:
                img2, boxes2, labels2, _ = self._letterboxed(j)
            lam = self.rng.beta(32.0, 32.0)  # close to an even blend, as in YOLOv5's mixup
            img = (img.astype(np.float32) * lam + img2.astype(np.float32) * (1 - lam))
            img = img.astype(img2.dtype)
            boxes, labels = np.concatenate([boxes, boxes2]), np.concatenate([labels, labels2])
        return img, boxes, labels

    # -- access ------------------------------------------------------------------------------

    def __getitem__(self, i: int):
        rec = self.records[i]
        # strong augmentation only when mosaic/mixup are configured, which is a train split
        if self.mosaic > 0 or self.mixup > 0:
            img, boxes, labels = self._train_sample(i)
            scale = 1.0
        else:
            img, boxes, labels, scale = self._letterboxed(i)
        if self.transform is not None:
            out = self.transform(image=img, bboxes=boxes.reshape(-1, 4), labels=labels)
            img = out["image"]
            boxes = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
            labels = np.asarray(out["labels"], np.int64).reshape(-1)
            if img.shape[:2] != self.input_size:
                raise ConfigError(f"data.{self.split}.transforms changed the image size to "
                                  f"{list(img.shape[:2])}; detection letterboxes every image to "
                                  f"data.input_size {list(self.input_size)} itself, so leave "
                                  f"Resize/crop-to-size transforms out (or crop back to the "
                                  f"input size, e.g. RandomResizedCrop with size = input_size)")
        boxes, labels = self._clip_boxes(boxes, labels, self.input_size)
        target = {"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels)}
        meta = {"index": i, "scale": float(scale), "orig_size": tuple(rec.size),
                "gt_boxes": rec.boxes, "gt_labels": rec.labels, "gt_crowd": rec.crowd}
        return self.normalize(img), target, meta


def detection_collate(batch: list) -> tuple[torch.Tensor, list[dict], list[dict]]:
    """Stack the (equally sized, letterboxed) images; keep the per-image targets and metas as
    lists, since each image has its own number of boxes."""
    images = torch.stack([b[0] for b in batch])
    return images, [b[1] for b in batch], [b[2] for b in batch]

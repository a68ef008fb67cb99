"""Object detection datasets: YOLO txt, COCO JSON and Pascal VOC XML.

YOLO   root/images/<...>.png|jpg...        1- or 3-channel, 8- or 16-bit
       root/labels/<same relative path>.txt one box per line: ``class cx cy w h`` (normalised)
       root/{train,val,test}.txt           image paths relative to root or to images/, or stems
       root/labels.txt                     class names, index = line order
COCO   root/annotations/instances_<split>.json, images under root/images/
VOC    root/Annotations/<stem>.xml, root/JPEGImages/<stem>.jpg, root/ImageSets/Main/<split>.txt,
       class names from root/labels.txt (or the dataset's ``classes`` argument)

Every annotation is parsed and checked when the dataset is built, so a malformed line, an
unknown class or a box outside its image stops the run before anything is written, with the
file (and line) to fix. Images without boxes are allowed (pure background examples).

A sample is ``(image CHW float tensor, {"boxes": (n, 4) xyxy input pixels, "labels": (n,)},
meta)``: the image is letterboxed to ``input_size`` (see boxes.py), then the split's
albumentations pipeline runs with boxes following the image. Training can add mosaic (four
images in one) and mixup (two samples blended); their randomness comes from a generator that
the shared loader reseeds per epoch and worker (``reseed_hooks``), so runs are reproducible.
``meta`` keeps the letterbox scale and the original boxes, which evaluation compares against.
"""
from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from aicore.data.io import IMAGE_EXTENSIONS, dataset_root, imread, is_image, read_lines
from aicore.data.transforms import Normalize, default_mean_std
from aicore.errors import ConfigError, DataError
from aicore.registry import DATASETS
from aicore.data.io import read_labels_file
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


# ------------------------------------------------------------------------------------------
# YOLO txt


@DATASETS.register("YOLODetectionDataset")
class YOLODetectionDataset(DetectionDataset):
    """YOLO txt layout (see the module docstring). A split is ``root/<split>.txt``; when that
    file is missing, ``root/images/<split>/`` (the Ultralytics folder layout, labels under
    ``root/labels/<split>/``) is used instead. A missing label file means "no objects"."""

    def read_records(self) -> list[Record]:
        labels_file = self.root / "labels.txt"
        if not self.classes:
            if not labels_file.is_file():
                raise DataError(f"{labels_file} not found: the YOLO layout needs it (one class "
                                f"name per line, line order = class id)")
            self.classes = read_labels_file(labels_file, None)
        images_dir = self.root / "images"
        listing = self.root / f"{self.split}.txt"
        if listing.is_file():
            paths = self._read_listing(listing, images_dir)
        elif (images_dir / self.split).is_dir():
            paths = sorted(p for p in (images_dir / self.split).rglob("*") if is_image(p))
        else:
            raise DataError(f"{self.root}: no '{self.split}.txt' list (and no images/{self.split}/ "
                            f"folder); write {listing} with one image path or stem per line")
        records = []
        for path in paths:
            hw = image_hw(path)
            label_file = self._label_path(path, images_dir)
            boxes, labels = self._read_label_file(label_file, hw)
            records.append(Record(str(path), hw, boxes, labels, np.zeros(len(labels), bool)))
        return records

    def _read_listing(self, listing: Path, images_dir: Path) -> list[Path]:
        stems: dict[str, Path] | None = None
        paths = []
        for n, line in read_lines(listing):
            for candidate in (self.root / line, images_dir / line):
                if candidate.is_file():
                    paths.append(candidate)
                    break
            else:
                if stems is None:  # index images/ once, only if a line is a bare stem
                    stems = {}
                    for p in sorted(images_dir.rglob("*")) if images_dir.is_dir() else []:
                        if is_image(p):
                            key = p.relative_to(images_dir).with_suffix("").as_posix()
                            stems.setdefault(key, p)
                found = stems.get(line) or stems.get(Path(line).with_suffix("").as_posix())
                if found is None:
                    exts = ",".join(e[1:] for e in IMAGE_EXTENSIONS)
                    raise DataError(f"{listing}:{n}: image not found for '{line}' (looked for "
                                    f"{self.root / line}, {images_dir / line} and "
                                    f"{images_dir}/{line}.{{{exts}}})")
                paths.append(found)
        return paths

    def _label_path(self, image: Path, images_dir: Path) -> Path:
        try:
            rel = image.relative_to(images_dir)
        except ValueError:  # image listed outside images/: labels/<stem>.txt
            rel = Path(image.name)
        return self.root / "labels" / rel.with_suffix(".txt")

    def _read_label_file(self, path: Path, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        boxes, labels = [], []
        if not path.is_file():
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)
        h, w = hw
        k = len(self.classes)
        for n, line in read_lines(path):
            parts = line.split()
            if len(parts) != 5:
                raise DataError(f"{path}:{n}: expected 5 values 'class cx cy w h', got "
                                f"{len(parts)}: '{line}'")
            try:
                cls = int(parts[0])
                cx, cy, bw, bh = (float(v) for v in parts[1:])
            except ValueError:
                raise DataError(f"{path}:{n}: cannot parse '{line}': the class must be an "
                                f"integer and cx cy w h numbers") from None
            if not 0 <= cls < k:
                raise DataError(f"{path}:{n}: class id {cls} is out of range: "
                                f"{self.root / 'labels.txt'} lists {k} classes (ids 0..{k - 1})")
            if max(cx, cy, bw, bh) > 1 + OUTSIDE_TOLERANCE and max(cx, cy) > 1.5:
                raise DataError(f"{path}:{n}: '{line}' looks like pixel coordinates; YOLO labels "
                                f"are normalised to [0, 1] by the image width and height")
            box = [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]
            boxes.append(check_box(box, hw, f"{path}:{n}"))
            labels.append(cls)
        return (np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64))


# ------------------------------------------------------------------------------------------
# COCO JSON


@DATASETS.register("COCODetectionDataset")
class COCODetectionDataset(DetectionDataset):
    """COCO JSON: ``root/annotations/instances_<split>.json`` with images under ``root/images/``
    (``root/images/<split>/`` and ``root/<split>/`` are tried too). Categories, sorted by id,
    become class indices 0..K-1; ``iscrowd`` boxes are ignored in training and evaluation.
    ``ann_file`` overrides the annotation path (relative to root)."""

    def __init__(self, root: str, split: str, in_channels: int = 3, transform: Any = None,
                 input_size: Sequence[int] | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, cache: bool = False, verify: bool = True,
                 mosaic: float = 0.0, mixup: float = 0.0,
                 mosaic_scale: Sequence[float] = (0.5, 1.5), min_box_size: float = 2.0,
                 classes: Sequence[str] | None = None, ann_file: str | None = None) -> None:
        # the full signature is spelled out: the framework passes root, input_size, ... only
        # to constructors that declare them
        self.ann_file = ann_file
        super().__init__(root, split, in_channels, transform, input_size, mean, std, cache,
                         verify, mosaic, mixup, mosaic_scale, min_box_size, classes)

    def read_records(self) -> list[Record]:
        ann = self.root / (self.ann_file or f"annotations/instances_{self.split}.json")
        if not ann.is_file():
            raise DataError(f"{ann} not found: the COCO layout keeps each split's annotations in "
                            f"root/annotations/instances_<split>.json")
        try:
            data = json.loads(ann.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"{ann}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key), list):
                raise DataError(f"{ann}: missing the '{key}' list of a COCO detection file")
        cats = sorted(data["categories"], key=lambda c: c["id"])
        names = [str(c["name"]) for c in cats]
        if self.classes and self.classes != names:
            raise DataError(f"{ann}: categories {names} differ from the configured classes "
                            f"{self.classes}")
        self.classes = names
        cat_index = {c["id"]: k for k, c in enumerate(cats)}
        by_image: dict[Any, list[dict]] = {}
        for a in data["annotations"]:
            by_image.setdefault(a.get("image_id"), []).append(a)
        known = {im.get("id") for im in data["images"]}
        for image_id, anns in by_image.items():
            if image_id not in known:
                raise DataError(f"{ann}: annotation id {anns[0].get('id')} refers to image_id "
                                f"{image_id}, which is not in 'images'")
        records = []
        for im in data["images"]:
            name = im.get("file_name")
            if not name or "width" not in im or "height" not in im:
                raise DataError(f"{ann}: image entry {im.get('id')} needs file_name, width and "
                                f"height")
            path = self._find_image(name, ann)
            hw = (int(im["height"]), int(im["width"]))
            boxes, labels, crowd = [], [], []
            for a in by_image.get(im["id"], []):
                where = f"{ann}: annotation id {a.get('id')} (image {name})"
                if a.get("category_id") not in cat_index:
                    raise DataError(f"{where}: category_id {a.get('category_id')} is not among "
                                    f"the file's categories {sorted(cat_index)}")
                bbox = a.get("bbox")
                if not (isinstance(bbox, list) and len(bbox) == 4):
                    raise DataError(f"{where}: 'bbox' must be [x, y, width, height], got {bbox}")
                x, y, bw, bh = (float(v) for v in bbox)
                boxes.append(check_box([x, y, x + bw, y + bh], hw, where))
                labels.append(cat_index[a["category_id"]])
                crowd.append(bool(a.get("iscrowd", 0)))
            records.append(Record(str(path), hw, np.array(boxes, np.float32).reshape(-1, 4),
                                  np.array(labels, np.int64), np.array(crowd, bool)))
        return records

    def _find_image(self, name: str, ann: Path) -> Path:
        for candidate in (self.root / "images" / name, self.root / "images" / self.split / name,
                          self.root / self.split / name, self.root / name):
            if candidate.is_file():
                return candidate
        raise DataError(f"{ann}: image '{name}' not found under {self.root / 'images'}")


# ------------------------------------------------------------------------------------------
# Pascal VOC XML


@DATASETS.register("VOCDetectionDataset")
class VOCDetectionDataset(DetectionDataset):
    """Pascal VOC: ``root/ImageSets/Main/<split>.txt`` (stems), ``root/Annotations/<stem>.xml``,
    ``root/JPEGImages/<stem>.*``; class names from the ``classes`` argument or
    ``root/labels.txt``. ``difficult`` objects are ignored as VOC's own evaluation does. VOC
    pixel coordinates are 1-based and inclusive; they are converted to 0-based edges."""

    def read_records(self) -> list[Record]:
        if not self.classes:
            labels_file = self.root / "labels.txt"
            if not labels_file.is_file():
                raise DataError(f"{labels_file} not found: give the VOC class names there (one "
                                f"per line) or as data.dataset.classes")
            self.classes = read_labels_file(labels_file, None)
        index = {c: i for i, c in enumerate(self.classes)}
        listing = self.root / "ImageSets" / "Main" / f"{self.split}.txt"
        if not listing.is_file():
            raise DataError(f"{listing} not found: VOC splits are lists of stems there")
        records = []
        for n, line in read_lines(listing):
            stem = line.split()[0]
            xml = self.root / "Annotations" / f"{stem}.xml"
            if not xml.is_file():
                raise DataError(f"{listing}:{n}: annotation {xml} not found")
            try:
                tree = ET.parse(xml).getroot()
            except ET.ParseError as e:
                raise DataError(f"{xml}: invalid XML: {e}") from None
            images = [p for p in (self.root / "JPEGImages").glob(f"{stem}.*") if is_image(p)]
            if not images:
                raise DataError(f"{listing}:{n}: no image {self.root / 'JPEGImages' / stem}.*")
            hw = image_hw(images[0])
            boxes, labels, crowd = [], [], []
            for k, obj in enumerate(tree.findall("object")):
                where = f"{xml}: object {k + 1}"
                name = (obj.findtext("name") or "").strip()
                if name not in index:
                    raise DataError(f"{where}: class '{name}' is not among {self.classes}")
                bb = obj.find("bndbox")
                try:
                    x1, y1, x2, y2 = (float(bb.findtext(t))
                                      for t in ("xmin", "ymin", "xmax", "ymax"))
                except (AttributeError, TypeError, ValueError):
                    raise DataError(f"{where}: bndbox needs numeric xmin, ymin, xmax, "
                                    f"ymax") from None
                boxes.append(check_box([x1 - 1, y1 - 1, x2, y2], hw, where))
                labels.append(index[name])
                crowd.append((obj.findtext("difficult") or "0").strip() == "1")
            records.append(Record(str(images[0]), hw, np.array(boxes, np.float32).reshape(-1, 4),
                                  np.array(labels, np.int64), np.array(crowd, bool)))
        return records

"""YOLO txt annotations.

root/images/<...>.png|jpg...        1- or 3-channel, 8- or 16-bit
root/labels/<same relative path>.txt one box per line: ``class cx cy w h`` (normalised)
root/{train,val,test}.txt           image paths relative to root or to images/, or stems
root/labels.txt                     class names, index = line order
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from aicore.data.io import IMAGE_EXTENSIONS, is_image, read_labels_file, read_lines
from aicore.errors import DataError
from aicore.registry import DATASETS
from aicore.tasks.detection.datasets.base import (OUTSIDE_TOLERANCE, DetectionDataset, Record,
                                                  check_box, image_hw)

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

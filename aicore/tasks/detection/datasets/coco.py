"""COCO JSON annotations: root/annotations/instances_<split>.json, images under
root/images/."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from aicore.errors import DataError
from aicore.registry import DATASETS
from aicore.tasks.detection.datasets.base import DetectionDataset, Record, check_box

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

"""Pascal VOC XML annotations: root/Annotations/<stem>.xml, root/JPEGImages/<stem>.jpg,
root/ImageSets/Main/<split>.txt; class names from root/labels.txt (or the dataset's ``classes``
argument)."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np

from aicore.data.io import is_image, read_labels_file, read_lines
from aicore.errors import DataError
from aicore.registry import DATASETS
from aicore.tasks.detection.datasets.base import DetectionDataset, Record, check_box, image_hw

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

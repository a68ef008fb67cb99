"""Classification datasets in both layouts of notes/contract.md.

Folder layout: ``root/<split>/<class_name>/*.png``.
List layout:   ``root/<class_name>/...`` with ``root/<split>.txt`` (one relative path per line,
               optionally followed by a class index or name) and ``root/labels.txt``.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
from torch.utils.data import Dataset

from aicore.data.io import (IMAGE_EXTENSIONS, dataset_root, imread, is_image, read_labels_file,
                            read_lines)
from aicore.data.transforms import Normalize
from aicore.errors import DataError
from aicore.registry import DATASETS


@DATASETS.register("ClassificationDataset")
class ClassificationDataset(Dataset):
    """Images and class indices for one split.

    cache: decode every image once into RAM (small datasets; saves decoding each epoch).
    verify: check every image at start-up so a corrupt file fails before training, not in
    epoch 37: with cache, by the one decode that fills the cache; without, by checking the file
    structure (aicore/data/verify.py), since the loader decodes each image anyway.
    """

    def __init__(self, root: str, split: str, in_channels: int = 3, transform: Any = None,
                 input_size: Sequence[int] | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, cache: bool = False, verify: bool = True,
                 separator: str | None = None, classes: Sequence[str] | None = None) -> None:
        self.root = dataset_root(root, "classification")
        self.split, self.in_channels = split, in_channels
        self.transform = transform
        self.input_size = tuple(input_size) if input_size else None
        from aicore.data.transforms import default_mean_std
        self.normalize = Normalize(*default_mean_std(in_channels, mean, std))
        self.separator = separator
        self.classes = list(classes) if classes else None
        folder, listing = self.root / split, self.root / f"{split}.txt"
        if folder.is_dir():
            self.layout = "folder"
            self.samples = self._scan_folder(folder)
        elif listing.is_file():
            self.layout = "list"
            self.samples = self._read_list(listing)
        else:
            raise DataError(f"{self.root}: no '{split}/' folder and no '{split}.txt' list; a "
                            f"classification dataset needs one of the two (see README, 'Dataset "
                            f"layouts')")
        if not self.samples:
            raise DataError(f"{self.root}: split '{split}' has no images")
        counts = np.bincount([t for _, t in self.samples], minlength=len(self.classes))
        self.class_counts = counts.tolist()
        self.cache: list[np.ndarray] | None = None
        if cache:
            self.cache = self._decode_all()  # decoding for the cache is the verification
        elif verify:
            self._check_all()  # file structure only: the loader decodes each image anyway

    # -- layouts ------------------------------------------------------------------------------

    def _scan_folder(self, folder: Path) -> list[tuple[str, int]]:
        labels_file = self.root / "labels.txt"
        if self.classes is None:
            if labels_file.is_file():
                self.classes = read_labels_file(labels_file, self.separator)
            else:  # class names from the train split, so every split maps names identically
                train_dir = self.root / "train" if (self.root / "train").is_dir() else folder
                self.classes = sorted(d.name for d in train_dir.iterdir() if d.is_dir())
        if not self.classes:
            raise DataError(f"{folder} has no class sub-folders; expected "
                            f"{folder}/<class_name>/*.png")
        index = {c: i for i, c in enumerate(self.classes)}
        samples = []
        for d in sorted(p for p in folder.iterdir() if p.is_dir()):
            if d.name not in index:
                raise DataError(f"{d}: class folder '{d.name}' is not among the classes "
                                f"{self.classes} (from {labels_file if labels_file.is_file() else self.root / 'train'})")
            files = sorted(p for p in d.rglob("*") if p.is_file() and is_image(p))
            if not files:
                raise DataError(f"{d}: class folder is empty (no {'/'.join(IMAGE_EXTENSIONS)} "
                                f"files). Add images or remove the folder")
            samples += [(str(p), index[d.name]) for p in files]
        return samples

    def _read_list(self, listing: Path) -> list[tuple[str, int]]:
        labels_file = self.root / "labels.txt"
        if self.classes is None:
            if not labels_file.is_file():
                raise DataError(f"{labels_file} not found: the list layout needs it (one class "
                                f"name per line)")
            self.classes = read_labels_file(labels_file, self.separator)
        index = {c: i for i, c in enumerate(self.classes)}
        samples = []
        for n, line in read_lines(listing):
            parts = line.rsplit(self.separator, 1) if self.separator else line.rsplit(None, 1)
            rel, label = (parts[0].strip(), parts[1].strip()) if len(parts) == 2 else (line, None)
            if label is not None and not label.lstrip("-").isdigit() and label not in index:
                rel, label = line, None  # a path with a space in it, not "path label"
            if label is None:
                first = Path(rel).parts[0]
                if first not in index:
                    raise DataError(f"{listing}:{n}: cannot tell the class of '{rel}': its first "
                                    f"folder '{first}' is not in {labels_file}; write "
                                    f"'<path> <class index>'")
                target = index[first]
            elif label.lstrip("-").isdigit():
                target = int(label)
                if not 0 <= target < len(self.classes):
                    raise DataError(f"{listing}:{n}: class index {target} is out of range; "
                                    f"{labels_file} has {len(self.classes)} classes "
                                    f"(0..{len(self.classes) - 1})")
            else:
                target = index[label]
            path = self.root / rel
            if not path.is_file():
                raise DataError(f"{listing}:{n}: image not found: {path}")
            samples.append((str(path), target))
        return samples

    def _check_all(self) -> None:
        from aicore.data.verify import check_image
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            list(pool.map(lambda s: check_image(s[0], self.in_channels), self.samples))

    def _decode_all(self) -> list[np.ndarray]:
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            return list(pool.map(lambda s: imread(s[0], self.in_channels), self.samples))

    # -- access -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.samples)

    def load_image(self, i: int) -> np.ndarray:
        return self.cache[i] if self.cache is not None else imread(self.samples[i][0],
                                                                   self.in_channels)

    def __getitem__(self, i: int):
        img = self.load_image(i)
        if self.transform is not None:
            img = self.transform(image=img)["image"]
        if self.input_size and img.shape[:2] != self.input_size:
            img = cv2.resize(img, self.input_size[::-1], interpolation=cv2.INTER_LINEAR)
        return self.normalize(img), self.samples[i][1], i

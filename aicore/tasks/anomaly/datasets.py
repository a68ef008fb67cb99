"""MVTec AD layout, one category per dataset:

    root/<category>/train/good/*.png                  training images (defect-free only)
    root/<category>/test/good/*.png                   defect-free test images
    root/<category>/test/<defect>/*.png               defective test images, one folder per type
    root/<category>/ground_truth/<defect>/<stem>_mask.png   their masks (0 = good, >0 = defect)

Splits: ``train`` = train/good; ``val`` and ``test`` = test/* (MVTec AD has no separate
validation set). ``root`` may be the category folder itself, or a folder of categories with
``category`` naming one; the trainer runs several categories one after another (see
``categories.py``).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from aicore.data.io import IMAGE_EXTENSIONS, dataset_root, imread, is_image
from aicore.data.transforms import Normalize, default_mean_std
from aicore.deploy.preprocess import resize_linear
from aicore.errors import ConfigError, DataError
from aicore.registry import DATASETS

#: image-level labels; the checkpoint records them as its classes
CLASSES = ["good", "defect"]
MASK_SUFFIX = "_mask"


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image(p))


def is_category(folder: Path) -> bool:
    return (folder / "train").is_dir() or (folder / "test").is_dir()


def list_categories(root: Path) -> list[str]:
    """Sub-folders of root laid out as MVTec categories (with train/ or test/)."""
    return sorted(d.name for d in root.iterdir() if d.is_dir() and is_category(d))



def category_dir(root: str | None, category: str | None) -> Path:
    """The folder of one category: root itself (category null) or root/<category>."""
    path = dataset_root(root, "anomaly")
    if category is None:
        if not is_category(path):
            found = list_categories(path)
            if found:
                raise ConfigError(f"data.root = {root} holds several categories ({', '.join(found)}); "
                                  f"pick one with data.dataset.category, or \"all\"")
        return path
    if not isinstance(category, str) or category == "all":
        raise ConfigError(f"data.dataset.category = {category!r}: a dataset holds one category; "
                          f"the AnomalyTrainer runs a list or \"all\" one category at a time")
    folder = path / category
    if not folder.is_dir():
        found = list_categories(path)
        raise DataError(f"category '{category}' not found: no folder {folder}. Categories under "
                        f"{path}: {', '.join(found) or 'none'}")
    return folder


def scan(folder: Path, split: str) -> list[tuple[str, str | None, str]]:
    """(image path, mask path or None, defect type) for every image of a split, after checking
    the layout; raises DataError naming the first problem and its fix."""
    if split == "train":
        good = folder / "train" / "good"
        if not good.is_dir():
            raise DataError(f"{good} not found: an anomaly dataset trains on defect-free images "
                            f"in <category>/train/good/ (MVTec AD layout, see README 'Dataset "
                            f"layouts')")
        samples = [(str(p), None, "good") for p in _images(good)]
        if not samples:
            raise DataError(f"{good} has no images ({'/'.join(IMAGE_EXTENSIONS)}); put the "
                            f"defect-free training images there")
        return samples
    test = folder / "test"
    if not test.is_dir():
        raise DataError(f"{test} not found: the {split} split reads <category>/test/good/ and "
                        f"<category>/test/<defect>/ (with masks in <category>/ground_truth/"
                        f"<defect>/<name>_mask.png)")
    samples: list[tuple[str, str | None, str]] = []
    for d in sorted(p for p in test.iterdir() if p.is_dir()):
        for img in _images(d):
            if d.name == "good":
                samples.append((str(img), None, "good"))
                continue
            mask = folder / "ground_truth" / d.name / f"{img.stem}{MASK_SUFFIX}.png"
            if not mask.is_file():
                raise DataError(f"{img}: defect image without a mask; expected {mask} (white = "
                                f"defect, black = good). Add the mask, or move the image out "
                                f"of {d}")
            samples.append((str(img), str(mask), d.name))
    labels = {s[2] == "good" for s in samples}
    if labels != {True, False}:
        missing = "test/good/" if True not in labels else "test/<defect>/"
        raise DataError(f"{test}: the {split} split needs defect-free images (test/good/) and "
                        f"defective ones (test/<defect>/) to measure AUROC; {missing} has none")
    return samples


def _size(path: str) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception as e:
        raise DataError(f"cannot read image {path}: {type(e).__name__}: {e}. Replace the file "
                        f"or remove it from the dataset") from None
    return h, w


def check_mask_sizes(samples: list[tuple[str, str | None, str]]) -> None:
    def check(sample: tuple[str, str | None, str]) -> None:
        img, mask, _ = sample
        if mask is not None and _size(img) != _size(mask):
            (ih, iw), (mh, mw) = _size(img), _size(mask)
            raise DataError(f"{mask} is {mw}x{mh} pixels but its image {img} is {iw}x{ih}; a "
                            f"mask must have its image's size. Re-export the mask at {iw}x{ih}")

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(check, samples))


def read_mask(path: str) -> np.ndarray:
    """uint8 HxW mask, 1 = defect: any non-zero pixel, so 0/255 and 0/1 masks, 8 or 16 bit,
    grey or colour, all work."""
    buf = np.fromfile(path, dtype=np.uint8)
    m = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if m is None:
        raise DataError(f"cannot decode mask {path}: the file is empty or corrupt")
    if m.ndim == 3:
        m = m.max(axis=2)
    return (m > 0).astype(np.uint8)


@DATASETS.register("MVTecDataset")
class MVTecDataset(Dataset):
    """Images, masks and good/defect labels of one category and split.

    Items are ``(image (C,H,W) float, mask (1,H,W) float in {0,1}, label 0/1, index)``.
    cache: keep decoded images in RAM (small data sets). verify: check every mask's size
    against its image at start-up (file headers only, fast).
    """

    classes = CLASSES

    def __init__(self, root: str, split: str, in_channels: int = 3, transform: Any = None,
                 input_size: Sequence[int] | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, category: str | None = None,
                 cache: bool = False, verify: bool = True) -> None:
        self.folder = category_dir(root, category)
        self.category = self.folder.name
        self.split, self.in_channels = split, in_channels
        self.transform = transform
        self.input_size = tuple(input_size) if input_size else None
        self.normalize = Normalize(*default_mean_std(in_channels, mean, std))
        self.samples = scan(self.folder, split)
        if verify:
            check_mask_sizes(self.samples)
        self.labels = [int(d != "good") for _, _, d in self.samples]
        self.defect_types = sorted({d for _, _, d in self.samples if d != "good"})
        self.cache: list[np.ndarray] | None = None
        if cache:
            with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
                self.cache = list(pool.map(lambda s: imread(s[0], in_channels), self.samples))

    def __len__(self) -> int:
        return len(self.samples)

    def load_image(self, i: int) -> np.ndarray:
        return self.cache[i] if self.cache is not None else imread(self.samples[i][0],
                                                                   self.in_channels)

    def load_mask(self, i: int, shape: tuple[int, int]) -> np.ndarray:
        path = self.samples[i][1]
        if path is None:
            return np.zeros(shape, np.uint8)
        mask = read_mask(path)
        if mask.shape != shape:  # verify=False and a wrong mask: still say which file
            raise DataError(f"{path} is {mask.shape[1]}x{mask.shape[0]} pixels but its image "
                            f"{self.samples[i][0]} is {shape[1]}x{shape[0]}; re-export the mask")
        return mask

    def __getitem__(self, i: int):
        img = self.load_image(i)
        mask = self.load_mask(i, img.shape[:2])
        if self.transform is not None:
            out = self.transform(image=img, mask=mask)
            img, mask = out["image"], out["mask"]
        if self.input_size and img.shape[:2] != self.input_size:
            h, w = self.input_size
            # as AnomalyTrainer's protocol and the deploy runtime: float32, antialiased shrink
            img = resize_linear(img, (h, w), in_float=True, antialias=True)
            mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
        return (self.normalize(img), torch.from_numpy(np.ascontiguousarray(mask))[None].float(),
                self.labels[i], i)

"""Semantic segmentation dataset in the layout of notes/contract.md.

    root/images/<stem>.png|jpg|bmp|tif...   1- or 3-channel, 8- or 16-bit
    root/masks/<stem>.png                   class index per pixel; 255 = ignore
    root/{train,val,test}.txt               one stem per line (sub/folder/stem also works)
    root/labels.txt                         one class name per line, index = line order

Masks are read with PIL so that VOC-style palette PNGs (mode 'P') give their palette indices,
not the colours OpenCV would expand them to. Every mask is checked at start-up (verify=True):
a missing mask, a mask whose size differs from its image, or a class index that labels.txt
does not have stops the run before anything is written, naming the file and the fix.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from aicore.data.io import IMAGE_EXTENSIONS, dataset_root, imread, is_image, read_lines
from aicore.data.transforms import Normalize, default_mean_std
from aicore.errors import DataError
from aicore.registry import DATASETS

IGNORE_INDEX = 255


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """A mask file -> HxW uint8 array of class indices (palette index for mode 'P' PNGs).

    Grey (L), palette (P), 1-bit and 16-bit masks are accepted; a colour mask is accepted only
    when its three channels are equal (a grey mask saved as RGB), since a colour -> class table
    is not part of the layout.
    """
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode == "LA":
                im = im.getchannel("L")
            arr = np.array(im)
    except FileNotFoundError:
        raise DataError(f"mask not found: {path}") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot decode mask {path}: {e}. Replace the file or remove its stem "
                        f"from the split lists") from None
    if arr.ndim == 3:
        if arr.shape[2] >= 3 and (np.array_equal(arr[..., 0], arr[..., 1])
                                  and np.array_equal(arr[..., 0], arr[..., 2])):
            arr = arr[..., 0]
        else:
            raise DataError(f"{path}: mask is a colour image (mode {mode}); a mask must hold one "
                            f"class index per pixel: save it as 8-bit grey or as a palette PNG "
                            f"(mode 'P', e.g. VOC's SegmentationClass), 255 = ignore")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > IGNORE_INDEX):
            raise DataError(f"{path}: mask values range {int(arr.min())}..{int(arr.max())}; class "
                            f"indices must be 0..254 with 255 = ignore")
        arr = arr.astype(np.uint8)
    return arr


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image without decoding its pixels."""
    try:
        with Image.open(path) as im:
            w, h = im.size
        return h, w
    except (OSError, ValueError, Image.DecompressionBombError):
        img = imread(path, 3)  # PIL cannot read it; let OpenCV try, or raise DataError
        return img.shape[0], img.shape[1]


def _index_folder(folder: Path, suffix: str = "") -> dict[str, Path]:
    """relative stem (posix, without extension and `suffix`) -> file, for every image below."""
    index: dict[str, Path] = {}
    for p in sorted(folder.rglob("*")):
        if not (p.is_file() and is_image(p)):
            continue
        rel = p.relative_to(folder).with_suffix("").as_posix()
        if suffix:
            if not rel.endswith(suffix):
                continue
            rel = rel[: -len(suffix)]
        prev = index.get(rel)
        # two files with one stem (x.png, x.jpg): prefer the PNG, the lossless one
        if prev is None or (prev.suffix.lower() != ".png" and p.suffix.lower() == ".png"):
            index[rel] = p
    return index


@DATASETS.register("SegmentationDataset")
class SegmentationDataset(Dataset):
    """Images and class-index masks for one split; yields (image CHW float, mask HW int64, index).

    input_size: [H, W] the pair is resized to after the transforms (image bilinear, mask
    nearest) when the transforms did not already produce that size; None keeps full resolution
    (sliding-window evaluation). cache: keep decoded images and masks in RAM. verify: check
    every mask at start-up (sizes, class indices) and count pixels per class for the loss's
    class weights; turn off only for data sets too large to scan.
    """

    def __init__(self, root: str, split: str, in_channels: int = 3, transform: Any = None,
                 input_size: Sequence[int] | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, cache: bool = False, verify: bool = True,
                 classes: Sequence[str] | None = None, images_dir: str = "images",
                 masks_dir: str = "masks", mask_suffix: str = "") -> None:
        self.root = dataset_root(root, "segmentation")
        self.split, self.in_channels = split, int(in_channels)
        self.transform = transform
        self.input_size = tuple(int(s) for s in input_size) if input_size else None
        self.normalize = Normalize(*default_mean_std(self.in_channels, mean, std))
        self.classes = list(classes) if classes else self._read_labels()
        if len(self.classes) > IGNORE_INDEX:
            raise DataError(f"{self.root / 'labels.txt'} lists {len(self.classes)} classes; at "
                            f"most 255 fit in 8-bit masks next to 255 = ignore")
        self.samples = self._read_split(images_dir, masks_dir, mask_suffix)
        self.class_counts: list[int] | None = None  # labelled pixels per class (verify)
        self.ignored_pixels: int | None = None
        self.cache: list[tuple[np.ndarray, np.ndarray]] | None = None
        if cache or verify:
            self._check_all(keep=cache)

    # -- layout -------------------------------------------------------------------------------

    def _read_labels(self) -> list[str]:
        from aicore.data.io import read_labels_file  # same labels.txt rules
        labels = self.root / "labels.txt"
        if not labels.is_file():
            raise DataError(f"{labels} not found: write one class name per line (line 1 = class "
                            f"index 0, usually 'background'), or set data.dataset.classes")
        return read_labels_file(labels, None)

    def _read_split(self, images_dir: str, masks_dir: str,
                    mask_suffix: str) -> list[tuple[str, str]]:
        listing = self.root / f"{self.split}.txt"
        img_dir, mask_dir = self.root / images_dir, self.root / masks_dir
        for folder, what in ((img_dir, "images"), (mask_dir, "masks")):
            if not folder.is_dir():
                raise DataError(f"{folder}: folder not found; a segmentation dataset keeps its "
                                f"{what} in root/{folder.name}/ (see README, 'Dataset layouts')")
        if not listing.is_file():
            raise DataError(f"{listing} not found: list the stems of the {self.split} images "
                            f"(file names without extension), one per line")
        images = _index_folder(img_dir)
        masks = _index_folder(mask_dir, mask_suffix)
        samples: list[tuple[str, str]] = []
        for n, line in read_lines(listing):
            stem = line.replace("\\", "/")
            if is_image(stem):  # a line may carry the image's extension
                stem = stem.rsplit(".", 1)[0]
            if stem.startswith(f"{images_dir}/"):
                stem = stem[len(images_dir) + 1:]
            if stem not in images:
                raise DataError(f"{listing}:{n}: no image '{stem}.*' in {img_dir} "
                                f"({'/'.join(IMAGE_EXTENSIONS)}); fix the line or add the image")
            if stem not in masks:
                raise DataError(f"{listing}:{n}: the mask of {images[stem]} is missing: expected "
                                f"{mask_dir / (stem + mask_suffix + '.png')}. Add it, or remove "
                                f"'{line}' from {listing.name}")
            samples.append((str(images[stem]), str(masks[stem])))
        if not samples:
            raise DataError(f"{listing} lists no images; write one stem per line")
        return samples

    def _check_one(self, i: int, keep: bool) -> tuple[np.ndarray, Any]:
        img_path, mask_path = self.samples[i]
        mask = read_mask(mask_path)
        if keep:
            img = imread(img_path, self.in_channels)
            size = img.shape[:2]
        else:
            img, size = None, image_size(img_path)
        if tuple(mask.shape[:2]) != tuple(size):
            raise DataError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its "
                            f"image {img_path} is {size[1]}x{size[0]}; a mask must have exactly "
                            f"its image's size (re-export it, or resize it with nearest-neighbour "
                            f"interpolation)")
        counts = np.bincount(mask.ravel(), minlength=256)
        bad = np.flatnonzero(counts[len(self.classes):IGNORE_INDEX])
        if bad.size:
            found = [int(v) + len(self.classes) for v in bad]
            raise DataError(f"{mask_path}: class index {found[0]} (of {found}) is beyond "
                            f"{self.root / 'labels.txt'}, which has {len(self.classes)} classes "
                            f"(0..{len(self.classes) - 1}); 255 marks ignored pixels. Add the "
                            f"class to labels.txt or fix the mask")
        return counts, (img, mask) if keep else None

    def _check_all(self, keep: bool) -> None:
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            results = list(pool.map(lambda i: self._check_one(i, keep), range(len(self.samples))))
        total = np.sum([c for c, _ in results], axis=0)
        self.class_counts = [int(c) for c in total[:len(self.classes)]]
        self.ignored_pixels = int(total[IGNORE_INDEX])
        if keep:
            self.cache = [pair for _, pair in results]

    # -- access -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The i-th (image HxWxC as read, mask HxW uint8) before any transform."""
        if self.cache is not None:
            return self.cache[i]
        img_path, mask_path = self.samples[i]
        img, mask = imread(img_path, self.in_channels), read_mask(mask_path)
        if img.shape[:2] != mask.shape:
            raise DataError(f"{mask_path}: mask size {mask.shape[::-1]} differs from its image "
                            f"{img_path} {img.shape[1::-1]}; fix the mask (see verify=True)")
        return img, mask

    def __getitem__(self, i: int):
        img, mask = self.load(i)
        if self.transform is not None:
            out = self.transform(image=img, mask=mask)
            img, mask = out["image"], out["mask"]
        if self.input_size and tuple(img.shape[:2]) != self.input_size:
            h, w = self.input_size
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
            mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
        return self.normalize(img), torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64)), i


def pad_collate(batch: list[tuple[torch.Tensor, torch.Tensor, int]]):
    """Stack samples of different sizes by padding at the bottom/right: images with 0 (the
    normalised mean), masks with 255 so the padding is never trained on or scored."""
    h = max(b[0].shape[1] for b in batch)
    w = max(b[0].shape[2] for b in batch)
    images = torch.zeros(len(batch), batch[0][0].shape[0], h, w, dtype=batch[0][0].dtype)
    masks = torch.full((len(batch), h, w), IGNORE_INDEX, dtype=torch.int64)
    for k, (img, mask, _) in enumerate(batch):
        images[k, :, :img.shape[1], :img.shape[2]] = img
        masks[k, :mask.shape[0], :mask.shape[1]] = mask
    return images, masks, torch.tensor([b[2] for b in batch], dtype=torch.int64)

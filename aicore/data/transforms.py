"""Augmentation pipelines from config: any albumentations transform by name, plus our own
registered ones, followed by normalisation to a float CHW tensor."""
from __future__ import annotations

from typing import Any, Sequence

import albumentations as A
import numpy as np
import torch

from aicore.config import build
from aicore.registry import TRANSFORMS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_mean_std(in_channels: int, mean: Sequence[float] | None,
                     std: Sequence[float] | None) -> tuple[list[float], list[float]]:
    if mean is None:
        mean = IMAGENET_MEAN if in_channels == 3 else (0.5,)
    if std is None:
        std = IMAGENET_STD if in_channels == 3 else (0.5,)
    mean, std = list(mean), list(std)
    if len(mean) == 1:
        mean = mean * in_channels
    if len(std) == 1:
        std = std * in_channels
    return mean, std


def build_transform(node: dict, path: str) -> A.BasicTransform:
    node = dict(node)
    children = node.pop("transforms", None)
    if children is not None:  # OneOf, SomeOf, Sequential, ...
        node["transforms"] = [build_transform(c, f"{path}.transforms.{i}")
                              for i, c in enumerate(children)]
    return build(node, TRANSFORMS, path)


def build_pipeline(nodes: list[dict] | None, path: str, **compose_kwargs: Any) -> A.Compose:
    transforms = [build_transform(n, f"{path}.{i}") for i, n in enumerate(nodes or [])]
    return A.Compose(transforms, **compose_kwargs)


class Normalize:
    """uint8 / float[0,1] HWC array -> normalised float32 CHW tensor."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = np.asarray(mean, np.float32).reshape(1, 1, -1)
        self.inv_std = 1.0 / np.asarray(std, np.float32).reshape(1, 1, -1)

    def __call__(self, img: np.ndarray) -> torch.Tensor:
        scale = 1.0 / 255.0 if img.dtype == np.uint8 else 1.0
        if img.ndim == 2:
            img = img[:, :, None]
        x = (img.astype(np.float32) * scale - self.mean) * self.inv_std
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))

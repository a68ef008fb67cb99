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


def _spread_seeds(transforms: Sequence[Any], seed: int) -> None:
    """Give transform i of ``transforms`` (and, recursively, of nested OneOf/SomeOf/...) its
    own seed derived from (seed, i)."""
    for i, t in enumerate(transforms):
        if not hasattr(t, "set_random_seed"):
            continue
        child = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        t.set_random_seed(child)
        if isinstance(t, A.BaseCompose):
            _spread_seeds(t.transforms, child)


class SeededCompose(A.Compose):
    """An A.Compose whose ``set_random_seed`` gives every transform an independent stream.

    albumentations 2.0's ``Compose.set_random_seed(seed)`` hands the same seed to every child,
    so all children draw identical random numbers: HorizontalFlip(p=0.5) and VerticalFlip(p=0.5)
    then fire together on every image (a 180-degree turn or nothing, never a single flip), and
    CutOut's holes line up with the draws of the transform before it. The data loader reseeds
    the pipeline every epoch and in every worker (aicore.data.loaders), so this matters for every
    training run. Seeding stays a pure function of the seed: runs remain reproducible.
    """

    def set_random_seed(self, seed: int | None) -> None:
        super().set_random_seed(seed)
        if seed is not None:
            _spread_seeds(self.transforms, seed)


def build_pipeline(nodes: list[dict] | None, path: str, **compose_kwargs: Any) -> A.Compose:
    """The albumentations pipeline of a config's ``transforms`` list (``path`` is its config
    key, for error messages); every transform gets its own random stream (SeededCompose)."""
    transforms = [build_transform(n, f"{path}.{i}") for i, n in enumerate(nodes or [])]
    return SeededCompose(transforms, **compose_kwargs)


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

"""Policy augmentations and CutOut as registered TRANSFORMS, usable in any config's
``data.<split>.transforms``:

    {"type": "RandAugment", "num_ops": 2, "magnitude": 9}
    {"type": "AutoAugment", "policy": "imagenet"}
    {"type": "TrivialAugmentWide"}
    {"type": "AugMix", "severity": 3}
    {"type": "CutOut", "num_holes": 1, "size": 0.25, "p": 0.5}

The four policies are torchvision.transforms.v2's implementations wrapped as albumentations
image-only transforms, so they sit in the same pipeline as every albumentations transform.
Two decisions shape the wrapper:

- Randomness comes from albumentations' per-transform RNG, never from torch's global one. Each
  call draws a seed from ``self.random_generator`` and runs the torchvision op with torch's CPU
  generator temporarily re-seeded (inside ``torch.random.fork_rng``). The data loader reseeds the
  Compose per epoch and per worker (``aicore.data.loaders``), so a run, a resumed run and a
  multi-worker run see the same augmented images, and the model's own torch RNG stream (dropout,
  sampling) is left exactly as it was.
- Images arrive as AICore reads them: HxWxC uint8 (C = 1 or 3), or float32 in [0, 1] for 16-bit
  files. Both are handed to torchvision in their own dtype, so 16-bit images keep their
  precision (only Equalize and Posterize, when a policy draws them, work at 8-bit resolution).
  Anything else (a float image outside [0, 1] because a Normalize ran first, 4 channels, ...) is
  a DataError naming the transform and the fix.

The policies change geometry (shear, translate, rotate) of the image only, so they refuse to run
when a mask, boxes or keypoints are passed along: they are for classification pipelines.
"""
from __future__ import annotations

from typing import Any, Literal

import albumentations as A
import numpy as np
import torch
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import InterpolationMode

from albumentations.augmentations.dropout.functional import cutout

from aicore.errors import ConfigError, DataError
from aicore.registry import TRANSFORMS

INTERPOLATIONS = {"nearest": InterpolationMode.NEAREST, "bilinear": InterpolationMode.BILINEAR}
POLICIES = {"imagenet": T.AutoAugmentPolicy.IMAGENET, "cifar10": T.AutoAugmentPolicy.CIFAR10,
            "svhn": T.AutoAugmentPolicy.SVHN}
# Targets that would silently go out of sync with an image whose geometry was changed.
_SPATIAL_TARGETS = ("mask", "masks", "bboxes", "keypoints")
# Slack for float images that are in [0, 1] up to rounding (e.g. after an albumentations op).
_FLOAT_SLACK = 1e-3


def _check_int(owner: str, name: str, value: Any, low: int, high: int | None = None) -> int:
    """Return ``value`` if it is an integer in [low, high]; raise ValueError naming the argument
    otherwise (aicore.config.build turns it into a ConfigError with the config key)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low or \
            (high is not None and value > high):
        allowed = f"an integer >= {low}" if high is None else f"an integer in {low}..{high}"
        raise ValueError(f"{owner}: {name} must be {allowed}, got {value!r}")
    return int(value)


def _check_fill(owner: str, fill: Any) -> float:
    if isinstance(fill, bool) or not isinstance(fill, (int, float)) or not 0 <= fill <= 255:
        raise ValueError(f"{owner}: fill must be a grey level in 0..255 (8-bit units, scaled "
                         f"automatically for 16-bit images), got {fill!r}")
    return float(fill)


def _interpolation(owner: str, name: str) -> InterpolationMode:
    if name not in INTERPOLATIONS:
        raise ValueError(f"{owner}: interpolation must be one of {', '.join(INTERPOLATIONS)}, "
                         f"got {name!r}")
    return INTERPOLATIONS[name]


def image_to_tensor(img: np.ndarray, owner: str) -> torch.Tensor:
    """HxW or HxWxC (C = 1 or 3) uint8 / float32-in-[0,1] array -> CxHxW tensor of the same
    dtype. Raises DataError for anything torchvision's colour ops cannot handle correctly."""
    if img.dtype == np.float32:
        lo, hi = float(img.min()), float(img.max())
        if lo < -_FLOAT_SLACK or hi > 1 + _FLOAT_SLACK:
            raise DataError(f"{owner} got a float32 image with values in [{lo:.3g}, {hi:.3g}]; it "
                            f"works on uint8 images or float images in [0, 1] (16-bit files as "
                            f"AICore reads them). Put {owner} before any step that rescales "
                            f"pixels (Normalize, ToFloat with another max_value) in "
                            f"data.<split>.transforms")
        img = np.clip(img, 0.0, 1.0) if lo < 0 or hi > 1 else img
    elif img.dtype != np.uint8:
        raise DataError(f"{owner} got a {img.dtype} image; it works on uint8 or float32 images in "
                        f"[0, 1]. Read images with aicore.data.io.imread (16-bit files become "
                        f"float32 in [0, 1]) or convert them first")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 3):
        raise DataError(f"{owner} works on 1- or 3-channel images, got shape {img.shape}. Set "
                        f"data.in_channels to 1 or 3, or remove {owner} from "
                        f"data.<split>.transforms")
    # permute is a view; torchvision's kernels cope with the non-contiguous layout
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)


def tensor_to_image(x: torch.Tensor, like: np.ndarray) -> np.ndarray:
    """Inverse of image_to_tensor: back to the layout (HxW or HxWxC) and dtype of ``like``."""
    out = np.ascontiguousarray(x.permute(1, 2, 0).numpy())
    if like.ndim == 2:
        out = out[:, :, 0]
    return out.astype(like.dtype, copy=False)


class TorchvisionPolicy(A.ImageOnlyTransform):
    """Base class: runs a torchvision.transforms.v2 augmentation policy on a numpy image, with
    its randomness drawn from this transform's albumentations RNG (see the module docstring).

    Subclasses set their arguments and then call ``_build_ops(fill)``; ``_make_op(fill)``
    returns the torchvision op for a fill value in the image's own units.
    """

    def __init__(self, p: float = 1.0) -> None:
        super().__init__(p=p)
        self._ops: dict[bool, torch.nn.Module] = {}

    def _make_op(self, fill: float) -> torch.nn.Module:
        raise NotImplementedError(f"{type(self).__name__} must define _make_op(fill)")

    def _build_ops(self, fill: float) -> None:
        # one op per dtype, because torchvision takes `fill` in the image's own units:
        # 0..255 for uint8, 0..1 for float images
        self._ops = {False: self._make_op(fill), True: self._make_op(fill / 255.0)}

    def get_params_dependent_on_data(self, params: dict[str, Any],
                                     data: dict[str, Any]) -> dict[str, Any]:
        """Refuse to desynchronise masks/boxes, and draw the seed for the torchvision op."""
        passed = [k for k in _SPATIAL_TARGETS if data.get(k) is not None]
        if passed:
            raise ConfigError(
                f"{type(self).__name__} shears, translates and rotates the image only, but this "
                f"pipeline also carries {', '.join(passed)}, which would no longer match. Use it "
                f"for classification only, or remove it from data.<split>.transforms")
        return {"torch_seed": int(self.random_generator.integers(0, 2**63 - 1))}

    def apply(self, img: np.ndarray, torch_seed: int = 0, **params: Any) -> np.ndarray:
        x = image_to_tensor(img, type(self).__name__)
        op = self._ops[x.is_floating_point()]
        # fork_rng(devices=[]) saves/restores the CPU generator only, and only that one is
        # re-seeded: a CUDA generator in use by the training loop is never touched.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(torch_seed)
            y = op(x)
        return tensor_to_image(y, img)


@TRANSFORMS.register("RandAugment")
class RandAugment(TorchvisionPolicy):
    """RandAugment (Cubuk et al., 2020): ``num_ops`` operations drawn uniformly from 14 (colour,
    contrast, sharpness, posterize, solarize, equalize, rotate, shear, translate, ...), each at
    strength ``magnitude`` out of ``num_magnitude_bins - 1``.

    interpolation: "nearest" or "bilinear", for the geometric ops. fill: grey level (0..255) of
    the area a rotation/shear/translation uncovers. p: probability of applying the policy at all.
    """

    def __init__(self, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31,
                 interpolation: Literal["nearest", "bilinear"] = "nearest", fill: float = 0,
                 p: float = 1.0) -> None:
        super().__init__(p=p)
        self.num_ops = _check_int("RandAugment", "num_ops", num_ops, 0)
        self.num_magnitude_bins = _check_int("RandAugment", "num_magnitude_bins",
                                             num_magnitude_bins, 2)
        # torchvision indexes a table of num_magnitude_bins strengths with `magnitude` and
        # would only fail at the first call; check it here, where the config key is known
        self.magnitude = _check_int("RandAugment", "magnitude", magnitude, 0,
                                    self.num_magnitude_bins - 1)
        self.interpolation = interpolation
        self._mode = _interpolation("RandAugment", interpolation)
        self.fill = _check_fill("RandAugment", fill)
        self._build_ops(self.fill)

    def _make_op(self, fill: float) -> torch.nn.Module:
        return T.RandAugment(num_ops=self.num_ops, magnitude=self.magnitude,
                             num_magnitude_bins=self.num_magnitude_bins,
                             interpolation=self._mode, fill=fill)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("num_ops", "magnitude", "num_magnitude_bins", "interpolation", "fill")


@TRANSFORMS.register("AutoAugment")
class AutoAugment(TorchvisionPolicy):
    """AutoAugment (Cubuk et al., 2019): one of the 25 sub-policies learnt on ``policy``
    ("imagenet", "cifar10" or "svhn"), each a pair of operations with fixed probabilities and
    strengths. "svhn" leans on shear, invert and contrast, which suits grey, print-like parts
    (codes, characters); "imagenet" is the general-purpose one.

    interpolation, fill, p: as for RandAugment.
    """

    def __init__(self, policy: Literal["imagenet", "cifar10", "svhn"] = "imagenet",
                 interpolation: Literal["nearest", "bilinear"] = "nearest", fill: float = 0,
                 p: float = 1.0) -> None:
        super().__init__(p=p)
        key = str(policy).lower()
        if key not in POLICIES:
            raise ValueError(f"AutoAugment: policy must be one of {', '.join(POLICIES)}, "
                             f"got {policy!r}")
        self.policy = key
        self.interpolation = interpolation
        self._mode = _interpolation("AutoAugment", interpolation)
        self.fill = _check_fill("AutoAugment", fill)
        self._build_ops(self.fill)

    def _make_op(self, fill: float) -> torch.nn.Module:
        return T.AutoAugment(policy=POLICIES[self.policy], interpolation=self._mode, fill=fill)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("policy", "interpolation", "fill")


@TRANSFORMS.register("TrivialAugmentWide")
class TrivialAugmentWide(TorchvisionPolicy):
    """TrivialAugment (Müller & Hutter, 2021), "wide" ranges: one operation per image, drawn
    uniformly, at a strength drawn uniformly from ``num_magnitude_bins`` levels. No tuning
    knobs, which makes it a good first choice.

    interpolation, fill, p: as for RandAugment.
    """

    def __init__(self, num_magnitude_bins: int = 31,
                 interpolation: Literal["nearest", "bilinear"] = "nearest", fill: float = 0,
                 p: float = 1.0) -> None:
        super().__init__(p=p)
        self.num_magnitude_bins = _check_int("TrivialAugmentWide", "num_magnitude_bins",
                                             num_magnitude_bins, 2)
        self.interpolation = interpolation
        self._mode = _interpolation("TrivialAugmentWide", interpolation)
        self.fill = _check_fill("TrivialAugmentWide", fill)
        self._build_ops(self.fill)

    def _make_op(self, fill: float) -> torch.nn.Module:
        return T.TrivialAugmentWide(num_magnitude_bins=self.num_magnitude_bins,
                                    interpolation=self._mode, fill=fill)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("num_magnitude_bins", "interpolation", "fill")


@TRANSFORMS.register("AugMix")
class AugMix(TorchvisionPolicy):
    """AugMix (Hendrycks et al., 2020): ``mixture_width`` chains of 1..3 operations
    (``chain_depth`` > 0 fixes the length) at strength ``severity`` (1..10) are mixed with
    Dirichlet(``alpha``) weights and blended with the original image by a Beta(alpha, alpha)
    weight. Keeps images closer to the original than RandAugment; good for robustness to
    lighting and camera changes.

    all_ops: also use the colour/contrast/brightness/sharpness ops (torchvision's default).
    interpolation, fill, p: as for RandAugment.
    """

    def __init__(self, severity: int = 3, mixture_width: int = 3, chain_depth: int = -1,
                 alpha: float = 1.0, all_ops: bool = True,
                 interpolation: Literal["nearest", "bilinear"] = "bilinear", fill: float = 0,
                 p: float = 1.0) -> None:
        super().__init__(p=p)
        self.severity = _check_int("AugMix", "severity", severity, 1, 10)
        self.mixture_width = _check_int("AugMix", "mixture_width", mixture_width, 1)
        if chain_depth != -1:
            _check_int("AugMix", "chain_depth (or -1 for a random depth of 1..3)", chain_depth, 1)
        self.chain_depth = int(chain_depth)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
            raise ValueError(f"AugMix: alpha must be a number > 0, got {alpha!r}")
        self.alpha = float(alpha)
        self.all_ops = bool(all_ops)
        self.interpolation = interpolation
        self._mode = _interpolation("AugMix", interpolation)
        self.fill = _check_fill("AugMix", fill)
        self._build_ops(self.fill)

    def _make_op(self, fill: float) -> torch.nn.Module:
        return T.AugMix(severity=self.severity, mixture_width=self.mixture_width,
                        chain_depth=self.chain_depth, alpha=self.alpha, all_ops=self.all_ops,
                        interpolation=self._mode, fill=fill)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("severity", "mixture_width", "chain_depth", "alpha", "all_ops", "interpolation",
                "fill")


@TRANSFORMS.register("CutOut")
class CutOut(A.CoarseDropout):
    """CutOut (DeVries & Taylor, 2017): ``num_holes`` square holes of side ``size`` filled with
    ``fill``.

    size: below 1 it is a fraction of the image's shorter side, from 1 up it is pixels.
    fill: a grey level or a per-channel list in 8-bit units (0..255; scaled to 0..1 for 16-bit
    images, as for the policies), or one of albumentations' "random", "random_uniform",
    "inpaint_telea", "inpaint_ns".
    fill_mask: value written into a segmentation mask under each hole; null leaves masks alone.

    As in the paper, a hole's centre is drawn anywhere in the image and the hole is clipped at
    the border, so holes near an edge are smaller; this keeps every pixel equally likely to be
    covered (CoarseDropout keeps holes inside, which under-covers the borders, where parts of an
    industrial image often sit). Being a CoarseDropout, it updates masks, boxes and keypoints
    the same way CoarseDropout does.
    """

    def __init__(self, num_holes: int = 1, size: float = 0.25,
                 fill: float | list[float] | str = 0, fill_mask: float | None = None,
                 p: float = 0.5) -> None:
        num_holes = _check_int("CutOut", "num_holes", num_holes, 1)
        if isinstance(size, bool) or not isinstance(size, (int, float)) or size <= 0:
            raise ValueError(f"CutOut: size must be > 0 (below 1: a fraction of the shorter "
                             f"image side; from 1 up: pixels), got {size!r}")
        side: tuple[float, float] | tuple[int, int] = \
            (float(size), float(size)) if size < 1 else (int(round(size)),) * 2
        super().__init__(num_holes_range=(num_holes, num_holes), hole_height_range=side,
                         hole_width_range=side,
                         fill=tuple(fill) if isinstance(fill, list) else fill,
                         fill_mask=fill_mask, p=p)
        self.num_holes = num_holes
        self.size = float(size) if size < 1 else int(round(size))

    def get_params_dependent_on_data(self, params: dict[str, Any],
                                     data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        side = self.size if self.size >= 1 else max(1, round(self.size * min(height, width)))
        cy = self.random_generator.integers(0, height, size=self.num_holes)
        cx = self.random_generator.integers(0, width, size=self.num_holes)
        # [c - side//2, c - side//2 + side) always contains c, so no hole is empty
        y1 = np.clip(cy - side // 2, 0, height)
        x1 = np.clip(cx - side // 2, 0, width)
        y2 = np.clip(cy - side // 2 + side, 0, height)
        x2 = np.clip(cx - side // 2 + side, 0, width)
        holes = np.stack([x1, y1, x2, y2], axis=-1).astype(np.int64)
        return {"holes": holes, "seed": int(self.random_generator.integers(0, 2**32 - 1))}

    def apply(self, img: np.ndarray, holes: np.ndarray, seed: int = 0,
              **params: Any) -> np.ndarray:
        if img.dtype == np.float32 and not isinstance(self.fill, str) and holes.size:
            # numeric fills are in 8-bit units; a 16-bit image arrives as float in [0, 1]
            fill = tuple(f / 255.0 for f in self.fill) if isinstance(self.fill, tuple) \
                else self.fill / 255.0
            return cutout(img, holes, fill, np.random.default_rng(seed))
        return super().apply(img, holes, seed, **params)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("num_holes", "size", "fill", "fill_mask")

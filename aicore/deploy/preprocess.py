"""Image -> model input, torch-free: the same steps, in the same order and with the same OpenCV
calls, as the trainers' preprocess() (so training, demo and deployment agree bit for bit).

The steps come from the export manifest's "preprocess" section; nothing is guessed here.
"""
from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np

from aicore.data.io import to_channels

#: grey used to pad letterboxed images (and empty mosaic areas), as YOLOX does
PAD_VALUE = 114


def letterbox_scale(hw: Sequence[int], input_size: Sequence[int]) -> float:
    """The factor that fits an (h, w) image inside input_size (H, W) without distortion."""
    return min(input_size[0] / hw[0], input_size[1] / hw[1])


def letterbox(img: np.ndarray, input_size: Sequence[int], scale: float | None = None,
              pad_value: float = PAD_VALUE) -> tuple[np.ndarray, float]:
    """Resize keeping the aspect ratio, then pad bottom/right to exactly input_size.

    Works for uint8 and float32 ([0, 1], from 16-bit files) images with any channel count.
    Returns the padded image and the scale applied, so callers can move boxes with it.
    """
    h, w = img.shape[:2]
    H, W = int(input_size[0]), int(input_size[1])
    r = letterbox_scale((h, w), (H, W)) if scale is None else scale
    nh, nw = min(H, max(1, round(h * r))), min(W, max(1, round(w * r)))
    if (nh, nw) != (h, w):
        # INTER_AREA when shrinking avoids aliasing; LINEAR when enlarging
        interp = cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR
        resized = cv2.resize(img, (nw, nh), interpolation=interp)
    else:
        resized = img
    if resized.ndim == 2:
        resized = resized[:, :, None]
    pad = pad_value if img.dtype == np.uint8 else pad_value / 255.0
    out = np.full((H, W, resized.shape[2]), pad, dtype=img.dtype)
    out[:nh, :nw] = resized
    return out, r


def normalize(img: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 / float[0,1] HWC array -> normalised float32 CHW array (as aicore's Normalize)."""
    m = np.asarray(mean, np.float32).reshape(1, 1, -1)
    inv_std = 1.0 / np.asarray(std, np.float32).reshape(1, 1, -1)
    scale = 1.0 / 255.0 if img.dtype == np.uint8 else 1.0
    if img.ndim == 2:
        img = img[:, :, None]
    x = (img.astype(np.float32) * scale - m) * inv_std
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def resize_linear(img: np.ndarray, hw: Sequence[int], in_float: bool = False) -> np.ndarray:
    """Bilinear resize to (h, w). in_float: an 8-bit image becomes float32 in [0, 1] first, so
    the interpolated values are not rounded back to whole grey levels (that rounding is noise
    of up to half a level, which the anomaly models score; torchvision resizes in float too)."""
    if in_float and img.dtype == np.uint8:
        img = img.astype(np.float32) * np.float32(1 / 255)
    return cv2.resize(img, (int(hw[1]), int(hw[0])), interpolation=cv2.INTER_LINEAR)


def prepare(raw: np.ndarray, spec: dict[str, Any], name: str = "image"
            ) -> tuple[np.ndarray, dict[str, Any]]:
    """An image as OpenCV reads it (HxW or HxWxC, BGR(A), uint8 or uint16) -> (CHW float32
    model input, info needed to map outputs back: original size and letterbox scale)."""
    img = to_channels(raw, int(spec["channels"]), name)
    h, w = int(img.shape[0]), int(img.shape[1])
    size = [int(s) for s in spec["size"]]
    info: dict[str, Any] = {"hw": (h, w), "scale": 1.0}
    mode = spec.get("resize", "stretch")
    if mode == "letterbox":
        img, info["scale"] = letterbox(img, size, pad_value=spec.get("pad_value", PAD_VALUE))
    elif mode == "stretch":
        if img.shape[:2] != tuple(size):
            img = resize_linear(img, size, spec.get("resize_precision") == "float32")
    elif mode != "none":
        raise ValueError(f"unknown resize mode {mode!r}")
    return normalize(img, spec["mean"], spec["std"]), info

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


def resize_linear(img: np.ndarray, hw: Sequence[int], in_float: bool = False,
                  antialias: bool = False) -> np.ndarray:
    """Bilinear resize to (h, w). in_float: an 8-bit image becomes float32 in [0, 1] first, so
    the interpolated values are not rounded back to whole grey levels (that rounding is noise
    of up to half a level, which the anomaly models score; torchvision resizes in float too).
    antialias: when an axis shrinks, its tent filter is widened by the shrink factor
    (resize_antialiased), instead of OpenCV's two taps per output pixel, which skip input
    pixels beyond 2x and alias fine texture; enlarging is plain bilinear either way."""
    if in_float and img.dtype == np.uint8:
        img = img.astype(np.float32) * np.float32(1 / 255)
    h, w = int(hw[0]), int(hw[1])
    if antialias and (h < img.shape[0] or w < img.shape[1]):
        return resize_antialiased(img, (h, w))
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)


_TENTS: dict[tuple[int, int], np.ndarray] = {}


def tent_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float32 matrix of 1-D bilinear resampling with antialiasing: output pixel
    i (centre (i + 0.5) * s in input coordinates, s = n_in / n_out) averages the input pixels
    whose centres lie within max(s, 1) of it, weighted by a tent of that half-width, taps
    outside the image dropped and the rest renormalised. The filter torchvision's
    Resize(antialias=True) and PIL's BILINEAR use; for s <= 1 it is ordinary bilinear."""
    key = (int(n_in), int(n_out))
    if key not in _TENTS:
        s = n_in / n_out
        support = max(s, 1.0)
        centre = (np.arange(n_out, dtype=np.float64) + 0.5) * s
        j = np.arange(n_in, dtype=np.float64) + 0.5
        wts = np.clip(1.0 - np.abs(j[None, :] - centre[:, None]) / support, 0.0, None)
        _TENTS[key] = (wts / wts.sum(1, keepdims=True)).astype(np.float32)
    return _TENTS[key]


def resize_antialiased(img: np.ndarray, hw: Sequence[int]) -> np.ndarray:
    """Separable antialiased bilinear resize of an HW or HWC float image to (h, w): two matrix
    products with tent_weights (rows, then columns), float32."""
    h, w = int(hw[0]), int(hw[1])
    x = img.astype(np.float32, copy=False)
    flat = x.ndim == 2
    if flat:
        x = x[:, :, None]
    rows = tent_weights(x.shape[0], h)
    cols = tent_weights(x.shape[1], w)
    y = (rows @ x.reshape(x.shape[0], -1)).reshape(h, x.shape[1], x.shape[2])
    y = np.matmul(cols, y)  # (w, W) @ (h, W, C) -> (h, w, C)
    return np.ascontiguousarray(y[:, :, 0] if flat else y)


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
            img = resize_linear(img, size, spec.get("resize_precision") == "float32",
                                bool(spec.get("resize_antialias", False)))
    elif mode != "none":
        raise ValueError(f"unknown resize mode {mode!r}")
    return normalize(img, spec["mean"], spec["std"]), info

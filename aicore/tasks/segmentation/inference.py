"""Sliding-window inference: segment images larger than the training size at full resolution.

The image is covered by windows of the training input size, placed ``stride = window *
(1 - overlap)`` apart with the last row/column flush with the image edge; each window's logits
are weighted (Gaussian by default, so a pixel's score comes mostly from windows in which it is
near the centre and has full context) and averaged. Images smaller than a window are padded at
the bottom/right and the padding is cropped off again.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from aicore.errors import ConfigError


@dataclass(frozen=True)
class SlidingWindow:
    window: tuple[int, int]  # (H, W)
    overlap: float = 0.5
    blend: str = "gaussian"  # "gaussian" | "mean"
    batch_size: int = 16  # windows per forward pass

    def as_dict(self) -> dict[str, Any]:
        return {"window": list(self.window), "overlap": self.overlap, "blend": self.blend,
                "batch_size": self.batch_size}


def parse_sliding_window(value: Any, input_size: Sequence[int], key: str) -> SlidingWindow | None:
    """Config value -> settings: false/null (off), true (window = data.input_size, overlap 0.5),
    or {"window": [H, W], "overlap": 0.5, "blend": "gaussian", "batch_size": 16}."""
    if value is None or value is False:
        return None
    window = tuple(int(s) for s in input_size)
    if value is True:
        return SlidingWindow(window)
    if hasattr(value, "toDict"):
        value = value.toDict()
    if not isinstance(value, dict):
        raise ConfigError(f"'{key}' = {value!r}: use false, true, or {{\"overlap\": 0.5, "
                          f"\"window\": [H, W]}}")
    allowed = {"window", "overlap", "blend", "batch_size"}
    unknown = set(value) - allowed
    if unknown:
        raise ConfigError(f"'{key}': unknown key(s) {sorted(unknown)}; it takes "
                          f"{', '.join(sorted(allowed))}")
    win = value.get("window") or list(window)
    if isinstance(win, int):
        win = [win, win]
    if not (isinstance(win, (list, tuple)) and len(win) == 2 and all(isinstance(s, int) and s > 0
                                                                      for s in win)):
        raise ConfigError(f"'{key}.window' = {win!r}: expected [H, W] in pixels")
    overlap = float(value.get("overlap", 0.5))
    if not 0.0 <= overlap < 1.0:
        raise ConfigError(f"'{key}.overlap' = {overlap}: must be in [0, 1) (0.5 = half a window)")
    blend = value.get("blend", "gaussian")
    if blend not in ("gaussian", "mean"):
        raise ConfigError(f"'{key}.blend' = {blend!r}: use \"gaussian\" or \"mean\"")
    batch = int(value.get("batch_size", 16))
    if batch < 1:
        raise ConfigError(f"'{key}.batch_size' must be >= 1")
    return SlidingWindow((int(win[0]), int(win[1])), overlap, blend, batch)


def _starts(size: int, window: int, stride: int) -> list[int]:
    if size <= window:
        return [0]
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] + window < size:
        starts.append(size - window)  # flush with the far edge instead of padding
    return starts


def _weights(h: int, w: int, blend: str, device, dtype) -> torch.Tensor:
    if blend == "mean":
        return torch.ones(h, w, device=device, dtype=dtype)

    def g(n: int) -> torch.Tensor:
        x = torch.arange(n, device=device, dtype=torch.float32) - (n - 1) / 2
        return torch.exp(-0.5 * (x / (n / 8)) ** 2)  # sigma = window / 8, as nnU-Net
    wmap = g(h)[:, None] * g(w)[None, :]
    wmap = wmap / wmap.max()
    return wmap.clamp(min=1e-3).to(dtype)  # corners must still count where only one window reaches


@torch.no_grad()
def sliding_window_logits(forward: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                          sw: SlidingWindow) -> torch.Tensor:
    """(N, C_in, H, W) normalised images -> (N, num_classes, H, W) logits, window by window."""
    n, _, h, w = images.shape
    wh, ww = sw.window
    pad_h, pad_w = max(0, wh - h), max(0, ww - w)
    if pad_h or pad_w:
        images = F.pad(images, (0, pad_w, 0, pad_h))  # zeros = the normalised mean
    H, W = images.shape[-2:]
    sh = max(1, int(round(wh * (1 - sw.overlap))))
    sw_ = max(1, int(round(ww * (1 - sw.overlap))))
    boxes = [(y, x) for y in _starts(H, wh, sh) for x in _starts(W, ww, sw_)]
    out = norm = weight = None
    for b in range(0, len(boxes), max(1, sw.batch_size // max(1, n))):
        chunk = boxes[b: b + max(1, sw.batch_size // max(1, n))]
        crops = torch.cat([images[:, :, y:y + wh, x:x + ww] for y, x in chunk])
        logits = forward(crops).float()
        if out is None:
            out = images.new_zeros((n, logits.shape[1], H, W), dtype=torch.float32)
            norm = images.new_zeros((1, 1, H, W), dtype=torch.float32)
            weight = _weights(wh, ww, sw.blend, images.device, torch.float32)
        for k, (y, x) in enumerate(chunk):
            out[:, :, y:y + wh, x:x + ww] += logits[k * n:(k + 1) * n] * weight
            norm[:, :, y:y + wh, x:x + ww] += weight
    return (out / norm)[:, :, :h, :w]


def segment_logits(model: torch.nn.Module, images: torch.Tensor,
                   window: SlidingWindow | None) -> torch.Tensor:
    """(N, C, H, W) images -> (N, classes, H, W) logits: one pass (upsampled to the input
    when the model's output is smaller), or window by window."""
    from aicore.tasks.segmentation.models import logits_of
    if window is not None:
        return sliding_window_logits(lambda x: logits_of(model(x)), images, window)
    logits = logits_of(model(images))
    if logits.shape[-2:] != images.shape[-2:]:
        logits = F.interpolate(logits.float(), size=images.shape[-2:], mode="bilinear",
                               align_corners=False)
    return logits

"""Box geometry shared by training, evaluation, demo and export.

One resize rule everywhere: **letterbox**. An image of size (h, w) is scaled by
``r = min(H / h, W / w)`` (aspect ratio kept) to fit the model input (H, W) and padded at the
bottom and right with grey. Because the padding sits after the image, a box predicted in input
pixels maps back to the original image by dividing by ``r`` alone, with no offset; the export
manifest documents the same rule so deployed code can reproduce it.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torchvision.ops import batched_nms

# the letterbox itself lives in the torch-free deploy runtime, so both use one implementation
from aicore.deploy.preprocess import PAD_VALUE, letterbox, letterbox_scale  # noqa: E402,F401


def boxes_to_original(boxes: torch.Tensor | np.ndarray, scale: float,
                      orig_hw: Sequence[int]) -> torch.Tensor | np.ndarray:
    """Input-pixel xyxy boxes of a letterboxed image -> pixels of the original image,
    clipped to it (a box can reach into the padding)."""
    h, w = orig_hw
    if isinstance(boxes, torch.Tensor):
        out = boxes / scale
        out[:, 0::2] = out[:, 0::2].clamp(0, w)
        out[:, 1::2] = out[:, 1::2].clamp(0, h)
        return out
    out = np.asarray(boxes, np.float32) / scale
    out[:, 0::2] = out[:, 0::2].clip(0, w)
    out[:, 1::2] = out[:, 1::2].clip(0, h)
    return out


def xyxy_to_cxcywh(b: torch.Tensor) -> torch.Tensor:
    return torch.stack([(b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2,
                        b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]], dim=-1)


def cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    half_w, half_h = b[..., 2] / 2, b[..., 3] / 2
    return torch.stack([b[..., 0] - half_w, b[..., 1] - half_h,
                        b[..., 0] + half_w, b[..., 1] + half_h], dim=-1)


def postprocess(boxes: torch.Tensor, scores: torch.Tensor, score_thresh: float, nms_iou: float,
                max_det: int) -> list[dict[str, torch.Tensor]]:
    """Dense predictions -> final detections per image.

    boxes: (B, N, 4) xyxy; scores: (B, N, C) per-class confidences in [0, 1].
    Each candidate keeps its best class (one box per location, as YOLOX does), low scores are
    dropped, then class-aware NMS (torchvision's batched_nms: boxes of different classes never
    suppress each other) and the `max_det` highest scores are kept.
    """
    results = []
    best, labels = scores.max(dim=-1)
    for b in range(boxes.shape[0]):
        keep = best[b] > score_thresh
        bx, sc, lb = boxes[b][keep].float(), best[b][keep].float(), labels[b][keep]
        order = batched_nms(bx, sc, lb, nms_iou)[:max_det]
        results.append({"boxes": bx[order], "scores": sc[order], "labels": lb[order]})
    return results

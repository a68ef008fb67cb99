"""Model outputs -> predictions, torch-free: NMS, sliding-window blending, the anomaly rule.

Each function mirrors its PyTorch counterpart in the task packages (torchvision's batched_nms,
aicore.tasks.segmentation.inference.sliding_window_logits); the deploy parity tests compare
the two on real images.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np


#: relative margin of the anomaly rule: scores this close below the threshold count as equal
SCORE_RTOL = 1e-5


def is_defect(score: float, threshold: float) -> bool:
    """The one anomaly verdict rule of every path (eval report, demo, overlay, deploy): NG
    when score >= threshold.

    The F1-optimal threshold is itself one image's score, computed in an evaluation batch;
    the same image scored alone (demo, ONNX) differs in the last float32 bits, which used to
    flip it from NG (eval) to OK (demo). Scores within SCORE_RTOL (relative) below the
    threshold therefore count as equal to it, on every path alike."""
    thr = float(np.float32(threshold))
    return bool(float(np.float32(score)) >= thr - SCORE_RTOL * max(1.0, abs(thr)))


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy NMS as torchvision.ops.nms: indices kept, by decreasing score; a box is dropped
    when its IoU with a kept box is > iou."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    areas = (x2 - x1) * (y2 - y1)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        ious = inter / (areas[i] + areas[rest] - inter)
        order = rest[~(ious > iou)]
    return np.asarray(keep, np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray,
                iou: float) -> np.ndarray:
    """Class-aware NMS: boxes of different groups never suppress each other."""
    if boxes.size == 0:
        return np.zeros(0, np.int64)
    offsets = groups.astype(np.float32) * (boxes.max() + 1)
    return nms(boxes + offsets[:, None], scores, iou)


def _top(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, largest first."""
    if values.size <= k:
        return np.argsort(-values, kind="stable")
    part = np.argpartition(-values, k - 1)[:k]
    return part[np.argsort(-values[part], kind="stable")]


def multi_label_candidates(scores: np.ndarray, thr: float, topk: dict[str, Any] | None
                           ) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) scores -> (candidate, class) index pairs with score > thr, as torchvision's
    FCOS/RetinaNet (the topk["k"] best pairs of each feature level, a level's pairs taken
    candidate-major) or SSD (the k best candidates of each class) select them."""
    n, c = scores.shape
    if not topk:
        return np.nonzero(scores > thr)
    k = int(topk["k"])
    idx, cls = [], []
    if topk["per"] == "class":
        for label in range(c):
            col = scores[:, label]
            above = np.nonzero(col > thr)[0]
            pick = above[_top(col[above], k)]
            idx.append(pick)
            cls.append(np.full(len(pick), label, np.int64))
    else:
        start = 0
        for size in (int(s) for s in topk["level_sizes"]):
            flat = scores[start:start + size].reshape(-1)
            above = np.nonzero(flat > thr)[0]
            pick = above[_top(flat[above], k)]
            idx.append(start + pick // c)
            cls.append(pick % c)
            start += size
        if start != n:
            raise ValueError(f"manifest postprocess.topk.level_sizes add up to {start} "
                             f"candidates, the model outputs {n}")
    return (np.concatenate(idx).astype(np.int64) if idx else np.zeros(0, np.int64),
            np.concatenate(cls).astype(np.int64) if cls else np.zeros(0, np.int64))


def detections_from_dense(boxes: np.ndarray, scores: np.ndarray, post: dict[str, Any]
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's dense outputs ((N, 4) xyxy, (N, C)) -> (boxes, scores, labels) after the
    score threshold, class-aware NMS and max_det, as the model's own post-processing."""
    thr, iou, max_det = float(post["score_thresh"]), float(post["nms_iou"]), int(post["max_det"])
    if post.get("candidates") == "multi_label":  # every candidate-class pair above thr
        idx, cls = multi_label_candidates(scores, thr, post.get("topk"))
        bx, sc, lb = boxes[idx], scores[idx, cls], cls
    else:  # each candidate keeps its best class (YOLOX)
        best, labels = scores.max(-1), scores.argmax(-1)
        keep = best > thr
        bx, sc, lb = boxes[keep], best[keep], labels[keep]
    order = batched_nms(bx.astype(np.float32), sc.astype(np.float32), lb, iou)[:max_det]
    return bx[order], sc[order], lb[order].astype(np.int64)


def _starts(size: int, window: int, stride: int) -> list[int]:
    if size <= window:
        return [0]
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] + window < size:
        starts.append(size - window)
    return starts


def _weights(h: int, w: int, blend: str) -> np.ndarray:
    if blend == "mean":
        return np.ones((h, w), np.float32)

    def g(n: int) -> np.ndarray:
        x = np.arange(n, dtype=np.float32) - np.float32((n - 1) / 2)
        return np.exp(np.float32(-0.5) * (x / np.float32(n / 8)) ** 2).astype(np.float32)
    wmap = g(h)[:, None] * g(w)[None, :]
    wmap = wmap / wmap.max()
    return np.clip(wmap, 1e-3, None).astype(np.float32)


def sliding_window_logits(forward: Callable[[np.ndarray], np.ndarray], image: np.ndarray,
                          sw: dict[str, Any]) -> np.ndarray:
    """(C_in, H, W) normalised image -> (classes, H, W) logits, window by window, weighted
    and averaged (the training side's sliding_window_logits for one image)."""
    _, h, w = image.shape
    wh, ww = (int(s) for s in sw["window"])
    pad_h, pad_w = max(0, wh - h), max(0, ww - w)
    if pad_h or pad_w:
        image = np.pad(image, ((0, 0), (0, pad_h), (0, pad_w)))
    H, W = image.shape[-2:]
    overlap = float(sw.get("overlap", 0.5))
    sh = max(1, int(round(wh * (1 - overlap))))
    sw_ = max(1, int(round(ww * (1 - overlap))))
    boxes = [(y, x) for y in _starts(H, wh, sh) for x in _starts(W, ww, sw_)]
    weight = _weights(wh, ww, sw.get("blend", "gaussian"))
    out = norm = None
    step = max(1, int(sw.get("batch_size", 16)))
    for b in range(0, len(boxes), step):
        chunk = boxes[b:b + step]
        crops = np.stack([image[:, y:y + wh, x:x + ww] for y, x in chunk])
        logits = forward(np.ascontiguousarray(crops)).astype(np.float32)
        if out is None:
            out = np.zeros((logits.shape[1], H, W), np.float32)
            norm = np.zeros((1, H, W), np.float32)
        for k, (y, x) in enumerate(chunk):
            out[:, y:y + wh, x:x + ww] += logits[k] * weight
            norm[:, y:y + wh, x:x + ww] += weight
    return (out / norm)[:, :h, :w]


def boxes_to_original(boxes: np.ndarray, scale: float, orig_hw: Sequence[int]) -> np.ndarray:
    h, w = orig_hw
    out = np.asarray(boxes, np.float32) / np.float32(scale)
    out[:, 0::2] = out[:, 0::2].clip(0, w)
    out[:, 1::2] = out[:, 1::2].clip(0, h)
    return out

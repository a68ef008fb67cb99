"""Detection export: the modules that become model.onnx and the manifest's post-processing
recipe, for YOLOX and torchvision's single-stage detectors alike.

Two output formats (``export.nms``):

- dense (``ExportDense``): decoded boxes (B, N, 4) and per-class scores (B, N, C) before any
  threshold; the deploy runtime applies the recipe below.
- in-graph NMS (``ExportWithNMS``): (K, 7) rows ``[batch_index, x1, y1, x2, y2, score, class]``,
  the model's own post-processing reproduced in the graph for a batch of any size.

The recipe (``postprocess_recipe``) says how candidates are picked before NMS:

- ``best_class`` (YOLOX): each candidate keeps its best class if that score is above
  ``score_thresh``;
- ``multi_label`` (torchvision FCOS, RetinaNet, SSDlite): every (candidate, class) pair above
  ``score_thresh`` is a detection of its own, limited to the ``topk.k`` highest per feature
  level (FCOS, RetinaNet; ``topk.level_sizes`` gives each level's candidates in output order)
  or per class (SSDlite).

Then class-aware NMS at ``nms_iou`` and the ``max_det`` highest scores per image, as
torchvision's ``postprocess_detections`` does (the export checks the result against it).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.ops import batched_nms

from aicore.errors import ExportError


def postprocess_recipe(model: nn.Module, input_size: tuple[int, int]) -> dict[str, Any]:
    """The model's post-processing as plain values (manifest ``postprocess``). A custom
    detector without these attributes gets the YOLOX defaults."""
    recipe = {"candidates": "multi_label" if getattr(model, "multi_label", False)
              else "best_class",
              "score_thresh": float(getattr(model, "score_thresh", 0.01)),
              "score_compare": ">",
              "nms_iou": float(getattr(model, "nms_iou", 0.65)),
              "max_det": int(getattr(model, "max_det", 100))}
    if hasattr(model, "nms_topk"):
        topk = model.nms_topk(input_size)
        if topk is not None:
            recipe["topk"] = topk
    return recipe


def select_candidates(boxes: torch.Tensor, scores: torch.Tensor, recipe: dict[str, Any]
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dense (B, N, 4) boxes and (B, N, C) scores -> (B, K, 4) boxes, (B, K) scores and
    (B, K) labels of the candidates the recipe considers, before the score threshold.

    Top-k is taken before thresholding: the k best pairs that are above the threshold are the
    same as torchvision's top-k of the pairs above it, and K stays fixed for the graph."""
    B, N, C = scores.shape
    if recipe["candidates"] != "multi_label":
        best, labels = scores.max(dim=-1)
        return boxes, best, labels
    topk = recipe.get("topk") or {"per": "level", "k": N * C, "level_sizes": [N]}
    k = int(topk["k"])
    out_b, out_s, out_l = [], [], []
    if topk["per"] == "class":
        per_class = scores.transpose(1, 2)  # (B, C, N)
        s, idx = per_class.topk(min(k, N), dim=2)
        labels = torch.arange(C, device=scores.device)[None, :, None].expand_as(idx)
        gathered = torch.gather(boxes, 1, idx.reshape(-1, C * idx.shape[2], 1).expand(-1, -1, 4))
        return gathered, s.reshape(-1, C * idx.shape[2]), labels.reshape(-1, C * idx.shape[2])
    start = 0
    for n in (int(v) for v in topk["level_sizes"]):
        flat = scores[:, start:start + n].reshape(-1, n * C)  # candidate-major, as torchvision
        s, idx = flat.topk(min(k, n * C), dim=1)
        anchor = start + torch.div(idx, C, rounding_mode="floor")
        out_b.append(torch.gather(boxes, 1, anchor[..., None].expand(-1, -1, 4)))
        out_s.append(s)
        out_l.append(idx % C)
        start += n
    if start != N:
        raise ExportError(f"detection export: the feature levels hold {start} candidates but "
                          f"the model outputs {N}")
    return torch.cat(out_b, 1), torch.cat(out_s, 1), torch.cat(out_l, 1)


def nms_in_graph(boxes: torch.Tensor, scores: torch.Tensor, score_thresh: float,
                 nms_iou: float, max_det: int | None = None,
                 recipe: dict[str, Any] | None = None) -> torch.Tensor:
    """Export-friendly post-processing of a whole batch in one NMS call.

    Returns (K, 7) rows ``[batch_index, x1, y1, x2, y2, score, class]``, by image, each
    image's rows by decreasing score. Images and classes are kept apart by giving each
    (image, class) pair its own NMS group, so a single ``NonMaxSuppression`` node serves any
    batch size; at most ``max_det`` rows per image. K depends on the data."""
    recipe = recipe or {"candidates": "best_class"}
    C = scores.shape[-1]
    cand_boxes, cand_scores, cand_labels = select_candidates(boxes, scores, recipe)
    B, K = cand_scores.shape
    batch_idx = torch.arange(B, device=boxes.device)[:, None].expand(B, K)
    fb, fs = cand_boxes.reshape(-1, 4), cand_scores.reshape(-1)
    fl, fi = cand_labels.reshape(-1), batch_idx.reshape(-1)
    keep = fs > score_thresh
    fb, fs, fl, fi = fb[keep], fs[keep], fl[keep], fi[keep]
    order = batched_nms(fb, fs, fi * C + fl, nms_iou)  # by decreasing score
    fb, fs, fl, fi = fb[order], fs[order], fl[order], fi[order]
    # stable regrouping by image keeps each image's rows in score order
    ranked = torch.argsort(fi * (order.shape[0] + 1)
                           + torch.arange(order.shape[0], device=fi.device))
    fb, fs, fl, fi = fb[ranked], fs[ranked], fl[ranked], fi[ranked]
    if max_det is not None:  # rank of each row within its image
        same = (fi[:, None] == torch.arange(B, device=fi.device)[None, :]).to(torch.int64)
        rank = (same.cumsum(0) * same).sum(1) - 1
        keep = rank < int(max_det)
        fb, fs, fl, fi = fb[keep], fs[keep], fl[keep], fi[keep]
    return torch.cat([fi[:, None].to(fb.dtype), fb, fs[:, None], fl[:, None].to(fb.dtype)],
                     dim=1)


def detections_as_rows(dets: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    """The model's own eval-mode detections (one dict per image) as in-graph NMS rows, for
    comparing the two."""
    rows = [torch.cat([torch.full((len(d["scores"]), 1), float(b)), d["boxes"].float().cpu(),
                       d["scores"].float().cpu()[:, None], d["labels"].float().cpu()[:, None]],
                      dim=1) for b, d in enumerate(dets)]
    return torch.cat(rows) if rows else torch.zeros(0, 7)


def rows_max_abs_diff(got: np.ndarray, ref: np.ndarray) -> float:
    """Largest difference between two sets of (K, 7) NMS rows, matched row to row.

    Rows of nearly equal score swap places under float noise (BatchNorm folding, another
    runtime), which a position-wise comparison would report as a box-sized difference. Each
    reference row is matched, greedily, with the closest unused row of the same image and
    class; inf when the counts differ or a row has no partner."""
    if got.shape != ref.shape:
        return float("inf")
    if not got.size:
        return 0.0
    used = np.zeros(len(got), bool)
    worst = 0.0
    for row in ref:
        same = (got[:, 0] == row[0]) & (got[:, 6] == row[6]) & ~used
        if not same.any():
            return float("inf")
        cost = np.where(same, np.abs(got[:, 1:6] - row[1:6]).max(1), np.inf)
        j = int(cost.argmin())
        used[j] = True
        worst = max(worst, float(cost[j]))
    return worst


class ExportDense(nn.Module):
    """images -> (boxes (B, N, 4), scores (B, N, C)): decoded, no thresholds, no NMS. Shapes
    depend only on the input size, so ONNX Runtime parity is exact to compare."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.export_forward(images)


class ExportWithNMS(nn.Module):
    """images -> (K, 7) detections of the whole batch, the model's post-processing included
    (export.nms = true). The export's parity check compares its rows with
    ``output_diff``."""

    output_diff = staticmethod(rows_max_abs_diff)

    def __init__(self, model: nn.Module, recipe: dict[str, Any]) -> None:
        super().__init__()
        self.model, self.recipe = model, recipe

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        boxes, scores = self.model.export_forward(images)
        r = self.recipe
        return nms_in_graph(boxes, scores, r["score_thresh"], r["nms_iou"], r["max_det"], r)


def output_format(nms: bool, recipe: dict[str, Any]) -> dict[str, str]:
    """The manifest's words for the outputs and how to turn them into detections."""
    if nms:
        return {"detections": "(K, 7) rows [batch_index, x1, y1, x2, y2, score, class] in input "
                              "pixels, after the model's candidate selection, score_thresh, "
                              "class-aware NMS and max_det per image"}
    if recipe["candidates"] == "multi_label":
        topk = recipe.get("topk")
        limit = "" if not topk else (
            f", keep the {topk['k']} highest pairs of each feature level (levels of "
            f"{topk['level_sizes']} candidates, in output order; a level's pairs flattened "
            f"candidate-major)" if topk["per"] == "level"
            else f", keep the {topk['k']} highest candidates of each class")
        rule = (f"every (candidate, class) pair with score > score_thresh is a detection{limit}, "
                f"then class-aware NMS with nms_iou and the max_det highest scores")
    else:
        rule = ("apply score_thresh to each candidate's best class, then class-aware NMS with "
                "nms_iou and the max_det highest scores")
    return {"boxes": "(B, N, 4) x1, y1, x2, y2 in input pixels, one per candidate",
            "scores": f"(B, N, C) per-class confidence in [0, 1]; {rule}"}


def compare_with_model(wrapper: nn.Module, images: torch.Tensor) -> float | None:
    """The export wrapper's in-graph NMS rows vs the wrapped model's own eval-mode detections
    on the same images (rows matched as in ``rows_max_abs_diff``); None for a dense export,
    whose post-processing runs outside the graph."""
    if not isinstance(wrapper, ExportWithNMS):
        return None
    with torch.no_grad():
        got = wrapper(images).float().cpu().numpy()
        ref = detections_as_rows(wrapper.model.eval()(images)).numpy()
    return rows_max_abs_diff(got, ref)


def manifest_sections(recipe: dict[str, Any], nms: bool, demo_score_thresh: float
                      ) -> dict[str, Any]:
    """The manifest's ``postprocess`` (read by aicore.deploy) and ``detection`` (for people)
    sections of a detection export."""
    return {"postprocess": {"format": "nms_in_graph" if nms else "dense", **recipe,
                            "demo_score_thresh": demo_score_thresh},
            "detection": {
                "output_format": output_format(nms, recipe),
                "to_original_pixels": "divide box coordinates by the letterbox scale r, then "
                                      "clip to the original width and height",
                "score_thresh_eval": recipe["score_thresh"],
                "score_thresh_demo": demo_score_thresh,
                "nms_iou": recipe["nms_iou"],
                "nms_in_graph": nms}}

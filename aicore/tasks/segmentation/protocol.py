"""Segmentation's inference protocol: input (resized, or full resolution for the sliding
window), masks at the image's own size, overlays, pred_masks/ and the export wrapper."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aicore.deploy.results import SegmentationResult
from aicore.engine.protocol import ExportSpec, Meta, TaskProtocol
from aicore.tasks.segmentation.datasets import IGNORE_INDEX
from aicore.tasks.segmentation.inference import parse_sliding_window, segment_logits
from aicore.tasks.segmentation.models import logits_of


class SegmentationProtocol(TaskProtocol):
    task = "segmentation"

    def __init__(self, cfg, classes, **kwargs: Any) -> None:
        super().__init__(cfg, classes, **kwargs)
        size = list(self.input_size)
        self.eval_window = parse_sliding_window(cfg.eval.sliding_window, size,
                                                "eval.sliding_window")
        demo = cfg.demo.sliding_window
        self.window = (self.eval_window if demo is None else
                       parse_sliding_window(demo, size, "demo.sliding_window"))

    def preprocess(self, img: np.ndarray, name: str = "image") -> tuple[torch.Tensor, Meta]:
        """With demo.sliding_window the image keeps its resolution after the val transforms
        (predict tiles it); otherwise it is resized to data.input_size."""
        if self.window is None:
            return super().preprocess(img, name)
        from aicore.data.io import to_channels
        x = self.transform(image=to_channels(img, self.in_channels, name))["image"]
        return self.normalize(x), Meta(orig_size=(int(img.shape[0]), int(img.shape[1])),
                                       input_size=(int(x.shape[0]), int(x.shape[1])))

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return segment_logits(model, x, self.window).float()

    def results(self, outputs: torch.Tensor, metas: list[Meta]) -> list[SegmentationResult]:
        conf, mask = torch.softmax(outputs.float(), dim=1).max(1)
        n = len(self.classes)
        preds = []
        for m, c, meta in zip(mask.cpu().numpy().astype(np.uint8), conf.cpu(), metas):
            counts = np.bincount(m.ravel(), minlength=n)[:n]
            h, w = meta.orig_size
            full = m if m.shape == (h, w) else cv2.resize(m, (w, h),
                                                          interpolation=cv2.INTER_NEAREST)
            preds.append(SegmentationResult(mask=full, class_names=list(self.classes),
                                            fractions=(counts / max(1, m.size)).tolist(),
                                            confidence=float(c.mean())))
        return preds

    def draw(self, rgb: np.ndarray, pred: SegmentationResult) -> np.ndarray:
        from aicore.tasks.segmentation.visualize import overlay
        return overlay(rgb, pred.mask, self.classes)

    def csv_row(self, pred: SegmentationResult) -> dict[str, Any]:
        present = [n for n, f in zip(self.classes[1:], pred.fractions[1:]) if f > 0]
        return {"classes_present": ";".join(present),
                "mean_confidence": f"{pred.confidence:.4f}",
                **{f"fraction_{n}": f"{f:.6f}" for n, f in zip(self.classes, pred.fractions)}}

    def write_report(self, results: list[dict[str, Any]], out: Path) -> None:
        """demo/pred_masks/<name>.png: each image's predicted class indices at the image's own
        size, as a palette PNG (the pixel values are class indices; viewers show the colours),
        for downstream tools that need the mask rather than the overlay. Video frames are
        only drawn, not saved as masks."""
        from aicore.tasks.segmentation.visualize import write_pred_masks
        write_pred_masks([(r["source"], r["prediction"].mask) for r in results
                          if r["frame"] is None], out, Path(str(self.cfg.demo.source)))

    # -- export --------------------------------------------------------------------------------

    def export(self, model: nn.Module) -> ExportSpec:
        from aicore.tasks.segmentation.visualize import palette
        window = self.window.as_dict() if self.window else None
        manifest = {
            "postprocess": {"output": "probs", "sliding_window": window,
                            "mask_resize": "nearest",
                            "rule": "class = argmax over the class axis; confidence = mean "
                                    "of the max probability at the model's resolution"},
            "ignore_index": IGNORE_INDEX,
            "output_format": "logits and probs are (batch, classes, H, W); the class of a "
                             "pixel is the argmax over the class axis",
            "sliding_window": self.eval_window.as_dict() if self.eval_window else None,
            "palette": palette(len(self.classes)).tolist()}
        return ExportSpec(_LogitsAndProbs(model), ["logits", "probs"], manifest,
                          wrap=_LogitsAndProbs)

    def export_sample(self, dataset, i: int) -> torch.Tensor:
        """A validation image at the exported input size (full-resolution ones are resized)."""
        x = dataset[i][0]
        if tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x[None], size=self.input_size, mode="bilinear",
                              align_corners=False)[0]
        return x

    def deploy_preprocess(self) -> dict[str, Any]:
        info = super().deploy_preprocess()
        if self.window is not None:  # full resolution, tiled by the sliding window
            info["resize"], info["interpolation"] = "none", None
        return info


class _LogitsAndProbs(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        logits = logits_of(self.model(x))
        return logits, torch.softmax(logits, dim=1)

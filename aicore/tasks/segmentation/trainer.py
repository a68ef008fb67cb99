"""Semantic segmentation on the shared trainer: datasets, the loss call, (sliding-window)
predictions, eval reports, demo overlays and the export wrapper."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from dotmap import DotMap
from torch import nn

from aicore.engine.trainer import BaseTrainer
from aicore.errors import ConfigError
from aicore.registry import TRAINERS
from aicore.tasks.segmentation.datasets import IGNORE_INDEX, pad_collate
from aicore.tasks.segmentation.inference import (SlidingWindow, parse_sliding_window,
                                                 sliding_window_logits)
from aicore.tasks.segmentation.losses import takes_ignore_index
from aicore.tasks.segmentation.models import logits_of, required_stride


@TRAINERS.register("SegmentationTrainer")
class SegmentationTrainer(BaseTrainer):
    task = "segmentation"
    default_metric = "mIoU"
    default_evaluator = "SegmentationEvaluator"

    def __init__(self, cfg: DotMap) -> None:
        super().__init__(cfg)
        # parsed up front so a bad value fails before any mode builds or writes anything
        size = [int(s) for s in cfg.data.input_size]
        self.eval_window = parse_sliding_window(cfg.eval.sliding_window, size,
                                                "eval.sliding_window")
        demo = cfg.demo.sliding_window
        self.demo_window = (self.eval_window if demo is None else
                            parse_sliding_window(demo, size, "demo.sliding_window"))

    # -- building ------------------------------------------------------------------------------

    def build_dataset(self, split: str, train: bool, **overrides: Any):
        """Training samples are resized to data.input_size after the transforms (when these did
        not crop to it); evaluation samples too, unless eval.sliding_window is on, in which case
        they stay at full resolution and metrics are computed on the original masks."""
        if not train and self.eval_window is not None:
            overrides.setdefault("input_size", None)
        return super().build_dataset(split, train, **overrides)

    def collate_fn(self):
        return pad_collate  # full-resolution images of different sizes share a batch

    def loss_kwargs(self) -> dict[str, Any]:
        return {"num_classes": len(self.classes), "ignore_index": IGNORE_INDEX}

    def build_loss(self) -> nn.Module:
        takes_ignore_index(self.cfg.loss.toDict(), "loss")
        return super().build_loss()

    def build_model(self) -> nn.Module:
        model = super().build_model()
        stride = required_stride(model)
        sizes = {"data.input_size": [int(s) for s in self.cfg.data.input_size]}
        for key, sw in (("eval.sliding_window.window", self.eval_window),
                        ("demo.sliding_window.window", self.demo_window)):
            if sw is not None:
                sizes[key] = list(sw.window)
        for key, size in sizes.items():
            if any(s % stride for s in size):
                fixed = [-(-s // stride) * stride for s in size]
                raise ConfigError(f"'{key}' = {size}: model {self.cfg.model.get('arch', '')} "
                                  f"with encoder {self.cfg.model.get('encoder_name', '')} needs "
                                  f"a height and width divisible by {stride}; use e.g. {fixed}")
        # One forward pass at each input size, so an input too small for the architecture
        # (PAN, PSPNet pool the deepest features further) fails here, before anything is
        # written, rather than in the first training step.
        was_training = model.training
        model.eval()
        for key, size in sizes.items():
            try:
                with torch.no_grad():
                    model(torch.zeros(1, int(self.cfg.data.in_channels), *size))
            except RuntimeError as e:
                raise ConfigError(f"'{key}' = {size} is too small for model "
                                  f"{self.cfg.model.get('arch', '')} / "
                                  f"{self.cfg.model.get('encoder_name', '')}: "
                                  f"{str(e).splitlines()[0][:200]}. Use a larger input size "
                                  f"(PAN needs about 128 px) or another architecture"
                                  ) from None
        model.train(was_training)
        return model

    # -- training and prediction ---------------------------------------------------------------

    def forward_loss(self, batch: Any) -> dict[str, torch.Tensor]:
        images, masks, _ = batch
        images = self.input_tensor(images)
        masks = masks.to(self.device, non_blocking=True)
        logits = logits_of(self.model(images))
        losses = {"loss": self.loss_fn(logits, masks)}
        losses.update(getattr(self.loss_fn, "last_parts", None) or {})  # CombinedLoss parts
        return losses

    def infer(self, model: nn.Module, images: torch.Tensor,
              window: SlidingWindow | None) -> torch.Tensor:
        """(N, C, H, W) images -> (N, classes, H, W) logits: one pass, or window by window."""
        if window is not None:
            return sliding_window_logits(lambda x: logits_of(model(x)), images, window)
        logits = logits_of(model(images))
        if logits.shape[-2:] != images.shape[-2:]:
            logits = F.interpolate(logits.float(), size=images.shape[-2:], mode="bilinear",
                                   align_corners=False)
        return logits

    @torch.no_grad()
    def predict_batch(self, model: nn.Module, batch: Any):
        images, masks, indices = batch
        logits = self.infer(model, images.to(self.device, non_blocking=True), self.eval_window)
        return logits.argmax(1), (masks, indices)

    # -- eval report ---------------------------------------------------------------------------

    def write_eval_report(self, evaluator, dataset, metrics: dict, out: Path) -> None:
        """per_class_iou.png, pixel confusion matrix (CSV + PNG) and per-image scores in
        predictions.csv (worst images first is one sort away in any spreadsheet)."""
        from aicore.engine.plots import save_confusion_matrix
        from aicore.tasks.segmentation.visualize import plot_per_class
        names = list(self.classes)
        plot_per_class(metrics["per_class"], out / "per_class_iou.png")
        save_confusion_matrix(evaluator.cm, names, out, unit="pixels")
        with open(out / "predictions.csv", "w", newline="", encoding="utf-8",
              errors="backslashreplace") as f:
            w = csv.writer(f)
            w.writerow(["image", "mask", "pixels", "pixel_acc", "mIoU"] +
                       [f"IoU_{n}" for n in names])
            for i, iou, acc, pixels in evaluator.per_image:
                present = iou[~np.isnan(iou)]
                w.writerow([dataset.samples[i][0], dataset.samples[i][1], pixels,
                            "" if np.isnan(acc) else f"{acc:.6f}",
                            f"{present.mean():.6f}" if present.size else ""] +
                           ["" if np.isnan(v) else f"{v:.6f}" for v in iou])

    # -- demo ----------------------------------------------------------------------------------

    def preprocess(self, img: np.ndarray) -> torch.Tensor:
        if self.demo_window is None:
            return super().preprocess(img)  # val transforms, resize to data.input_size
        transform, normalize = self.inference_pipeline()
        return normalize(transform(image=img)["image"])  # full resolution, tiled in predict

    def predict_images(self, model: nn.Module, batch: torch.Tensor) -> list[dict[str, Any]]:
        logits = self.infer(model, batch.to(self.device), self.demo_window).float()
        conf, mask = torch.softmax(logits, dim=1).max(1)
        n = len(self.classes)
        preds = []
        for m, c in zip(mask.cpu().numpy().astype(np.uint8), conf.cpu()):
            counts = np.bincount(m.ravel(), minlength=n)[:n]
            preds.append({"mask": m, "confidence": float(c.mean()),
                          "fractions": (counts / max(1, m.size)).tolist()})
        return preds

    def draw(self, rgb: np.ndarray, pred: dict[str, Any]) -> np.ndarray:
        from aicore.tasks.segmentation.visualize import overlay
        return overlay(rgb, pred["mask"], self.classes)

    def demo_row(self, pred: dict[str, Any]) -> dict[str, Any]:
        present = [n for n, f in zip(self.classes[1:], pred["fractions"][1:]) if f > 0]
        return {"classes_present": ";".join(present),
                "mean_confidence": f"{pred['confidence']:.4f}",
                **{f"fraction_{n}": f"{f:.6f}" for n, f in zip(self.classes, pred["fractions"])}}

    def write_demo_report(self, results: list[dict[str, Any]], out: Path) -> None:
        """demo/pred_masks/<name>.png: each image's predicted class indices at the image's own
        size, as a palette PNG (the pixel values are class indices; viewers show the colours),
        for downstream tools that need the mask rather than the overlay. Video frames are
        only drawn, not saved as masks."""
        import cv2
        from PIL import Image

        from aicore.tasks.segmentation.datasets import image_size
        from aicore.tasks.segmentation.visualize import palette
        source = Path(str(self.cfg.demo.source))
        flat = palette(256).reshape(-1).tolist()
        for r in results:
            if r["frame"] is not None:
                continue
            name = Path(r["source"])
            rel = name.relative_to(source) if source.is_dir() else Path(name.name)
            h, w = image_size(name)
            mask = r["prediction"]["mask"]
            if mask.shape != (h, w):
                mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
            target = out / "pred_masks" / rel.with_suffix(".png")
            target.parent.mkdir(parents=True, exist_ok=True)
            im = Image.fromarray(mask.astype(np.uint8))
            im.putpalette(flat)  # an 8-bit grey image with a palette becomes mode 'P'
            im.save(target)

    # -- export --------------------------------------------------------------------------------

    def export_module(self, model: nn.Module) -> tuple[nn.Module, list[str]]:
        return _LogitsAndProbs(model), ["logits", "probs"]

    def export_sample(self, dataset, i: int) -> torch.Tensor:
        """A validation image at the exported input size (full-resolution ones are resized)."""
        x = dataset[i][0]
        size = tuple(int(s) for s in self.cfg.data.input_size)
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]
        return x

    def deploy_preprocess(self) -> dict[str, Any]:
        info = super().deploy_preprocess()
        if self.demo_window is not None:  # full resolution, tiled by the sliding window
            info["resize"], info["interpolation"] = "none", None
        return info

    def manifest_extra(self) -> dict[str, Any]:
        from aicore.tasks.segmentation.visualize import palette
        window = self.demo_window.as_dict() if self.demo_window else None
        return {"postprocess": {"output": "probs", "sliding_window": window,
                                "mask_resize": "nearest",
                                "rule": "class = argmax over the class axis; confidence = mean "
                                        "of the max probability at the model's resolution"},
                "ignore_index": IGNORE_INDEX,
                "output_format": "logits and probs are (batch, classes, H, W); the class of a "
                                 "pixel is the argmax over the class axis",
                "sliding_window": self.eval_window.as_dict() if self.eval_window else None,
                "palette": palette(len(self.classes)).tolist()}


class _LogitsAndProbs(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        logits = logits_of(self.model(x))
        return logits, torch.softmax(logits, dim=1)

"""Classification's inference protocol: softmax top-k (or the saved OK/NG operating point of
a two-class run), class activation maps (demo.cam), test-time augmentation for mode=eval,
labels drawn on the image and the export wrapper that adds the probabilities."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aicore.deploy.results import ClassificationResult
from aicore.engine.protocol import ExportSpec, Meta, TaskProtocol
from aicore.errors import ConfigError

TOPK = 5
TTA = (None, "hflip", "tencrop")


class ClassificationProtocol(TaskProtocol):
    task = "classification"

    def __init__(self, cfg, classes, *, model: nn.Module | None = None, checkpoint=None,
                 postprocess: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(cfg, classes, model=model, checkpoint=checkpoint, **kwargs)
        #: the OK/NG threshold of eval/threshold.json that belongs to the loaded checkpoint
        self.ok_ng = None
        if model is not None and checkpoint is not None:
            from aicore.engine.runners import out_dir
            from aicore.tasks.classification.threshold import load
            self.ok_ng = load(out_dir(cfg, "eval") / "threshold.json", self.classes, checkpoint)

    @torch.no_grad()
    def predict(self, model: nn.Module, tensors: torch.Tensor, metas: list[Meta]):
        preds = super().predict(model, tensors, metas)
        if self.cfg.demo.cam:
            from aicore.tasks.classification.cam import class_activation_maps
            maps = class_activation_maps(self, model, tensors.to(self.device),
                                         [int(np.argmax(p.probs)) for p in preds])
            for pred, cam in zip(preds, maps):
                pred.cam = cam
        return preds

    def results(self, outputs: torch.Tensor, metas: list[Meta]) -> list[ClassificationResult]:
        from aicore.tasks.classification.threshold import decide
        probs = torch.softmax(outputs.float(), dim=1).cpu()
        top = probs.topk(min(TOPK, probs.shape[1]), dim=1)
        preds = []
        for p, values, indices in zip(probs, top.values, top.indices):
            k = int(indices[0])
            if self.ok_ng is not None:  # a saved OK/NG operating point replaces the argmax
                k = decide(p.tolist(), self.ok_ng)
            preds.append(ClassificationResult(
                class_id=k, class_name=self.classes[k], probability=float(p[k]),
                topk=[(self.classes[int(a)], float(b)) for a, b in zip(indices, values)],
                probs=p.numpy().astype(np.float32)))
        return preds

    def eval_module(self, model: nn.Module) -> nn.Module:
        tta = self.cfg.eval.get("tta") or None
        if tta not in TTA:
            raise ConfigError(f"eval.tta = {tta!r}: use null, \"hflip\" or \"tencrop\"")
        return model if tta is None else _TTA(model, tta)

    def draw(self, rgb: np.ndarray, pred: ClassificationResult) -> np.ndarray:
        from aicore.tasks.classification.visualize import draw_label, overlay_heatmap
        if pred.cam is not None:
            rgb = overlay_heatmap(rgb, pred.cam)
        return draw_label(rgb, f"{pred.class_name} {pred.probability:.2f}")

    def csv_row(self, pred: ClassificationResult) -> dict[str, Any]:
        return {"predicted": pred.class_name, "probability": f"{pred.probability:.6f}",
                "top5": ";".join(f"{n}:{p:.4f}" for n, p in pred.topk)}

    def export(self, model: nn.Module) -> ExportSpec:
        from aicore.tasks.classification.threshold import manifest_entry
        post = {"output": "probs", "topk": TOPK,
                "rule": "class = argmax of probs (softmax of logits)",
                **manifest_entry(self.ok_ng, self.classes)}
        return ExportSpec(_WithProbs(model), ["logits", "probs"], {"postprocess": post},
                          wrap=_WithProbs)


def tta_logits(model: nn.Module, images: torch.Tensor, tta: str | None) -> torch.Tensor:
    """Logits, or with test-time augmentation the log of the views' mean probability (so the
    evaluator's softmax recovers the averaged probabilities).

    hflip: the image and its mirror. tencrop: the image upscaled by 1/0.875, its four corner
    crops and centre crop at the input size, and their mirrors (Krizhevsky et al.)."""
    if not tta:
        return model(images).float()
    if tta == "hflip":
        views = [images, images.flip(-1)]
    elif tta == "tencrop":
        h, w = images.shape[-2:]
        big = F.interpolate(images, size=(round(h / 0.875), round(w / 0.875)), mode="bilinear",
                            align_corners=False)
        H, W = big.shape[-2:]
        offsets = [(0, 0), (0, W - w), (H - h, 0), (H - h, W - w), ((H - h) // 2, (W - w) // 2)]
        crops = [big[..., y:y + h, x:x + w] for y, x in offsets]
        views = crops + [c.flip(-1) for c in crops]
    else:
        raise ConfigError(f"eval.tta = {tta!r}: use null, \"hflip\" or \"tencrop\"")
    probs = torch.stack([torch.softmax(model(v).float(), 1) for v in views]).mean(0)
    return probs.clamp_min(1e-12).log()


class _TTA(nn.Module):
    """The model scored with test-time augmentation (eval.tta), for mode=eval."""

    def __init__(self, model: nn.Module, tta: str) -> None:
        super().__init__()
        self.model, self.tta = model, tta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tta_logits(self.model, x, self.tta)


class _WithProbs(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        logits = self.model(x)
        return logits, torch.softmax(logits, dim=1)

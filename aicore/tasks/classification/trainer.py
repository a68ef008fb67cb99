"""Classification on the shared trainer: datasets, loss call, predictions, reports."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aicore import config as C
from aicore.engine.trainer import BaseTrainer
from aicore.registry import DATASETS, TRAINERS


@TRAINERS.register("ClassificationTrainer")
class ClassificationTrainer(BaseTrainer):
    task = "classification"
    default_metric = "top1"
    default_evaluator = "ClassificationEvaluator"

    def build_dataset(self, split: str, train: bool):
        data = self.cfg.data
        return C.build(self.data_cfg(split), DATASETS, f"data.{split}.dataset", self.cfg,
                       root=data.root, split=split, in_channels=int(data.in_channels),
                       transform=self.transform(split, train), input_size=list(data.input_size),
                       mean=data.mean or None, std=data.std or None)

    def forward_loss(self, batch: Any) -> dict[str, torch.Tensor]:
        images, labels, _ = batch
        images = images.to(self.device, non_blocking=True)
        if self.cfg.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(self.device, non_blocking=True)
        logits = self.model(images)
        return {"loss": self.loss_fn(logits, labels)}

    @torch.no_grad()
    def predict_batch(self, model: nn.Module, batch: Any):
        images, labels, indices = batch
        logits = model(images.to(self.device, non_blocking=True))
        return logits.float(), (labels, indices)

    # -- reports (eval / demo / export) -------------------------------------------------------

    def write_eval_report(self, evaluator, dataset, metrics: dict, out: Path) -> None:
        from aicore.tasks.classification.visualize import plot_confusion_matrix
        names = list(self.classes)
        cm = evaluator.cm
        with open(out / "confusion_matrix.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["true\\pred"] + names)
            for name, row in zip(names, cm):
                w.writerow([name] + [int(v) for v in row])
        plot_confusion_matrix(cm, names, out / "confusion_matrix.png")
        order = np.argsort(evaluator.indices)
        with open(out / "predictions.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["path", "true", "predicted", "probability", "true_probability", "correct"])
            for j in order:
                i, p = int(evaluator.indices[j]), evaluator.probs[j]
                t, k = int(evaluator.targets[j]), int(p.argmax())
                w.writerow([dataset.samples[i][0], names[t], names[k], f"{p[k]:.6f}",
                            f"{p[t]:.6f}", int(t == k)])

    def predict_images(self, model: nn.Module, batch: torch.Tensor) -> list[dict[str, Any]]:
        probs = torch.softmax(model(batch.to(self.device)).float(), dim=1).cpu()
        top = probs.topk(min(5, probs.shape[1]), dim=1)
        return [{"label": self.classes[int(i[0])], "probability": float(v[0]),
                 "topk": [(self.classes[int(a)], float(b)) for a, b in zip(i, v)]}
                for v, i in zip(top.values, top.indices)]

    def draw(self, rgb: np.ndarray, pred: dict[str, Any]) -> np.ndarray:
        from aicore.tasks.classification.visualize import draw_label
        return draw_label(rgb, f"{pred['label']} {pred['probability']:.2f}")

    def demo_row(self, pred: dict[str, Any]) -> dict[str, Any]:
        return {"predicted": pred["label"], "probability": f"{pred['probability']:.6f}",
                "top5": ";".join(f"{n}:{p:.4f}" for n, p in pred["topk"])}

    def export_module(self, model: nn.Module) -> tuple[nn.Module, list[str]]:
        return _WithProbs(model), ["logits", "probs"]


class _WithProbs(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        logits = self.model(x)
        return logits, torch.softmax(logits, dim=1)

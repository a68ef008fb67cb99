"""Classification on the shared trainer: datasets, the loss call with its training strategies,
predictions for the evaluator and eval reports (demo, export and test-time augmentation:
protocol.py)."""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import torch
from loguru import logger
from torch import nn

from aicore import config as C
from aicore.engine import dist
from aicore.engine.trainer import BaseTrainer
from aicore.errors import ConfigError
from aicore.registry import LOSSES, MODELS, TRAINERS
from aicore.tasks.classification import strategies as S


@TRAINERS.register("ClassificationTrainer")
class ClassificationTrainer(BaseTrainer):
    task = "classification"
    default_metric = "top1"
    default_evaluator = "ClassificationEvaluator"

    mixup = distiller = None
    rdrop_alpha = 0.0

    # -- training strategies ------------------------------------------------------------------

    def class_balance(self) -> str | None:
        mode = self.cfg.train.class_balance
        if mode not in (None, False, "loss", "sampler"):
            raise ConfigError(f"train.class_balance = {mode!r}: use null, \"loss\" (class-"
                              f"balanced loss weights) or \"sampler\" (draw classes equally)")
        return mode or None

    def build_loss(self) -> nn.Module:
        if self.class_balance() == "loss":
            loss_cls = LOSSES.get(self.cfg.loss.type)
            if "class_weights" not in inspect.signature(loss_cls).parameters:
                raise ConfigError(f"train.class_balance = \"loss\": {self.cfg.loss.type} takes "
                                  f"no class_weights; use \"sampler\" or another loss")
            if not self.cfg.loss.get("class_weights"):
                self.cfg.loss.class_weights = "balanced"
        return super().build_loss()

    def sample_weights(self, dataset) -> list[float] | None:
        if self.class_balance() != "sampler":
            return None
        counts = np.maximum(np.asarray(dataset.class_counts, np.float64), 1)
        return [1.0 / counts[t] for _, t in dataset.samples]

    def build_extras(self) -> None:
        t = self.cfg.train
        n = len(self.classes)
        if t.mixup:
            self.mixup = S.build_mixup(t.mixup, n)
            if float(self.cfg.loss.get("label_smoothing") or 0) > 0:
                logger.warning("train.mixup smooths labels itself (train.mixup.label_smoothing);"
                               " loss.label_smoothing is applied on top")
        if t.distill:
            self.distiller = S.Distiller(
                t.distill, self.model, self.classes, device=self.device,
                build_model=lambda node: C.build(node, MODELS, "train.distill.teacher", self.cfg,
                                                 **self.model_kwargs()))
        if t.rdrop:
            self.rdrop_alpha = float(S._options(t.rdrop, "rdrop", {"alpha": 1.0})["alpha"])
            if not S.has_dropout(self.model):
                raise ConfigError("train.rdrop compares two dropout passes, but the model has no "
                                  "dropout; set model.drop_rate (e.g. 0.2) or drop_path_rate")

    def forward_loss(self, batch: Any) -> dict[str, torch.Tensor]:
        images, labels, _ = batch
        images = self.input_tensor(images)
        targets = labels.to(self.device, non_blocking=True)
        if self.mixup is not None:
            images, targets = S.apply_mixup(self.mixup, images, targets, len(self.classes))
        if self.rdrop_alpha:
            # one forward over the batch twice: two dropout masks, one pass of overhead
            logits_a, logits_b = self.model(torch.cat([images, images])).chunk(2)
            task = 0.5 * (self.loss_fn(logits_a, targets) + self.loss_fn(logits_b, targets))
            consistency = S.rdrop_consistency(logits_a, logits_b)
            out = {"loss": task + self.rdrop_alpha * consistency, "task": task,
                   "rdrop": consistency}
            logits = logits_a
        else:
            logits = self.model(images)
            task = self.loss_fn(logits, targets)
            out = {"loss": task}
        if self.distiller is not None:
            parts = self.distiller.losses(images, logits)
            out.update({"loss": self.distiller.combine(out["loss"], parts), "task": task, **parts})
        return out

    def before_train(self) -> None:
        super().before_train()
        if self.cfg.train.save_train_batch and dist.is_main() and self.start_epoch == 0:
            from aicore.data.transforms import Normalize, default_mean_std
            from aicore.tasks.classification.visualize import save_batch_grid
            data = self.cfg.data
            normalize = Normalize(*default_mean_std(int(data.in_channels), data.mean or None,
                                                    data.std or None))
            batch = next(iter(self.train_loader))
            names = [self.classes[int(i)] for i in batch[1]]
            if self.mixup is not None:  # what the model sees: mixed images and soft labels
                images, names = S.preview_mixup(self.mixup, batch[0], batch[1], self.classes)
                batch = (images, *batch[1:])
            save_batch_grid(batch[0], names, normalize,
                            self.work_dir / "train_batch.jpg")

    # -- evaluation ---------------------------------------------------------------------------

    @torch.no_grad()
    def predict_batch(self, model: nn.Module, batch: Any):
        images, labels, indices = batch
        images = images.to(self.device, non_blocking=True)
        return model(images).float(), (labels, indices)

    @torch.no_grad()
    def predict_and_loss(self, model: nn.Module, batch: Any):
        """The validation loss: the training criterion on the same logits (without mixup,
        R-Drop or distillation, which only shape training)."""
        logits, targets = self.predict_batch(model, batch)
        labels = targets[0].to(self.device, non_blocking=True)
        return logits, targets, {"loss": self.loss_fn(logits, labels)}

    def write_eval_report(self, model: nn.Module, evaluator, dataset, metrics: dict,
                          out: Path) -> None:
        from aicore.tasks.classification import report
        report.write_all(self, model, evaluator, dataset, metrics, out)

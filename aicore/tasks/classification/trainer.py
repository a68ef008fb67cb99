"""Classification on the shared trainer: datasets, the loss call with its training strategies,
predictions (with test-time augmentation), reports, demo drawing and the export wrapper."""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
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
            from aicore.tasks.classification.visualize import save_batch_grid
            batch = next(iter(self.train_loader))
            names = [self.classes[int(i)] for i in batch[1]]
            if self.mixup is not None:  # what the model sees: mixed images and soft labels
                images, names = S.preview_mixup(self.mixup, batch[0], batch[1], self.classes)
                batch = (images, *batch[1:])
            save_batch_grid(batch[0], names,
                            self.inference_pipeline()[1], self.work_dir / "train_batch.jpg")

    # -- evaluation ---------------------------------------------------------------------------

    @torch.no_grad()
    def predict_batch(self, model: nn.Module, batch: Any):
        images, labels, indices = batch
        images = images.to(self.device, non_blocking=True)
        tta = self.cfg.eval.tta if self.cfg.mode == "eval" else None
        return tta_logits(model, images, tta), (labels, indices)

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

    # -- demo -----------------------------------------------------------------------------------

    def predict_images(self, model: nn.Module, batch: torch.Tensor) -> list[dict[str, Any]]:
        batch = batch.to(self.device)
        probs = torch.softmax(model(batch).float(), dim=1).cpu()
        top = probs.topk(min(5, probs.shape[1]), dim=1)
        preds = [{"label": self.classes[int(i[0])], "probability": float(v[0]),
                  "topk": [(self.classes[int(a)], float(b)) for a, b in zip(i, v)]}
                 for v, i in zip(top.values, top.indices)]
        cal = self.ok_ng_threshold("demo")
        if cal is not None:  # a saved OK/NG operating point replaces the argmax
            from aicore.tasks.classification.threshold import decide
            for pred, p in zip(preds, probs.tolist()):
                k = decide(p, cal)
                pred["label"], pred["probability"] = self.classes[k], float(p[k])
        if self.cfg.demo.cam:
            from aicore.tasks.classification.cam import class_activation_maps
            maps = class_activation_maps(self, model, batch, [int(i[0]) for i in top.indices])
            for pred, cam in zip(preds, maps):
                pred["cam"] = cam
        return preds

    def draw(self, rgb: np.ndarray, pred: dict[str, Any]) -> np.ndarray:
        from aicore.tasks.classification.visualize import draw_label, overlay_heatmap
        if "cam" in pred:
            rgb = overlay_heatmap(rgb, pred["cam"])
        return draw_label(rgb, f"{pred['label']} {pred['probability']:.2f}")

    def demo_row(self, pred: dict[str, Any]) -> dict[str, Any]:
        return {"predicted": pred["label"], "probability": f"{pred['probability']:.6f}",
                "top5": ";".join(f"{n}:{p:.4f}" for n, p in pred["topk"])}

    # -- export ---------------------------------------------------------------------------------

    def ok_ng_threshold(self, section: str) -> dict[str, Any] | None:
        """eval/threshold.json's OK/NG threshold for the checkpoint `section` loads (two-class
        runs; see classification/threshold.py), read once per section."""
        cache = self.__dict__.setdefault("_ok_ng", {})
        if section not in cache:
            from aicore.engine.runners import checkpoint_path, out_dir
            from aicore.tasks.classification.threshold import load
            cache[section] = load(out_dir(self.cfg, "eval") / "threshold.json", self.classes,
                                  checkpoint_path(self.cfg, section))
        return cache[section]

    def export_module(self, model: nn.Module) -> tuple[nn.Module, list[str]]:
        return _WithProbs(model), ["logits", "probs"]

    def manifest_extra(self) -> dict[str, Any]:
        from aicore.tasks.classification.threshold import manifest_entry
        return {"postprocess": {"output": "probs", "topk": 5,
                                "rule": "class = argmax of probs (softmax of logits)",
                                **manifest_entry(self.ok_ng_threshold("export"), self.classes)}}


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


class _WithProbs(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        logits = self.model(x)
        return logits, torch.softmax(logits, dim=1)

"""Anomaly detection on the shared trainer: a gradient-free fitting pass instead of SGD.

The lifecycle is the usual one with one epoch: each iteration feeds a batch of good images to
``model.accumulate``; at the epoch's end ``model.finish_fit`` turns what was collected into the
fitted buffers, before the evaluation and checkpoint hooks run. Evaluation then finds the
decision thresholds on the validation split and stores them in the model, so the checkpoint
written right after is ready for demo and export. ``mode=eval`` recomputes them and writes
``eval/threshold.json``, which demo and export prefer while it belongs to the same checkpoint.
"""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from dotmap import DotMap
from loguru import logger
from torch import nn

from aicore import config as C
from aicore.data.loaders import build_loader
from aicore.engine.runners import checkpoint_path
from aicore.engine.trainer import BaseTrainer
from aicore.errors import CheckpointError, ConfigError
from aicore.registry import TRAINERS
from aicore.tasks.anomaly import categories
from aicore.tasks.anomaly.datasets import CLASSES
from aicore.deploy.postprocess import is_defect
from aicore.tasks.anomaly.base import AnomalyModel
from aicore.tasks.anomaly.protocol import fingerprint


def _ng_share(scores: np.ndarray, thr: float) -> float:
    """Share of the scores judged NG by the one verdict rule (is_defect)."""
    return float(np.mean([is_defect(v, thr) for v in scores])) if len(scores) else float("nan")


@TRAINERS.register("AnomalyTrainer")
class AnomalyTrainer(BaseTrainer):
    task = "anomaly"
    default_metric = "image_AUROC"
    default_evaluator = "AnomalyEvaluator"
    resize_in_float = True  # as MVTecDataset: rounding resized pixels is noise PaDiM scores
    resize_antialias = True  # as MVTecDataset: OpenCV's 2-tap shrink aliases fine texture

    # -- several categories per config --------------------------------------------------------

    @classmethod
    def sub_runs(cls, cfg: DotMap, mode: str) -> list[tuple[str, DotMap]]:
        return categories.sub_runs(cfg, mode)

    @classmethod
    def summarize_runs(cls, cfg: DotMap, mode: str, results: dict[str, Any]) -> None:
        categories.write_summary(cfg, mode, results)

    # -- building ------------------------------------------------------------------------------

    def build_loader(self, dataset, train: bool, model: nn.Module | None = None):
        if not train:
            return super().build_loader(dataset, train, model)
        # The fit must see every good image exactly once: shard without the shuffling and the
        # padding (repeated samples) of a training sampler; order does not change a fit.
        from aicore.engine.autobatch import resolve_batch_size
        data = self.cfg.data
        return build_loader(dataset, resolve_batch_size(self, dataset, True, model), False,
                            int(data.num_workers), int(self.cfg.seed),
                            collate_fn=self.collate_fn())

    def model_kwargs(self) -> dict[str, Any]:
        # buffer shapes (PaDiM's per-position statistics) follow the input size
        return {"in_chans": int(self.cfg.data.in_channels),
                "input_size": [int(s) for s in self.cfg.data.input_size]}

    def build_model(self) -> nn.Module:
        model = super().build_model()
        if not isinstance(model, AnomalyModel):
            raise ConfigError(f"model.type = {self.cfg.model.type!r} is not an anomaly model; "
                              f"use PaDiM or PatchCore (or a subclass of AnomalyModel)")
        return model

    # -- fitting -------------------------------------------------------------------------------

    def before_train(self) -> None:
        t = self.cfg.train
        if int(t.epochs) != 1:
            raise ConfigError(f"train.epochs = {t.epochs}{C.where(self.cfg, 'train.epochs')}: "
                              f"anomaly models are fitted in one pass over train/good; set it "
                              f"to 1")
        if t.ema:
            raise ConfigError("train.ema: anomaly models are fitted, not trained by gradient "
                              "steps, so there is nothing to average; remove train.ema")
        if t.resume:
            raise ConfigError("train.resume: an anomaly fit is one pass with nothing to "
                              "continue; to fit again into the same work_dir use "
                              "-o train.overwrite=true")
        super().before_train()

    def before_epoch(self) -> None:
        super().before_epoch()
        self.fit_t0 = time.perf_counter()
        self.bare_model.start_fit()

    def train_one_iter(self, batch: Any) -> None:
        images = batch[0].to(self.device, non_blocking=True)
        with torch.no_grad(), self.autocast():
            self.bare_model.accumulate(images)
        self.stepped = False
        self.last_losses = {}
        self.epoch_count += 1

    def after_epoch(self) -> None:
        # The fit must be complete before the evaluation (40) and checkpoint (50) hooks run.
        t0 = time.perf_counter()
        self.bare_model.finish_fit()
        logger.info(f"fitted {type(self.bare_model).__name__} on {len(self.train_set)} good "
                    f"images: features {t0 - self.fit_t0:.1f}s, fit "
                    f"{time.perf_counter() - t0:.1f}s")
        super().after_epoch()

    def train(self) -> dict[str, Any]:
        """Fit, evaluate, save; returns the validation metrics of the fitted model."""
        super().train()
        return dict(self.last_metrics.get("model", {}))

    # -- evaluation ----------------------------------------------------------------------------

    @torch.no_grad()
    def predict_batch(self, model: nn.Module, batch: Any):
        images, masks, labels, indices = batch
        maps, scores = model(images.to(self.device, non_blocking=True))
        return (maps.float(), scores.float()), (masks, labels, indices)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, evaluator) -> dict[str, Any]:
        if not model.is_fitted:
            raise CheckpointError("the anomaly model has not been fitted (no training images "
                                  "in its statistics); train it first")
        metrics = super().evaluate(model, loader, evaluator)
        if getattr(evaluator, "calibration", None):
            # thresholds travel with the model: the checkpoint saved next is deployable
            model.calibrate(**evaluator.calibration)
        return metrics

    def write_eval_report(self, model: nn.Module, evaluator, dataset, metrics: dict,
                          out: Path) -> None:
        from aicore.tasks.anomaly.metrics import pro_curve
        from aicore.tasks.anomaly.visualize import plot_pro, plot_roc, plot_score_histogram
        labels, scores = evaluator.labels, evaluator.scores
        thr = metrics.get("threshold", float("nan"))
        plot_roc(labels, scores, evaluator.masks, evaluator.maps, out / "roc_curve.png")
        plot_score_histogram(labels, scores, thr, out / "score_histogram.png")
        if "PRO" in metrics:
            fpr, pro = pro_curve(evaluator.maps, evaluator.masks)
            plot_pro(fpr, pro, evaluator.pro_fpr_limit, metrics["PRO"], out / "pro_curve.png")
        ckpt = checkpoint_path(self.cfg, "eval")
        threshold = {**evaluator.calibration, "split": self.cfg.eval.split,
                     "category": dataset.category, "checkpoint": str(ckpt),
                     "checkpoint_fingerprint": fingerprint(ckpt),
                     "rule": "NG (defect) when score >= image_threshold; defect pixels where "
                             "anomaly_map >= pixel_threshold. Edit the thresholds here to move "
                             "the operating point of demo and export."}
        (out / "threshold.json").write_text(json.dumps(threshold, indent=2), encoding="utf-8")
        order = np.argsort(evaluator.indices)
        with open(out / "predictions.csv", "w", newline="", encoding="utf-8",
              errors="backslashreplace") as f:
            w = csv.writer(f)
            w.writerow(["path", "defect_type", "label", "score", "verdict", "correct"])
            for j in order:
                i = int(evaluator.indices[j])
                ng = is_defect(scores[j], thr)
                w.writerow([dataset.samples[i][0], dataset.samples[i][2], CLASSES[labels[j]],
                            f"{scores[j]:.6f}", "NG" if ng else "OK", int(ng == bool(labels[j]))])
        self.write_per_defect(evaluator, dataset, thr, out / "per_defect.csv")
        from aicore.tasks.anomaly.report import write_heatmaps
        write_heatmaps(evaluator, dataset, out)  # eval/heatmaps/: mistakes first

    def write_per_defect(self, evaluator, dataset, thr: float, path: Path) -> None:
        """Per defect type: image AUROC against the good images, and the share judged right
        at the threshold (good: OK, defects: NG); shows which kind of defect the model misses."""
        from sklearn.metrics import roc_auc_score
        types = np.array([dataset.samples[int(i)][2] for i in evaluator.indices])
        good = evaluator.scores[types == "good"]
        with open(path, "w", newline="", encoding="utf-8",
              errors="backslashreplace") as f:
            w = csv.writer(f)
            w.writerow(["defect_type", "images", "image_AUROC", "correct_at_threshold"])
            if len(good):
                w.writerow(["good", len(good), "", f"{1 - _ng_share(good, thr):.4f}"])
            for t in dataset.defect_types:
                s = evaluator.scores[types == t]
                if not len(s):
                    continue
                auroc = roc_auc_score(np.r_[np.zeros(len(good)), np.ones(len(s))],
                                      np.r_[good, s]) if len(good) else float("nan")
                w.writerow([t, len(s), f"{auroc:.4f}", f"{_ng_share(s, thr):.4f}"])

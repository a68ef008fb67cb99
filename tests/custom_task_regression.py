"""Image regression, a task AICore does not ship, registered entirely from one file.

tests/test_custom_task.py copies this file into a project's custom_modules/ folder and drives
it through the CLI. The task: predict an image's mean brightness (0..1) from the image.
Everything a task contributes is here: dataset, model, loss, evaluator, trainer, inference
protocol (eval, demo, export) and the TaskSpec with the task's own config key and defaults.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from aicore.config_values import Rule
from aicore.data.transforms import Normalize, default_mean_std
from aicore.engine import dist
from aicore.engine.protocol import ExportSpec, TaskProtocol
from aicore.engine.trainer import BaseTrainer
from aicore.errors import DataError
from aicore.registry import DATASETS, EVALUATORS, LOSSES, MODELS
from aicore.tasks.spec import TaskSpec, register_task


@DATASETS.register("BrightnessDataset")
class BrightnessDataset(Dataset):
    """<root>/<split>.csv with columns file,brightness; images are grayscale files."""

    classes = ["brightness"]  # the regressed value's name (checkpoints record it)

    def __init__(self, root: str, split: str, transform=None, input_size=(32, 32),
                 mean=None, std=None, in_channels: int = 1) -> None:
        self.root = Path(root)
        table = self.root / f"{split}.csv"
        if not table.is_file():
            raise DataError(f"{table} not found: BrightnessDataset needs <root>/{split}.csv "
                            f"with columns file,brightness")
        with open(table, newline="", encoding="utf-8") as f:
            self.rows = [(r["file"], float(r["brightness"])) for r in csv.DictReader(f)]
        self.transform = transform
        self.size = tuple(int(s) for s in input_size)
        self.normalize = Normalize(*default_mean_std(in_channels, mean, std))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        name, target = self.rows[i]
        img = cv2.imread(str(self.root / name), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise DataError(f"cannot read {self.root / name}")
        if self.transform is not None:
            img = self.transform(image=img)["image"]
        h, w = self.size
        if img.shape[:2] != (h, w):
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
        return self.normalize(img), torch.tensor([target], dtype=torch.float32)


@MODELS.register("TinyRegressor")
class TinyRegressor(nn.Module):
    def __init__(self, in_chans: int = 1, num_classes: int = 1, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1),
            nn.Flatten())
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@LOSSES.register("RegressionMSE")
class RegressionMSE(nn.Module):
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.mean((pred.float() - target.float()) ** 2)


@EVALUATORS.register("RegressionEvaluator")
class RegressionEvaluator:
    """MAE and RMSE over the whole split, gathered over DDP ranks."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.errors: list[np.ndarray] = []

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        self.errors.append((outputs.float() - targets.float()).flatten().cpu().numpy())

    def compute(self) -> dict[str, Any]:
        parts = [e for rank in dist.all_gather_object(self.errors) for e in rank]
        err = np.concatenate(parts) if parts else np.zeros(0)
        return {"MAE": float(np.abs(err).mean()) if err.size else 0.0,
                "RMSE": float(np.sqrt((err ** 2).mean())) if err.size else 0.0,
                "samples": int(err.size)}


class RegressionTrainer(BaseTrainer):
    task = "regression"
    default_metric = "MAE"
    default_evaluator = "RegressionEvaluator"

    def forward_loss(self, batch: Any) -> dict[str, torch.Tensor]:
        images, targets = batch
        pred = self.model(self.input_tensor(images))
        return {"loss": self.loss_fn(pred, targets.to(self.device))}

    @torch.no_grad()
    def predict_batch(self, model: nn.Module, batch: Any):
        images, targets = batch
        return model(images.to(self.device)), targets.to(self.device)

    def write_eval_report(self, model, evaluator, dataset, metrics, out: Path) -> None:
        """eval/tolerance.json: the share of images within the task's eval.max_abs_error."""
        import json
        err = np.abs(np.concatenate(evaluator.errors)) if evaluator.errors else np.zeros(0)
        limit = float(self.cfg.eval.max_abs_error)
        share = float((err <= limit).mean()) if err.size else 0.0
        (out / "tolerance.json").write_text(json.dumps({"max_abs_error": limit,
                                                        "within": share}), encoding="utf-8")


class RegressionProtocol(TaskProtocol):
    """Prediction: {"brightness": float}; preprocessing is the base class's (val transforms,
    resize to data.input_size, normalisation), as the dataset does."""

    task = "regression"

    def results(self, outputs: torch.Tensor, metas) -> list[dict[str, float]]:
        return [{"brightness": float(v)} for v in outputs.float().flatten().cpu()]

    def draw(self, rgb: np.ndarray, pred: dict[str, float]) -> np.ndarray:
        out = np.ascontiguousarray(rgb.copy())
        cv2.putText(out, f"{pred['brightness']:.2f}", (1, max(10, out.shape[0] // 2)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.3, (255, 0, 0), 1)
        return out

    def csv_row(self, pred: dict[str, float]) -> dict[str, Any]:
        return {"brightness": round(pred["brightness"], 6)}

    def export(self, model: nn.Module) -> ExportSpec:
        return ExportSpec(model, ["brightness"],
                          {"postprocess": {"output": "brightness", "range": [0, 1]}},
                          wrap=lambda m: m)


SPEC = register_task(TaskSpec(
    "regression", RegressionTrainer, protocol=RegressionProtocol,
    # the task's own key, and a shared default it changes: lower MAE is better
    defaults={"eval": {"max_abs_error": 0.5}, "train": {"best_mode": "min"}},
    rules={"eval.max_abs_error": Rule("number", low=0, low_open=True)}))

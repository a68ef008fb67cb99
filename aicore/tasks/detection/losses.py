"""The detection loss as configured in ``loss``: detectors compute their own loss terms (SimOTA
+ IoU/objectness/class for YOLOX, torchvision's built-in losses for the others), because the
assignment of predictions to boxes is part of the model. This component only weights and sums
those terms, so any detector's balance can be tuned from the config."""
from __future__ import annotations

import torch
from torch import nn

from aicore.errors import ConfigError
from aicore.registry import LOSSES


@LOSSES.register("DetectionLoss")
class DetectionLoss(nn.Module):
    """weights: optional {term name: factor}, e.g. ``{"loss_obj": 2.0}``; unnamed terms count
    once. The names are those printed in the training log (loss_iou, loss_obj, loss_cls,
    loss_l1 for YOLOX; torchvision's terms with a loss_ prefix)."""

    def __init__(self, weights: dict[str, float] | None = None) -> None:
        super().__init__()
        self.weights = {str(k): float(v) for k, v in (weights or {}).items()}
        self._checked = False

    def forward(self, parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not self._checked:
            # YOLOX adds loss_l1 only for the final epochs, so it may be absent at first
            unknown = [k for k in self.weights if k not in parts and k != "loss_l1"]
            if unknown:
                raise ConfigError(f"loss.weights names {unknown}, but this model's loss terms "
                                  f"are {sorted(parts)}")
            self._checked = True
        weighted = {k: v * self.weights.get(k, 1.0) for k, v in parts.items()}
        total = torch.stack([v for v in weighted.values()]).sum()
        return {"loss": total, **weighted}

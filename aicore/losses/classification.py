"""Classification losses: cross-entropy with label smoothing, focal, poly; optional
class-balanced weights computed from the training set's class counts."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from aicore.errors import ConfigError
from aicore.registry import LOSSES


def class_weights(mode: str | Sequence[float] | None, class_counts: Sequence[int] | None,
                  num_classes: int | None, beta: float = 0.999) -> torch.Tensor | None:
    """None, an explicit list, "balanced" (inverse frequency) or "effective" (Cui et al. 2019:
    (1 - beta) / (1 - beta^n)); weights are scaled to average 1 over classes."""
    if mode is None:
        return None
    if isinstance(mode, (list, tuple)):
        if num_classes is not None and len(mode) != num_classes:
            raise ConfigError(f"loss.class_weights has {len(mode)} values but the dataset has "
                              f"{num_classes} classes")
        return torch.tensor(mode, dtype=torch.float32)
    if class_counts is None:
        raise ConfigError("loss.class_weights needs the training set's class counts")
    counts = torch.tensor(class_counts, dtype=torch.float64).clamp(min=1)
    if mode == "balanced":
        w = 1.0 / counts
    elif mode == "effective":
        w = (1 - beta) / (1 - beta ** counts)
    else:
        raise ConfigError(f"loss.class_weights = {mode!r}: use null, \"balanced\", \"effective\" "
                          f"or a list with one weight per class")
    return (w / w.mean()).float()


class _WeightedLoss(nn.Module):
    def __init__(self, weights: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("weight", weights, persistent=False)


@LOSSES.register("CrossEntropyLoss")
class CrossEntropyLoss(_WeightedLoss):
    def __init__(self, label_smoothing: float = 0.0, class_weights: str | list | None = None,
                 beta: float = 0.999, num_classes: int | None = None,
                 class_counts: list[int] | None = None, ignore_index: int = -100) -> None:
        super().__init__(class_weights_fn(class_weights, class_counts, num_classes, beta))
        self.label_smoothing = label_smoothing
        self.ignore_index = ignore_index  # targets equal to it add nothing (segmentation: 255)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.is_floating_point():  # soft targets (mixup / cutmix): (N, C) probabilities
            return F.cross_entropy(logits.float(), target, weight=self.weight,
                                   label_smoothing=self.label_smoothing)
        return F.cross_entropy(logits.float(), target, weight=self.weight,
                               label_smoothing=self.label_smoothing,
                               ignore_index=self.ignore_index)


@LOSSES.register("FocalLoss")
class FocalLoss(_WeightedLoss):
    """Lin et al. 2017: down-weights easy examples by (1 - p_t)^gamma."""

    def __init__(self, gamma: float = 2.0, class_weights: str | list | None = None,
                 beta: float = 0.999, num_classes: int | None = None,
                 class_counts: list[int] | None = None) -> None:
        super().__init__(class_weights_fn(class_weights, class_counts, num_classes, beta))
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        t = soft_targets(target, logits.shape[1])
        logp = F.log_softmax(logits.float(), dim=1)
        loss = -(t * (1 - logp.exp()) ** self.gamma * logp).sum(1)
        return _weighted_mean(loss, t, self.weight)


@LOSSES.register("PolyLoss")
class PolyLoss(_WeightedLoss):
    """Leng et al. 2022, Poly-1: CE + epsilon * (1 - p_t)."""

    def __init__(self, epsilon: float = 1.0, label_smoothing: float = 0.0,
                 class_weights: str | list | None = None, beta: float = 0.999,
                 num_classes: int | None = None, class_counts: list[int] | None = None) -> None:
        super().__init__(class_weights_fn(class_weights, class_counts, num_classes, beta))
        self.epsilon, self.label_smoothing = epsilon, label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        t = soft_targets(target, logits.shape[1], self.label_smoothing)
        logp = F.log_softmax(logits, dim=1)
        ce = -(t * logp).sum(1)
        pt = (t * logp.exp()).sum(1)
        return _weighted_mean(ce + self.epsilon * (1 - pt), t, self.weight)


class_weights_fn = class_weights


def soft_targets(target: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """Class indices (N,) or probabilities (N, C) -> probabilities, with label smoothing."""
    t = target.float() if target.is_floating_point() else \
        F.one_hot(target, num_classes).float()
    return t * (1 - smoothing) + smoothing / num_classes if smoothing else t


def _weighted_mean(loss: torch.Tensor, t: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Mean over samples, each weighted by its (expected) class weight when weights are set."""
    if weight is None:
        return loss.mean()
    w = t @ weight
    return (loss * w).sum() / w.sum()

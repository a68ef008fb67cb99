"""Segmentation losses: region losses from segmentation-models-pytorch (Dice, Jaccard, Tversky,
Lovasz, focal) in multiclass mode, and a weighted sum of several losses.

All of them take (logits (N, C, H, W), target (N, H, W) int64) and skip pixels equal to
``ignore_index`` (255, injected by the framework). Plain per-pixel cross-entropy is the shared
``CrossEntropyLoss`` (aicore/losses), which takes ignore_index as well.

A weighted sum is written so config validation can check each part like any other loss:

    {"type": "CombinedLoss",
     "losses": [{"type": "CrossEntropyLoss"}, {"type": "DiceLoss"}],
     "weights": [1.0, 0.5]}
"""
from __future__ import annotations

import inspect
from typing import Any, Sequence

import segmentation_models_pytorch as smp
import torch
from torch import nn

from aicore import config as C
from aicore.errors import ConfigError
from aicore.registry import LOSSES

MULTICLASS = "multiclass"


class _SMPLoss(nn.Module):
    """Runs an smp loss in float32 (under bf16 autocast too) in multiclass mode."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.fn(logits.float(), target)


@LOSSES.register("DiceLoss")
class DiceLoss(_SMPLoss):
    """1 - soft Dice per class, averaged over classes: optimises overlap directly, so small
    classes weigh as much as large ones. classes: restrict to these class indices."""

    def __init__(self, smooth: float = 0.0, log_loss: bool = False,
                 classes: Sequence[int] | None = None, ignore_index: int | None = 255,
                 num_classes: int | None = None) -> None:
        super().__init__(smp.losses.DiceLoss(MULTICLASS, classes=classes, log_loss=log_loss,
                                             smooth=smooth, ignore_index=ignore_index))


@LOSSES.register("JaccardLoss")
class JaccardLoss(_SMPLoss):
    """1 - soft IoU per class, averaged over classes (the training-time analogue of mIoU)."""

    def __init__(self, smooth: float = 0.0, log_loss: bool = False,
                 classes: Sequence[int] | None = None, ignore_index: int | None = 255,
                 num_classes: int | None = None) -> None:
        super().__init__(smp.losses.JaccardLoss(MULTICLASS, classes=classes, log_loss=log_loss,
                                                smooth=smooth, ignore_index=ignore_index))


@LOSSES.register("TverskyLoss")
class TverskyLoss(_SMPLoss):
    """Dice with separate false-positive (alpha) and false-negative (beta) weights; beta > alpha
    favours recall of thin or rare defects."""

    def __init__(self, alpha: float = 0.5, beta: float = 0.5, gamma: float = 1.0,
                 smooth: float = 0.0, classes: Sequence[int] | None = None,
                 ignore_index: int | None = 255, num_classes: int | None = None) -> None:
        super().__init__(smp.losses.TverskyLoss(MULTICLASS, classes=classes, alpha=alpha,
                                                beta=beta, gamma=gamma, smooth=smooth,
                                                ignore_index=ignore_index))


@LOSSES.register("LovaszLoss")
class LovaszLoss(_SMPLoss):
    """Lovasz-softmax (Berman et al. 2018): a convex surrogate of per-class IoU; best as a
    fine-tuning term or next to cross-entropy. per_image: average over images, not the batch."""

    def __init__(self, per_image: bool = False, ignore_index: int | None = 255,
                 num_classes: int | None = None) -> None:
        super().__init__(smp.losses.LovaszLoss(MULTICLASS, per_image=per_image,
                                               ignore_index=ignore_index))


@LOSSES.register("SegFocalLoss")
class SegFocalLoss(_SMPLoss):
    """Per-pixel focal loss (smp, one-vs-rest per class): down-weights the many easy background
    pixels so training concentrates on object borders and rare classes. (``FocalLoss`` is the
    classification one; it has no ignore pixels.)"""

    def __init__(self, gamma: float = 2.0, alpha: float | None = None, normalized: bool = False,
                 ignore_index: int | None = 255, num_classes: int | None = None) -> None:
        super().__init__(smp.losses.FocalLoss(MULTICLASS, alpha=alpha, gamma=gamma,
                                              normalized=normalized, ignore_index=ignore_index))


def takes_ignore_index(node: dict, path: str) -> None:
    """Fail unless the loss `node` handles ignore pixels: a loss that does not would either crash
    on label 255 or learn it as a class."""
    obj = LOSSES.get(node["type"], where=f"{path}.type")
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return
    if "ignore_index" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    seg = sorted(n for n in LOSSES.names() if _takes(LOSSES.get(n)))
    raise ConfigError(f"'{path}.type' = {node['type']!r} does not take ignore_index, so mask "
                      f"pixels of 255 (ignore) would crash it or be learnt as a class. Use one of "
                      f"{', '.join(seg)}, or give the loss an ignore_index argument")


def _takes(obj: Any) -> bool:
    try:
        return "ignore_index" in inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return False


@LOSSES.register("CombinedLoss")
class CombinedLoss(nn.Module):
    """Weighted sum of losses, e.g. cross-entropy for stable per-pixel gradients plus Dice for
    overlap on small classes. ``weights`` defaults to 1 for each; each part is logged under its
    type name (with _<i> appended when a type appears twice)."""

    def __init__(self, losses: Sequence[dict], weights: Sequence[float] | None = None,
                 num_classes: int | None = None, class_counts: Sequence[int] | None = None,
                 ignore_index: int | None = 255) -> None:
        super().__init__()
        if not losses:
            raise ConfigError("loss.losses is empty: list at least one {\"type\": ...} loss")
        weights = [1.0] * len(losses) if weights is None else [float(w) for w in weights]
        if len(weights) != len(losses):
            raise ConfigError(f"loss.weights has {len(weights)} values for {len(losses)} losses; "
                              f"give one weight per entry of loss.losses")
        injected = {"num_classes": num_classes, "ignore_index": ignore_index}
        if class_counts is not None:
            injected["class_counts"] = list(class_counts)
        parts = []
        for i, node in enumerate(losses):
            node = node.toDict() if hasattr(node, "toDict") else dict(node)
            if node.get("type") == "CombinedLoss":
                raise ConfigError(f"loss.losses.{i}: a CombinedLoss cannot contain another one")
            if ignore_index is not None:
                takes_ignore_index(node, f"loss.losses.{i}")
            parts.append(C.build(node, LOSSES, f"loss.losses.{i}", **injected))
        self.losses = nn.ModuleList(parts)
        self.weights = weights
        types = [n.get("type") for n in losses]
        self.names = [t if types.count(t) == 1 else f"{t}_{i}" for i, t in enumerate(types)]
        self.last_parts: dict[str, torch.Tensor] = {}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = logits.new_zeros((), dtype=torch.float32)
        parts = {}
        for name, w, fn in zip(self.names, self.weights, self.losses):
            value = fn(logits, target)
            parts[name] = value.detach()
            total = total + w * value
        self.last_parts = parts
        return total

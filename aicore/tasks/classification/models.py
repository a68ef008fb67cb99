"""Classification models: any timm model by name."""
from __future__ import annotations

import torch
from torch import nn

from aicore.backbones import create_timm
from aicore.registry import MODELS


@MODELS.register("TimmClassifier")
def timm_classifier(name: str, num_classes: int, in_chans: int = 3, pretrained: bool | str = False,
                    drop_rate: float = 0.0, drop_path_rate: float | None = None,
                    **timm_kwargs) -> nn.Module:
    """Any timm classification model: ``{"type": "TimmClassifier", "name": "resnet18"}``.
    Extra keys go to ``timm.create_model`` (e.g. ``global_pool``)."""
    if drop_path_rate is not None:
        timm_kwargs["drop_path_rate"] = drop_path_rate
    return create_timm(name, pretrained, in_chans, num_classes=num_classes, drop_rate=drop_rate,
                       **timm_kwargs)


def penultimate_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pooled features before the classifier (timm's forward_head(pre_logits=True))."""
    feats = model.forward_features(x)
    return model.forward_head(feats, pre_logits=True)

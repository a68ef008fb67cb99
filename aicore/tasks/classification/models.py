"""Classification models: any timm model by name."""
from __future__ import annotations

import difflib
from pathlib import Path

import timm
import torch
from torch import nn

from aicore.errors import ConfigError
from aicore.registry import MODELS


def create_timm(name: str, pretrained: bool | str, in_chans: int, **kwargs) -> nn.Module:
    """timm.create_model with our error messages.

    pretrained: false (random init), true (timm's hub weights; needs the network), or a path to
    a local weights file (.pth/.safetensors), loaded by timm with the same head / in_chans
    adaptation as hub weights.
    """
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ConfigError(f"model.name = {name!r} is not a timm model.{hint} List them with "
                          f"`python main.py --list models '*{name[:6]}*'`")
    overlay = None
    if isinstance(pretrained, str):
        path = Path(pretrained)
        if not path.is_file():
            raise ConfigError(f"model.pretrained = {pretrained!r}: file not found. Give a local "
                              f"weights file, true (download via timm) or false")
        overlay, pretrained = {"file": str(path)}, True
    try:
        return timm.create_model(name, pretrained=bool(pretrained), in_chans=in_chans,
                                 pretrained_cfg_overlay=overlay, **kwargs)
    except TypeError as e:
        raise ConfigError(f"model: timm model {name!r} rejected an argument: {e}") from None
    except (OSError, RuntimeError, ValueError) as e:
        if pretrained and overlay is None:
            raise ConfigError(f"model.pretrained: could not fetch timm weights for {name!r} "
                              f"({type(e).__name__}: {str(e)[:200]}). Without network access, "
                              f"download them elsewhere and set model.pretrained to the file's "
                              f"path, or use false") from None
        raise ConfigError(f"model: cannot build timm model {name!r}: {e}") from None


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

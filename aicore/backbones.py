"""timm models by name, shared by every task (classifiers, feature extractors, backbones)."""
from __future__ import annotations

import difflib
from pathlib import Path

import timm
from torch import nn

from aicore.errors import ConfigError


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

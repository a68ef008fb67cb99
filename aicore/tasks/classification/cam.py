"""Class activation maps for demo (the grad-cam package): where the model looked."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from aicore.errors import ConfigError

METHODS = ("GradCAM", "GradCAMPlusPlus", "HiResCAM", "XGradCAM", "LayerCAM", "EigenCAM",
           "ScoreCAM", "AblationCAM", "FullGrad")


def target_layer(model: nn.Module, name: str | None) -> nn.Module:
    """The named module, or the last feature stage (timm's feature_info), or the last conv."""
    if name:
        try:
            return model.get_submodule(name)
        except AttributeError:
            raise ConfigError(f"demo.cam_layer = {name!r}: no such module in the model; names "
                              f"look like {[n for n, _ in model.named_children()][:6]}") from None
    info = getattr(model, "feature_info", None)
    if info is not None:
        try:
            return model.get_submodule(info[-1]["module"])
        except (AttributeError, KeyError, TypeError, IndexError):
            pass
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ConfigError("demo.cam: the model has no convolution to take a CAM from; set "
                          "demo.cam_layer to a module name")
    return convs[-1]


def class_activation_maps(trainer, model: nn.Module, batch: torch.Tensor,
                          classes: list[int]) -> list[np.ndarray]:
    """One HxW map in [0, 1] per image, for the given (predicted) class."""
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    method = trainer.cfg.demo.cam
    if method not in METHODS:
        raise ConfigError(f"demo.cam = {method!r}: choose one of {', '.join(METHODS)}")
    layer = target_layer(model, trainer.cfg.demo.cam_layer)
    with torch.enable_grad(), torch.autocast(batch.device.type, enabled=False):
        with getattr(pgc, method)(model=model, target_layers=[layer]) as cam:
            maps = cam(input_tensor=batch.float(),
                       targets=[ClassifierOutputTarget(c) for c in classes])
    model.zero_grad(set_to_none=True)
    return [m for m in maps]

"""Class activation maps for demo (the grad-cam package): where the model looked."""
from __future__ import annotations

import numpy as np
import torch
from loguru import logger
from torch import nn

from aicore.errors import ConfigError

METHODS = ("GradCAM", "GradCAMPlusPlus", "HiResCAM", "XGradCAM", "LayerCAM", "EigenCAM",
           "ScoreCAM", "AblationCAM", "FullGrad")


def target_layer(model: nn.Module, name: str | None,
                 sample: torch.Tensor | None = None) -> nn.Module:
    """The named module, or the last feature stage (timm's feature_info), or the last conv.

    With a ``sample`` input, the default is the last of those whose output still has spatial
    extent: at a small input size the final stage of a CNN is 1x1, and a CAM taken there is
    one value stretched over the image (a blank map). A named layer that is 1x1 is kept, with
    a warning.
    """
    if name:
        try:
            layer = model.get_submodule(name)
        except AttributeError:
            raise ConfigError(f"demo.cam_layer = {name!r}: no such module in the model; names "
                              f"look like {[n for n, _ in model.named_children()][:6]}") from None
        if sample is not None and _output_extent(model, [layer], sample)[0] == 1:
            logger.warning(f"demo.cam_layer = {name!r} gives a 1x1 feature map at this input "
                           f"size, so its CAM is blank; choose an earlier layer")
        return layer
    candidates: list[tuple[str, nn.Module]] = []
    info = getattr(model, "feature_info", None)
    if info is not None:
        try:
            candidates = [(i["module"], model.get_submodule(i["module"])) for i in info][::-1]
        except (AttributeError, KeyError, TypeError, IndexError):
            candidates = []
    if not candidates:
        candidates = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)][::-1]
    if not candidates:
        raise ConfigError("demo.cam: the model has no convolution to take a CAM from; set "
                          "demo.cam_layer to a module name")
    if sample is None:
        return candidates[0][1]
    extents = _output_extent(model, [m for _, m in candidates], sample)
    for (n, layer), extent in zip(candidates, extents):
        if extent != 1:
            if layer is not candidates[0][1]:
                logger.info(f"demo.cam: {candidates[0][0]} is 1x1 at this input size (a blank "
                            f"map); using {n}, the last layer with spatial extent")
            return layer
    logger.warning(f"demo.cam: every feature stage is 1x1 at this input size, so the CAM is "
                   f"blank; raise data.input_size or set demo.cam_layer")
    return candidates[0][1]


def _output_extent(model: nn.Module, layers: list[nn.Module], sample: torch.Tensor
                   ) -> list[int | None]:
    """H*W of each layer's output for one input (None: not a feature map, e.g. ViT tokens)."""
    extent: dict[int, int | None] = {}

    def record(module, _inputs, output):
        out = output[0] if isinstance(output, (tuple, list)) else output
        extent[id(module)] = int(out.shape[-2] * out.shape[-1]) \
            if isinstance(out, torch.Tensor) and out.dim() == 4 else None
    handles = [m.register_forward_hook(record) for m in layers]
    try:
        with torch.no_grad():
            model(sample[:1].float())
    finally:
        for h in handles:
            h.remove()
    return [extent.get(id(m)) for m in layers]


def class_activation_maps(trainer, model: nn.Module, batch: torch.Tensor,
                          classes: list[int]) -> list[np.ndarray]:
    """One HxW map in [0, 1] per image, for the given (predicted) class."""
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    method = trainer.cfg.demo.cam
    if method not in METHODS:
        raise ConfigError(f"demo.cam = {method!r}: choose one of {', '.join(METHODS)}")
    layer = target_layer(model, trainer.cfg.demo.cam_layer, batch)
    with torch.enable_grad(), torch.autocast(batch.device.type, enabled=False):
        with getattr(pgc, method)(model=model, target_layers=[layer]) as cam:
            maps = cam(input_tensor=batch.float(),
                       targets=[ClassifierOutputTarget(c) for c in classes])
    model.zero_grad(set_to_none=True)
    return [m for m in maps]

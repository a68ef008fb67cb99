"""FreezeBackboneHook (``train.freeze_backbone_epochs``): the head alone first, then all."""
from __future__ import annotations

import torch
from loguru import logger

from aicore.engine.hooks import Hook
from aicore.errors import ConfigError
from aicore.registry import HOOKS


def head_parameters(model) -> list:
    """The classifier head's parameters: timm's get_classifier(), else a head/fc/classifier
    attribute."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(head, torch.nn.Module):
        head = next((getattr(model, n) for n in ("head", "fc", "classifier")
                     if isinstance(getattr(model, n, None), torch.nn.Module)), None)
    params = list(head.parameters()) if head is not None else []
    if not params:
        raise ConfigError(f"train.freeze_backbone_epochs: cannot tell the head of "
                          f"{type(model).__name__} from its backbone; it needs timm's "
                          f"get_classifier() or a head/fc/classifier attribute")
    return params


@HOOKS.register("FreezeBackboneHook")
class FreezeBackboneHook(Hook):
    """Trains only the head for the first `epochs` epochs (backbone weights and BatchNorm
    statistics fixed), then everything: fine-tuning a pretrained backbone on a few hundred
    images without wrecking its features while the new head is still random."""

    priority = 5

    def __init__(self, epochs: int = 1, priority: int | None = None) -> None:
        super().__init__(priority)
        self.epochs = epochs

    def before_train(self, trainer) -> None:
        head_parameters(trainer.bare_model)  # fail early on a model without a known head

    def before_epoch(self, trainer) -> None:
        model = trainer.bare_model
        frozen = trainer.epoch < self.epochs
        head = {id(p) for p in head_parameters(model)}
        changed = False
        for p in model.parameters():
            want = not frozen or id(p) in head
            if p.requires_grad != want:
                p.requires_grad_(want)
                changed = True
        if frozen:
            head_modules = {id(m) for m in model.modules()
                            if any(id(p) in head for p in m.parameters(recurse=False))}
            for m in model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and id(m) not in head_modules:
                    m.eval()
        if changed:
            trainer.wrap_ddp()
            logger.info("backbone frozen: training the head only" if frozen
                        else "backbone unfrozen: training all layers")

"""Optimizers with the seed's "no weight decay on biases and norm layers" parameter groups."""
from __future__ import annotations

import torch
from torch import nn

from aicore.registry import OPTIMIZERS


def param_groups(model: nn.Module, weight_decay: float, no_decay_bias_norm: bool = True,
                 lr: float | None = None, backbone_lr_mult: float = 1.0) -> list[dict]:
    """Split trainable parameters: 1-D tensors (biases, norm scales/shifts) get no weight decay.

    Decaying a BatchNorm scale or a bias only shrinks it toward zero without regularising what
    the network computes, which hurts small-data training in particular.

    backbone_lr_mult < 1 (fine-tuning pretrained weights): everything but the head learns at
    ``lr * backbone_lr_mult``, so the new head moves fast while the pretrained features change
    slowly. The head's groups come first (the logged lr is the head's); schedulers scale every
    group by the same factor, so the ratio holds throughout.
    """
    head: set[int] = set()
    if backbone_lr_mult != 1.0:
        from aicore.engine.freeze_hook import head_parameters
        head = {id(p) for p in head_parameters(model)}
    buckets: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = no_decay_bias_norm and (p.ndim <= 1 or name.endswith(".bias"))
        buckets.setdefault((id(p) not in head if head else False, no_decay), []).append(p)
    groups = []
    for backbone in (False, True):
        for no_decay in (False, True):
            params = buckets.get((backbone, no_decay))
            if not params and (backbone or no_decay):  # the head's decay group always exists
                continue
            group = {"params": params or [], "weight_decay": 0.0 if no_decay else weight_decay}
            if backbone and lr is not None:
                group["lr"] = lr * backbone_lr_mult
            groups.append(group)
    return groups


@OPTIMIZERS.register("SGD")
def sgd(model: nn.Module, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4,
        nesterov: bool = True, no_decay_bias_norm: bool = True,
        backbone_lr_mult: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.SGD(param_groups(model, weight_decay, no_decay_bias_norm, lr,
                                        backbone_lr_mult), lr=lr,
                           momentum=momentum, nesterov=nesterov and momentum > 0)


@OPTIMIZERS.register("AdamW")
def adamw(model: nn.Module, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
          eps: float = 1e-8, weight_decay: float = 0.05,
          no_decay_bias_norm: bool = True, backbone_lr_mult: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.AdamW(param_groups(model, weight_decay, no_decay_bias_norm, lr,
                                          backbone_lr_mult), lr=lr,
                             betas=tuple(betas), eps=eps)


@OPTIMIZERS.register("Adam")
def adam(model: nn.Module, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
         eps: float = 1e-8, weight_decay: float = 0.0,
         no_decay_bias_norm: bool = True, backbone_lr_mult: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.Adam(param_groups(model, weight_decay, no_decay_bias_norm, lr,
                                         backbone_lr_mult), lr=lr,
                            betas=tuple(betas), eps=eps)


@OPTIMIZERS.register("RMSprop")
def rmsprop(model: nn.Module, lr: float = 1e-3, alpha: float = 0.9, eps: float = 1e-3,
            momentum: float = 0.9, weight_decay: float = 1e-5,
            no_decay_bias_norm: bool = True, backbone_lr_mult: float = 1.0) -> torch.optim.Optimizer:
    # eps and alpha as in the TF/timm RMSprop recipes that made RMSprop work for mobile nets
    return torch.optim.RMSprop(param_groups(model, weight_decay, no_decay_bias_norm, lr,
                                            backbone_lr_mult), lr=lr,
                               alpha=alpha, eps=eps, momentum=momentum)

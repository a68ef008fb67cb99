"""Optimizers with the seed's "no weight decay on biases and norm layers" parameter groups."""
from __future__ import annotations

import torch
from torch import nn

from aicore.registry import OPTIMIZERS


def param_groups(model: nn.Module, weight_decay: float, no_decay_bias_norm: bool = True) -> list[dict]:
    """Split trainable parameters: 1-D tensors (biases, norm scales/shifts) get no weight decay.

    Decaying a BatchNorm scale or a bias only shrinks it toward zero without regularising what
    the network computes, which hurts small-data training in particular.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if no_decay_bias_norm and (p.ndim <= 1 or name.endswith(".bias")):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


@OPTIMIZERS.register("SGD")
def sgd(model: nn.Module, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4,
        nesterov: bool = True, no_decay_bias_norm: bool = True) -> torch.optim.Optimizer:
    return torch.optim.SGD(param_groups(model, weight_decay, no_decay_bias_norm), lr=lr,
                           momentum=momentum, nesterov=nesterov and momentum > 0)


@OPTIMIZERS.register("AdamW")
def adamw(model: nn.Module, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
          eps: float = 1e-8, weight_decay: float = 0.05,
          no_decay_bias_norm: bool = True) -> torch.optim.Optimizer:
    return torch.optim.AdamW(param_groups(model, weight_decay, no_decay_bias_norm), lr=lr,
                             betas=tuple(betas), eps=eps)


@OPTIMIZERS.register("Adam")
def adam(model: nn.Module, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
         eps: float = 1e-8, weight_decay: float = 0.0,
         no_decay_bias_norm: bool = True) -> torch.optim.Optimizer:
    return torch.optim.Adam(param_groups(model, weight_decay, no_decay_bias_norm), lr=lr,
                            betas=tuple(betas), eps=eps)


@OPTIMIZERS.register("RMSprop")
def rmsprop(model: nn.Module, lr: float = 1e-3, alpha: float = 0.9, eps: float = 1e-3,
            momentum: float = 0.9, weight_decay: float = 1e-5,
            no_decay_bias_norm: bool = True) -> torch.optim.Optimizer:
    # eps and alpha as in the TF/timm RMSprop recipes that made RMSprop work for mobile nets
    return torch.optim.RMSprop(param_groups(model, weight_decay, no_decay_bias_norm), lr=lr,
                               alpha=alpha, eps=eps, momentum=momentum)

"""Learning-rate schedules with linear warm-up, stepped once per optimizer step.

Configs speak in epochs (``warmup_epochs``, ``milestones``); the schedules convert to steps, so
changing the batch size or dataset size does not silently change the schedule's shape.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch.optim.lr_scheduler import LambdaLR

from aicore.errors import ConfigError
from aicore.registry import SCHEDULERS


def _with_warmup(fn: Callable[[int], float], warmup: int, warmup_ratio: float) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            alpha = step / max(1, warmup)
            return (warmup_ratio * (1 - alpha) + alpha) * fn(warmup)
        return fn(step)
    return factor


def _steps(epochs: float, iters_per_epoch: int) -> int:
    return int(round(epochs * iters_per_epoch))


@SCHEDULERS.register("cosine")
def cosine(optimizer: torch.optim.Optimizer, epochs: int, iters_per_epoch: int,
           warmup_epochs: float = 0.0, warmup_ratio: float = 0.01,
           min_lr_ratio: float = 0.01) -> LambdaLR:
    total, warmup = _steps(epochs, iters_per_epoch), _steps(warmup_epochs, iters_per_epoch)

    def fn(step: int) -> float:
        t = min(1.0, max(0, step - warmup) / max(1, total - warmup))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    return LambdaLR(optimizer, _with_warmup(fn, warmup, warmup_ratio))


@SCHEDULERS.register("multistep")
def multistep(optimizer: torch.optim.Optimizer, epochs: int, iters_per_epoch: int,
              milestones: Sequence[float] = (), gamma: float = 0.1, warmup_epochs: float = 0.0,
              warmup_ratio: float = 0.01) -> LambdaLR:
    if any(m <= 0 or m > epochs for m in milestones):
        raise ConfigError(f"scheduler.milestones {list(milestones)}: each must be an epoch in "
                          f"(0, {epochs}]")
    bounds = sorted(_steps(m, iters_per_epoch) for m in milestones)
    warmup = _steps(warmup_epochs, iters_per_epoch)
    return LambdaLR(optimizer, _with_warmup(
        lambda s: gamma ** sum(s >= b for b in bounds), warmup, warmup_ratio))


@SCHEDULERS.register("step")
def step(optimizer: torch.optim.Optimizer, epochs: int, iters_per_epoch: int, step_epochs: float = 30,
         gamma: float = 0.1, warmup_epochs: float = 0.0, warmup_ratio: float = 0.01) -> LambdaLR:
    size, warmup = max(1, _steps(step_epochs, iters_per_epoch)), _steps(warmup_epochs, iters_per_epoch)
    return LambdaLR(optimizer, _with_warmup(lambda s: gamma ** (s // size), warmup, warmup_ratio))


@SCHEDULERS.register("poly")
def poly(optimizer: torch.optim.Optimizer, epochs: int, iters_per_epoch: int, power: float = 0.9,
         warmup_epochs: float = 0.0, warmup_ratio: float = 0.01, min_lr_ratio: float = 0.0) -> LambdaLR:
    total, warmup = _steps(epochs, iters_per_epoch), _steps(warmup_epochs, iters_per_epoch)

    def fn(s: int) -> float:
        t = min(1.0, max(0, s - warmup) / max(1, total - warmup))
        return min_lr_ratio + (1 - min_lr_ratio) * (1 - t) ** power
    return LambdaLR(optimizer, _with_warmup(fn, warmup, warmup_ratio))


@SCHEDULERS.register("constant")
def constant(optimizer: torch.optim.Optimizer, epochs: int, iters_per_epoch: int,
             warmup_epochs: float = 0.0, warmup_ratio: float = 0.01) -> LambdaLR:
    warmup = _steps(warmup_epochs, iters_per_epoch)
    return LambdaLR(optimizer, _with_warmup(lambda s: 1.0, warmup, warmup_ratio))

"""Detection training hooks (add them under ``train.hooks``).

CloseMosaicHook: mosaic/mixup images look unlike real ones (cut objects, seams, doubled
scenes). Training the last few epochs on plain images lets the model settle on the real
distribution; YOLOX also switches on its extra L1 box loss at that point.
MultiScaleHook: a new training resolution every few iterations, so the model sees objects at
more scales than the dataset holds (images and boxes are resized on the fly).
"""
from __future__ import annotations

import random
from typing import Sequence

from loguru import logger

from aicore.data.loaders import restart_workers
from aicore.engine.hooks import Hook
from aicore.errors import ConfigError
from aicore.registry import HOOKS


@HOOKS.register("CloseMosaicHook")
class CloseMosaicHook(Hook):
    """Turns mosaic and mixup off for the last `epochs` epochs (and on before them, so a resumed
    run lands in the right phase), and enables the YOLOX L1 loss with them if `l1_loss`."""

    priority = 5  # before the epoch's data loader starts (it copies the dataset to workers)

    def __init__(self, epochs: int = 15, l1_loss: bool = True,
                 priority: int | None = None) -> None:
        super().__init__(priority)
        if int(epochs) < 0:
            raise ConfigError(f"CloseMosaicHook.epochs = {epochs}: must be >= 0")
        self.epochs, self.l1_loss = int(epochs), bool(l1_loss)

    def before_epoch(self, trainer) -> None:
        closing = trainer.epoch >= trainer.max_epoch - self.epochs
        dataset = trainer.train_set
        if hasattr(dataset, "strong_aug") and dataset.strong_aug == closing:
            dataset.strong_aug = not closing
            restart_workers(trainer.train_loader)  # persistent workers hold the old copy
            if closing:
                logger.info(f"epoch {trainer.epoch + 1}: mosaic/mixup off for the last "
                            f"{self.epochs} epochs")
        model = trainer.bare_model
        if self.l1_loss and hasattr(model, "use_l1"):
            model.use_l1 = closing


@HOOKS.register("MultiScaleHook")
class MultiScaleHook(Hook):
    """Every `interval` iterations the training batch is resized to a size drawn from `sizes`
    (each an int for a square or [H, W]; multiples of 32). The draw depends only on the seed
    and the iteration, so every DDP rank and a resumed run pick the same sizes. Validation and
    inference keep data.input_size."""

    priority = 30

    def __init__(self, sizes: Sequence, interval: int = 10, priority: int | None = None) -> None:
        super().__init__(priority)
        parsed = []
        for s in sizes:
            hw = (int(s), int(s)) if isinstance(s, (int, float)) else tuple(int(v) for v in s)
            if len(hw) != 2 or any(v <= 0 or v % 32 for v in hw):
                raise ConfigError(f"MultiScaleHook.sizes: {s!r} is not a positive multiple of 32 "
                                  f"(or [H, W] of them)")
            parsed.append(hw)
        if not parsed or int(interval) < 1:
            raise ConfigError("MultiScaleHook needs at least one size and interval >= 1")
        self.sizes, self.interval = parsed, int(interval)

    def before_iter(self, trainer) -> None:
        step = trainer.epoch * trainer.iters_per_epoch + trainer.inner_iter
        rng = random.Random(int(trainer.cfg.seed) * 100_003 + step // self.interval)
        trainer.train_size = rng.choice(self.sizes)

    def after_train(self, trainer) -> None:
        trainer.train_size = None

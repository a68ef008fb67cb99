"""Hooks react to the trainer's lifecycle. Lower priority runs first.

Default order, and why:
- 10 LRScheduler and 20 EMA run right after each optimizer step, so everything later in the same
  iteration (logging, progress) sees the updated learning rate and averaged weights.
- 40 Evaluation runs before 50 Checkpoint at epoch end, so last.pth records whether this epoch
  is the best one; if evaluation crashes, the previous epoch's last.pth is still intact.
- 70-90 logging, TensorBoard and the progress bar only read state.
- 95 curve plots at the very end.
Each hook can keep state in ``state_dict`` so a resumed run restores it.
"""
from __future__ import annotations

import json
import math
import sys
import time
from typing import Any

import torch
from loguru import logger

from aicore.engine import dist
from aicore.errors import ConfigError
from aicore.registry import HOOKS


class Hook:
    priority = 50

    def __init__(self, priority: int | None = None) -> None:
        if priority is not None:
            self.priority = priority

    def before_train(self, trainer) -> None: ...
    def before_epoch(self, trainer) -> None: ...
    def before_iter(self, trainer) -> None: ...
    def after_iter(self, trainer) -> None: ...
    def after_epoch(self, trainer) -> None: ...
    def after_train(self, trainer) -> None: ...
    def close(self, trainer) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@HOOKS.register("LRSchedulerHook")
class LRSchedulerHook(Hook):
    priority = 10

    def after_iter(self, trainer) -> None:
        if trainer.stepped and trainer.scheduler is not None:
            trainer.scheduler.step()


@HOOKS.register("EMAHook")
class EMAHook(Hook):
    priority = 20

    def after_iter(self, trainer) -> None:
        if trainer.stepped and trainer.ema is not None:
            trainer.ema.update(trainer.bare_model, step=trainer.global_step)


@HOOKS.register("EvalHook")
class EvalHook(Hook):
    """Evaluates the raw weights and, with EMA on, the EMA weights; best.pth follows whichever
    scores higher, and the checkpoint records which one it was."""

    priority = 40

    def __init__(self, interval: int = 1, priority: int | None = None) -> None:
        super().__init__(priority)
        self.interval = interval

    def after_epoch(self, trainer) -> None:
        epoch = trainer.epoch + 1
        if epoch % self.interval and epoch != trainer.max_epoch:
            return
        candidates = [("model", trainer.bare_model)]
        if trainer.ema is not None:
            candidates.append(("ema", trainer.ema.module))
        record: dict[str, Any] = {"epoch": epoch}
        for weights, model in candidates:
            t0 = time.perf_counter()
            metrics = trainer.evaluate(model, trainer.val_loader, trainer.evaluator)
            trainer.last_metrics[weights] = metrics
            if trainer.metric not in metrics:
                from aicore.errors import ConfigError
                raise ConfigError(f"train.best_metric = {trainer.metric!r} is not a metric of "
                                  f"this evaluator; choose from "
                                  f"{', '.join(k for k, v in metrics.items() if _is_num(v))}")
            value = float(metrics[trainer.metric])
            summary = " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if _is_num(v))
            logger.info(f"eval epoch {epoch} [{weights}] {summary} "
                        f"({time.perf_counter() - t0:.1f}s)")
            better = (not trainer.best or
                      (value > trainer.best["value"] if trainer.cfg.train.best_mode == "max"
                       else value < trainer.best["value"]))
            if better and math.isfinite(value):
                trainer.best = {"metric": trainer.metric, "value": value, "epoch": epoch,
                                "weights": weights}
                trainer.is_best = True
            if dist.is_main():
                with open(trainer.work_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                    f.write(json.dumps({"epoch": epoch, "weights": weights, **metrics}) + "\n")
            record.update({(k if weights == "model" else f"ema_{k}"): float(v)
                           for k, v in metrics.items() if _is_num(v)})
        trainer.epoch_record = record


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@HOOKS.register("CheckpointHook")
class CheckpointHook(Hook):
    """Writes checkpoints/last.pth every epoch and best.pth when the epoch is the best so far;
    both hold the complete state (raw and EMA weights, optimizer, scheduler, RNG...)."""

    priority = 50

    def __init__(self, save_interval: int = 0, keep_last: int | None = None,
                 priority: int | None = None) -> None:
        super().__init__(priority)
        if isinstance(save_interval, bool) or not isinstance(save_interval, int) or \
                save_interval < 0:
            raise ConfigError(f"train.save_interval = {save_interval!r}: give a whole number of "
                              f"epochs (0 = only last.pth and best.pth)")
        if keep_last is not None and (isinstance(keep_last, bool) or
                                      not isinstance(keep_last, int) or keep_last < 1):
            raise ConfigError(f"train.keep_last = {keep_last!r}: give how many epoch_N.pth to "
                              f"keep (1 or more), or null to keep all")
        self.save_interval = save_interval
        self.keep_last = keep_last

    def after_epoch(self, trainer) -> None:
        lr = trainer.current_lr()
        trainer.history.append({"epoch": trainer.epoch + 1,
                                **({"lr": lr} if lr is not None else {}),
                                **{f"train_{k}": v for k, v in trainer.epoch_mean_losses.items()},
                                **getattr(trainer, "epoch_record", {})})
        trainer.epoch_record = {}
        # both files at once (all or none): after a failed write (full disk) last.pth and
        # best.pth still agree about which epoch is best
        names = ["last.pth", "best.pth"] if trainer.is_best else ["last.pth"]
        epoch = trainer.epoch + 1
        if self.save_interval and epoch % self.save_interval == 0:
            names.append(f"epoch_{epoch:04d}.pth")  # train.save_interval: one to go back to
        trainer.save_checkpoints(names)
        if self.keep_last and dist.is_main():
            kept = sorted((trainer.work_dir / "checkpoints").glob("epoch_*.pth"))
            for old in kept[:-self.keep_last]:
                old.unlink(missing_ok=True)


@HOOKS.register("LoggerHook")
class LoggerHook(Hook):
    """Iteration lines every `train.log_interval` iterations and at each epoch's last one
    (losses, lr, speed, ETA of the remaining training), and one line per finished epoch."""

    priority = 70

    def __init__(self, interval: int = 20, priority: int | None = None) -> None:
        super().__init__(priority)
        self.interval = interval

    def before_epoch(self, trainer) -> None:
        self.t0 = time.perf_counter()

    def after_iter(self, trainer) -> None:
        i, n = trainer.inner_iter + 1, trainer.iters_per_epoch
        if not self.interval or not (i % self.interval == 0 or i == n):
            return
        losses = " ".join(f"{k}={v:.4f}" for k, v in trainer.last_losses.items())
        lr = trainer.current_lr()
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        per_iter = elapsed / i
        left = per_iter * ((n - i) + n * (trainer.max_epoch - trainer.epoch - 1))
        speed = i * trainer.train_loader.batch_size * dist.world_size() / elapsed
        logger.info(f"epoch {trainer.epoch + 1}/{trainer.max_epoch} iter {i}/{n} {losses}"
                    + (f" lr={lr:.3e}" if lr is not None else "")
                    + f" ({speed:.0f} img/s, ETA {format_duration(left)})")

    def after_epoch(self, trainer) -> None:
        dt = time.perf_counter() - self.t0
        n = trainer.epoch_count * trainer.train_loader.batch_size * dist.world_size()
        losses = " ".join(f"{k}={v:.4f}" for k, v in trainer.epoch_mean_losses.items())
        logger.info(f"epoch {trainer.epoch + 1}/{trainer.max_epoch} done in {dt:.1f}s "
                    f"({n / max(dt, 1e-9):.0f} img/s)" + (f" mean {losses}" if losses else ""))


@HOOKS.register("TensorboardHook")
class TensorboardHook(Hook):
    priority = 80

    def __init__(self, interval: int = 10, priority: int | None = None) -> None:
        super().__init__(priority)
        self.interval = interval
        self.writer = None

    def before_train(self, trainer) -> None:
        if dist.is_main():
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(trainer.work_dir / "tensorboard"))

    def after_iter(self, trainer) -> None:
        if self.writer is None or (trainer.inner_iter + 1) % self.interval:
            return
        step = trainer.epoch * trainer.iters_per_epoch + trainer.inner_iter + 1
        for k, v in trainer.last_losses.items():
            self.writer.add_scalar(f"train/{k}", v, step)
        if trainer.current_lr() is not None:
            self.writer.add_scalar("train/lr", trainer.current_lr(), step)

    def after_epoch(self, trainer) -> None:
        if self.writer is None:
            return
        for weights, metrics in trainer.last_metrics.items():
            for k, v in metrics.items():
                if _is_num(v):
                    self.writer.add_scalar(f"val_{weights}/{k}", v, trainer.epoch + 1)
        self.writer.flush()

    def close(self, trainer) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


@HOOKS.register("ProgressHook")
class ProgressHook(Hook):
    """A tqdm bar per epoch with ETA and the running loss (rank 0, train.progress, and only
    when stderr is a terminal; log lines are then written above the bar by tqdm.write)."""

    priority = 90

    def __init__(self, priority: int | None = None) -> None:
        super().__init__(priority)
        self.bar = None

    def before_epoch(self, trainer) -> None:
        # a bar only on a terminal; in a log file, under nohup or in CI the LoggerHook's
        # periodic lines (with ETA) are the progress report
        if dist.is_main() and trainer.cfg.train.progress and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=trainer.iters_per_epoch, leave=False, dynamic_ncols=True,
                            desc=f"epoch {trainer.epoch + 1}/{trainer.max_epoch}")

    def after_iter(self, trainer) -> None:
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.3f}" for k, v in trainer.last_losses.items()},
                                 refresh=False)
            self.bar.update(1)

    def after_epoch(self, trainer) -> None:
        self.close(trainer)

    def close(self, trainer) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@HOOKS.register("CurvesHook")
class CurvesHook(Hook):
    """Saves loss, metric and learning-rate curves as PNG at the end of training."""

    priority = 95

    def after_train(self, trainer) -> None:
        if dist.is_main() and trainer.history:
            from aicore.engine.plots import plot_curves
            plot_curves(trainer.history, trainer.work_dir)


@HOOKS.register("EarlyStoppingHook")
class EarlyStoppingHook(Hook):
    """Stops when the best metric has not improved for `patience` evaluations."""

    priority = 45

    def __init__(self, patience: int = 10, priority: int | None = None) -> None:
        super().__init__(priority)
        self.patience = patience
        self.bad = 0

    def after_epoch(self, trainer) -> None:
        if not trainer.last_metrics:
            return
        self.bad = 0 if trainer.is_best else self.bad + 1
        if self.bad >= self.patience:
            logger.info(f"early stopping: no improvement in {trainer.metric} for "
                        f"{self.patience} evaluations")
            trainer.stop_requested = True

    def state_dict(self) -> dict[str, Any]:
        return {"bad": self.bad}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bad = int(state.get("bad", 0))


def head_parameters(model) -> list:
    """The classifier head's parameters: timm's get_classifier(), else a head/fc/classifier
    attribute."""
    from aicore.errors import ConfigError
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


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


def default_hooks(cfg) -> list[Hook]:
    t = cfg.train
    return [LRSchedulerHook(), EMAHook(), EvalHook(interval=int(t.eval_interval)),
            CheckpointHook(t.save_interval or 0, t.keep_last),
            LoggerHook(interval=int(t.log_interval)), TensorboardHook(),
            ProgressHook(), CurvesHook()] + (
        [FreezeBackboneHook(int(t.freeze_backbone_epochs))] if t.freeze_backbone_epochs else [])

"""Hooks react to the trainer's lifecycle. Lower priority runs first.

After each epoch the hooks share one ``EpochRecord`` (``trainer.record``, see
``aicore/engine/record.py``), filled in a fixed order of stages:

    evaluate (EvalHook, 40) -> decide (EarlyStoppingHook, 45) -> save (CheckpointHook, 50)
    -> report (MLflow 60, Logger 70, TensorBoard 80, Curves 95)

so the stop decision sees this epoch's metrics and last.pth records whether the epoch was the
best and whether training stops. Priorities order the hooks; ``order_hooks`` refuses, with a
ConfigError naming the config key, a set of hooks whose priorities would break that order
(e.g. ``{"type": "EarlyStoppingHook", "priority": 60}``). Hooks without a stage (custom ones
by default) may go anywhere. Step hooks: LRScheduler (10) and EMA (20) run right after each
optimizer step, so everything later in the iteration sees the new lr and averaged weights.
Each hook can keep state in ``state_dict``; it goes into the checkpoint.
"""
from __future__ import annotations

import json
import math
import sys
import threading
import time
from typing import Any

import torch
from loguru import logger

from aicore.engine import dist
from aicore.engine.record import is_number
from aicore.errors import ConfigError
from aicore.registry import HOOKS

#: the after-epoch stages, in the order they must run
STAGES = ("evaluate", "decide", "save", "report")


class Hook:
    priority = 50
    #: one of STAGES when the hook takes part in the after-epoch order; None = anywhere
    stage: str | None = None

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


def order_hooks(hooks: list[tuple[Hook, str]]) -> list[Hook]:
    """Sort (hook, config key) pairs by priority and check the stage order: every hook of an
    earlier stage must have a lower priority than every hook of a later one."""
    for h, key in hooks:
        if h.stage is not None and h.stage not in STAGES:
            raise ConfigError(f"{key}: {type(h).__name__}.stage = {h.stage!r}; use one of "
                              f"{', '.join(STAGES)} or None")
    ordered = sorted(hooks, key=lambda pair: pair[0].priority)
    staged = [(h, key) for h, key in ordered if h.stage is not None]
    for a, key_a in staged:
        for b, key_b in staged:
            if STAGES.index(a.stage) < STAGES.index(b.stage) and a.priority >= b.priority:
                # blame the one the config set (train.hooks.N) rather than a default
                if key_b != "default" or key_a == "default":
                    late, other, key, side = b, a, key_b, f"after {type(a).__name__}"
                    fix = f"above {a.priority}"
                else:
                    late, other, key, side = a, b, key_a, f"before {type(b).__name__}"
                    fix = f"below {b.priority}"
                raise ConfigError(
                    f"{key}: {type(late).__name__} (stage {late.stage}, priority "
                    f"{late.priority}) must run {side} (stage {other.stage}, priority "
                    f"{other.priority}): after an epoch the hooks run "
                    f"{' -> '.join(STAGES)}. Give it a priority {fix}, or leave its "
                    f"priority out")
    return [h for h, _ in ordered]


@HOOKS.register("LRSchedulerHook")
class LRSchedulerHook(Hook):
    """Records the lr each optimizer step used (``record.lr_steps``), then steps the schedule
    (schedules count optimizer steps, not iterations)."""

    priority = 10

    def after_iter(self, trainer) -> None:
        if not trainer.stepped:
            return
        lr = trainer.current_lr()
        if lr is not None:
            trainer.record.lr_steps.append(float(lr))
        if trainer.scheduler is not None:
            trainer.scheduler.step()


@HOOKS.register("EMAHook")
class EMAHook(Hook):
    priority = 20

    def after_iter(self, trainer) -> None:
        if trainer.stepped and trainer.ema is not None:
            trainer.ema.update(trainer.bare_model, step=trainer.global_step)


@HOOKS.register("EvalHook")
class EvalHook(Hook):
    """Evaluates the raw weights and, with EMA on, the EMA weights, into ``record.metrics``
    (validation loss included as ``val_loss`` where the task computes it) and metrics.jsonl;
    best.pth follows whichever scores higher, and the checkpoint records which one it was.
    ``weights="ema"`` (train.val_weights) scores only the EMA weights, as YOLOX and
    Ultralytics do: one validation pass per epoch instead of two."""

    priority = 40
    stage = "evaluate"

    def __init__(self, interval: int = 1, weights: str = "both",
                 priority: int | None = None) -> None:
        super().__init__(priority)
        if weights not in ("both", "ema"):
            raise ConfigError(f"train.val_weights = {weights!r}: choose 'both' or 'ema'")
        self.interval = interval
        self.weights = weights

    def after_epoch(self, trainer) -> None:
        record = trainer.record
        epoch = record.epoch
        if epoch % self.interval and epoch != trainer.max_epoch:
            record.best = dict(trainer.best)
            return
        candidates = [("model", trainer.bare_model)]
        if trainer.ema is not None:
            ema = ("ema", trainer.ema.module)
            candidates = [ema] if self.weights == "ema" else candidates + [ema]
        record.evaluated = True
        for weights, model in candidates:
            t0 = time.perf_counter()
            metrics = trainer.evaluate(model, trainer.val_loader, trainer.evaluator)
            record.metrics[weights] = metrics
            if is_number(metrics.get("val_loss")):
                record.val_loss[weights] = float(metrics["val_loss"])
            if trainer.metric not in metrics:
                raise ConfigError(f"train.best_metric = {trainer.metric!r} is not a metric of "
                                  f"this evaluator; choose from "
                                  f"{', '.join(k for k, v in metrics.items() if is_number(v))}")
            value = float(metrics[trainer.metric])
            summary = " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if is_number(v))
            logger.info(f"eval epoch {epoch} [{weights}] {summary} "
                        f"({time.perf_counter() - t0:.1f}s)")
            better = (not trainer.best or
                      (value > trainer.best["value"] if trainer.cfg.train.best_mode == "max"
                       else value < trainer.best["value"]))
            if better and math.isfinite(value):
                trainer.best = {"metric": trainer.metric, "value": value, "epoch": epoch,
                                "weights": weights}
                record.is_best = True
            if dist.is_main():
                with open(trainer.work_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                    f.write(json.dumps({"epoch": epoch, "weights": weights, **metrics}) + "\n")
        trainer.last_metrics = dict(record.metrics)
        record.best = dict(trainer.best)


@HOOKS.register("EarlyStoppingHook")
class EarlyStoppingHook(Hook):
    """Stops when the best metric has not improved for `patience` evaluations (epochs without
    evaluation do not count)."""

    priority = 45
    stage = "decide"

    def __init__(self, patience: int = 10, priority: int | None = None) -> None:
        super().__init__(priority)
        self.patience = patience
        self.bad = 0

    def after_epoch(self, trainer) -> None:
        record = trainer.record
        if not record.evaluated:
            return
        self.bad = 0 if record.is_best else self.bad + 1
        if self.bad >= self.patience:
            record.request_stop(f"early stopping: no improvement in {trainer.metric} for "
                                f"{self.patience} evaluations")
            logger.info(record.stop_reason)

    def state_dict(self) -> dict[str, Any]:
        return {"bad": self.bad}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bad = int(state.get("bad", 0))


@HOOKS.register("CheckpointHook")
class CheckpointHook(Hook):
    """Adds the epoch's record to ``trainer.history``, then writes checkpoints/last.pth, and
    best.pth when the record says the epoch is the best so far; both hold the complete state
    (raw and EMA weights, optimizer, scheduler, RNG, history...). The write runs on the
    trainer's checkpoint writer thread from a copy of the state, while the next epoch trains
    (aicore/engine/checkpoint_writer.py)."""

    priority = 50
    stage = "save"

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
        record = trainer.record
        trainer.history.append(record.to_history(trainer.current_lr()))
        # both files at once (all or none): after a failed write (full disk) last.pth and
        # best.pth still agree about which epoch is best
        names = ["last.pth", "best.pth"] if record.is_best else ["last.pth"]
        epoch = record.epoch
        if self.save_interval and epoch % self.save_interval == 0:
            names.append(f"epoch_{epoch:04d}.pth")  # train.save_interval: one to go back to
        keep_last, folder = self.keep_last, trainer.work_dir / "checkpoints"

        def prune() -> None:  # once the new file is in place (on the writer thread)
            for old in sorted(folder.glob("epoch_*.pth"))[:-keep_last]:
                old.unlink(missing_ok=True)

        trainer.save_checkpoints_in_background(names, then=prune if keep_last else None)


def auto_log_interval(iters_per_epoch: int, most: int = 50) -> int:
    """train.log_interval = null: about five iteration lines per epoch, and at least one
    every `most` iterations."""
    return max(1, min(most, math.ceil(iters_per_epoch / 5)))


@HOOKS.register("LoggerHook")
class LoggerHook(Hook):
    """Iteration lines every `interval` iterations (None: ``auto_log_interval``) and at each
    epoch's last one (losses, lr, speed, ETA of the remaining training), and one line per
    finished epoch."""

    priority = 70
    stage = "report"

    def __init__(self, interval: int | None = None, priority: int | None = None) -> None:
        super().__init__(priority)
        self.interval = interval

    def before_train(self, trainer) -> None:
        if self.interval is None:
            self.interval = auto_log_interval(trainer.iters_per_epoch)

    def before_epoch(self, trainer) -> None:
        self.t0 = self.t_iter = time.perf_counter()

    def after_iter(self, trainer) -> None:
        self.t_iter = time.perf_counter()  # the epoch's training ends at its last iteration
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
        """The epoch line: its whole time (training, evaluation, checkpoints) and the training
        iterations' own time and images per second, the figure to compare with other tools."""
        now = time.perf_counter()
        train_s = max(self.t_iter - self.t0, 1e-9)
        record = trainer.record
        # training losses only: the app reads this line's pairs as training curves (the
        # validation loss is on the eval line)
        losses = " ".join(f"{k}={v:.4f}" for k, v in record.train_losses.items())
        logger.info(f"epoch {record.epoch}/{trainer.max_epoch} done in {now - self.t0:.1f}s "
                    f"(training {train_s:.1f}s, {epoch_images(trainer) / train_s:.0f} img/s)"
                    + (f" mean {losses}" if losses else ""))


def epoch_images(trainer) -> int:
    """Images the epoch's training iterations saw, over all ranks: the last batch of an epoch
    may be partial (drop_last off), so a whole epoch counts its sampler's length."""
    loader = trainer.train_loader
    per_rank = trainer.epoch_count * (loader.batch_size or 1)
    if trainer.epoch_count == len(loader) and not loader.drop_last and loader.batch_size:
        per_rank = min(per_rank, len(loader.sampler))
    return per_rank * dist.world_size()


@HOOKS.register("TensorboardHook")
class TensorboardHook(Hook):
    """Scalars ``train/<loss part>`` every `interval` iterations, ``train/lr`` at every
    optimizer step, ``val_<weights>/<metric>`` per evaluated epoch."""

    priority = 80
    stage = "report"

    def __init__(self, interval: int = 10, priority: int | None = None) -> None:
        super().__init__(priority)
        self.interval = interval
        self.writer = None

    def before_train(self, trainer) -> None:
        if dist.is_main():
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(trainer.work_dir / "tensorboard"))

    def after_iter(self, trainer) -> None:
        if self.writer is None:
            return
        if trainer.stepped and trainer.record.lr_steps:
            self.writer.add_scalar("train/lr", trainer.record.lr_steps[-1], trainer.global_step)
        if (trainer.inner_iter + 1) % self.interval:
            return
        step = trainer.epoch * trainer.iters_per_epoch + trainer.inner_iter + 1
        for k, v in trainer.last_losses.items():
            self.writer.add_scalar(f"train/{k}", v, step)

    def after_epoch(self, trainer) -> None:
        if self.writer is None:
            return
        for weights, metrics in trainer.record.metrics.items():
            for k, v in metrics.items():
                if is_number(v):
                    self.writer.add_scalar(f"val_{weights}/{k}", v, trainer.record.epoch)
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


def _import_pyplot() -> None:
    try:
        from aicore.engine.mpl import pyplot
        pyplot()
    except Exception:  # noqa: BLE001 - the plot itself reports it, on the training thread
        pass


@HOOKS.register("CurvesHook")
class CurvesHook(Hook):
    """results.csv (one row per epoch, rewritten after every epoch) and, at the end of
    training, results.png (a panel per quantity). Gradient-free trainers get neither: a
    fitted model has no loss or lr to follow."""

    priority = 95
    stage = "report"

    def before_train(self, trainer) -> None:
        # matplotlib's import (~0.5 s) on a helper thread while the first epoch trains, not
        # after the last one; the training thread spends its time in PyTorch kernels that
        # release the GIL, so the import takes none of its time
        if dist.is_main() and trainer.needs_optimizer:
            threading.Thread(target=_import_pyplot, name="aicore-import-matplotlib",
                             daemon=True).start()

    def after_epoch(self, trainer) -> None:
        if dist.is_main() and trainer.needs_optimizer and trainer.history:
            from aicore.engine.plots import write_results_csv
            write_results_csv(trainer.history, trainer.work_dir / "results.csv")

    def after_train(self, trainer) -> None:
        if dist.is_main() and trainer.needs_optimizer and trainer.history:
            from aicore.engine.plots import plot_results
            names = getattr(trainer.evaluator, "metric_names", None)
            plot_results(trainer.history, trainer.work_dir / "results.png",
                         metrics=list(names) if names else None)


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


def default_hooks(cfg) -> list[Hook]:
    from aicore.engine.freeze_hook import FreezeBackboneHook
    t = cfg.train
    if t.val_weights == "ema" and not t.ema:
        raise ConfigError("train.val_weights = 'ema' scores only the EMA weights, but train.ema "
                          "is off; turn train.ema on or set train.val_weights to 'both'")
    return [LRSchedulerHook(), EMAHook(),
            EvalHook(interval=int(t.eval_interval), weights=str(t.val_weights)),
            CheckpointHook(t.save_interval or 0, t.keep_last),
            LoggerHook(interval=None if t.log_interval is None else int(t.log_interval)),
            TensorboardHook(), ProgressHook(), CurvesHook()] + (
        [FreezeBackboneHook(int(t.freeze_backbone_epochs))] if t.freeze_backbone_epochs else [])

"""BaseTrainer: the training lifecycle shared by every task.

before_train -> for each epoch: before_epoch -> for each batch: before_iter, train_one_iter,
after_iter -> after_epoch -> after_train.

The step itself (AMP, gradient accumulation, clipping, the optimizer step) is inline in
``train_one_iter`` so a reader finds it in one place; everything that merely reacts to a step
(EMA, LR schedule, logging, progress, evaluation, checkpoints) is a hook with a priority.
A task subclass overrides only what differs: how datasets and the model are built, how a batch
becomes a loss, how a batch becomes predictions, and its reports.
"""
from __future__ import annotations

import json
import math
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from dotmap import DotMap
from loguru import logger
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset

from aicore import config as C
from aicore.data.loaders import set_epoch, stop_workers
from aicore.engine import checkpoint as ckpt_io
from aicore.engine import dist, memory
from aicore.engine.checkpoint_writer import CheckpointWriter
from aicore.engine.logging import add_file_sink, remove_file_sink
from aicore.engine.logging import start_buffer as start_log_buffer
from aicore.engine.record import EpochRecord
from aicore.engine.components import ComponentsMixin, seed_everything  # noqa: F401 (re-export)
from aicore.engine.resume import CheckpointMixin
from aicore.errors import ConfigError, TrainingDiverged
from aicore.registry import DATASETS, OPTIMIZERS, SCHEDULERS


def _all_finite(outputs: Any) -> bool:
    """True when every floating-point tensor in `outputs` (a tensor, or dicts/lists of them)
    holds only finite numbers."""
    if isinstance(outputs, torch.Tensor):
        return not outputs.is_floating_point() or bool(torch.isfinite(outputs).all())
    if isinstance(outputs, dict):
        return all(_all_finite(v) for v in outputs.values())
    if isinstance(outputs, (list, tuple)):
        return all(_all_finite(v) for v in outputs)
    if isinstance(outputs, np.ndarray) and outputs.dtype.kind == "f":
        return bool(np.isfinite(outputs).all())
    return True


class BaseTrainer(ComponentsMixin, CheckpointMixin):
    """Owns the components of one run and drives the lifecycle. Task subclasses fill in the
    methods marked "task" below."""

    task: str = ""
    #: evaluator metric used for best.pth when train.best_metric is not set
    default_metric: str = ""

    @property
    def needs_optimizer(self) -> bool:
        """False for a gradient-free task (TaskSpec.gradient_free: anomaly models are fitted,
        not trained): no loss, optimizer, scheduler or scaler is built, and the model is not
        wrapped in DDP."""
        from aicore.tasks.spec import find_task
        spec = find_task(self.cfg.get("task") or self.task)
        return not (spec is not None and spec.gradient_free)
    #: True: 8-bit images are resized as float32 (no rounding to whole grey levels) in the
    #: protocol's preprocess() and, through the manifest's "resize_precision", in the deploy
    #: runtime; the task's datasets must resize the same way
    resize_in_float: bool = False
    #: True: a shrinking resize is antialiased (deploy.preprocess.resize_antialiased), in the
    #: same three places (manifest "resize_antialias"); the task's datasets must do the same
    resize_antialias: bool = False

    def __init__(self, cfg: DotMap) -> None:
        self.cfg = cfg
        self.work_dir = Path(cfg.work_dir)
        self.device = torch.device("cpu")
        self.model: nn.Module | None = None
        self.ema = None
        self.classes: list[str] = []
        self.hooks: list[Any] = []
        self.epoch = 0  # 0-based index of the epoch in progress (= epochs finished before it)
        self.start_epoch = 0
        self.max_epoch = int(cfg.train.epochs)
        self.global_step = 0  # optimizer steps taken
        self.inner_iter = 0
        self.best: dict[str, Any] = {}
        self.history: list[dict[str, float]] = []  # one entry per epoch, for curves
        self.stepped = False  # did the last iteration step the optimizer
        self.last_losses: dict[str, float] = {}
        self.last_metrics: dict[str, Any] = {}  # the latest evaluation, by weights
        self.record = EpochRecord(epoch=0)  # the epoch the hooks are working on
        self.checkpoint_writer = CheckpointWriter()  # CheckpointHook's writes, off the loop

    # ------------------------------------------------------------------------------------
    # task: building and running. Subclasses override these.

    @classmethod
    def sub_runs(cls, cfg: DotMap, mode: str) -> list[tuple[str, DotMap]]:
        """task: the independent runs one config stands for in `mode` (cfg.mode, passed by
        the caller), as (name, config) with their own work_dir (anomaly: one model per product
        category); [] = the config is one run."""
        return []

    @classmethod
    def summarize_runs(cls, cfg: DotMap, mode: str, results: dict[str, Any]) -> None:
        """task: after all sub-runs of `mode`, e.g. a table over them; `results` maps each
        run's name to what its mode returned."""

    def build_dataset(self, split: str, train: bool, **overrides: Any) -> Dataset:
        """The dataset of one split: ``data.dataset`` merged with ``data.<split>.dataset``, plus
        what the framework knows (root, split, channels, transforms, input size, normalisation).
        A task overrides this only to change that recipe (``overrides`` replace any argument)."""
        data = self.cfg.data
        supplied = dict(root=data.root, split=split, in_channels=int(data.in_channels),
                        transform=self.transform(split, train), input_size=list(data.input_size),
                        mean=data.mean or None, std=data.std or None)
        supplied.update(overrides)
        return C.build(self.dataset_node(split, train), DATASETS, f"data.{split}.dataset",
                       self.cfg, **supplied)

    def dataset_node(self, split: str, train: bool) -> dict:
        """task: the dataset's config node for a split (e.g. without training-only options)."""
        return self.data_cfg(split)

    def collate_fn(self):
        """task: None for default stacking; detection returns its own."""
        return None

    def forward_loss(self, batch: Any) -> dict[str, torch.Tensor]:
        """task: one batch -> {"loss": total, other named parts...} (inside autocast)."""
        raise NotImplementedError

    @torch.no_grad()
    def predict_batch(self, model: nn.Module, batch: Any) -> tuple[Any, Any]:
        """task: one batch -> (outputs, targets) in the evaluator's format."""
        raise NotImplementedError

    @torch.no_grad()
    def predict_and_loss(self, model: nn.Module, batch: Any) -> tuple[Any, Any, Any]:
        """task: predict_batch plus the batch's loss under `model` (eval mode, no grad), as
        {"loss": tensor, ...}, for the validation loss; best from the same forward pass. The
        default returns None for the loss: the task reports no validation loss."""
        outputs, targets = self.predict_batch(model, batch)
        return outputs, targets, None

    def model_kwargs(self) -> dict[str, Any]:
        """Arguments the framework supplies to the model constructor."""
        return {"in_chans": int(self.cfg.data.in_channels), "num_classes": len(self.classes)}

    def loss_kwargs(self) -> dict[str, Any]:
        return {"num_classes": len(self.classes)}

    # task: the eval report (demo and export belong to the task's TaskProtocol)

    def write_eval_report(self, model: nn.Module, evaluator, dataset, metrics: dict,
                          out: Path) -> None:
        """task: plots and per-sample files under work_dir/eval (metrics.json is written);
        `model` is the evaluated one, for reports that need another pass (t-SNE)."""

    # ------------------------------------------------------------------------------------
    # building blocks shared by training and eval

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader, evaluator) -> dict[str, Any]:
        """Run `model` over `loader` and return the evaluator's metrics, gathered over ranks.
        On the validation split during training, the metrics include ``val_loss``: the mean
        per sample of ``predict_and_loss``'s loss, where the task computes one."""
        was_training = model.training
        model.eval()
        evaluator.reset()
        finite = True
        with_loss = (self.needs_optimizer and getattr(self, "loss_fn", None) is not None
                     and loader is getattr(self, "val_loader", None))
        loss_sum = torch.zeros(2, dtype=torch.float64)  # (sum of loss * samples, samples)
        for batch in loader:
            with self.autocast():
                if with_loss:
                    outputs, targets, losses = self.predict_and_loss(model, batch)
                else:
                    (outputs, targets), losses = self.predict_batch(model, batch), None
            finite = finite and _all_finite(outputs)
            if finite:
                evaluator.update(outputs, targets)
            if losses is not None:
                n = len(batch[0])
                loss_sum += torch.tensor([float(losses["loss"]) * n, n], dtype=torch.float64)
        model.train(was_training)
        flag = torch.tensor(float(finite), device=self.device)
        if dist.is_dist():  # every rank stops together, or the others hang in the gather
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        if flag.item() < 1:
            if loader is getattr(self, "val_loader", None):
                saved = (f"checkpoints/last.pth still holds epoch {self.epoch}"
                         if self.epoch > 0 else "no checkpoint was written")
                raise TrainingDiverged(
                    f"the model's outputs on the validation data became non-finite (NaN or inf) "
                    f"after epoch {self.epoch + 1}, although the training loss was finite; "
                    f"stopped without saving, {saved}. Lower optimizer.lr, add warm-up "
                    f"(scheduler.warmup_epochs) or set train.clip_grad")
            raise TrainingDiverged("the model's outputs are not finite (NaN or inf) on this data; "
                                   "the checkpoint holds diverged weights: evaluate an earlier "
                                   "one or retrain with a lower optimizer.lr")
        metrics = evaluator.compute()
        if with_loss:
            if dist.is_dist():
                loss_sum = loss_sum.to(self.device)
                torch.distributed.all_reduce(loss_sum)
            if loss_sum[1] > 0:
                metrics["val_loss"] = float(loss_sum[0] / loss_sum[1])
        return metrics

    # ------------------------------------------------------------------------------------
    # the lifecycle

    def train(self) -> dict[str, Any]:
        try:
            self.before_train()
            if self.already_finished:
                return self.best
            for self.epoch in range(self.start_epoch, self.max_epoch):
                self.before_epoch()
                self.train_in_epoch()
                self.after_epoch()
                if self.record.stop:
                    logger.info(f"training stopped early by a hook after epoch {self.epoch + 1}"
                                + (f" ({self.record.stop_reason})" if self.record.stop_reason
                                   else ""))
                    break
            self.finish_checkpoint_writes()  # a failed last write stops here; hooks see files
            self.after_train()
        except BaseException:
            self.finish_checkpoint_writes(failing=True)  # files complete before the error shows
            raise
        finally:
            for hook in self.hooks:
                hook.close(self)
            for loader in (getattr(self, "train_loader", None), getattr(self, "val_loader", None)):
                if loader is not None:
                    stop_workers(loader)  # not left to the garbage collector
            if self.reusing_memory:
                memory.release()
            remove_file_sink()
            if self.lock is not None:
                self.lock.release()
        return self.best

    @property
    def stop_requested(self) -> bool:
        """A hook's request to end training after this epoch: ``record.stop``."""
        return self.record.stop

    @stop_requested.setter
    def stop_requested(self, value: bool) -> None:
        self.record.stop = bool(value)

    @property
    def is_best(self) -> bool:
        """Did this epoch's evaluation set a new best: ``record.is_best``."""
        return self.record.is_best

    @is_best.setter
    def is_best(self, value: bool) -> None:
        self.record.is_best = bool(value)

    already_finished = False  # train.resume of a run that had reached train.epochs
    lock = None
    reusing_memory = False  # train.reuse_memory took effect (aicore/engine/memory.py)

    def before_train(self) -> None:
        cfg = self.cfg
        self.setup_device()
        # a gradient-free fit is one pass with no steps to reuse memory between: left alone
        self.reusing_memory = bool(cfg.train.reuse_memory) and self.needs_optimizer and \
            memory.keep_freed_memory()
        if dist.is_main():
            start_log_buffer()  # what is logged before train.log exists goes to its top
        # Everything that can fail on bad input is built before anything is written, so a
        # mistake never leaves a half-made run folder or touches an earlier run's files.
        self.train_set = self.build_dataset("train", train=True)
        self.classes = list(self.train_set.classes)
        self.val_set = self.build_dataset("val", train=False)
        if list(getattr(self.val_set, "classes", self.classes)) != self.classes:
            raise ConfigError(f"the val split's classes {self.val_set.classes} differ from the "
                              f"train split's {self.classes}; both must use the same labels")
        self.model = self.build_model()
        self.init_report = None
        if cfg.model.get("init_from"):  # its report is logged once train.log is open
            self.init_report = ckpt_io.load_for_finetune(
                self.model, str(cfg.model.init_from), self.input_normalization(), log=False)
        self.model.to(self.device)
        if cfg.train.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.loss_fn = self.optimizer = self.scheduler = self.scaler = None
        if self.needs_optimizer:
            self.loss_fn = self.build_loss()
        # loaders after the model and loss: data.batch_size = -1 measures what fits
        self.train_loader = self.build_loader(self.train_set, train=True)
        self.val_loader = self.build_loader(self.val_set, train=False)
        self.iters_per_epoch = len(self.train_loader)
        if self.iters_per_epoch == 0:
            raise ConfigError(f"the train split has {len(self.train_set)} samples, fewer than "
                              f"one batch on each of {dist.world_size()} processes; lower "
                              f"data.batch_size")
        if self.needs_optimizer:
            self.optimizer = C.build(cfg.optimizer, OPTIMIZERS, "optimizer", cfg,
                                     model=self.model)
            self.scheduler = (C.build(cfg.scheduler, SCHEDULERS, "scheduler", cfg,
                                      optimizer=self.optimizer, epochs=self.max_epoch,
                                      iters_per_epoch=math.ceil(self.iters_per_epoch /
                                                                int(cfg.train.accumulate)))
                              if cfg.scheduler else None)
            self.scaler = torch.amp.GradScaler(self.device.type,
                                               enabled=cfg.train.amp == "fp16")
        self.evaluator = self.build_evaluator()
        self.metric = cfg.train.best_metric or self.default_metric
        known = getattr(self.evaluator, "metric_names", None)
        if known and self.metric not in known:
            raise ConfigError(f"train.best_metric = {self.metric!r}{C.where(cfg, 'train.best_metric')}"
                              f" is not a metric of {type(self.evaluator).__name__}; choose one "
                              f"of {', '.join(known)}")
        self.build_ema()
        self.build_extras()
        self.hooks = self.build_hooks()

        resume_path = self.resume_path()
        if resume_path is not None:
            self.load_resume(resume_path)
        self.check_work_dir(resume=resume_path is not None)
        if resume_path is not None and self.start_epoch >= self.max_epoch:
            # nothing to train: config.json, curves and tensorboard files stay as they are
            self.already_finished = True
            logger.warning(f"{resume_path} already finished {self.start_epoch} epochs "
                           f"(train.epochs = {self.max_epoch}); nothing to do, no file was "
                           f"changed. Raise train.epochs to train longer")
            return

        if dist.is_main():
            from aicore.engine.workdir import WorkDirLock, ensure_dir
            ensure_dir(self.work_dir, "work_dir")
            self.lock = WorkDirLock(self.work_dir)
            self.lock.acquire()
            ensure_dir(self.work_dir / "checkpoints", "work_dir")
            ckpt_io.remove_orphaned_temps(self.work_dir / "checkpoints")
            self.trim_metrics_log(self.start_epoch)
            (self.work_dir / "config.json").write_text(
                json.dumps(C.to_dict(cfg), indent=2), encoding="utf-8")
            add_file_sink(self.work_dir / "train.log")
        if self.init_report is not None:
            ckpt_io.log_finetune_report(self.init_report)
        if cfg.train.sync_bn and dist.is_dist():
            if self.device.type == "cuda":
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            else:
                logger.warning("train.sync_bn is ignored on CPU: PyTorch's SyncBatchNorm runs on "
                               "CUDA only (BatchNorm statistics are synced from rank 0 after "
                               "every epoch instead)")
        self.wrap_ddp()
        logger.info(f"task={self.task} model={cfg.model.type} classes={len(self.classes)} "
                    f"train={len(self.train_set)} val={len(self.val_set)} device={self.device} "
                    f"world_size={dist.world_size()} amp={cfg.train.amp or 'off'}")
        logger.info("hooks: " + ", ".join(f"{type(h).__name__}({h.priority})" for h in self.hooks))
        self.call_hooks("before_train")

    def build_extras(self) -> None:
        """task: training strategies built after the model and before anything is written
        (so their bad input, e.g. a missing teacher checkpoint, damages nothing)."""

    def call_hooks(self, name: str) -> None:
        for hook in self.hooks:
            getattr(hook, name)(self)

    def before_epoch(self) -> None:
        set_epoch(self.train_loader, self.epoch)
        self.model.train()
        self.record = EpochRecord(epoch=self.epoch + 1)
        self.call_hooks("before_epoch")

    def train_in_epoch(self) -> None:
        self.epoch_losses: dict[str, float] = {}
        self.epoch_count = 0
        for self.inner_iter, batch in enumerate(self.train_loader):
            self.before_iter()
            self.train_one_iter(batch)
            self.after_iter()

    def before_iter(self) -> None:
        self.call_hooks("before_iter")

    def train_one_iter(self, batch: Any) -> None:
        accumulate = int(self.cfg.train.accumulate)
        last_of_epoch = self.inner_iter + 1 == self.iters_per_epoch
        self.stepped = (self.inner_iter + 1) % accumulate == 0 or last_of_epoch
        # DDP all-reduces gradients in backward; skip that on accumulation-only iterations.
        sync = nullcontext() if self.stepped or not isinstance(self.model, DDP) \
            else self.model.no_sync()
        with sync:
            with self.autocast():
                losses = self.forward_loss(batch)
            loss = losses["loss"]
            self.check_finite(loss, losses)
            self.scaler.scale(loss / accumulate).backward()
        if self.stepped:
            clip = self.cfg.train.clip_grad
            if clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), float(clip))
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.global_step += 1
        self.last_losses = {k: float(v.detach()) for k, v in losses.items()}
        for k, v in self.last_losses.items():
            self.epoch_losses[k] = self.epoch_losses.get(k, 0.0) + v
        self.epoch_count += 1

    def check_finite(self, loss: torch.Tensor, losses: dict[str, torch.Tensor]) -> None:
        finite = torch.isfinite(loss.detach()).float()
        if dist.is_dist():  # every rank must stop together, or the others hang in all-reduce
            finite = finite.to(self.device)
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        if finite.item() < 1:
            parts = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
            saved = (f"checkpoints/last.pth still holds epoch {self.epoch}"
                     if self.epoch > 0 else "no checkpoint was written")
            raise TrainingDiverged(
                f"the loss became non-finite at epoch {self.epoch + 1}, iteration "
                f"{self.inner_iter + 1} ({parts or float(loss)}); stopped without saving, "
                f"{saved}. Lower optimizer.lr, add warm-up (scheduler.warmup_epochs), set "
                f"train.clip_grad, or check the labels and images of this batch")

    def after_iter(self) -> None:
        self.call_hooks("after_iter")

    def after_epoch(self) -> None:
        self.sync_buffers()
        self.epoch_mean_losses = {k: v / max(1, self.epoch_count)
                                  for k, v in self.epoch_losses.items()}
        self.record.train_losses = dict(self.epoch_mean_losses)
        self.call_hooks("after_epoch")

    def sync_buffers(self) -> None:
        """Copy rank 0's buffers (BatchNorm statistics) to every rank.

        DDP keeps parameters identical, but each rank updates its BatchNorm statistics from its
        own last batches; evaluating and checkpointing after this makes every rank hold, score
        and save the very same model.
        """
        if not dist.is_dist():
            return
        modules = [self.bare_model] + ([self.ema.module] if self.ema is not None else [])
        for module in modules:
            for buf in module.buffers():
                torch.distributed.broadcast(buf.data, src=0)

    def after_train(self) -> None:
        self.call_hooks("after_train")
        if self.best:
            logger.info(f"best {self.best['metric']} = {self.best['value']:.4f} at epoch "
                        f"{self.best['epoch']} ({self.best['weights']} weights)")

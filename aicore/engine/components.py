"""The components a BaseTrainer builds from the config, shared by training and eval: the
device and seeding, datasets' transforms, loaders (batch size from `resolve_batch_size`), the
model, loss, evaluator, EMA, hooks, AMP autocast and the DDP wrapper. Mixed into BaseTrainer;
a task overrides `model_kwargs`, `loss_kwargs`, `sample_weights`, `collate_fn` and friends
rather than these.
"""
from __future__ import annotations

import random
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from dotmap import DotMap
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset

from aicore import config as C
from aicore.data.loaders import build_loader
from aicore.engine import dist
from aicore.errors import ConfigError
from aicore.registry import EVALUATORS, HOOKS, LOSSES, MODELS


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False



class ComponentsMixin:
    """Building blocks of BaseTrainer (mixed in; see aicore/engine/trainer.py)."""

    def transform(self, split: str, train: bool):
        """The albumentations pipeline of a split."""
        from aicore.data.transforms import build_pipeline
        nodes = self.cfg.data[split].transforms or []
        return build_pipeline([n.toDict() if hasattr(n, "toDict") else n for n in nodes],
                              f"data.{split}.transforms")

    def input_normalization(self) -> dict[str, Any]:
        """{"mean", "std"} of the model's input (data.mean/std, else the defaults)."""
        from aicore.data.transforms import default_mean_std
        data = self.cfg.data
        mean, std = default_mean_std(int(data.in_channels), data.mean or None, data.std or None)
        return {"mean": mean, "std": std}

    def setup_device(self) -> None:
        self.device = dist.setup(str(self.cfg.train.device))
        seed_everything(int(self.cfg.seed) + dist.rank(), bool(self.cfg.train.deterministic))
        if self.cfg.train.amp == "fp16" and self.device.type != "cuda":
            raise ConfigError("train.amp = \"fp16\" needs a CUDA device (GradScaler); on CPU use "
                              "\"bf16\" or null")

    def data_cfg(self, split: str) -> dict:
        data = self.cfg.data
        return {**data.dataset.toDict(), **data[split].dataset.toDict()}

    def build_loader(self, dataset: Dataset, train: bool, model: nn.Module | None = None
                     ) -> DataLoader:
        """A loader over `dataset`; its batch size from `resolve_batch_size` (-1 measured with
        `model`, default self.model)."""
        from aicore.engine.autobatch import resolve_batch_size
        data = self.cfg.data
        bs = resolve_batch_size(self, dataset, train, model)
        return build_loader(dataset, bs, train, int(data.num_workers), int(self.cfg.seed),
                            collate_fn=self.collate_fn(), sample_weights=(
                                self.sample_weights(dataset) if train else None))

    def sample_weights(self, dataset: Dataset) -> list[float] | None:
        """Per-sample drawing weights for the training sampler (None = uniform shuffling)."""
        return None

    def build_model(self) -> nn.Module:
        node = {k: v for k, v in self.cfg.model.toDict().items() if k != "init_from"}
        model = C.build(node, MODELS, "model", self.cfg, **self.model_kwargs())
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model.type {self.cfg.model.type!r} did not build an nn.Module")
        return model

    def build_evaluator(self):
        node = self.cfg.evaluator.toDict() or {"type": self.default_evaluator}
        return C.build(node, EVALUATORS, "evaluator", self.cfg, num_classes=len(self.classes),
                       class_names=list(self.classes))

    default_evaluator = ""

    def autocast(self):
        amp = self.cfg.train.amp
        if not amp:
            return nullcontext()
        dtype = torch.bfloat16 if amp == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def input_tensor(self, images: torch.Tensor) -> torch.Tensor:
        """A training batch on the device, in the model's memory format."""
        images = images.to(self.device, non_blocking=True)
        if self.cfg.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    @property
    def bare_model(self) -> nn.Module:
        return self.model.module if isinstance(self.model, DDP) else self.model

    def current_lr(self) -> float | None:
        """The first parameter group's learning rate; None without an optimizer."""
        optimizer = getattr(self, "optimizer", None)
        return optimizer.param_groups[0]["lr"] if optimizer is not None else None

    def wrap_ddp(self) -> None:
        """(Re-)wrap the model in DDP; called again when the set of trainable parameters
        changes (DDP fixes its gradient buckets at construction)."""
        if not dist.is_dist():
            return
        if not self.needs_optimizer:  # no gradients, no DDP: copy rank 0's weights as DDP would
            for tensor in self.bare_model.state_dict().values():
                torch.distributed.broadcast(tensor, src=0)
            return
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.model = DDP(self.bare_model, device_ids=ids)

    def build_loss(self) -> nn.Module:
        counts = getattr(self.train_set, "class_counts", None)
        kwargs = self.loss_kwargs()
        if counts is not None:
            kwargs["class_counts"] = list(counts)
        return C.build(self.cfg.loss, LOSSES, "loss", self.cfg, **kwargs).to(self.device)

    def build_ema(self) -> None:
        ema_cfg = self.cfg.train.ema
        if not ema_cfg:
            return
        from timm.utils import ModelEmaV3
        opts = ema_cfg.toDict() if isinstance(ema_cfg, DotMap) else {}
        unknown = set(opts) - {"decay", "warmup"}
        if unknown:
            raise ConfigError(f"train.ema: unknown key(s) {sorted(unknown)}; use "
                              f"{{\"decay\": 0.9998, \"warmup\": true}}")
        self.ema = ModelEmaV3(self.model, decay=float(opts.get("decay", 0.9998)),
                              use_warmup=bool(opts.get("warmup", True)))

    def build_hooks(self) -> list:
        """The default hooks and train.hooks, by priority; a ConfigError when the priorities
        break the after-epoch stage order (hooks.order_hooks)."""
        from aicore.engine.hooks import default_hooks, order_hooks
        hooks = [(h, "default") for h in default_hooks(self.cfg)]
        for i, node in enumerate(self.cfg.train.hooks):
            hooks.append((C.build(node, HOOKS, f"train.hooks.{i}", self.cfg), f"train.hooks.{i}"))
        return order_hooks(hooks)

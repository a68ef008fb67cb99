"""The batch size of every loader, for every mode and task, in one place (`resolve_batch_size`);
`data.batch_size: -1` (or `data.val_batch_size: -1`) picks the largest batch that fits.

Training on CUDA: batches of doubling size run a real forward and backward pass on real samples
until one would use more than `data.auto_batch_fraction` of the GPU's memory (or runs out of
it); the model's weights and buffers are restored afterwards, so the probe leaves no trace.
Evaluation (eval mode, or validation without a training probe): the same doubling with the
task's inference step (`predict_batch`) under no_grad on the model being evaluated; validation
during training reuses the training batch, which fits with room to spare. A gradient-free fit
(anomaly: one pass collecting statistics, whose memory does not grow with the batch) and any
run on CPU (host RAM is large; speed, not memory, limits the batch) use a fixed default. Under
DDP every rank probes and the smallest answer wins.
"""
from __future__ import annotations

import copy

import torch
from loguru import logger
from torch.utils.data import Dataset

from aicore.engine import dist
from aicore.errors import ConfigError

CPU_DEFAULT = 32
MAX_BATCH = 1024


def resolve_batch_size(trainer, dataset: Dataset, train: bool, model=None) -> int:
    """The batch size of one loader: data.batch_size for training, data.val_batch_size (else
    data.batch_size) for evaluation; -1 = the largest that fits, measured once per kind and
    kept on the trainer. `model`: the model that will run (eval mode's loaded checkpoint);
    default trainer.model."""
    data = trainer.cfg.data
    key = "data.batch_size"
    bs = int(data.batch_size)
    if not train and data.get("val_batch_size") is not None:
        key, bs = "data.val_batch_size", int(data.val_batch_size)
    if bs == -1:
        kind = "train" if train else "eval"
        cache = trainer.__dict__.setdefault("_auto_bs", {})
        if kind not in cache:
            cache[kind] = auto_batch_size(trainer, dataset, train, model, key)
        return cache[kind]
    if bs < 1:
        raise ConfigError(f"{key} = {bs}: use a positive number, or -1 to pick the largest "
                          f"batch that fits")
    return bs


def auto_batch_size(trainer, dataset: Dataset, train: bool = True, model=None,
                    key: str = "data.batch_size") -> int:
    per_rank = max(1, len(dataset) // dist.world_size())
    model = model if model is not None else trainer.model
    cache = trainer.__dict__.get("_auto_bs", {})
    if trainer.device.type != "cuda" or model is None or (train and not trainer.needs_optimizer):
        bs = min(CPU_DEFAULT, per_rank)
        why = "on CPU" if trainer.device.type != "cuda" else \
            "for a gradient-free fit" if model is not None else "without a model to measure"
        logger.info(f"{key} = -1 {why}: using {bs}")
        return bs
    if not train and "train" in cache:  # validation: inference fits where training did
        return min(cache["train"], per_rank)
    fraction = float(trainer.cfg.data.get("auto_batch_fraction") or 0.8)
    bs = _probe_cuda(trainer, model, dataset, fraction, per_rank, train)
    if dist.is_dist():
        t = torch.tensor([bs], device=trainer.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
        bs = int(t.item())
    logger.info(f"{key} = -1: {bs} per process fits in {fraction:.0%} of GPU memory "
                f"({'training' if train else 'inference'})")
    return bs


def _probe_cuda(trainer, model, dataset: Dataset, fraction: float, limit: int,
                train: bool) -> int:
    state = copy.deepcopy(model.state_dict())
    collate = trainer.collate_fn() or torch.utils.data.default_collate
    total = torch.cuda.get_device_properties(trainer.device).total_memory
    best, bs = 1, 2
    was_training = model.training
    model.train(train)
    try:
        while bs <= min(limit, MAX_BATCH):
            batch = collate([dataset[i % len(dataset)] for i in range(bs)])
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(trainer.device)
            try:
                if train:
                    with trainer.autocast():
                        loss = trainer.forward_loss(batch)["loss"]
                    loss.backward()
                else:
                    with torch.no_grad(), trainer.autocast():
                        trainer.predict_batch(model, batch)
            except torch.OutOfMemoryError:
                break
            finally:
                model.zero_grad(set_to_none=True)
            peak = torch.cuda.max_memory_allocated(trainer.device)
            if peak > fraction * total:
                break
            best = bs
            # the next doubling would need about twice the activation memory
            if 2 * peak > fraction * total * 1.05:
                break
            bs *= 2
    finally:
        model.load_state_dict(state)
        model.train(was_training)
        torch.cuda.empty_cache()
    return best

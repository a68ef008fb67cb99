"""`data.batch_size: -1`: the largest training batch that fits.

On CUDA, batches of doubling size run a real forward and backward pass on real samples until
one would use more than `data.auto_batch_fraction` of the GPU's memory (or runs out of it); the
model's weights and buffers are restored afterwards, so the probe leaves no trace. Under DDP
every rank probes and the smallest answer wins. On CPU there is no memory wall worth probing
(host RAM is large and speed, not memory, limits the batch), so a sensible default is used.
"""
from __future__ import annotations

import copy

import torch
from loguru import logger
from torch.utils.data import Dataset

from aicore.engine import dist

CPU_DEFAULT = 32
MAX_BATCH = 1024


def auto_batch_size(trainer, dataset: Dataset) -> int:
    per_rank = max(1, len(dataset) // dist.world_size())
    if trainer.device.type != "cuda":
        bs = min(CPU_DEFAULT, per_rank)
        logger.info(f"data.batch_size = -1 on CPU: using {bs}")
        return bs
    fraction = float(trainer.cfg.data.get("auto_batch_fraction") or 0.8)
    bs = _probe_cuda(trainer, dataset, fraction, per_rank)
    if dist.is_dist():
        t = torch.tensor([bs], device=trainer.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
        bs = int(t.item())
    logger.info(f"data.batch_size = -1: {bs} per process fits in {fraction:.0%} of GPU memory")
    return bs


def _probe_cuda(trainer, dataset: Dataset, fraction: float, limit: int) -> int:
    model = trainer.model
    state = copy.deepcopy(model.state_dict())
    collate = trainer.collate_fn() or torch.utils.data.default_collate
    total = torch.cuda.get_device_properties(trainer.device).total_memory
    best, bs = 1, 2
    was_training = model.training
    model.train()
    try:
        while bs <= min(limit, MAX_BATCH):
            batch = collate([dataset[i % len(dataset)] for i in range(bs)])
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(trainer.device)
            try:
                with trainer.autocast():
                    loss = trainer.forward_loss(batch)["loss"]
                loss.backward()
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

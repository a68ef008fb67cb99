"""DataLoaders whose order and augmentation depend only on (seed, epoch, rank), so a resumed or
distributed run sees exactly the batches an uninterrupted one would."""
from __future__ import annotations

import math
import random
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from aicore.engine import dist


class InferenceSampler(Sampler[int]):
    """Contiguous shards without padding: every sample is evaluated exactly once under DDP."""

    def __init__(self, size: int, rank: int, world: int) -> None:
        per = math.ceil(size / world)
        self.indices = range(rank * per, min(size, (rank + 1) * per))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _reseed_transforms(dataset: Dataset, seed: int) -> None:
    transform = getattr(dataset, "transform", None)
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)
    for hook in getattr(dataset, "reseed_hooks", []):
        hook(seed)


def _worker_init(worker_id: int) -> None:
    # torch seeds each worker with base_seed + worker_id, where base_seed comes from the loader's
    # generator, which set_epoch() re-seeds; albumentations keeps its own RNG, so seed it too.
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    info = torch.utils.data.get_worker_info()
    _reseed_transforms(info.dataset, seed)


class WeightedDistributedSampler(Sampler[int]):
    """Draws len(dataset) indices with replacement, probability proportional to a per-sample
    weight (class balancing), from a (seed, epoch) generator, sharded over ranks."""

    def __init__(self, weights: list[float], num_replicas: int, rank: int, seed: int) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        self.num_replicas, self.rank, self.seed, self.epoch = num_replicas, rank, seed, 0
        self.num_samples = math.ceil(len(weights) / num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        total = self.num_samples * self.num_replicas
        indices = torch.multinomial(self.weights, total, replacement=True, generator=g).tolist()
        return iter(indices[self.rank:total:self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples


def build_loader(dataset: Dataset, batch_size: int, train: bool, num_workers: int, seed: int,
                 collate_fn: Callable | None = None, drop_last: bool | None = None,
                 sample_weights: list[float] | None = None) -> DataLoader:
    if train and sample_weights is not None:
        sampler: Sampler = WeightedDistributedSampler(sample_weights, dist.world_size(),
                                                      dist.rank(), seed)
    elif train:
        # DistributedSampler also serves the single-process case: seed + epoch order either way.
        sampler = DistributedSampler(dataset, num_replicas=dist.world_size(),
                                              rank=dist.rank(), shuffle=True, seed=seed,
                                              drop_last=False)
    else:
        sampler = InferenceSampler(len(dataset), dist.rank(), dist.world_size())
    if drop_last is None:
        # a last batch of one sample breaks BatchNorm; drop it only when that could happen
        per_rank = math.ceil(len(dataset) / dist.world_size())
        drop_last = train and per_rank > batch_size and per_rank % batch_size == 1
    generator = torch.Generator()
    generator.manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                        collate_fn=collate_fn, drop_last=drop_last, generator=generator,
                        pin_memory=torch.cuda.is_available(), worker_init_fn=_worker_init,
                        persistent_workers=False)
    loader.aicore_seed = seed  # type: ignore[attr-defined]
    return loader


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Make epoch `epoch`'s order and augmentation a function of (seed, epoch, rank) only."""
    seed = getattr(loader, "aicore_seed", 0)
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    epoch_seed = (seed * 1_000_003 + epoch * 1009 + dist.rank()) % 2**63
    loader.generator.manual_seed(epoch_seed)
    if loader.num_workers == 0:
        _reseed_transforms(loader.dataset, epoch_seed % 2**32)

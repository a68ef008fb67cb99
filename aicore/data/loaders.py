"""DataLoaders whose order and augmentation depend only on (seed, epoch, rank), so a resumed or
distributed run sees exactly the batches an uninterrupted one would.

Training samples are drawn as (epoch seed, pass, index) keys; the first sample a worker loads
in a new pass re-seeds that worker's generators and the dataset's transforms from (epoch seed,
worker id), whatever the worker loaded before. Batches go to workers in a fixed round-robin
order, so augmentation depends only on (seed, epoch, rank, number of workers). That is what lets
loader workers live for the whole run (persistent_workers): starting two workers anew for every
epoch of train and val cost seconds per epoch on a small CPU machine (a fork of the whole trainer
process each time). Re-seeding per pass rather than per sample keeps the cost per epoch: a fresh
albumentations seed costs ~0.15 ms, as much as loading a small cached image. A hook that changes
the training dataset's settings mid-run (mosaic off) calls restart_workers() so the next epoch's
workers get a fresh copy of it.
"""
from __future__ import annotations

import math
import random
from typing import Any, Callable, Iterator

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


class SeededSamples(Dataset):
    """The training dataset, indexed by (epoch seed, pass, index) keys (EpochSeeds): a worker
    re-seeds Python's, NumPy's and torch's generators and the dataset's transforms when a new
    pass reaches it. The main process (num_workers 0) re-seeds only the transforms, since its
    global generators also drive dropout and mixup."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self._pass: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int, int]) -> Any:
        epoch_seed, pass_id, index = key
        if self._pass != (epoch_seed, pass_id):
            self._pass = (epoch_seed, pass_id)
            info = torch.utils.data.get_worker_info()
            seed = (epoch_seed + (info.id if info is not None else 0)) % 2**32
            if info is not None:
                random.seed(seed)
                np.random.seed(seed)
                torch.default_generator.manual_seed(seed)
            _reseed_transforms(self.dataset, seed)
        return self.dataset[index]

    def __getattr__(self, name: str) -> Any:  # attributes of the wrapped dataset (classes, ...)
        if name in ("dataset", "_pass"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


class EpochSeeds(Sampler[tuple[int, int, int]]):
    """Wraps the order sampler: yields (epoch seed, pass, index), the key SeededSamples expects;
    every iteration over the loader is a new pass, so a partial pass (the train_batch.jpg
    preview) does not shift the epoch that follows."""

    def __init__(self, sampler: Sampler[int], seed: int) -> None:
        self.sampler, self.seed, self.epoch, self.passes = sampler, int(seed), 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        base = epoch_seed(self.seed, self.epoch)
        self.passes += 1
        return ((base, self.passes, int(i)) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]


def epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 1009 + dist.rank()) % 2**63


def _worker_init(worker_id: int) -> None:
    # For the loaders without SeededSamples (train=False: validation, test, the anomaly fit
    # pass), the only seeding of a worker's albumentations RNG and the dataset's reseed_hooks:
    # albumentations seeds itself from OS entropy, and forked workers would share that state, so
    # a random transform there would draw the same numbers in every worker and differ from run
    # to run. Seeded from torch's worker seed (base_seed from the loader's generator, drawn when
    # the workers start, + worker_id). In training loaders SeededSamples re-seeds all of this
    # again before a pass's first sample, so there it changes nothing.
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
    if train:  # augmentation seeded per sample from (seed, epoch, rank, index)
        sampler, dataset = EpochSeeds(sampler, seed), SeededSamples(dataset)
    generator = torch.Generator()
    generator.manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                        collate_fn=collate_fn, drop_last=drop_last, generator=generator,
                        pin_memory=torch.cuda.is_available(), worker_init_fn=_worker_init,
                        persistent_workers=num_workers > 0)
    loader.aicore_seed = seed  # type: ignore[attr-defined]
    return loader


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Make epoch `epoch`'s order and augmentation a function of (seed, epoch, rank) only."""
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    loader.generator.manual_seed(epoch_seed(getattr(loader, "aicore_seed", 0), epoch))


def stop_workers(loader: DataLoader) -> None:
    """Stop the loader's persistent workers now (a later iter() starts new ones), instead of
    whenever its iterator happens to be garbage collected."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None:
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        loader._iterator = None  # DataLoader starts a new iterator (and workers) on next iter()


def restart_workers(loader: DataLoader) -> None:
    """Persistent workers keep the copy of the dataset they were started with: after changing
    the dataset's settings, call this so the next epoch starts workers with the new ones."""
    stop_workers(loader)

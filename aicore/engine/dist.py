"""Distributed helpers. Launch with torchrun; the same code runs as one plain process too."""
from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup(device_pref: str = "auto") -> torch.device:
    """Pick the device and, under torchrun, join the process group (nccl on GPU, gloo on CPU)."""
    use_cuda = torch.cuda.is_available() and device_pref != "cpu"
    if device_pref.startswith("cuda") and not torch.cuda.is_available():
        from aicore.errors import ConfigError
        raise ConfigError(f"train.device = {device_pref!r} but no CUDA device is visible; "
                          f"use \"auto\" or \"cpu\"")
    if launched_by_torchrun() and not is_dist():
        backend = "nccl" if use_cuda else "gloo"
        if use_cuda:
            torch.cuda.set_device(local_rank())
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    if use_cuda:
        index = local_rank() if is_dist() else (int(device_pref.split(":")[1])
                                                 if ":" in device_pref else 0)
        return torch.device("cuda", index)
    return torch.device("cpu")


def cleanup() -> None:
    if is_dist():
        dist.destroy_process_group()


def all_gather_object(obj: Any) -> list[Any]:
    if not is_dist():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


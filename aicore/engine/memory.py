"""Keep freed memory inside the training process (glibc malloc), instead of handing it back to
the operating system after every iteration and faulting it in again for the next one.

PyTorch's CPU allocator takes every tensor from malloc. glibc serves blocks above its mmap
threshold (128 KiB at start, raised as large blocks are freed, at most 32 MiB) with a fresh
mmap and unmaps them on free, and it trims the top of its heap once more than the trim
threshold is free there. A training step frees its activations and gradients and allocates
the same sizes again a moment later, so on CPU every step pays the page faults of tens of
megabytes: on the classification peer benchmark (resnet18, 32 px, batch 64) 3-7 million
faults per 15-epoch run and 15-20 % of the training time (benchmarks/RESULTS.md). While
training, every block comes from the heap (no mmap: the 32 MiB ceiling of the mmap threshold
left a 128 px step's larger activations faulting) and trimming waits for 1 GiB free, so freed
blocks are reused: about 0.1 million faults for the same run. It is what the jemalloc /
tcmalloc advice for CPU training buys, without preloading another allocator.

``train.reuse_memory`` (default true) switches it; nothing is done off Linux/glibc, or when
the user already chose (a glibc threshold variable such as ``MALLOC_TRIM_THRESHOLD_`` or
``GLIBC_TUNABLES`` malloc settings, or jemalloc / tcmalloc preloaded). When
training ends, ``release`` gives the kept memory back (``malloc_trim``) and leaves glibc as
its own adaptive setting would end up (mmap above 32 MiB, trimming at 64 MiB), so a notebook
that trains and then goes on does not keep a gigabyte of free heap.
"""
from __future__ import annotations

import ctypes
import os
import platform
import sys

M_TRIM_THRESHOLD = -1  # mallopt parameter numbers (glibc malloc.h)
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
MMAP_MAX_DEFAULT = 65536
MMAP_THRESHOLD_AFTER = 32 << 20  # glibc's largest accepted value on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_WHILE_TRAINING = 1 << 30
TRIM_AFTER = 2 * MMAP_THRESHOLD_AFTER
_PRELOADED = ("jemalloc", "tcmalloc", "mimalloc")


def _libc():
    """glibc's malloc controls, or None where they do not apply."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_",
                  "MALLOC_MMAP_MAX_")


def user_chose_allocator(environ: dict | None = None) -> str | None:
    """Why the allocator is left as the user set it up, or None."""
    env = os.environ if environ is None else environ
    for name in _USER_SETTINGS:
        if name in env:
            return f"{name} is set"
    if "glibc.malloc" in env.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES sets glibc.malloc"
    preload = env.get("LD_PRELOAD", "")
    for name in _PRELOADED:
        if name in preload:
            return f"{name} is preloaded"
    return None


def keep_freed_memory() -> bool:
    """Tune glibc malloc for a training loop; True when it was done."""
    libc = _libc()
    if libc is None or user_chose_allocator() is not None:
        return False
    # setting any of these stops glibc adapting its thresholds for the rest of the process
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and \
        bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_WHILE_TRAINING))


def release() -> None:
    """After training: hand the kept free memory back; mmap above 32 MiB and trim at 64 MiB
    from now on."""
    libc = _libc()
    if libc is None:
        return
    libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_AFTER)
    libc.mallopt(M_MMAP_MAX, MMAP_MAX_DEFAULT)
    libc.mallopt(M_TRIM_THRESHOLD, TRIM_AFTER)
    libc.malloc_trim(0)

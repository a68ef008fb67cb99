"""The configs that ship with AICore, found by name (``classification/quickstart``).

In a wheel they live in the package (``aicore/configs/``, mapped from the repository's
``configs/`` by setup.py); in a source checkout or an editable install they are the repository's
``configs/`` folder. Light on purpose: no torch, so ``aicore`` commands can resolve names early.
"""
from __future__ import annotations

import os
from pathlib import Path

from aicore.errors import ConfigError


def configs_dir() -> Path | None:
    """The folder holding the shipped configs, or None if this installation has none."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parent / "configs"):
        if (candidate / "_base_").is_dir():
            return candidate
    return None


def shipped_names() -> list[str]:
    root = configs_dir()
    if root is None:
        return []
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.glob("*/*.json")
                  if not p.parent.name.startswith("_"))


def resolve_config(name: str | os.PathLike) -> Path:
    """A config given on the command line or to the API -> the file to read.

    An existing file wins; otherwise the name is looked up among the shipped configs, with or
    without ``.json`` and with or without a leading ``configs/``.
    """
    path = Path(name)
    if path.is_file():
        return path
    root = configs_dir()
    if root is not None and not path.is_absolute():
        rel = path.as_posix()
        if rel.startswith("configs/"):
            rel = rel[len("configs/"):]
        for candidate in (root / rel, root / f"{rel}.json"):
            if candidate.is_file():
                return candidate
    names = shipped_names()
    hint = f" Shipped configs: {', '.join(names)}." if names else ""
    raise ConfigError(f"config file not found: {name} (neither a file nor a shipped config "
                      f"name such as classification/quickstart).{hint}")

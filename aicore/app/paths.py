"""Serving files only from inside the app's roots.

A requested path is joined to a root, resolved (following symlinks) and must still lie
inside the resolved root; anything else (``..``, an absolute path, a symlink pointing out)
is treated as not found, so the answer does not even say whether the file exists.
"""
from __future__ import annotations

from pathlib import Path


class NotInRoot(Exception):
    """The path is outside every allowed root, or does not exist."""


def inside(root: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except (ValueError, OSError, RuntimeError):
        return False
    return True


def safe_join(root: Path, rel: str, must_exist: bool = True) -> Path:
    """root/rel when that is inside root (after resolving symlinks), else NotInRoot."""
    if not rel or "\x00" in rel or Path(rel).is_absolute() or rel.startswith(("/", "\\")):
        raise NotInRoot(rel)
    if any(part == ".." for part in Path(rel).parts):
        raise NotInRoot(rel)
    candidate = root / rel
    if not inside(root, candidate):
        raise NotInRoot(rel)
    if must_exist and not candidate.exists():
        raise NotInRoot(rel)
    return candidate.resolve()


def resolve_any(roots: list[Path], path: str) -> Path:
    """An absolute or root-relative path that lies inside one of `roots` (e.g. an image path
    recorded in a predictions CSV), resolved; NotInRoot otherwise."""
    p = Path(path)
    candidates = [p] if p.is_absolute() else [Path.cwd() / p] + [r / p for r in roots]
    for c in candidates:
        for r in roots:
            if c.exists() and inside(r, c):
                return c.resolve()
    raise NotInRoot(path)

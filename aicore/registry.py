"""Named registries of components, so a JSON config can pick any of them by ``type``.

Each entry remembers where it was defined: a second registration under the same name fails
and names both places, and an unknown name fails with the closest registered names.
"""
from __future__ import annotations

import difflib
import fnmatch
import inspect
import sys
from typing import Any, Callable, Iterator

from aicore.errors import ConfigError


def _origin(obj: Any) -> str:
    """file:line where obj is defined, for messages (slow for a class: inspect parses its
    whole source file, so this is only called when a message or --list needs it)."""
    try:
        file = inspect.getsourcefile(obj) or "?"
        line = inspect.getsourcelines(obj)[1]
        return f"{file}:{line}"
    except (TypeError, OSError):
        return getattr(obj, "__module__", "?")


def _identity(obj: Any) -> str:
    """Where obj comes from, cheaply: its module's file and qualified name. Two registrations
    under one name clash unless they share this (the same definition imported twice)."""
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    file = getattr(module, "__file__", None) or getattr(obj, "__module__", "?")
    return f"{file}:{getattr(obj, '__qualname__', repr(obj))}"


class Registry:
    """A name -> callable table with an optional fallback resolver.

    ``fallback`` lets a registry expose a whole library by name (every albumentations transform,
    every torch optimizer) without registering each one; registered names always win.
    """

    def __init__(self, name: str, fallback: Callable[[str], Any] | None = None,
                 fallback_names: Callable[[], list[str]] | None = None) -> None:
        self.name = name
        self._entries: dict[str, Any] = {}
        self._idents: dict[str, str] = {}  # name -> where it was defined (see _identity)
        self._wheres: dict[str, str | None] = {}  # name -> file:line given to add(), if any
        self._fallback = fallback
        self._fallback_names = fallback_names

    def register(self, name: str | Callable | None = None, *, force: bool = False):
        """Decorator: ``@MODELS.register()`` or ``@MODELS.register("Name")``."""

        def deco(obj, key=None):
            return self.add(key or obj.__name__, obj, force=force)

        if callable(name):  # used as @REG.register without parentheses
            return deco(name)
        return lambda obj: deco(obj, name)

    def add(self, key: str, obj: Any, where: str | None = None, *, force: bool = False) -> Any:
        """Register obj under key, defined at `where` (file:line; found from obj when a
        message needs it if not given); see register()."""
        ident = where or _identity(obj)
        if key in self._entries and not force and self._idents[key] != ident:
            raise ConfigError(
                f"{self.name}: '{key}' is registered twice: first at {self.origin(key)}, "
                f"again at {where or _origin(obj)}. Rename one of them.")
        self._entries[key] = obj
        self._idents[key] = ident
        self._wheres[key] = where
        return obj

    def __contains__(self, key: str) -> bool:
        return key in self._entries or self._resolve_fallback(key) is not None

    def _resolve_fallback(self, key: str):
        if self._fallback is None:
            return None
        try:
            return self._fallback(key)
        except Exception:
            return None

    def get(self, key: str, where: str = "") -> Any:
        if key in self._entries:
            return self._entries[key]
        obj = self._resolve_fallback(key)
        if obj is not None:
            return obj
        close = difflib.get_close_matches(key, self.names(), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        at = f" at '{where}'" if where else ""
        raise ConfigError(
            f"unknown {self.name} type '{key}'{at}.{hint} List them with "
            f"`python main.py --list {self.name.lower()}`; custom components are imported from "
            f"custom_modules/ and the config's custom_imports.")

    def origin(self, key: str) -> str:
        if key not in self._entries:
            return "(library)"
        return self._wheres.get(key) or _origin(self._entries[key])

    def names(self, include_fallback: bool = True) -> list[str]:
        names = set(self._entries)
        if include_fallback and self._fallback_names is not None:
            names.update(self._fallback_names())
        return sorted(names)

    def list(self, pattern: str = "*") -> list[str]:
        return [n for n in self.names() if fnmatch.fnmatchcase(n.lower(), pattern.lower())]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.name}, {len(self._entries)} entries)"


def _albumentations(name: str):
    import albumentations as A
    obj = getattr(A, name, None)
    # single transforms and the containers that nest them (OneOf, SomeOf, Sequential...)
    ok = inspect.isclass(obj) and issubclass(obj, (A.BasicTransform, A.BaseCompose))
    return obj if ok else None


def _albumentations_names() -> list[str]:
    import albumentations as A
    return [n for n in dir(A) if _albumentations(n) is not None]


DATASETS = Registry("datasets")
TRANSFORMS = Registry("transforms", _albumentations, _albumentations_names)
MODELS = Registry("models")
LOSSES = Registry("losses")
OPTIMIZERS = Registry("optimizers")
SCHEDULERS = Registry("schedulers")
EVALUATORS = Registry("evaluators")
HOOKS = Registry("hooks")
TRAINERS = Registry("trainers")
TASKS = Registry("tasks")  # name -> aicore.tasks.spec.TaskSpec

ALL = {r.name: r for r in (DATASETS, TRANSFORMS, MODELS, LOSSES, OPTIMIZERS, SCHEDULERS,
                           EVALUATORS, HOOKS, TRAINERS, TASKS)}

"""What a task is to the framework: one `TaskSpec`, registered in `aicore.registry.TASKS`.

A task package (built-in under aicore/tasks/<name>/, or a file in custom_modules/) calls
`register_task(TaskSpec(...))` on import. Everything that used to be a hard-coded table reads
the spec instead: the `task` choices the config check lists, the trainer a run builds, whether
training needs gradients (a loss and an optimizer), and the config keys only this task has
(their defaults, merged under the user's config, and their value rules, which the config check
and `--schema` use).
"""
from __future__ import annotations

import copy
import difflib
import sys
from dataclasses import dataclass, field
from typing import Any

from aicore.errors import ConfigError
from aicore.registry import TASKS, TRAINERS


@dataclass(frozen=True)
class TaskSpec:
    """One task.

    name: the config's ``task`` value.
    trainer: the BaseTrainer subclass a run of this task uses (``train.trainer`` may name
        another registered trainer).
    protocol: the inference protocol class (what a prediction is, how it is exported and
        drawn), or None while the trainer still carries those methods itself.
    gradient_free: models are fitted, not trained (PaDiM statistics, a PatchCore memory
        bank): a training run needs no loss and no optimizer.
    defaults: the task's config defaults, nested like the config (``{"eval": {"tta":
        None}}``): keys only this task has, and shared keys whose built-in default it changes;
        merged under the user's config for a run of this task.
    rules: dotted key -> ``aicore.config_values.Rule`` for every plain key in ``defaults``.
    """

    name: str
    trainer: type
    protocol: type | None = None
    gradient_free: bool = False
    defaults: dict[str, Any] = field(default_factory=dict)
    rules: dict[str, Any] = field(default_factory=dict)


def register_task(spec: TaskSpec) -> TaskSpec:
    """Register a task; a second task of the same name from another place is an error."""
    if not isinstance(spec, TaskSpec):
        raise ConfigError(f"register_task expects a TaskSpec, got {type(spec).__name__}")
    caller = sys._getframe(1)  # inspect.stack() would read the source of every frame
    return TASKS.add(spec.name, spec, f"{caller.f_code.co_filename}:{caller.f_lineno}")


def task_names() -> list[str]:
    """Every task: the built-ins (imported for this) in their usual order, then whatever
    custom modules registered."""
    from aicore.tasks import BUILTIN_TASKS, import_tasks
    import_tasks()
    return [n for n in BUILTIN_TASKS if n in TASKS] + \
        [n for n in TASKS.names() if n not in BUILTIN_TASKS]


def get_task(name: Any, where: str = "") -> TaskSpec:
    """The registered spec of `name`; an unknown name fails listing every task."""
    if isinstance(name, str) and name in TASKS:
        return TASKS.get(name)
    names = task_names()
    if isinstance(name, str) and name in names:
        return TASKS.get(name)
    close = difflib.get_close_matches(str(name), names, n=1)
    hint = f" Did you mean {close[0]}?" if close else ""
    raise ConfigError(f"'task' = {name!r}{where}: choose one of {', '.join(names)}.{hint} (A "
                      f"task of your own registers itself from custom_modules/ or "
                      f"custom_imports; see notes/engine.md, adding a task.)")


def find_task(name: Any) -> TaskSpec | None:
    """The spec of `name` if it is registered now (imports nothing)."""
    return TASKS.get(name) if isinstance(name, str) and name in TASKS else None


def trainer_class(cfg) -> type:
    """The trainer class a run of this config uses: train.trainer, else the task's."""
    name = cfg.train.get("trainer") if hasattr(cfg, "train") else None
    if name:
        return TRAINERS.get(name, where="train.trainer")
    return get_task(cfg.task).trainer


def merged_defaults(base: dict, *specs: TaskSpec) -> dict:
    """`base` with the specs' task keys added (a copy; the first definition of a key wins)."""
    out = copy.deepcopy(base)
    for spec in specs:
        _fill(out, spec.defaults)
    return out


def _fill(node: dict, defaults: dict) -> None:
    for key, value in defaults.items():
        if key not in node:
            node[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(node[key], dict):
            _fill(node[key], value)


def apply_task_defaults(cfg) -> None:
    """Merge the task's defaults under the loaded config (a DotMap): a key the config files or
    overrides set keeps their value; any other key, a task-only one or a shared one whose
    built-in default the task changes (e.g. train.best_mode), takes the task's default."""
    from dotmap import DotMap
    spec = get_task(cfg.task)
    origins = cfg.get("_origins") or {}
    origins = origins.toDict() if isinstance(origins, DotMap) else dict(origins)

    def fill(node: DotMap, defaults: dict, prefix: str) -> None:
        for key, value in defaults.items():
            path = prefix + key
            if isinstance(value, dict) and value and isinstance(node.get(key), DotMap):
                fill(node[key], value, path + ".")
            elif key not in node or path not in origins:  # origins: every key a file or -o set
                node[key] = DotMap(copy.deepcopy(value), _dynamic=False) \
                    if isinstance(value, dict) else copy.deepcopy(value)
    fill(cfg, spec.defaults, "")

"""Task packages register their components, and their `TaskSpec`, on import.

`BUILTIN_TASKS` is only the table of which module holds each built-in task, so a run can import
just its own: importing every task costs seconds of start-up (scikit-learn, scipy, detection
modules) that a run of one task never uses. Everything else about a task (its trainer, whether
it is gradient-free, its config keys) comes from the registered spec (aicore/tasks/spec.py).
Tasks of your own register themselves from custom_modules/ or the config's custom_imports.

`import_tasks()` imports every built-in task (for `--list`, `--schema`, the app and tests);
`import_tasks(["segmentation"])` imports the shared components and that task only; a name that is
not a built-in task is skipped (a custom module may register it).
"""
import importlib

BUILTIN_TASKS = {"classification": "aicore.tasks.classification",
                 "segmentation": "aicore.tasks.segmentation",
                 "detection": "aicore.tasks.detection",
                 "anomaly": "aicore.tasks.anomaly"}


def import_tasks(tasks=None) -> None:
    """Import the shared components and the given built-in task packages (all when `tasks` is
    None)."""
    import aicore.data.augment  # noqa: F401
    import aicore.losses.classification  # noqa: F401
    import aicore.optim.optimizers  # noqa: F401
    import aicore.optim.schedulers  # noqa: F401
    import aicore.engine.hooks  # noqa: F401
    import aicore.engine.freeze_hook  # noqa: F401
    import aicore.engine.mlflow_hook  # noqa: F401  (imports mlflow only when used)
    names = list(BUILTIN_TASKS) if tasks is None else list(tasks)
    for name in names:
        if isinstance(name, str) and name in BUILTIN_TASKS:
            importlib.import_module(BUILTIN_TASKS[name])

"""Task packages register their components on import.

`import_tasks()` imports them all (for `--list`, the app and tests); `import_tasks(["segmentation"])`
imports only the shared components and that task, which is what a run needs: importing every task
costs seconds of start-up (scikit-learn, scipy, detection modules) that a run of one task never
uses.
"""
import importlib

TASK_MODULES = {"classification": "aicore.tasks.classification",
                "segmentation": "aicore.tasks.segmentation",
                "anomaly": "aicore.tasks.anomaly",
                "detection": "aicore.tasks.detection"}


def import_tasks(tasks=None) -> None:
    """Import the shared components and the given task packages (all when `tasks` is None or
    names a task that does not exist, so the config check can list every valid choice)."""
    import aicore.data.augment  # noqa: F401
    import aicore.losses.classification  # noqa: F401
    import aicore.optim.optimizers  # noqa: F401
    import aicore.optim.schedulers  # noqa: F401
    import aicore.engine.hooks  # noqa: F401
    import aicore.engine.mlflow_hook  # noqa: F401  (imports mlflow only when used)
    names = list(TASK_MODULES) if tasks is None else list(tasks)
    if any(n not in TASK_MODULES for n in names):
        names = list(TASK_MODULES)
    for name in names:
        importlib.import_module(TASK_MODULES[name])

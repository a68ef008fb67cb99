"""Task packages register their components on import; `import_tasks` imports them all."""
import importlib

TASK_MODULES = ["aicore.tasks.classification", "aicore.tasks.segmentation",
                "aicore.tasks.anomaly", "aicore.tasks.detection"]


def import_tasks() -> None:
    import aicore.data.augment  # noqa: F401
    import aicore.losses.classification  # noqa: F401
    import aicore.optim.optimizers  # noqa: F401
    import aicore.optim.schedulers  # noqa: F401
    import aicore.engine.hooks  # noqa: F401
    import aicore.engine.mlflow_hook  # noqa: F401  (imports mlflow only when used)
    for name in TASK_MODULES:
        importlib.import_module(name)

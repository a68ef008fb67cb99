from aicore.tasks.anomaly import datasets, evaluator, models, trainer  # noqa: F401  (register)

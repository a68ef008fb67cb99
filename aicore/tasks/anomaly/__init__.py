from aicore.tasks.anomaly import datasets, evaluator, models, spec, trainer  # noqa: F401  (register)

from aicore.tasks.classification import datasets, evaluator, models, trainer  # noqa: F401  (register)

"""The anomaly task: a gradient-free trainer (models are fitted in one pass, no optimizer)."""
from aicore.tasks.anomaly.protocol import AnomalyProtocol
from aicore.tasks.anomaly.trainer import AnomalyTrainer
from aicore.tasks.spec import TaskSpec, register_task

SPEC = register_task(TaskSpec("anomaly", AnomalyTrainer, protocol=AnomalyProtocol,
                             gradient_free=True))

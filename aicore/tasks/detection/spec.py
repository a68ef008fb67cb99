"""The detection task: its trainer and the config keys only it has."""
from aicore.config_values import Rule
from aicore.tasks.detection.protocol import DetectionProtocol
from aicore.tasks.detection.trainer import DetectionTrainer
from aicore.tasks.spec import TaskSpec, register_task

DEFAULTS = {
    "demo": {"score_thresh": None},  # lowest score drawn and listed (None = 0.3)
    "export": {"nms": False},  # NMS inside the graph ((K, 7) rows, not dense boxes)
}

RULES = {
    "demo.score_thresh": Rule("number", low=0, high=1, nullable=True),
    "export.nms": Rule("bool"),
}

SPEC = register_task(TaskSpec("detection", DetectionTrainer, protocol=DetectionProtocol,
                             defaults=DEFAULTS, rules=RULES))

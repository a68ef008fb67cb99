"""The segmentation task: its trainer and the config keys only it has."""
from aicore.config_values import Rule
from aicore.tasks.segmentation.protocol import SegmentationProtocol
from aicore.tasks.segmentation.trainer import SegmentationTrainer
from aicore.tasks.spec import TaskSpec, register_task

WINDOW_KEYS = {"window": Rule("list", length=2, items=Rule("int", low=1)),
               "overlap": Rule("number", low=0, high=1)}

DEFAULTS = {
    # sliding_window: false | true | {"window": [H, W], "overlap": 0.5}; demo's null = same as
    # eval's. eval's also applies to validation during training.
    "eval": {"sliding_window": False},
    "demo": {"sliding_window": None},
}

RULES = {
    "eval.sliding_window": Rule("dict", alt=("bool",), keys=WINDOW_KEYS),
    "demo.sliding_window": Rule("dict", alt=("bool",), nullable=True, keys=WINDOW_KEYS),
}

SPEC = register_task(TaskSpec("segmentation", SegmentationTrainer,
                              protocol=SegmentationProtocol, defaults=DEFAULTS, rules=RULES))

"""EpochRecord: what one epoch produced, shared by the hooks through ``trainer.record``.

The trainer starts a record in ``before_epoch`` and fills the epoch's mean training losses
before the ``after_epoch`` hooks run. Hooks then fill it in a fixed order of stages (checked
when the hooks are built, see ``hooks.check_stage_order``):

    evaluate  EvalHook: ``metrics``, ``val_loss``, ``is_best``, ``best``
    decide    EarlyStoppingHook (and custom stopping rules): ``stop``, ``stop_reason``
    save      CheckpointHook: appends ``to_history()`` to ``trainer.history``, writes last.pth
    report    Logger, TensorBoard, MLflow, results.csv: read it

During the epoch LRSchedulerHook appends the learning rate of every optimizer step to
``lr_steps`` (before the schedule moves on), so the curve shows the warm-up.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass
class EpochRecord:
    epoch: int  #: 1-based number of the epoch this record is about
    train_losses: dict[str, float] = field(default_factory=dict)  #: epoch means, by part
    lr_steps: list[float] = field(default_factory=list)  #: lr used by each optimizer step
    evaluated: bool = False  #: did evaluation run after this epoch (train.eval_interval)
    #: weights ("model", and "ema" with train.ema) -> the evaluator's metrics
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: weights -> mean validation loss (gradient-trained tasks whose trainer computes it)
    val_loss: dict[str, float] = field(default_factory=dict)
    is_best: bool = False  #: this epoch set a new best (best.pth is written with last.pth)
    best: dict[str, Any] = field(default_factory=dict)  #: the best so far, after this epoch
    stop: bool = False  #: a hook asked to end training after this epoch
    stop_reason: str = ""

    def request_stop(self, reason: str) -> None:
        self.stop = True
        self.stop_reason = self.stop_reason or reason

    def to_history(self, lr: float | None = None) -> dict[str, Any]:
        """The flat entry kept in ``trainer.history`` and the checkpoint (plain types only, so
        ``weights_only`` loading works): ``epoch``, ``lr`` (at the epoch's end), ``lr_steps``,
        ``train_<part>``, the numeric metrics of the raw weights under their own names, the EMA
        weights' as ``ema_<name>``, and ``val_loss`` / ``ema_val_loss``."""
        entry: dict[str, Any] = {"epoch": self.epoch}
        if lr is not None:
            entry["lr"] = float(lr)
        if self.lr_steps:
            entry["lr_steps"] = [float(v) for v in self.lr_steps]
        entry.update({f"train_{k}": float(v) for k, v in self.train_losses.items()})
        for weights, metrics in self.metrics.items():  # val_loss is one of the metrics
            prefix = "" if weights == "model" else f"{weights}_"
            entry.update({prefix + k: float(v) for k, v in metrics.items() if is_number(v)})
        return entry

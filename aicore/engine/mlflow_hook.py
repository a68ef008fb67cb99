"""MLflowHook: one MLflow run per training run (optional extra ``aicore[mlflow]``).

    "train": {"hooks": [{"type": "MLflowHook", "tracking_uri": "sqlite:///mlflow.db",
                         "experiment": "aicore"}]}

Logs the flattened resolved config as parameters, every epoch's record (train losses,
validation loss and metrics, lr at the epoch's end) as metrics at step = epoch, the lr of every
optimizer step as ``lr_step`` at step = optimizer step, and at the end results.png,
results.csv, config.json, train.log and metrics files of work_dir as artifacts; optionally best.pth (``log_checkpoint``)
and the export folder (``log_export``). It talks to the store through ``MlflowClient`` so the
caller's active MLflow run, if any, is left alone. A resumed run continues the same MLflow run.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from loguru import logger

from aicore.engine import dist
from aicore.engine.hooks import Hook
from aicore.engine.record import is_number
from aicore.errors import ConfigError
from aicore.registry import HOOKS

ARTIFACT_SUFFIXES = {".png", ".jpg", ".json", ".csv", ".jsonl", ".log", ".txt", ".md"}


def flatten(node: Any, prefix: str = "") -> dict[str, str]:
    """Nested config -> {"train.epochs": "3", ...}; lists of components as JSON text."""
    out: dict[str, str] = {}
    if isinstance(node, dict):
        for key, value in node.items():
            if str(key).startswith("_"):
                continue
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    key = prefix[:-1]
    text = node if isinstance(node, str) else json.dumps(node)
    out[key[:250]] = text[:6000]  # MLflow's key and value length limits
    return out


@HOOKS.register("MLflowHook")
class MLflowHook(Hook):
    priority = 60
    stage = "report"  # reads the epoch's record once it is complete

    def __init__(self, tracking_uri: str | None = None, experiment: str = "aicore",
                 run_name: str | None = None, tags: dict[str, str] | None = None,
                 artifact_location: str | None = None,
                 log_checkpoint: bool = False, log_export: bool = False,
                 priority: int | None = None) -> None:
        super().__init__(priority)
        try:
            from mlflow.tracking import MlflowClient  # noqa: F401
        except ImportError:
            raise ConfigError("train.hooks: MLflowHook needs mlflow: pip install "
                              "'aicore[mlflow]' (or remove the hook)") from None
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_name = run_name
        self.artifact_location = artifact_location  # for a new experiment; None = MLflow's
        self.tags = dict(tags or {})
        self.log_checkpoint = log_checkpoint
        self.log_export = log_export
        self.client = None
        self.run_id: str | None = None
        self.finished = False

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id} if self.run_id else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state.get("run_id") or self.run_id

    def before_train(self, trainer) -> None:
        if not dist.is_main():
            return
        from mlflow.tracking import MlflowClient
        from aicore import config as C
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        if self.run_id is not None:  # resumed: keep logging into the same MLflow run
            self.client.update_run(self.run_id, status="RUNNING")
            logger.info(f"MLflow: continuing run {self.run_id}")
            return
        exp = self.client.get_experiment_by_name(self.experiment)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(
            self.experiment, artifact_location=self.artifact_location)
        tags = {"aicore.task": trainer.task, "aicore.work_dir": str(trainer.work_dir),
                **self.tags}
        run = self.client.create_run(exp_id, run_name=self.run_name or trainer.work_dir.name,
                                     tags=tags)
        self.run_id = run.info.run_id
        from mlflow.entities import Param
        params = [Param(k, v) for k, v in flatten(C.to_dict(trainer.cfg)).items()]
        for i in range(0, len(params), 100):  # log_batch takes at most 100 params per call
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        logger.info(f"MLflow: run {self.run_id} in experiment '{self.experiment}' "
                    f"({self.client.tracking_uri})")

    def after_epoch(self, trainer) -> None:
        if self.client is None:
            return
        import time
        from mlflow.entities import Metric
        record = trainer.record
        entry = record.to_history(trainer.current_lr())
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, record.epoch) for k, v in entry.items()
                   if k != "epoch" and is_number(v) and math.isfinite(float(v))]
        first = trainer.global_step - len(record.lr_steps) + 1
        metrics += [Metric("lr_step", float(v), now, first + i)
                    for i, v in enumerate(record.lr_steps)]
        for i in range(0, len(metrics), 1000):  # log_batch takes at most 1000 metrics
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def after_train(self, trainer) -> None:
        self.finished = True

    def close(self, trainer) -> None:
        if self.client is None or self.run_id is None:
            return
        try:
            if self.finished:
                self._log_artifacts(Path(trainer.work_dir))
        finally:
            self.client.set_terminated(self.run_id, "FINISHED" if self.finished else "FAILED")
            self.client = None

    def _log_artifacts(self, work_dir: Path) -> None:
        for path in sorted(work_dir.iterdir()):
            if path.is_file() and path.suffix in ARTIFACT_SUFFIXES and path.name != ".lock":
                self.client.log_artifact(self.run_id, str(path))
        best = work_dir / "checkpoints" / "best.pth"
        if self.log_checkpoint and best.is_file():
            self.client.log_artifact(self.run_id, str(best), "checkpoints")
        export = work_dir / "export"
        if self.log_export and export.is_dir():
            self.client.log_artifacts(self.run_id, str(export), "export")

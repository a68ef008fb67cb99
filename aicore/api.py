"""Python API: ``aicore.train``, ``aicore.evaluate``, ``aicore.export`` and ``aicore.load``.

Each call goes through the same steps as ``python main.py -c`` (tasks and custom modules
imported, the config loaded and validated in full before anything is built or written), so bad
input raises the same ``AICoreError`` subclasses the command line reports. Results are typed:
metrics are floats, paths are ``Path`` objects. The caller's loguru handlers are left as they
are; the run only adds (and removes again) its own ``train.log`` sink.
"""
from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import numpy as np

from aicore.errors import CheckpointError, ConfigError, DataError

ConfigLike = Union[str, os.PathLike, Mapping[str, Any]]
Overrides = Union[Mapping[str, Any], Sequence[str], None]


# --------------------------------------------------------------------------------------------
# typed results


@dataclass
class TrainResult:
    work_dir: Path
    best_checkpoint: Path | None  # None when the task writes no best.pth
    last_checkpoint: Path | None
    best_metric: str | None
    best_value: float | None
    best_epoch: int | None
    metrics: dict[str, float]  # validation metrics of the last evaluated epoch
    history: list[dict[str, float]] = field(repr=False, default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"work_dir": str(self.work_dir),
                "best_checkpoint": str(self.best_checkpoint) if self.best_checkpoint else None,
                "last_checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
                "best_metric": self.best_metric, "best_value": self.best_value,
                "best_epoch": self.best_epoch, "metrics": dict(self.metrics)}


@dataclass
class EvalResult:
    metrics: dict[str, float]  # every scalar metric, as float
    out_dir: Path  # where the evaluation report was written
    details: dict[str, Any] = field(repr=False, default_factory=dict)  # non-scalar entries

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": dict(self.metrics), "out_dir": str(self.out_dir)}


@dataclass
class ExportResult:
    out_dir: Path
    onnx: Path | None
    torchscript: Path | None
    max_abs_diff: float  # worst parity difference against PyTorch on real images
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "onnx": str(self.onnx) if self.onnx else None,
                "torchscript": str(self.torchscript) if self.torchscript else None,
                "max_abs_diff": self.max_abs_diff}


# --------------------------------------------------------------------------------------------
# config handling


def override_list(overrides: Overrides) -> list[str]:
    """Dotted keys (``{"train.epochs": 3}``), nested dicts (``{"train": {"epochs": 3}}``) or
    ``-o`` style strings -> ``-o`` style strings with JSON values."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        return [overrides]
    if not isinstance(overrides, Mapping):
        out = list(overrides)
        if not all(isinstance(o, str) for o in out):
            raise ConfigError("overrides: give a dict of dotted keys or a list of 'key=value' "
                              "strings")
        return out
    out = []

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}{key}"
            if isinstance(value, Mapping) and value and "type" not in value:
                walk(value, path + ".")
            else:
                try:
                    out.append(f"{path}={json.dumps(value)}")
                except TypeError:
                    raise ConfigError(f"overrides: {path} = {value!r} is not JSON "
                                      f"(numbers, strings, lists, dicts, booleans, None)") from None
    walk(overrides, "")
    return out


def load_cfg(config: ConfigLike, overrides: Overrides = None):
    """A path, a shipped config name or a dict (+ overrides) -> the loaded DotMap config."""
    from aicore import config as C
    from aicore.shipped import resolve_config
    from dotmap import DotMap
    texts = override_list(overrides)
    if not isinstance(config, Mapping):
        return C.load_config(resolve_config(config), texts)
    data = copy.deepcopy(dict(config.toDict() if isinstance(config, DotMap) else config))
    data = {k: v for k, v in data.items() if not str(k).startswith("_") or k == "_base_"}
    origins: dict[str, str] = {}
    cfg = copy.deepcopy(C.DEFAULTS)
    bases = data.pop("_base_", [])
    for base in [bases] if isinstance(bases, str) else list(bases):
        path = resolve_config(base)
        C._merge(cfg, C._load_file(path, origins), str(path), origins)
    C._merge(cfg, data, "the config dict", origins)
    for text in texts:
        parts, value = C.parse_override(text)
        C._apply_override(cfg, parts, value)
        origins[".".join(parts)] = f"override {text}"
    if cfg.get("work_dir") is None:
        cfg["work_dir"] = str(Path("runs") / str(cfg.get("task") or "run"))
    cfg["_origins"] = origins
    cfg["_file"] = "the config dict"
    return DotMap(cfg, _dynamic=False)


def _prepare(config: ConfigLike, overrides: Overrides, mode: str | None):
    """Load and validate like the CLI; returns (cfg, trainer class)."""
    from aicore import config as C
    from aicore.cli import import_custom_modules
    from aicore.tasks import import_tasks
    from aicore.tasks.spec import trainer_class
    import_tasks()
    texts = override_list(overrides)
    if mode is not None:
        texts = [f"mode={json.dumps(mode)}"] + texts
    cfg = load_cfg(config, texts)
    import_custom_modules(list(cfg.custom_imports or []))
    C.validate(cfg)
    return cfg, trainer_class(cfg)


def _run(config, overrides, mode, one):
    from aicore.engine import dist
    cfg, trainer_cls = _prepare(config, overrides, mode)
    try:
        subs = trainer_cls.sub_runs(cfg, cfg.mode)
        if not subs:
            return one(trainer_cls(cfg))
        raw = {}
        results = {}
        for name, sub in subs:
            trainer = trainer_cls(sub)
            results[name] = one(trainer)
            raw[name] = trainer._api_raw
        trainer_cls.summarize_runs(cfg, cfg.mode, raw)
        return results
    finally:
        dist.cleanup()


def _floats(metrics: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    scalars, rest = {}, {}
    for key, value in (metrics or {}).items():
        if isinstance(value, (bool, np.bool_)):
            rest[key] = bool(value)
        elif isinstance(value, (int, float, np.integer, np.floating)) or \
                (hasattr(value, "ndim") and getattr(value, "ndim") == 0):
            scalars[key] = float(value)
        else:
            rest[key] = value
    return scalars, rest


# --------------------------------------------------------------------------------------------
# the API


def train(config: ConfigLike, overrides: Overrides = None) -> TrainResult | dict[str, TrainResult]:
    """Train (mode trainval). A multi-category anomaly config returns one result per category."""
    def one(trainer) -> TrainResult:
        best = trainer.train()
        trainer._api_raw = best
        ckpts = Path(trainer.cfg.work_dir) / "checkpoints"
        last = getattr(trainer, "last_metrics", None) or {}
        if last and set(last) <= {"model", "ema"} and \
                all(isinstance(v, Mapping) for v in last.values()):  # {"model": {..}, "ema": {..}}
            which = best.get("weights") if isinstance(best, Mapping) else None
            last = last.get(which or "model") or next(iter(last.values()))
        if not last and trainer.history:
            last = {k[4:]: v for k, v in trainer.history[-1].items() if k.startswith("val_")}
        if not last and isinstance(best, Mapping) and "value" not in best:
            last = best  # gradient-free tasks return their validation metrics
        metrics, _ = _floats(last)
        record = best if isinstance(best, Mapping) and "value" in best else {}
        return TrainResult(
            work_dir=Path(trainer.cfg.work_dir),
            best_checkpoint=(ckpts / "best.pth") if (ckpts / "best.pth").is_file() else None,
            last_checkpoint=(ckpts / "last.pth") if (ckpts / "last.pth").is_file() else None,
            best_metric=record.get("metric"),
            best_value=float(record["value"]) if record.get("value") is not None else None,
            best_epoch=int(record["epoch"]) if record.get("epoch") is not None else None,
            metrics=metrics,
            history=[{k: float(v) for k, v in h.items() if isinstance(v, (int, float))}
                     for h in trainer.history])
    return _run(config, overrides, "trainval", one)


def evaluate(config: ConfigLike, overrides: Overrides = None) -> EvalResult | dict[str, EvalResult]:
    """Evaluate the run's checkpoint (``eval.checkpoint``, else work_dir's best.pth)."""
    from aicore.engine.runners import out_dir, run_eval

    def one(trainer) -> EvalResult:
        raw = run_eval(trainer)
        trainer._api_raw = raw
        scalars, rest = _floats(raw)
        return EvalResult(metrics=scalars, out_dir=out_dir(trainer.cfg, "eval"), details=rest)
    return _run(config, overrides, "eval", one)


def export(config: ConfigLike, overrides: Overrides = None) -> ExportResult | dict[str, ExportResult]:
    """Export ONNX / TorchScript with parity checks; raises ExportError when parity fails."""
    from aicore.engine.runners import out_dir, run_export

    def one(trainer) -> ExportResult:
        manifest = run_export(trainer)
        trainer._api_raw = manifest
        out = out_dir(trainer.cfg, "export")
        files = manifest.get("files") or {}
        report = manifest.get("parity") or {}
        diffs = [float(v) for key in ("onnxruntime_max_abs_diff", "torchscript_max_abs_diff",
                                      "prepared_pytorch_max_abs_diff")
                 for v in (report.get(key) or {}).values()]
        return ExportResult(out_dir=out,
                            onnx=out / files["onnx"] if files.get("onnx") else None,
                            torchscript=out / files["torchscript"] if files.get("torchscript")
                            else None,
                            max_abs_diff=max(diffs) if diffs else math.nan, manifest=manifest)
    return _run(config, overrides, "export", one)


def load(run: str | os.PathLike, device: str = "auto", overrides: Overrides = None):
    """A run folder (its config.json and checkpoints/best.pth) or a checkpoint file -> a
    ``Model`` whose ``predict`` returns the deploy runtime's result types."""
    from aicore.inference import Model
    from aicore.engine import checkpoint as ckpt_io
    path = Path(run)
    if path.is_dir():
        ckpt = path / "checkpoints" / "best.pth"
        if not ckpt.is_file():
            ckpt = path / "checkpoints" / "last.pth"
        if not ckpt.is_file():
            raise CheckpointError(f"{path}: no checkpoints/best.pth or last.pth; give a run "
                                  f"folder written by a finished training, or a .pth file")
    elif path.is_file():
        ckpt = path
    else:
        raise CheckpointError(f"{path}: no such run folder or checkpoint file")
    saved = ckpt_io.load(ckpt)
    config = saved.get("config") if isinstance(saved, Mapping) else None
    if not isinstance(config, Mapping):
        cfg_file = ckpt.parent.parent / "config.json"
        if not cfg_file.is_file():
            raise CheckpointError(f"{ckpt} records no config and there is no {cfg_file}; load "
                                  f"a checkpoint written by AICore's trainer")
        config = json.loads(cfg_file.read_text(encoding="utf-8"))
    texts = [f"demo.checkpoint={json.dumps(str(ckpt))}", f"train.device={json.dumps(device)}",
             "train.resume=false"] + override_list(overrides)
    cfg, trainer_cls = _prepare(dict(config), texts, "demo")
    if trainer_cls.sub_runs(cfg, "demo"):
        raise DataError(f"{ckpt}: a multi-category config; load one category's run folder")
    return Model(trainer_cls(cfg), cfg, saved)

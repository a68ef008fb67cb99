"""Eval and Demo runners, shared by every task (Export: aicore/engine/export.py).

Each runner builds the task's trainer for its components (datasets, model, evaluator) and the
task's inference protocol (aicore/engine/protocol.py) for what differs: pre-processing,
typed predictions, drawing, CSV rows and reports. Nothing here knows about a particular task.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from loguru import logger
from torch import nn

from aicore.data.sources import write_predictions
from aicore.engine import checkpoint as ckpt_io
from aicore.engine import dist
from aicore.engine.protocol import make_protocol
from aicore.engine.workdir import ensure_dir
from aicore.errors import CheckpointError, DataError


def checkpoint_path(cfg, section: str) -> Path:
    given = cfg[section].checkpoint
    return Path(given) if given else Path(cfg.work_dir) / "checkpoints" / "best.pth"


def load_model(trainer, cfg, section: str) -> tuple[nn.Module, dict]:
    """Build the config's model and load a checkpoint into it (all keys must fit)."""
    path = checkpoint_path(cfg, section)
    if not path.is_file() and not cfg[section].checkpoint:
        raise CheckpointError(f"{path} not found: train first (mode trainval with this "
                              f"work_dir), or set {section}.checkpoint to a .pth file")
    ckpt = ckpt_io.load(path)
    if ckpt.get("task") and ckpt["task"] != trainer.task:
        raise CheckpointError(f"{path} is a {ckpt['task']} checkpoint, but this config's task "
                              f"is {trainer.task}")
    classes = ckpt.get("classes")
    if not classes:
        raise CheckpointError(f"{path} records no class names; it was not written by AICore's "
                              f"trainer. Load it for fine-tuning with model.init_from instead")
    trainer.classes = list(classes)
    weights = cfg[section].weights
    if weights == "auto":
        weights = (ckpt.get("best") or {}).get("weights", "model")
    if weights not in ("model", "ema"):
        raise CheckpointError(f"{section}.weights = {weights!r}: use \"auto\", \"model\" or \"ema\"")
    if weights == "ema" and not isinstance(ckpt.get("ema"), dict):
        raise CheckpointError(f"{section}.weights = \"ema\" but {path} holds no EMA weights")
    model = trainer.build_model()
    ckpt_io.load_weights_strict(model, ckpt_io.state_dict_of(ckpt, weights == "ema"), str(path))
    model.to(trainer.device).eval()
    logger.info(f"loaded {path} ({weights} weights, epoch {ckpt.get('epoch', '?')})")
    return model, ckpt


def _check_classes(trainer, dataset, path: Path) -> None:
    names = list(getattr(dataset, "classes", trainer.classes))
    if names != list(trainer.classes):
        raise DataError(f"the dataset's classes {names} differ from those the checkpoint was "
                        f"trained on {trainer.classes} ({path})")


def out_dir(cfg, section: str) -> Path:
    return Path(cfg[section].out or Path(cfg.work_dir) / section)


# ------------------------------------------------------------------------------------------
# eval


def run_eval(trainer) -> dict[str, Any]:
    cfg = trainer.cfg
    trainer.setup_device()
    model, _ = load_model(trainer, cfg, "eval")
    if dist.is_main():  # an unwritable folder is reported before the evaluation runs
        ensure_dir(out_dir(cfg, "eval"), "eval.out")
    split = cfg.eval.split
    dataset = trainer.build_dataset(split, train=False)
    _check_classes(trainer, dataset, checkpoint_path(cfg, "eval"))
    loader = trainer.build_loader(dataset, train=False, model=model)  # -1: measured on it
    evaluator = trainer.build_evaluator()
    scored = make_protocol(trainer).eval_module(model)  # classification: eval.tta
    t0 = time.perf_counter()
    metrics = trainer.evaluate(scored, loader, evaluator)
    dt = time.perf_counter() - t0
    if dist.is_main():
        out = out_dir(cfg, "eval")
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        trainer.write_eval_report(model, evaluator, dataset, metrics, out)
        summary = " ".join(f"{k}={v:.4f}" for k, v in metrics.items()
                           if isinstance(v, float))
        logger.info(f"eval on {split} ({len(dataset)} samples, {dt:.1f}s): {summary}")
        logger.info(f"wrote {out}")
    return metrics


# ------------------------------------------------------------------------------------------
# demo


def demo_predictor(trainer):
    """(the task's protocol, (image as read, name) -> typed prediction), by the config's
    demo.backend: "pytorch" (the checkpoint) or "onnx" (the export folder, through
    aicore.deploy, whose results are the same dataclasses)."""
    cfg = trainer.cfg
    backend = cfg.demo.get("backend") or "pytorch"
    if backend == "onnx":
        from aicore.deploy.predictor import Predictor
        export = out_dir(cfg, "export")
        predictor = Predictor(export)
        if predictor.task != trainer.task:
            raise DataError(f"{export} holds a {predictor.task} export, but this config's "
                            f"task is {trainer.task}")
        trainer.classes = list(predictor.classes)
        logger.info(f"demo through the exported model {predictor.onnx_path} "
                    f"({', '.join(predictor.providers)})")
        protocol = make_protocol(trainer, postprocess=predictor.post)
        return protocol, lambda raw, name: predictor.predict(raw)
    if backend != "pytorch":
        raise DataError(f"demo.backend = {backend!r}: use \"pytorch\" or \"onnx\"")
    trainer.setup_device()
    model, _ = load_model(trainer, cfg, "demo")
    protocol = make_protocol(trainer, model=model, checkpoint=checkpoint_path(cfg, "demo"))

    def predict(raw: np.ndarray, name: str):
        x, meta = protocol.preprocess(raw, name)
        return protocol.predict(model, x[None], [meta])[0]
    return protocol, predict


def run_demo(trainer) -> list[dict[str, Any]]:
    cfg = trainer.cfg
    if not cfg.demo.source:
        raise DataError("demo.source is not set: give an image, a folder or a video, e.g. "
                        "-o demo.source=data/demo/classification/val")
    protocol, predict = demo_predictor(trainer)
    # Results go to a staging folder that replaces the final one only when every image went
    # through: a corrupt image late in the source leaves an earlier demo as it was.
    final = out_dir(cfg, "demo")
    ensure_dir(final.parent, "demo.out")
    out = final.with_name(final.name + ".partial")
    if out.exists():
        shutil.rmtree(out)
    ensure_dir(out, "demo.out")
    try:
        rows = _demo_into(protocol, predict, cfg, out)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    _swap_in(out, final)
    logger.info(f"demo: {len(rows)} predictions written to {final}")
    return rows


def _swap_in(staged: Path, final: Path) -> None:
    """Replace `final` with `staged` by two renames (the old folder is removed after)."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    staged.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _demo_into(protocol, predict, cfg, out: Path) -> list[dict[str, Any]]:
    rows, results = write_predictions(cfg.demo.source, out, predict, protocol.draw,
                                      protocol.csv_row, cfg.demo.max_images, key="demo.source")
    protocol.write_report(results, out)
    return rows


def run_export(trainer) -> dict[str, Any]:
    """mode=export; the steps are in aicore/engine/export.py."""
    from aicore.engine.export import run_export as export
    return export(trainer)

"""Eval, Demo and Export runners, shared by every task.

Each runner builds the task's trainer for its components (datasets, model, evaluator,
pre-processing) and calls a few task methods for what differs: reports, drawing, the export
wrapper. Nothing here knows about a particular task.
"""
from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from loguru import logger
from torch import nn

from aicore.data.io import imwrite, to_channels
from aicore.data.sources import iter_sources
from aicore.engine import checkpoint as ckpt_io
from aicore.engine import dist
from aicore.engine.workdir import ensure_dir
from aicore.errors import CheckpointError, DataError, ExportError



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
    loader = trainer.build_loader(dataset, train=False)
    evaluator = trainer.build_evaluator()
    t0 = time.perf_counter()
    metrics = trainer.evaluate(model, loader, evaluator)
    dt = time.perf_counter() - t0
    if dist.is_main():
        out = out_dir(cfg, "eval")
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        trainer.eval_model = model  # for reports that need another pass (t-SNE, CAMs)
        trainer.write_eval_report(evaluator, dataset, metrics, out)
        summary = " ".join(f"{k}={v:.4f}" for k, v in metrics.items()
                           if isinstance(v, float))
        logger.info(f"eval on {split} ({len(dataset)} samples, {dt:.1f}s): {summary}")
        logger.info(f"wrote {out}")
    return metrics


# ------------------------------------------------------------------------------------------
# demo


def demo_predictor(trainer):
    """(image as read, name) -> the task's prediction dict, by the config's demo.backend:
    "pytorch" (the checkpoint) or "onnx" (the export folder, through aicore.deploy)."""
    cfg = trainer.cfg
    backend = cfg.demo.get("backend") or "pytorch"
    if backend == "onnx":
        from aicore.deploy.bridge import demo_prediction
        from aicore.deploy.predictor import Predictor
        export = out_dir(cfg, "export")
        predictor = Predictor(export)
        if predictor.task != trainer.task:
            raise DataError(f"{export} holds a {predictor.task} export, but this config's "
                            f"task is {trainer.task}")
        trainer.classes = list(predictor.classes)
        logger.info(f"demo through the exported model {predictor.onnx_path} "
                    f"({', '.join(predictor.providers)})")
        return lambda raw, name: demo_prediction(predictor, predictor.predict(raw))
    if backend != "pytorch":
        raise DataError(f"demo.backend = {backend!r}: use \"pytorch\" or \"onnx\"")
    trainer.setup_device()
    model, _ = load_model(trainer, cfg, "demo")
    in_ch = int(cfg.data.in_channels)

    def predict(raw: np.ndarray, name: str) -> dict[str, Any]:
        x = trainer.preprocess(to_channels(raw, in_ch, name))[None]
        with torch.no_grad(), trainer.autocast():
            return trainer.predict_images(model, x)[0]
    return predict


def run_demo(trainer) -> list[dict[str, Any]]:
    cfg = trainer.cfg
    if not cfg.demo.source:
        raise DataError("demo.source is not set: give an image, a folder or a video, e.g. "
                        "-o demo.source=data/demo/classification/val")
    predict = demo_predictor(trainer)
    # Results go to a staging folder that replaces the final one only when every image went
    # through: a corrupt image late in the source leaves an earlier demo as it was.
    final = out_dir(cfg, "demo")
    ensure_dir(final.parent, "demo.out")
    out = final.with_name(final.name + ".partial")
    if out.exists():
        shutil.rmtree(out)
    ensure_dir(out, "demo.out")
    try:
        rows = _demo_into(trainer, predict, out)
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


def _demo_into(trainer, predict, out: Path) -> list[dict[str, Any]]:
    cfg = trainer.cfg
    rows: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []  # full predictions, for task reports beyond the CSV
    writer = None
    source = Path(cfg.demo.source)
    for name, raw, frame in iter_sources(cfg.demo.source, cfg.demo.max_images, key="demo.source"):
        pred = predict(raw, name)
        display = to_channels(raw, 3, name)
        if display.dtype != np.uint8:
            display = (display * 255).clip(0, 255).astype(np.uint8)
        drawn = trainer.draw(display, pred)
        if frame is None:  # mirror a folder's sub-folders so equal file names never collide
            rel = Path(name).relative_to(source) if source.is_dir() else Path(Path(name).name)
            imwrite(out / rel.with_suffix(".png"), drawn)
        else:
            if writer is None:
                target = out / (Path(name).stem + "_pred.mp4")
                h, w = drawn.shape[:2]
                writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), 25, (w, h))
            writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
        rows.append({"source": name, "frame": "" if frame is None else frame,
                     **trainer.demo_row(pred)})
        results.append({"source": name, "frame": frame, "prediction": pred})
    if writer is not None:
        writer.release()
    # file names that are not valid UTF-8 are written with backslash escapes
    with open(out / "predictions.csv", "w", newline="", encoding="utf-8",
              errors="backslashreplace") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    trainer.write_demo_report(results, out)
    return rows


# ------------------------------------------------------------------------------------------
# export


def run_export(trainer) -> dict[str, Any]:
    import onnxruntime as ort

    cfg = trainer.cfg
    trainer.device = torch.device("cpu")  # export and the parity check run on CPU
    model, ckpt = load_model(trainer, cfg, "export")
    # the reference is the model as trained: fusion and export are both checked against it
    reference_wrapper, output_names = trainer.export_module(model)
    reference_wrapper.eval()
    model = trainer.prepare_export(model)
    if cfg.export.fuse_bn:
        from aicore.engine.fuse import fuse_conv_bn
        model = fuse_conv_bn(model)
    wrapper, _ = trainer.export_module(model)
    wrapper.eval()
    dataset = trainer.build_dataset(cfg.eval.split if cfg.eval.split != "train" else "val",
                                    train=False)
    n = min(int(cfg.export.parity_images), len(dataset))
    batch = torch.stack([trainer.export_sample(dataset, i) for i in range(n)])
    # Write into a staging folder and move the files into place only after the parity check
    # passes, so a failed export never replaces a good earlier one.
    final = out_dir(cfg, "export")
    out = final.with_name(final.name + ".partial")
    if out.exists():
        shutil.rmtree(out)
    ensure_dir(out, "export.out")
    onnx_path, ts_path = out / "model.onnx", out / "model.torchscript"
    formats = list(cfg.export.formats)
    unknown = set(formats) - {"onnx", "torchscript"}
    if unknown:
        raise ExportError(f"export.formats: unknown {sorted(unknown)}; use \"onnx\" and/or "
                          f"\"torchscript\"")
    with torch.no_grad():
        reference = [t.numpy() for t in _as_tuple(reference_wrapper(batch))]
    # FP16: weights, input and outputs in half precision, built on the GPU when there is one;
    # still compared with the float32 model as trained, at export.half_tolerance
    half = bool(cfg.export.half)
    tolerance = float(cfg.export.half_tolerance if half else cfg.export.tolerance)
    x = batch
    if half:
        device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
        wrapper = wrapper.to(device).half()
        x = batch.to(device).half()
    with torch.no_grad():
        prepared = [_np(t) for t in _as_tuple(wrapper(x))]
    report: dict[str, Any] = {"images": n, "tolerance": tolerance,
                              "dtype": "float16" if half else "float32"}
    if wrapper is not reference_wrapper:
        report["prepared_pytorch_max_abs_diff"] = {
            name: _max_abs_diff(g, r) for name, g, r in zip(output_names, prepared, reference)}
    if "onnx" in formats:
        axes = {"images": {0: "batch"}, **{o: {0: "batch"} for o in output_names}}
        torch.onnx.export(wrapper, (x[:1],), str(onnx_path), dynamo=False,
                          input_names=["images"], output_names=output_names,
                          dynamic_axes=axes, opset_version=int(cfg.export.opset))
        if cfg.export.get("simplify"):
            _simplify(onnx_path)
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                     if p in ort.get_available_providers() and (half or p.startswith("CPU"))]
        sess = ort.InferenceSession(str(onnx_path), providers=providers)
        got = sess.run(None, {"images": x.cpu().numpy()})
        diffs = {name: _max_abs_diff(g, r) for name, g, r in zip(output_names, got, reference)}
        report["onnxruntime_max_abs_diff"] = diffs
        logger.info(f"ONNX Runtime vs PyTorch on {n} validation images: max abs diff "
                    + ", ".join(f"{k}={v:.2e}" for k, v in diffs.items()))
    if "torchscript" in formats:
        with torch.no_grad():
            traced = torch.jit.trace(wrapper, x[:1])
        traced.save(str(ts_path))
        loaded = torch.jit.load(str(ts_path))
        with torch.no_grad():
            got = [_np(t) for t in _as_tuple(loaded(x))]
        report["torchscript_max_abs_diff"] = {
            name: _max_abs_diff(g, r) for name, g, r in zip(output_names, got, reference)}
    manifest = {
        "task": trainer.task,
        "model": cfg.model.toDict(),
        "checkpoint": str(checkpoint_path(cfg, "export")),
        "epoch": ckpt.get("epoch"),
        "input": {"name": "images", "shape": ["batch", int(cfg.data.in_channels),
                                              *[int(s) for s in cfg.data.input_size]],
                  "channels": int(cfg.data.in_channels),
                  "color_order": "RGB" if int(cfg.data.in_channels) == 3 else "GRAY",
                  "dtype": "float16" if half else "float32", **trainer.normalization()},
        "outputs": output_names,
        "classes": list(trainer.classes),
        "opset": int(cfg.export.opset),
        "files": {"onnx": onnx_path.name if "onnx" in formats else None,
                  "torchscript": ts_path.name if "torchscript" in formats else None},
        "parity": report,
        "manifest_version": 2,
        "preprocess": trainer.deploy_preprocess(),
        **trainer.manifest_extra(),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    if "onnx" in formats:
        _embed_manifest(onnx_path, manifest)
    if cfg.export.benchmark:
        from aicore.engine.benchmark import benchmark_formats
        report["benchmark"] = benchmark_formats(wrapper, x, onnx_path if "onnx" in formats
                                                else None, ts_path if "torchscript" in formats
                                                else None, int(cfg.export.benchmark_iters))
        manifest["parity"] = report
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    worst = max([v for key in ("onnxruntime_max_abs_diff", "torchscript_max_abs_diff",
                               "prepared_pytorch_max_abs_diff")
                 for v in report.get(key, {}).values()] or [0.0])
    if worst > tolerance:
        failed = final.with_name(final.name + ".failed")
        if failed.exists():
            shutil.rmtree(failed)
        out.rename(failed)
        key = "export.half_tolerance" if half else "export.tolerance"
        raise ExportError(f"exported model differs from PyTorch by {worst:.3g} (> {key} "
                          f"{tolerance}) on real validation images; the files are in {failed} "
                          f"for inspection and {final} was left as it was")
    final.mkdir(parents=True, exist_ok=True)
    for f in out.iterdir():
        f.replace(final / f.name)
    out.rmdir()
    logger.info(f"exported to {final} (max abs diff {worst:.2e} <= {tolerance})")
    return manifest


def _simplify(onnx_path: Path) -> None:
    """export.simplify: fold constants and drop redundant nodes with onnxslim; the parity
    check that follows runs on the simplified file."""
    try:
        import onnx
        import onnxslim
    except ImportError:
        raise ExportError("export.simplify = true needs onnxslim: pip install onnxslim") from None
    before = len(onnx.load(str(onnx_path)).graph.node)
    model = onnxslim.slim(str(onnx_path))
    onnx.save(model, str(onnx_path))
    logger.info(f"onnxslim: {before} -> {len(model.graph.node)} graph nodes")


def _embed_manifest(onnx_path: Path, manifest: dict[str, Any]) -> None:
    """Store the manifest in the ONNX file's metadata_props (key "aicore_manifest"), so a lone
    model.onnx is enough for aicore.deploy.Predictor."""
    import onnx
    model = onnx.load(str(onnx_path))
    for prop in list(model.metadata_props):
        if prop.key == "aicore_manifest":
            model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key, entry.value = "aicore_manifest", json.dumps(manifest)
    onnx.save(model, str(onnx_path))


def _max_abs_diff(got: np.ndarray, ref: np.ndarray) -> float:
    """Largest elementwise difference; inf when the shapes differ (outputs whose size depends
    on the data, e.g. detections after NMS, can disagree in count), 0 when both are empty."""
    if got.shape != ref.shape:
        return float("inf")
    return float(np.abs(got - ref).max()) if got.size else 0.0


def _np(t: torch.Tensor) -> np.ndarray:
    """float32 numpy on the CPU, whatever the tensor's device and precision."""
    return t.detach().float().cpu().numpy()


def _as_tuple(x) -> tuple:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)

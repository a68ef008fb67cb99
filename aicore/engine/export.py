"""mode=export, step by step: build the module, export it (ONNX and/or TorchScript), simplify,
check parity with the model as trained, write the manifest (and embed it in model.onnx), then
move the files into place, or keep them aside when the parity check fails.

The task supplies what differs through its protocol (``TaskProtocol.export``: the wrapper, its
output names and the manifest fields; ``prepare_export``, ``export_sample``,
``normalization``, ``deploy_preprocess``).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from loguru import logger
from torch import nn

from aicore.engine.protocol import ExportSpec, TaskProtocol, make_protocol
from aicore.engine.runners import checkpoint_path, load_model, out_dir
from aicore.engine.workdir import ensure_dir
from aicore.errors import ExportError

FORMATS = ("onnx", "torchscript")
#: parity key of ExportSpec.check (the exported post-processing vs the model's own)
POSTPROCESS_KEY = "postprocess_vs_model_max_abs_diff"


@dataclass
class Parity:
    """The parity report of manifest.json (key "parity") and the tolerance it is held to."""
    images: int
    tolerance: float
    half: bool
    diffs: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"images": self.images, "tolerance": self.tolerance,
                "dtype": "float16" if self.half else "float32", **self.diffs}

    def worst(self) -> float:
        return max([v for key in ("onnxruntime_max_abs_diff", "torchscript_max_abs_diff",
                                  "prepared_pytorch_max_abs_diff", POSTPROCESS_KEY)
                    for v in self.diffs.get(key, {}).values()] or [0.0])


def run_export(trainer) -> dict[str, Any]:
    cfg = trainer.cfg
    trainer.device = torch.device("cpu")  # export and the parity check run on CPU
    model, ckpt = load_model(trainer, cfg, "export")
    protocol = make_protocol(trainer, model=model, checkpoint=checkpoint_path(cfg, "export"))
    # the reference is the model as trained: fusion and export are both checked against it
    spec = protocol.export(model)
    reference_module = spec.module.eval()
    module = prepared_module(protocol, spec, model, bool(cfg.export.fuse_bn))
    batch = parity_batch(trainer, protocol)
    # Write into a staging folder and move the files into place only after the parity check
    # passes, so a failed export never replaces a good earlier one.
    final = out_dir(cfg, "export")
    out = final.with_name(final.name + ".partial")
    if out.exists():
        shutil.rmtree(out)
    ensure_dir(out, "export.out")
    formats = list(cfg.export.formats)
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ExportError(f"export.formats: unknown {sorted(unknown)}; use \"onnx\" and/or "
                          f"\"torchscript\"")
    with torch.no_grad():
        reference = [t.numpy() for t in _as_tuple(reference_module(batch))]
    # FP16: weights, input and outputs in half precision, built on the GPU when there is one;
    # still compared with the float32 model as trained, at export.half_tolerance
    half = bool(cfg.export.half)
    parity = Parity(len(batch), float(cfg.export.half_tolerance if half else
                                      cfg.export.tolerance), half)
    x = batch
    if half:
        device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
        module = module.to(device).half()
        x = batch.to(device).half()
    names = spec.outputs
    diff = getattr(reference_module, "output_diff", None)
    if spec.check is not None:
        value = spec.check(reference_module, batch)
        if value is not None:
            parity.diffs[POSTPROCESS_KEY] = {names[0]: value}
    if module is not reference_module:
        with torch.no_grad():
            prepared = [_np(t) for t in _as_tuple(module(x))]
        parity.diffs["prepared_pytorch_max_abs_diff"] = _diffs(names, prepared, reference, diff)
    onnx_path, ts_path = out / "model.onnx", out / "model.torchscript"
    if "onnx" in formats:
        export_onnx(module, x, onnx_path, names, int(cfg.export.opset))
        if cfg.export.get("simplify"):
            simplify_onnx(onnx_path)
        parity.diffs["onnxruntime_max_abs_diff"] = onnx_parity(onnx_path, x, names, reference,
                                                               half, diff)
    if "torchscript" in formats:
        parity.diffs["torchscript_max_abs_diff"] = export_torchscript(module, x, ts_path, names,
                                                                      reference, diff)
    manifest = build_manifest(trainer, protocol, spec, ckpt, parity, formats, onnx_path,
                              ts_path)
    write_manifest(out, manifest)
    if "onnx" in formats:
        embed_manifest(onnx_path, manifest)
    if cfg.export.benchmark:
        from aicore.engine.benchmark import benchmark_formats
        report = parity.as_dict()
        report["benchmark"] = benchmark_formats(module, x, onnx_path if "onnx" in formats
                                                else None, ts_path if "torchscript" in formats
                                                else None, int(cfg.export.benchmark_iters))
        manifest["parity"] = report
        write_manifest(out, manifest)
    settle(out, final, parity)
    return manifest


# ------------------------------------------------------------------------------------------
# the steps


def prepared_module(protocol: TaskProtocol, spec: ExportSpec, model: nn.Module,
                    fuse_bn: bool) -> nn.Module:
    """The module that is exported: the task's preparation (detection folds BatchNorm itself),
    export.fuse_bn's generic conv-BN fusion, wrapped as spec.module is."""
    model = protocol.prepare_export(model)
    if fuse_bn:
        from aicore.engine.fuse import fuse_conv_bn
        model = fuse_conv_bn(model)
    wrap = spec.wrap or (lambda m: m)
    return wrap(model).eval()


def parity_batch(trainer, protocol: TaskProtocol) -> torch.Tensor:
    """Up to export.parity_images real images of the eval split (val when that is train)."""
    cfg = trainer.cfg
    dataset = trainer.build_dataset(cfg.eval.split if cfg.eval.split != "train" else "val",
                                    train=False)
    n = min(int(cfg.export.parity_images), len(dataset))
    return torch.stack([protocol.export_sample(dataset, i) for i in range(n)])


def export_onnx(module: nn.Module, x: torch.Tensor, path: Path, names: list[str],
                opset: int) -> None:
    """Trace with one image; the batch axis of the input and every output stays dynamic."""
    axes = {"images": {0: "batch"}, **{o: {0: "batch"} for o in names}}
    torch.onnx.export(module, (x[:1],), str(path), dynamo=False, input_names=["images"],
                      output_names=names, dynamic_axes=axes, opset_version=opset)


def simplify_onnx(onnx_path: Path) -> None:
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


def onnx_parity(path: Path, x: torch.Tensor, names: list[str], reference: list[np.ndarray],
                half: bool, diff=None) -> dict[str, float]:
    """ONNX Runtime's outputs on the parity batch vs the reference, per output."""
    import onnxruntime as ort
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                 if p in ort.get_available_providers() and (half or p.startswith("CPU"))]
    sess = ort.InferenceSession(str(path), providers=providers)
    diffs = _diffs(names, sess.run(None, {"images": x.cpu().numpy()}), reference, diff)
    logger.info(f"ONNX Runtime vs PyTorch on {len(x)} validation images: max abs diff "
                + ", ".join(f"{k}={v:.2e}" for k, v in diffs.items()))
    return diffs


def export_torchscript(module: nn.Module, x: torch.Tensor, path: Path, names: list[str],
                       reference: list[np.ndarray], diff=None) -> dict[str, float]:
    """Trace, save, load back and compare with the reference, per output."""
    with torch.no_grad():
        traced = torch.jit.trace(module, x[:1])
    traced.save(str(path))
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        got = [_np(t) for t in _as_tuple(loaded(x))]
    return _diffs(names, got, reference, diff)


def build_manifest(trainer, protocol: TaskProtocol, spec: ExportSpec, ckpt: dict,
                   parity: Parity, formats: list[str], onnx_path: Path,
                   ts_path: Path) -> dict[str, Any]:
    cfg = trainer.cfg
    channels = int(cfg.data.in_channels)
    return {
        "task": trainer.task,
        "model": cfg.model.toDict(),
        "checkpoint": str(checkpoint_path(cfg, "export")),
        "epoch": ckpt.get("epoch"),
        "input": {"name": "images", "shape": ["batch", channels,
                                              *[int(s) for s in cfg.data.input_size]],
                  "channels": channels,
                  "color_order": "RGB" if channels == 3 else "GRAY",
                  "dtype": "float16" if parity.half else "float32",
                  **protocol.normalization()},
        "outputs": spec.outputs,
        "classes": list(trainer.classes),
        "opset": int(cfg.export.opset),
        "files": {"onnx": onnx_path.name if "onnx" in formats else None,
                  "torchscript": ts_path.name if "torchscript" in formats else None},
        "parity": parity.as_dict(),
        "manifest_version": 2,
        "preprocess": protocol.deploy_preprocess(),
        **spec.manifest,
    }


def write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def embed_manifest(onnx_path: Path, manifest: dict[str, Any]) -> None:
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


def settle(out: Path, final: Path, parity: Parity) -> None:
    """Within tolerance: move the staged files into `final`. Beyond it: rename the staging
    folder to <final>.failed for inspection, leave `final` as it was, and raise."""
    worst, tolerance = parity.worst(), parity.tolerance
    if worst > tolerance:
        failed = final.with_name(final.name + ".failed")
        if failed.exists():
            shutil.rmtree(failed)
        out.rename(failed)
        key = "export.half_tolerance" if parity.half else "export.tolerance"
        raise ExportError(f"exported model differs from PyTorch by {worst:.3g} (> {key} "
                          f"{tolerance}) on real validation images; the files are in {failed} "
                          f"for inspection and {final} was left as it was")
    final.mkdir(parents=True, exist_ok=True)
    for f in out.iterdir():
        f.replace(final / f.name)
    out.rmdir()
    logger.info(f"exported to {final} (max abs diff {worst:.2e} <= {tolerance})")


def _diffs(names: list[str], got, reference: list[np.ndarray], diff=None) -> dict[str, float]:
    """Per output; `diff` is the module's own comparison (``output_diff``: detection NMS rows,
    which swap places under float noise, are matched row to row), else elementwise."""
    diff = diff or _max_abs_diff
    return {name: diff(g, r) for name, g, r in zip(names, got, reference)}


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

"""Predictor: an exported AICore model on onnxruntime (or OpenVINO), with the training
side's preprocessing and postprocessing read from the export manifest. Needs only numpy,
OpenCV and onnxruntime: no torch."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence, Union

import cv2
import numpy as np

from aicore.data.sources import read_unchanged
from aicore.deploy import manifest as M
from aicore.deploy.postprocess import (boxes_to_original, detections_from_dense, is_defect,
                                       sliding_window_logits)
from aicore.deploy.preprocess import prepare
from aicore.deploy.results import (AnomalyResult, ClassificationResult, DetectionResult,
                                   SegmentationResult)

Image = Union[str, Path, np.ndarray]
Result = Union[ClassificationResult, SegmentationResult, DetectionResult, AnomalyResult]
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider",
                       "CPUExecutionProvider")


def read_image(path: str | Path) -> np.ndarray:
    """An image file as OpenCV reads it unchanged (aicore.data.sources.read_unchanged, the
    reader mode=demo uses too); a file that cannot be read is a DeployError."""
    return read_unchanged(path, M.DeployError)


def decode_image(data: bytes, name: str = "upload") -> np.ndarray:
    """Encoded image bytes (PNG, JPEG, TIFF, ...) -> array as OpenCV reads it."""
    buf = np.frombuffer(data, np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if img is None:
        raise M.DeployError(f"{name}: not a decodable image (empty, corrupt or another format)")
    return img


class Predictor:
    """``Predictor("runs/x/export")`` (or a lone ``model.onnx``), then ``predict(images)``.

    Images: a path, or an HxW / HxWxC uint8 or uint16 numpy array in OpenCV's BGR order
    (``color_order="RGB"`` for arrays in RGB order), or a list of those. Returns one typed
    result per image (a list for a list).

    providers: onnxruntime execution providers (default: TensorRT, CUDA, CPU, those
    installed); intra_op_num_threads: CPU threads per inference (default: onnxruntime's);
    backend: "onnxruntime" or "openvino" (needs the openvino package).
    """

    def __init__(self, path: str | Path, providers: Sequence[str] | None = None,
                 intra_op_num_threads: int | None = None, backend: str = "onnxruntime") -> None:
        self.manifest, self.onnx_path = M.load(path)
        self.task: str = self.manifest["task"]
        self.classes: list[str] = list(self.manifest["classes"])
        self.pre: dict[str, Any] = self.manifest["preprocess"]
        self.post: dict[str, Any] = self.manifest.get("postprocess") or {}
        self.output_names: list[str] = list(self.manifest["outputs"])
        self.backend = backend
        if backend == "onnxruntime":
            self._init_ort(providers, intra_op_num_threads)
        elif backend == "openvino":
            self._init_openvino(intra_op_num_threads)
        else:
            raise M.DeployError(f"backend {backend!r}: use \"onnxruntime\" or \"openvino\"")
        self._check_input()

    # -- backends ------------------------------------------------------------------------

    def _init_ort(self, providers, threads) -> None:
        import onnxruntime as ort
        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in PREFERRED_PROVIDERS if p in available]
        else:
            unknown = [p for p in providers if p not in available]
            if unknown:
                raise M.DeployError(f"providers {unknown} are not available in this "
                                    f"onnxruntime; available: {available}")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(self.onnx_path), sess_options=opts,
                                                providers=list(providers))
        except Exception as e:  # a broken or truncated file
            raise M.DeployError(f"{self.onnx_path}: onnxruntime cannot load the model "
                                f"({type(e).__name__}: {e}); copy the export again") from None
        self.providers = self.session.get_providers()
        inp = self.session.get_inputs()[0]
        self._input_name, self._input_shape = inp.name, list(inp.shape)
        self._fp16 = "float16" in inp.type

        def run(x: np.ndarray) -> list[np.ndarray]:
            return self.session.run(self.output_names, {self._input_name: x})
        self._run = run

    def _init_openvino(self, threads) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise M.DeployError("backend \"openvino\" needs the openvino package: pip install "
                                "openvino") from None
        core = ov.Core()
        # OpenVINO computes in bfloat16 on CPUs that have it unless told otherwise; the
        # export's parity (and the deploy tolerances) are float32 ones
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        model = core.read_model(str(self.onnx_path))
        self.session = core.compile_model(model, "CPU", config)
        self.providers = ["OpenVINO:CPU"]
        self._input_name = model.inputs[0].get_any_name()
        self._input_shape = [d.get_length() if d.is_static else "batch"
                             for d in model.inputs[0].get_partial_shape()]
        self._fp16 = model.inputs[0].get_element_type() == ov.Type.f16  # export.half
        outputs = self.session.outputs

        def run(x: np.ndarray) -> list[np.ndarray]:
            res = self.session(x)
            return [np.asarray(res[o]) for o in outputs]
        self._run = run

    def _check_input(self) -> None:
        channels = int(self.pre["channels"])
        if len(self._input_shape) != 4 or self._input_shape[1] != channels:
            raise M.DeployError(f"{self.onnx_path}: the model's input {self._input_shape} does "
                                f"not fit the manifest's {channels} channels; the model and "
                                f"manifest.json come from different exports")

    # -- prediction ----------------------------------------------------------------------

    def predict(self, images: Image | list[Image], color_order: str = "BGR"
                ) -> Result | list[Result]:
        if isinstance(images, (list, tuple)):
            return self.predict_batch(list(images), color_order)
        return self.predict_batch([images], color_order)[0]

    def predict_batch(self, images: list[Image], color_order: str = "BGR") -> list[Result]:
        """Images of one input shape run as one batch (stretch/letterbox: all of them)."""
        raws = [self._as_array(x, color_order, i) for i, x in enumerate(images)]
        window = self.post.get("sliding_window") if self.task == "segmentation" else None
        prepared = [prepare(r, self.pre, f"image {i}") for i, r in enumerate(raws)]
        if window:
            return [self._segmentation_window(x, info) for x, info in prepared]
        # one forward per input shape (detection NMS rows carry their index in the batch)
        out: list[Result | None] = [None] * len(prepared)
        groups: dict[tuple, list[int]] = {}
        for i, (x, _) in enumerate(prepared):
            groups.setdefault(x.shape, []).append(i)
        for idx in groups.values():
            outputs = self._forward(np.stack([prepared[i][0] for i in idx]))
            for k, i in enumerate(idx):
                out[i] = self._finish(outputs, prepared[i][1], k)
        return out  # type: ignore[return-value]

    def _as_array(self, x: Image, color_order: str, i: int) -> np.ndarray:
        if isinstance(x, (str, Path)):
            return read_image(x)
        if not isinstance(x, np.ndarray):
            raise M.DeployError(f"image {i}: expected a path or a numpy array, got "
                                f"{type(x).__name__}")
        if x.dtype not in (np.uint8, np.uint16):
            raise M.DeployError(f"image {i}: pixel type {x.dtype}; give uint8 or uint16")
        if x.ndim not in (2, 3) or (x.ndim == 3 and x.shape[2] not in (1, 3, 4)):
            raise M.DeployError(f"image {i}: shape {x.shape}; give HxW or HxWxC with C = 1, 3 "
                                f"or 4")
        if color_order.upper() == "RGB" and x.ndim == 3 and x.shape[2] >= 3:
            x = np.ascontiguousarray(x[:, :, [2, 1, 0] + ([3] if x.shape[2] == 4 else [])])
        elif color_order.upper() not in ("BGR", "RGB"):
            raise M.DeployError(f"color_order {color_order!r}: use \"BGR\" or \"RGB\"")
        return x

    def _forward(self, x: np.ndarray) -> list[np.ndarray]:
        if self._fp16:
            x = x.astype(np.float16)
        return [np.asarray(o, dtype=np.float32) for o in self._run(np.ascontiguousarray(x))]

    def _out(self, outputs: list[np.ndarray], name: str) -> np.ndarray:
        return outputs[self.output_names.index(name)]

    def _finish(self, outputs: list[np.ndarray], info: dict[str, Any], k: int) -> Result:
        task = self.task
        if task == "classification":
            probs = self._out(outputs, "probs")[k]
            n = int(self.post.get("topk", 5))
            order = np.argsort(-probs, kind="stable")[:min(n, probs.size)]
            top = [(self.classes[int(i)], float(probs[i])) for i in order]
            k = int(order[0])
            if "ng_threshold" in self.post and probs.size == 2:  # the saved OK/NG threshold
                ng = int(self.post["ng_class_id"])
                k = ng if float(probs[ng]) >= float(self.post["ng_threshold"]) else 1 - ng
            return ClassificationResult(k, self.classes[k], float(probs[k]), top, probs)
        if task == "segmentation":
            return self._segmentation(self._out(outputs, "probs")[k], info)
        if task == "detection":
            return self._detection(outputs, info, k)
        return self._anomaly(self._out(outputs, "anomaly_map")[k, 0],
                             float(self._out(outputs, "score")[k]), info)

    def _segmentation(self, probs: np.ndarray, info: dict[str, Any]) -> SegmentationResult:
        conf, mask = probs.max(0), probs.argmax(0).astype(np.uint8)
        n = len(self.classes)
        counts = np.bincount(mask.ravel(), minlength=n)[:n]
        fractions = (counts / max(1, mask.size)).tolist()
        h, w = info["hw"]
        if mask.shape != (h, w):
            mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
        return SegmentationResult(mask, self.classes, fractions, float(conf.mean()))

    def _segmentation_window(self, x: np.ndarray, info: dict[str, Any]) -> SegmentationResult:
        from aicore.deploy.postprocess import softmax
        logits = sliding_window_logits(lambda t: self._out(self._forward(t), "logits"), x,
                                       self.post["sliding_window"])
        return self._segmentation(softmax(logits, 0), info)

    def _detection(self, outputs: list[np.ndarray], info: dict[str, Any], k: int
                   ) -> DetectionResult:
        post = self.post
        if post.get("format") == "nms_in_graph":
            rows = self._out(outputs, "detections")
            rows = rows[rows[:, 0] == k]
            boxes, scores, labels = rows[:, 1:5], rows[:, 5], rows[:, 6].astype(np.int64)
            boxes, scores, labels = (boxes[:int(post["max_det"])], scores[:int(post["max_det"])],
                                     labels[:int(post["max_det"])])
        else:
            boxes, scores, labels = detections_from_dense(self._out(outputs, "boxes")[k],
                                                          self._out(outputs, "scores")[k], post)
        keep = scores >= float(post.get("demo_score_thresh", 0.0))
        boxes = boxes_to_original(boxes[keep], info["scale"], info["hw"])
        labels = labels[keep]
        return DetectionResult(boxes, scores[keep].astype(np.float32), labels,
                               [self.classes[int(i)] for i in labels])

    def _anomaly(self, amap: np.ndarray, score: float, info: dict[str, Any]) -> AnomalyResult:
        post = self.post
        thr, thr_px = float(post["image_threshold"]), float(post["pixel_threshold"])
        area = float((amap >= thr_px).mean()) if math.isfinite(thr_px) else float("nan")
        h, w = info["hw"]
        full = amap if amap.shape == (h, w) else cv2.resize(amap, (w, h),
                                                            interpolation=cv2.INTER_LINEAR)
        contours: list[np.ndarray] = []
        if math.isfinite(thr_px):
            found, _ = cv2.findContours((full >= thr_px).astype(np.uint8), cv2.RETR_EXTERNAL,
                                        cv2.CHAIN_APPROX_SIMPLE)
            contours = [c.reshape(-1, 2) for c in found]
        return AnomalyResult(full.astype(np.float32), score, thr, is_defect(score, thr), area,
                             thr_px, contours)

    def info(self) -> dict[str, Any]:
        return {"task": self.task, "classes": self.classes, "backend": self.backend,
                "providers": list(self.providers), "model": str(self.onnx_path)}

"""Latency and throughput of the exported model in PyTorch, TorchScript and ONNX Runtime, on
the same real images (export.benchmark: true). Runs on the CPU the export runs on."""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch
from loguru import logger


def time_calls(fn: Callable[[], Any], iters: int, warmup: int = 3) -> list[float]:
    """Seconds of each of `iters` calls of `fn`, after `warmup` untimed calls. The one timing
    loop of export.benchmark and benchmarks/deploy.py."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _summary(times: list[float], batch: int) -> dict[str, float]:
    times = sorted(times)
    p50 = statistics.median(times)
    return {"batch": batch, "latency_ms_p50": 1000 * p50,
            "latency_ms_p90": 1000 * times[int(0.9 * (len(times) - 1))],
            "images_per_s": batch / p50}


def benchmark_formats(model: torch.nn.Module, images: torch.Tensor, onnx_path: Path | None,
                      ts_path: Path | None, iters: int = 50) -> dict[str, list[dict[str, float]]]:
    import onnxruntime as ort
    runners: dict[str, Callable[[torch.Tensor], Any]] = {}
    model.eval()
    runners["pytorch"] = lambda x: model(x)
    if ts_path is not None and ts_path.is_file():
        ts = torch.jit.load(str(ts_path))
        runners["torchscript"] = lambda x: ts(x)
    if onnx_path is not None and onnx_path.is_file():
        sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        runners["onnxruntime"] = lambda x: sess.run(None, {"images": x.cpu().numpy()})
    results: dict[str, list[dict[str, float]]] = {}
    with torch.no_grad():
        for name, run in runners.items():
            results[name] = []
            for x in ([images[:1], images] if images.shape[0] > 1 else [images]):
                results[name].append(_summary(time_calls(lambda: run(x), iters), x.shape[0]))
    for name, rows in results.items():
        logger.info(f"benchmark {name:12s} " + "  ".join(
            f"batch {r['batch']}: {r['latency_ms_p50']:.2f} ms ({r['images_per_s']:.0f} img/s)"
            for r in rows))
    return results

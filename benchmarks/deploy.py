"""Deploy runtime speed: PyTorch eager vs aicore.deploy (onnxruntime) per task, and the HTTP
service against calling Predictor in-process.

    python benchmarks/deploy.py [--tasks classification detection] [--iters 50] [--threads 2]

For every task's quickstart config, trains one epoch (latency does not depend on training)
into a temporary folder, exports it, then on the same demo image measures
  - batch 1 latency (median ms) and batch 8 throughput (img/s) of the model forward pass in
    PyTorch eager (the export wrapper, no_grad) and in onnxruntime, same thread count;
  - end-to-end per request: Predictor.predict(png bytes decoded) in-process vs
    POST /predict to `python -m aicore.deploy serve` on localhost (p50/p99 ms, req/s).
With CUDA available in onnxruntime, the CUDA EP is measured too.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CONFIGS = {t: ROOT / "configs" / t / "quickstart.json"
           for t in ("classification", "segmentation", "detection", "anomaly")}


def timed(fn, iters: int, warmup: int = 3) -> np.ndarray:
    """Seconds per call, by export.benchmark's timing loop."""
    from aicore.engine.benchmark import time_calls
    return np.asarray(time_calls(fn, iters, warmup))


def train_and_export(task: str, work: Path, data: Path) -> tuple[Path, Path]:
    from tests.conftest import run_cli
    over = ["-o", f"work_dir={work / task}", "-o", "train.epochs=1", "-o", "train.progress=false",
            "-o", f"data.root={data / task}", "-o", 'export.formats=["onnx"]',
            "-o", "train.overwrite=true"]  # a rerun with the same --work retrains
    if task == "anomaly":
        over += ["-o", "data.dataset.category=" + sorted(p.name for p in (data / task).iterdir()
                                                          if p.is_dir())[0]]
    assert run_cli("-c", str(CONFIGS[task]), *over) == 0, task
    assert run_cli("-c", str(CONFIGS[task]), *over, "-o", "mode=export") == 0, task
    return work / task / "export", CONFIGS[task]


def eager_module(config: Path, export: Path):
    import torch

    from aicore import config as C
    from aicore.engine.protocol import make_protocol
    from aicore.engine.runners import checkpoint_path, load_model
    from aicore.tasks import import_tasks
    from aicore.tasks.spec import apply_task_defaults, trainer_class
    import_tasks()
    manifest = json.loads((export / "manifest.json").read_text())
    cfg = C.load_config(str(config), ["mode=export", f"export.checkpoint={manifest['checkpoint']}"])
    apply_task_defaults(cfg)
    trainer = trainer_class(cfg)(cfg)
    trainer.device = torch.device("cpu")
    model, _ = load_model(trainer, cfg, "export")
    protocol = make_protocol(trainer, model=model, checkpoint=checkpoint_path(cfg, "export"))
    return protocol.export(model).module.eval()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_task(task: str, export: Path, config: Path, image: Path, iters: int,
               threads: int) -> dict:
    import cv2
    import onnxruntime as ort
    import torch

    from aicore.deploy import Predictor
    from aicore.deploy.predictor import decode_image
    from aicore.deploy.preprocess import prepare
    torch.set_num_threads(threads)
    p = Predictor(export, providers=["CPUExecutionProvider"], intra_op_num_threads=threads)
    raw = cv2.imread(str(image), cv2.IMREAD_UNCHANGED)
    x, _ = prepare(raw, p.pre)
    if p.pre["resize"] == "none":  # sliding window: time one window
        size = p.post["sliding_window"]["window"]
        x = np.ascontiguousarray(x[:, :size[0], :size[1]])
    x1, x8 = x[None], np.ascontiguousarray(np.repeat(x[None], 8, 0))
    wrapper = eager_module(config, export)
    row = {"task": task}
    with torch.no_grad():
        t1, t8 = torch.from_numpy(x1), torch.from_numpy(x8)
        row["eager_b1_ms"] = float(np.median(timed(lambda: wrapper(t1), iters)) * 1e3)
        row["eager_b8_img_s"] = float(8 / np.median(timed(lambda: wrapper(t8), iters // 4 + 1)))
    row["ort_b1_ms"] = float(np.median(timed(lambda: p._forward(x1), iters)) * 1e3)
    row["ort_b8_img_s"] = float(8 / np.median(timed(lambda: p._forward(x8), iters // 4 + 1)))
    row["speedup_b1"] = row["eager_b1_ms"] / row["ort_b1_ms"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        g = Predictor(export, providers=["CUDAExecutionProvider"])
        row["cuda_b1_ms"] = float(np.median(timed(lambda: g._forward(x1), iters)) * 1e3)
        got, want = g._forward(x8), p._forward(x8)
        row["cuda_max_abs_diff"] = max(float(np.abs(a - b).max()) for a, b in zip(got, want))
    data = cv2.imencode(".png", raw)[1].tobytes()
    inproc = timed(lambda: p.predict(decode_image(data)), iters)
    row["inprocess_p50_ms"] = float(np.median(inproc) * 1e3)
    import httpx
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "aicore.deploy", "serve", str(export),
                             "--port", str(port), "--threads", str(threads),
                             "--providers", "CPUExecutionProvider"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        with httpx.Client(base_url=url) as c:
            lat = timed(lambda: c.post("/predict", content=data).raise_for_status(), iters * 2)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    row["service_p50_ms"] = float(np.median(lat) * 1e3)
    row["service_p99_ms"] = float(np.percentile(lat, 99) * 1e3)
    row["service_req_s"] = float(1 / lat.mean())
    row["service_overhead_ms"] = row["service_p50_ms"] - row["inprocess_p50_ms"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=list(CONFIGS))
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default=None, help="folder for data and runs (default: temp)")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    work = Path(args.work or tempfile.mkdtemp(prefix="aicore_deploy_bench_"))
    from aicore.tools.demo_data import main as demo_data
    rows = []
    for task in args.tasks:
        if not (work / "data" / task).exists():
            demo_data([str(work / "data"), "--task", task])
        export, config = train_and_export(task, work / "runs", work / "data")
        root = work / "data" / task
        image = (sorted(root.glob("*/test/*/*.png")) if task == "anomaly" else
                 sorted(p for p in root.rglob("*.png") if "val" in str(p.relative_to(root))))[0]
        rows.append(bench_task(task, export, config, image, args.iters, args.threads))
        print(json.dumps(rows[-1]), flush=True)
    keys = list(rows[0])
    print("\n| " + " | ".join(keys) + " |\n|" + " --- |" * len(keys))
    for r in rows:
        print("| " + " | ".join(f"{r.get(k, ''):.2f}" if isinstance(r.get(k), float)
                                 else str(r.get(k, "")) for k in keys) + " |")


if __name__ == "__main__":
    main()

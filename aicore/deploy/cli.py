"""`python -m aicore.deploy predict EXPORT SOURCE --out DIR` and
`python -m aicore.deploy serve EXPORT [--host 127.0.0.1] [--port 8000]`.

Exit status 2 with one `error: ...` line for anything the user can fix (missing or
inconsistent export folder, unreadable source), as the training CLI does.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from aicore.data.sources import write_predictions
from aicore.errors import AICoreError

def predict(args: argparse.Namespace) -> int:
    from aicore.deploy import report
    from aicore.deploy.bridge import demo_prediction
    from aicore.deploy.predictor import Predictor
    predictor = Predictor(args.export, providers=args.providers,
                          intra_op_num_threads=args.threads, backend=args.backend)
    task, classes = predictor.task, predictor.classes
    final, source = Path(args.out), Path(args.source)
    staged = final.with_name(final.name + ".partial")  # a failed run leaves `final` as it was
    if staged.exists():
        shutil.rmtree(staged)
    staged.mkdir(parents=True)
    try:
        rows, results = write_predictions(
            args.source, staged, lambda raw, _: demo_prediction(predictor, predictor.predict(raw)),
            lambda rgb, pred: report.draw(task, classes, rgb, pred),
            lambda pred: report.demo_row(task, classes, pred))
        report.write_extra(task, classes, predictor.post, results, staged, source)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    staged.rename(final)
    print(f"{len(rows)} predictions written to {final}")
    return 0


def serve(args: argparse.Namespace) -> int:
    from aicore.deploy.server import run
    run(args.export, host=args.host, port=args.port, max_bytes=args.max_bytes,
        max_pixels=args.max_pixels, providers=args.providers, threads=args.threads)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m aicore.deploy",
                                     description="Run an exported AICore model without PyTorch")
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("export", help="export folder (manifest.json + model.onnx) or a .onnx")
    common.add_argument("--providers", nargs="+", default=None,
                        help="onnxruntime execution providers (default: TensorRT, CUDA, CPU)")
    common.add_argument("--threads", type=int, default=None, help="intra-op CPU threads")
    p = sub.add_parser("predict", parents=[common], help="predict images, a folder or a video")
    p.add_argument("source", help="an image, a folder of images or a video")
    p.add_argument("--out", required=True, help="output folder (replaced when done)")
    p.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "openvino"])
    s = sub.add_parser("serve", parents=[common], help="HTTP service (FastAPI + uvicorn)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--max-bytes", type=int, default=20_000_000, help="largest upload, bytes")
    s.add_argument("--max-pixels", type=int, default=40_000_000, help="largest image, pixels")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        sys.exit(predict(args) if args.command == "predict" else serve(args))
    except AICoreError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)

"""Detection metric speed: AICore's DetectionEvaluator vs pycocotools vs faster-coco-eval called
directly, on the same synthetic split (default 500 images x 50 detections, 3 classes).

"Direct" means the least code a user would write: the split's numpy boxes turned into COCO
dicts and a detection array, COCO(), loadRes(), evaluate(), accumulate(), summarize().
AICore's time covers update() with the per-image tensors and compute(). Rounds alternate
between the three (so drift in machine load hits all alike); medians are printed, and the
ratio AICore / faster-coco-eval direct (goal: <= 1.2). The three mAPs are printed as a check.

    python benchmarks/coco_eval.py [--images 500] [--dets 50] [--rounds 5]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aicore.tasks.detection.evaluator import DetectionEvaluator  # noqa: E402


def make_split(n_images: int, n_dets: int, n_classes: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    split = []
    for _ in range(n_images):
        k = int(rng.integers(1, 11))
        xy = rng.uniform(0, 500, (k, 2))
        gt = np.concatenate([xy, xy + rng.uniform(10, 120, (k, 2))], 1).astype(np.float32)
        gl = rng.integers(0, n_classes, k)
        idx = rng.integers(0, k, n_dets // 2)
        hits = gt[idx] + rng.normal(0, 6, (len(idx), 4))
        xy = rng.uniform(0, 500, (n_dets - len(hits), 2))
        noise = np.concatenate([xy, xy + rng.uniform(10, 120, xy.shape)], 1)
        boxes = np.concatenate([hits, noise]).astype(np.float32)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        split.append({"gt_boxes": gt, "gt_labels": gl, "boxes": boxes,
                      "scores": rng.random(n_dets).astype(np.float32),
                      "labels": np.concatenate([gl[idx], rng.integers(0, n_classes, len(noise))])})
    return split


def coco_inputs(split: list[dict], n_classes: int) -> tuple[dict, np.ndarray]:
    images, anns, dets = [], [], []
    for i, im in enumerate(split, start=1):
        images.append({"id": i, "width": 640, "height": 640})
        for box, label in zip(im["gt_boxes"], im["gt_labels"]):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(label) + 1,
                         "bbox": [float(box[0]), float(box[1]), w, h], "area": w * h,
                         "iscrowd": 0})
        b = im["boxes"]
        dets.append(np.column_stack([np.full(len(b), i), b[:, :2], b[:, 2:] - b[:, :2],
                                     im["scores"], im["labels"] + 1]))
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": k + 1, "name": str(k)} for k in range(n_classes)]}
    return gt, np.concatenate(dets).astype(np.float64)


def run_direct(split, n_classes, library: str) -> float:
    if library == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval as Eval
    else:
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as Eval
    with contextlib.redirect_stdout(io.StringIO()):
        gt_dict, dets = coco_inputs(split, n_classes)
        if library == "pycocotools":
            gt = COCO()
            gt.dataset = gt_dict
            gt.createIndex()
        else:
            gt = COCO(gt_dict)
        ev = Eval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


def run_aicore(split, n_classes) -> float:
    ev = DetectionEvaluator(num_classes=n_classes)
    for im in split:
        ev.update([{"boxes": torch.from_numpy(im["boxes"]), "scores": torch.from_numpy(im["scores"]),
                    "labels": torch.from_numpy(im["labels"])}],
                  [{"boxes": torch.from_numpy(im["gt_boxes"]),
                    "labels": torch.from_numpy(im["gt_labels"]), "size": (640, 640)}])
    return ev.compute()["mAP"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--dets", type=int, default=50)
    p.add_argument("--classes", type=int, default=3)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    split = make_split(args.images, args.dets, args.classes)
    runners = {"aicore": lambda: run_aicore(split, args.classes),
               "faster-coco-eval": lambda: run_direct(split, args.classes, "faster"),
               "pycocotools": lambda: run_direct(split, args.classes, "pycocotools")}
    times: dict[str, list[float]] = {k: [] for k in runners}
    maps: dict[str, float] = {}
    for name, fn in runners.items():  # warm-up: imports, first allocations
        maps[name] = fn()
    for r in range(args.rounds):
        order = list(runners) if r % 2 == 0 else list(reversed(runners))
        for name in order:
            t0 = time.perf_counter()
            runners[name]()
            times[name].append(time.perf_counter() - t0)
    print(f"{args.images} images x {args.dets} detections, {args.classes} classes, "
          f"{args.rounds} alternating rounds (median seconds)")
    for name in runners:
        print(f"  {name:18s} {statistics.median(times[name]):8.3f} s   mAP {maps[name]:.6f}")
    ratio = statistics.median(times["aicore"]) / statistics.median(times["faster-coco-eval"])
    print(f"ratio aicore / faster-coco-eval direct: {ratio:.2f}")
    print(f"ratio pycocotools / aicore: "
          f"{statistics.median(times['pycocotools']) / statistics.median(times['aicore']):.2f}")


if __name__ == "__main__":
    main()

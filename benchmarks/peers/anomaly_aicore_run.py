"""One AICore anomaly run, the counterpart of anomaly_anomalib_run.py (same arguments).

    python anomaly_aicore_run.py ROOT CATEGORY MODEL SEED WEIGHTS OUT.npz [--image-size N]

Fits AICore's PaDiM or PatchCore (resnet18 with the weights in WEIGHTS) on ROOT/CATEGORY with
the MVTecDataset the trainer uses, predicts the test split and saves paths, image scores, maps
at the image size and the seconds of fit + predict.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from aicore.tasks.anomaly.datasets import MVTecDataset
from aicore.tasks.anomaly.models import PaDiM, PatchCore


def fit_and_predict(model, train, test) -> tuple[np.ndarray, np.ndarray, float]:
    """Fit `model` on `train`, score `test`: image scores, maps at the test images' own size,
    and the seconds of fit + predict."""
    model.eval()
    t0 = time.perf_counter()
    with torch.inference_mode():
        model.start_fit()
        for x, *_ in DataLoader(train, batch_size=32):
            model.accumulate(x)
        model.finish_fit()
        maps, scores = [], []
        for x, *_ in DataLoader(test, batch_size=32):
            m, s = model(x)
            maps.append(m)
            scores.append(s)
    seconds = time.perf_counter() - t0
    maps = torch.cat(maps).float()
    native = test.load_image(0).shape[:2]
    if tuple(maps.shape[-2:]) != native:
        maps = F.interpolate(maps, size=native, mode="bilinear", align_corners=False)
    return torch.cat(scores).double().numpy(), maps[:, 0].numpy(), seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    for name in ("root", "category", "model", "seed", "weights", "out"):
        ap.add_argument(name)
    ap.add_argument("--image-size", type=int, default=0, help="0 = the images' own size")
    args = ap.parse_args()
    seed = int(args.seed)
    train = MVTecDataset(args.root, "train", category=args.category,
                         input_size=[args.image_size] * 2 if args.image_size else None)
    test = MVTecDataset(args.root, "test", category=args.category,
                        input_size=[args.image_size] * 2 if args.image_size else None)
    size = tuple(train[0][0].shape[-2:])
    if args.model == "PaDiM":
        model = PaDiM("resnet18", [1, 2, 3], 100, pretrained=args.weights, input_size=size,
                      seed=seed)
    else:
        model = PatchCore("resnet18", [2, 3], 0.1, 9, pretrained=args.weights, input_size=size,
                          seed=seed)
    scores, maps, seconds = fit_and_predict(model, train, test)
    np.savez(args.out, paths=np.array([s[0] for s in test.samples]), scores=scores, maps=maps,
             seconds=seconds)


if __name__ == "__main__":
    main()

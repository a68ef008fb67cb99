"""The bare smp peer for benchmarks/peers/segmentation.py: a hand-written training loop.

smp Unet with a resnet18 encoder (random init), AdamW + OneCycleLR, random horizontal and
vertical flips, cross-entropy (255 ignored), batch 16, mIoU over the val split after the last
epoch (per-class IoU from one confusion matrix over all val pixels, classes absent from both
prediction and truth skipped). Prints one JSON line.

    python benchmarks/peers/segmentation_bare.py DATA --epochs 15
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


class Pairs(Dataset):
    def __init__(self, root: Path, split: str, train: bool) -> None:
        stems = (root / f"{split}.txt").read_text().split()
        self.items = [(cv2.cvtColor(cv2.imread(str(root / "images" / f"{s}.png")), cv2.COLOR_BGR2RGB),
                       cv2.imread(str(root / "masks" / f"{s}.png"), 0)) for s in stems]
        self.train = train

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        img, mask = self.items[i]
        if self.train:
            if np.random.rand() < 0.5:
                img, mask = img[:, ::-1], mask[:, ::-1]
            if np.random.rand() < 0.5:
                img, mask = img[::-1], mask[::-1]
        x = torch.from_numpy(((img - MEAN) / STD).transpose(2, 0, 1).copy())
        return x, torch.from_numpy(mask.astype(np.int64).copy())


def main() -> None:
    t0 = time.perf_counter()
    p = argparse.ArgumentParser()
    p.add_argument("data", type=Path)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.002)
    p.add_argument("--seed", type=int, default=42)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    n_cls = len((a.data / "labels.txt").read_text().split())
    train, val = Pairs(a.data, "train", True), Pairs(a.data, "val", False)
    tl = DataLoader(train, a.batch, shuffle=True, num_workers=0)
    vl = DataLoader(val, a.batch, num_workers=0)
    model = smp.Unet("resnet18", encoder_weights=None, classes=n_cls)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=a.epochs * len(tl))
    for _ in range(a.epochs):
        model.train()
        for x, y in tl:
            loss = F.cross_entropy(model(x), y, ignore_index=255)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    cm = torch.zeros(n_cls, n_cls, dtype=torch.int64)
    with torch.no_grad():
        for x, y in vl:
            pred, keep = model(x).argmax(1), y != 255
            cm += torch.bincount(y[keep] * n_cls + pred[keep], minlength=n_cls ** 2).view(n_cls, n_cls)
    inter, union = cm.diag().float(), (cm.sum(0) + cm.sum(1) - cm.diag()).float()
    miou = float((inter[union > 0] / union[union > 0]).mean())
    print(json.dumps({"miou": miou, "in_process_s": time.perf_counter() - t0}))


if __name__ == "__main__":
    main()

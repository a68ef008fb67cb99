"""The bare PyTorch peer for benchmarks/peers/classification.py: a hand-written loop.

torchvision ImageFolder (decoded each epoch by the loader workers), timm resnet18 random init,
SGD momentum 0.9 + per-step cosine, cross-entropy, top-1 on val after every epoch. Prints one JSON
line: train images/s (training iterations only), val top-1 and the in-process seconds.

    python benchmarks/peers/classification_bare.py DATA --epochs 15 --batch 64 --lr 0.05
"""
from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F
import timm
from torch.utils.data import DataLoader
from torchvision import datasets, transforms


def main() -> None:
    t0 = time.perf_counter()
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    tf = transforms.Compose([transforms.ToTensor(),
                             transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    train = datasets.ImageFolder(f"{a.data}/train", tf)
    val = datasets.ImageFolder(f"{a.data}/val", tf)
    tl = DataLoader(train, a.batch, shuffle=True, num_workers=a.workers, drop_last=False,
                    persistent_workers=a.workers > 0)
    vl = DataLoader(val, a.batch, num_workers=a.workers, persistent_workers=a.workers > 0)
    model = timm.create_model("resnet18", num_classes=len(train.classes))
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9, weight_decay=5e-4)
    total = a.epochs * len(tl)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    train_s, seen, top1 = 0.0, 0, 0.0
    for _ in range(a.epochs):
        model.train()
        t = time.perf_counter()
        for x, y in tl:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += len(y)
        train_s += time.perf_counter() - t
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in vl:
                correct += int((model(x).argmax(1) == y).sum())
        top1 = correct / len(val)
    print(json.dumps({"train_img_s": seen / train_s, "top1": top1,
                      "in_process_s": time.perf_counter() - t0}))


if __name__ == "__main__":
    main()

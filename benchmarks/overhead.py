"""Framework overhead: AICore's trainer vs a bare hand-written PyTorch loop on the same work.

Both train the same timm model from the same initial weights, on the same cached data set with
the same augmentation, batch size, optimizer and number of iterations; only the training
iterations are timed (not evaluation or start-up). Prints images/s of each and their ratio
(AICore / bare; 1.0 = no overhead).

    python benchmarks/overhead.py [--model resnet18] [--size 64] [--epochs 3] [--device cpu]
        [--amp bf16|fp16] [--channels-last]

Under `torchrun --nproc_per_node 1` AICore's side trains through DistributedDataParallel (NCCL
on a GPU, gloo on CPU) while the bare loop stays a plain single-process loop, so the ratio is
the cost of the DDP wrapper and its all-reduce on one device.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aicore import config as C  # noqa: E402
from aicore.engine import dist  # noqa: E402
from aicore.engine.hooks import Hook  # noqa: E402
from aicore.registry import TRAINERS  # noqa: E402
from aicore.tasks import import_tasks  # noqa: E402
from aicore.tasks.classification.synthetic import make  # noqa: E402


class IterTimer(Hook):
    """Accumulates wall time from the start of each epoch to its last optimizer step."""

    priority = 0

    def __init__(self) -> None:
        super().__init__()
        self.seconds, self.images, self.epochs = 0.0, 0, 0

    def before_epoch(self, trainer) -> None:
        self._sync(trainer)
        self.t0 = time.perf_counter()

    def after_iter(self, trainer) -> None:
        if trainer.inner_iter + 1 == trainer.iters_per_epoch:
            self._sync(trainer)
            self.epochs += 1
            if self.epochs > 1:  # the first epoch is warm-up for both loops
                self.seconds += time.perf_counter() - self.t0
                self.images += trainer.epoch_count * trainer.train_loader.batch_size

    @staticmethod
    def _sync(trainer) -> None:
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()


def aicore_run(cfg_dict: dict, work: Path) -> tuple[float, torch.nn.Module]:
    path = work / "bench.json"
    path.write_text(json.dumps(cfg_dict))
    cfg = C.load_config(path)
    C.validate(cfg)
    trainer = TRAINERS.get("ClassificationTrainer")(cfg)
    timer = IterTimer()
    build_hooks = trainer.build_hooks
    trainer.build_hooks = lambda: sorted(build_hooks() + [timer], key=lambda h: h.priority)
    trainer.train()
    return timer.images / timer.seconds, trainer


def bare_run(trainer_ref, epochs: int, device: torch.device, amp: str | None,
             channels_last: bool = False) -> float:
    """The loop a careful user writes by hand, reusing AICore's dataset object for identical
    data (decoding and augmentation cost the same on both sides)."""
    torch.manual_seed(0)
    import timm
    dataset = trainer_ref.train_set
    model = timm.create_model(trainer_ref.cfg.model.name, num_classes=len(dataset.classes),
                              in_chans=3).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    # fp16 needs loss scaling to train; the scaler's unscale / inf check is part of its cost
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    loader = DataLoader(dataset, batch_size=trainer_ref.train_loader.batch_size, shuffle=True,
                        num_workers=trainer_ref.train_loader.num_workers, drop_last=False)
    seconds, images = 0.0, 0
    for epoch in range(epochs):
        model.train()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        n = 0
        for x, y, _ in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16"
                                else torch.float16, enabled=bool(amp)):
                loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            loss.item()  # a hand-written loop logs its loss too
            n += x.shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize()
        if epoch > 0:
            seconds += time.perf_counter() - t0
            images += n
    return images / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--per-class", type=int, default=64, help="training images per class")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default=None, choices=[None, "bf16", "fp16"])
    p.add_argument("--channels-last", action="store_true",
                   help="channels-last memory format on both sides (train.channels_last)")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds; best of each")
    a = p.parse_args()
    import_tasks()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = make(tmp / "data", size=a.size, n_train=a.per_class, n_val=4, n_test=1)
        cfg = {
            "task": "classification", "work_dir": str(tmp / "run"), "seed": 0,
            "data": {"root": str(root), "input_size": [a.size, a.size], "batch_size": a.batch,
                     "num_workers": a.workers,
                     "dataset": {"type": "ClassificationDataset", "cache": True},
                     "train": {"transforms": [{"type": "HorizontalFlip", "p": 0.5}]}},
            "model": {"type": "TimmClassifier", "name": a.model},
            "loss": {"type": "CrossEntropyLoss"},
            "optimizer": {"type": "SGD", "lr": 0.01},
            "train": {"epochs": a.epochs, "progress": False, "device": a.device, "amp": a.amp,
                      "log_interval": None, "channels_last": a.channels_last},
        }
        # alternate the two loops and keep each one's best round, so a busy moment on the
        # machine or cache warm-up does not favour whichever ran second
        ours_runs, bare_runs = [], []
        for r in range(a.rounds):
            cfg["work_dir"] = str(tmp / f"run{r}")
            ours_r, trainer = aicore_run(cfg, tmp)
            ours_runs.append(ours_r)
            bare_runs.append(bare_run(trainer, a.epochs, trainer.device, a.amp,
                                      a.channels_last))
        ours, bare = max(ours_runs), max(bare_runs)
    ddp = "DDP x%d" % torch.distributed.get_world_size() if dist.is_dist() else "no DDP"
    print(f"device={trainer.device} model={a.model} size={a.size} batch={a.batch} "
          f"amp={a.amp or 'off'} channels_last={a.channels_last} AICore={ddp} "
          f"epochs timed={a.epochs - 1}")
    print(f"bare PyTorch loop: {bare:8.1f} img/s  (rounds: {', '.join(f'{v:.1f}' for v in bare_runs)})")
    print(f"AICore trainer:    {ours:8.1f} img/s  (rounds: {', '.join(f'{v:.1f}' for v in ours_runs)})")
    print(f"ratio AICore/bare: {ours / bare:.3f}")
    dist.cleanup()


if __name__ == "__main__":
    main()

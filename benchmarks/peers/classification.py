"""Classification peers: AICore vs a bare PyTorch loop vs timm's train.py path, alternating rounds.

Same data (benchmarks/peers/digits_data.py, 32 px), model (timm resnet18, random init), batch 64,
SGD momentum 0.9 lr 0.05 weight decay 5e-4 + per-step cosine to 0, no warm-up, no augmentation,
no label smoothing, evaluation after every epoch, 2 loader workers. Each round runs the three
sides as fresh processes, in alternating order (reversed every other round):

* bare: classification_bare.py, a hand-written loop (plain momentum, decay on every parameter);
* timm: classification_timm.py, train.py's code path re-assembled from timm's library (train.py
  itself ships only in timm's source repository, not in the wheel, and nothing can be
  downloaded here), given train.py's options for these settings; ``--opt sgd`` is timm's
  Nesterov SGD without decay on biases and norm parameters, as AICore's SGD; it writes
  summary.csv and a checkpoint every epoch (last, history, model_best);
* aicore: ``python main.py`` (metrics.jsonl, TensorBoard, train_batch.jpg, last/best checkpoints).

The table gives medians over rounds of the whole-process wall time (start-up, data, training,
evaluation, checkpoints), CPU seconds (process and loader workers), peak memory, final val top-1
and the training throughput (training iterations only; AICore's from its epoch lines).

    python benchmarks/peers/classification.py [--epochs 15] [--rounds 3] [--out /tmp/peers_cls]
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, alternating, medians, run_timed, table  # noqa: E402


def aicore_config(data: Path, work: Path, epochs: int) -> dict:
    return {"_base_": str(ROOT / "configs/_base_/classification.json"),
            "work_dir": str(work), "data": {"root": str(data), "batch_size": 64,
                                            "train": {"transforms": []}},
            "model": {"type": "TimmClassifier", "name": "resnet18"},
            "loss": {"type": "CrossEntropyLoss", "label_smoothing": 0.0},
            "optimizer": {"type": "SGD", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
            "scheduler": {"type": "cosine", "warmup_epochs": 0, "min_lr_ratio": 0.0},
            "train": {"epochs": epochs, "ema": None, "overwrite": True}}


def timm_cmd(data: Path, out: Path, epochs: int) -> list[str]:
    """The train.py command line for the benchmark's settings, given to the train.py path."""
    return [sys.executable, str(ROOT / "benchmarks/peers/classification_timm.py"), str(data),
            "--model", "resnet18", "--num-classes", "10", "--input-size", "3", "32", "32",
            "--crop-pct", "1.0", "-b", "64", "--opt", "sgd", "--lr", "0.05", "--momentum", "0.9",
            "--weight-decay", "5e-4", "--sched", "cosine", "--sched-on-updates",
            "--warmup-epochs", "0", "--min-lr", "0", "--smoothing", "0", "--no-aug", "-j", "2",
            "--epochs", str(epochs), "--device", "cpu", "--output", str(out),
            "--experiment", "run"]


def aicore_info(work: Path, data: Path) -> dict:
    """Final val top-1 (metrics.jsonl) and training images/s: every epoch's training images
    over the summed training time of its epoch lines in train.log ("training X s", the
    iterations alone, as the bare loop and the timm side time theirs)."""
    rows = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines() if line]
    # train.log keeps earlier runs in the same work_dir (train.overwrite): this run's epoch
    # lines are those from its last "epoch 1/N done" on
    found = re.findall(r"epoch (\d+)/\d+ done in [\d.]+s \(training ([\d.]+)s",
                       (work / "train.log").read_text())
    starts = [i for i, (epoch, _) in enumerate(found) if epoch == "1"]
    train_s = [float(t) for _, t in found[starts[-1]:]] if starts else []
    images = sum(1 for f in (data / "train").rglob("*.png")) * len(train_s)
    return {"top1": float(rows[-1].get("top1", float("nan"))),
            "train_img_s": images / sum(train_s) if train_s else float("nan")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("/tmp/peers_cls"))
    a = p.parse_args()
    from digits_data import make
    data = a.out / "digits"
    if not (data / "labels.txt").is_file():
        make(data)
    work = a.out / "aicore_run"
    cfg = a.out / "aicore.json"
    cfg.write_text(json.dumps(aicore_config(data, work, a.epochs)))
    bare_cmd = [sys.executable, str(ROOT / "benchmarks/peers/classification_bare.py"), str(data),
                "--epochs", str(a.epochs)]
    ours_cmd = [sys.executable, str(ROOT / "main.py"), "-c", str(cfg)]
    timm_out = a.out / "timm_run"
    cmds = {"bare": bare_cmd, "timm": timm_cmd(data, timm_out, a.epochs), "aicore": ours_cmd}
    res: dict[str, list] = {side: [] for side in cmds}
    for r, who in alternating(list(res), a.rounds):
        if who == "timm":
            shutil.rmtree(timm_out, ignore_errors=True)  # a fresh output folder, as train.py's
        run = run_timed(cmds[who])
        info = aicore_info(work, data) if who == "aicore" else \
            json.loads(run["stdout"].strip().splitlines()[-1])
        res[who].append({**run, **info})
        print(f"round {r + 1} {who:6s} wall {run['wall_s']:6.1f} s  cpu {run['cpu_s']:6.1f} s  "
              f"top1 {info['top1']:.3f}", flush=True)
    print(f"\nmedians over {a.rounds} rounds, {a.epochs} epochs:")
    print(table(res, [("wall_s", "whole-process wall s", ".1f"), ("cpu_s", "CPU s", ".1f"),
                      ("peak_mb", "peak MB", ".0f"), ("top1", "val top1", ".3f"),
                      ("train_img_s", "train img/s", ".0f")]))
    med = {k: medians(v, ["wall_s", "cpu_s"]) for k, v in res.items()}
    for num, den in (("aicore", "bare"), ("aicore", "timm"), ("timm", "bare")):
        print(f"{num} / {den}: wall {med[num]['wall_s'] / med[den]['wall_s']:.2f}, "
              f"CPU {med[num]['cpu_s'] / med[den]['cpu_s']:.2f}")


if __name__ == "__main__":
    main()

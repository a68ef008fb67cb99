"""Classification peers: AICore vs a bare PyTorch loop on real digits, alternating rounds.

Same data (benchmarks/peers/digits_data.py, 32 px), model (timm resnet18, random init), batch 64,
SGD momentum 0.9 lr 0.05 + cosine, no augmentation, evaluation after every epoch, 2 loader
workers. Each round runs the bare loop and AICore (`python main.py`) as fresh processes, in
alternating order; the table gives medians over rounds of the whole-process wall time (start-up,
data, training, evaluation, AICore's checkpoints and curves) and, for the bare loop, its training
throughput. timm's train.py is not compared: it ships only in timm's source repository, not in
the wheel, and nothing can be downloaded here.

    python benchmarks/peers/classification.py [--epochs 15] [--rounds 3] [--out /tmp/peers_cls]
"""
from __future__ import annotations

import argparse
import json
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
            "scheduler": {"type": "cosine", "warmup_epochs": 0},
            "train": {"epochs": epochs, "ema": None, "overwrite": True}}


def aicore_top1(work: Path) -> float:
    rows = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines() if line]
    return float(rows[-1].get("top1", float("nan")))


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
    res: dict[str, list] = {"bare": [], "aicore": []}
    for r, who in alternating(list(res), a.rounds):
        run = run_timed(bare_cmd if who == "bare" else ours_cmd)
        info = json.loads(run["stdout"].strip().splitlines()[-1]) if who == "bare" else \
            {"top1": aicore_top1(work)}
        res[who].append({**run, **info})
        print(f"round {r + 1} {who:6s} wall {run['wall_s']:6.1f} s  cpu {run['cpu_s']:6.1f} s  "
              f"top1 {info['top1']:.3f}", flush=True)
    print(f"\nmedians over {a.rounds} rounds, {a.epochs} epochs:")
    print(table(res, [("wall_s", "whole-process wall s", ".1f"), ("cpu_s", "CPU s", ".1f"),
                      ("peak_mb", "peak MB", ".0f"), ("top1", "val top1", ".3f"),
                      ("train_img_s", "bare train img/s", ".0f")]))
    med = {k: medians(v, ["wall_s", "cpu_s"]) for k, v in res.items()}
    print(f"AICore / bare: wall {med['aicore']['wall_s'] / med['bare']['wall_s']:.2f}, "
          f"CPU {med['aicore']['cpu_s'] / med['bare']['cpu_s']:.2f}")

if __name__ == "__main__":
    main()

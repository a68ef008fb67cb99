"""Segmentation peers: AICore vs a bare smp loop on real texture regions, alternating rounds.

Data: benchmarks/peers/segmentation_data.py (64 px, 280 train / 80 val, 3 texture classes).
The bare loop (segmentation_bare.py: smp Unet-resnet18, AdamW one-cycle, flips, cross-entropy)
and AICore (`python main.py` with --config, default the segmentation base recipe, on the same
data and number of epochs) run as fresh processes in alternating order each round. Prints the
median val mIoU after the last epoch and the median whole-process wall time of each.

    python benchmarks/peers/segmentation.py [--epochs 15] [--rounds 3]
        [--config configs/_base_/segmentation.json] [--out /tmp/peers_seg]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks" / "peers"))


def timed(cmd: list[str]) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=os.environ)
    if out.returncode:
        raise SystemExit(f"error: {' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return time.perf_counter() - t, out.stdout


def last_miou(work: Path) -> float:
    rows = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines() if x]
    last = [r for r in rows if r.get("epoch") == rows[-1].get("epoch")]
    return max(float(r["mIoU"]) for r in last)  # raw or EMA weights, whichever best.pth follows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--config", default=str(ROOT / "configs/_base_/segmentation.json"))
    p.add_argument("--out", type=Path, default=Path("/tmp/peers_seg"))
    a = p.parse_args()
    from segmentation_data import make
    data = a.out / "textures"
    if not (data / "labels.txt").is_file():
        make(data)
    work = a.out / "aicore_run"
    bare = [sys.executable, str(ROOT / "benchmarks/peers/segmentation_bare.py"), str(data),
            "--epochs", str(a.epochs)]
    ours = [sys.executable, str(ROOT / "main.py"), "-c", a.config, "-o", f"data.root={data}",
            "-o", f"work_dir={work}", "-o", f"train.epochs={a.epochs}", "-o", "train.overwrite=true"]
    res: dict[str, list] = {"bare": [], "aicore": []}
    for r in range(a.rounds):
        for who in (["bare", "aicore"] if r % 2 == 0 else ["aicore", "bare"]):
            wall, out = timed(bare if who == "bare" else ours)
            miou = json.loads(out.strip().splitlines()[-1])["miou"] if who == "bare" else last_miou(work)
            res[who].append((wall, miou))
            print(f"round {r + 1} {who:6s} wall {wall:6.1f} s  mIoU {miou:.3f}", flush=True)
    print(f"\nmedians over {a.rounds} rounds, {a.epochs} epochs, AICore config {a.config}:")
    print("| run | val mIoU | whole-process wall s |\n| --- | --- | --- |")
    for k, v in res.items():
        print(f"| {k} | {statistics.median(m for _, m in v):.3f} | "
              f"{statistics.median(w for w, _ in v):.1f} |")


if __name__ == "__main__":
    main()

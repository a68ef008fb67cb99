"""Segmentation peers: AICore vs a bare smp loop on real texture regions, alternating rounds.

Data: benchmarks/peers/segmentation_data.py (64 px, 280 train / 80 val, 3 texture classes).
The bare loop (segmentation_bare.py: smp Unet-resnet18, AdamW one-cycle, flips, cross-entropy)
and AICore (`python main.py` with --config, default the segmentation base recipe, on the same
data and number of epochs) run as fresh processes in alternating order each round; round r
uses seed r on both sides. Prints the median val mIoU after the last epoch and the median
whole-process wall time, CPU time and peak memory of each.

    python benchmarks/peers/segmentation.py [--epochs 15] [--rounds 3]
        [--config configs/_base_/segmentation.json] [--out /tmp/peers_seg] [-o KEY=VALUE ...]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, alternating, run_timed, table  # noqa: E402


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
    p.add_argument("-o", dest="overrides", action="append", default=[],
                   help="extra AICore config override (repeatable)")
    a = p.parse_args()
    from segmentation_data import make
    data = a.out / "textures"
    if not (data / "labels.txt").is_file():
        make(data)
    work = a.out / "aicore_run"
    res: dict[str, list] = {"bare": [], "aicore": []}
    for r, who in alternating(list(res), a.rounds):
        if who == "bare":
            run = run_timed([sys.executable, str(ROOT / "benchmarks/peers/segmentation_bare.py"),
                             str(data), "--epochs", str(a.epochs), "--seed", str(r)])
            miou = json.loads(run["stdout"].strip().splitlines()[-1])["miou"]
        else:
            cmd = [sys.executable, str(ROOT / "main.py"), "-c", a.config, "-o", f"data.root={data}",
                   "-o", f"work_dir={work}", "-o", f"train.epochs={a.epochs}",
                   "-o", "train.overwrite=true", "-o", f"seed={r}"]
            for o in a.overrides:
                cmd += ["-o", o]
            run = run_timed(cmd)
            miou = last_miou(work)
        res[who].append({**run, "miou": miou})
        print(f"round {r + 1} {who:6s} wall {run['wall_s']:6.1f} s  cpu {run['cpu_s']:6.1f} s  "
              f"mIoU {miou:.3f}", flush=True)
    print(f"\nmedians over {a.rounds} rounds (seeds 0..{a.rounds - 1}), {a.epochs} epochs, "
          f"AICore config {a.config} {' '.join(a.overrides)}:")
    print(table(res, [("miou", "val mIoU", ".3f"), ("wall_s", "wall s", ".1f"),
                      ("cpu_s", "CPU s", ".1f"), ("peak_mb", "peak MB", ".0f")]))


if __name__ == "__main__":
    main()

"""Detection peers: AICore YOLOX-nano vs an Ultralytics nano model, both from scratch.

Same real-image set (detection_data.py: coins, logos and horse shapes cut from scikit-image's
photographs and pasted onto other real photographs; 300 train / 100 val, 3 classes), the same
input size, batch and number of epochs; each side keeps its own default recipe (AICore:
configs/detection/yolox_nano.json; Ultralytics: its default hyper-parameters for the model
yaml, random init, nothing downloaded). Rounds alternate the order; round r uses seed r on
AICore's side (Ultralytics' runner fixes seed 0). Both sides' val predictions are scored by
the same code, AICore's DetectionEvaluator (COCO mAP through faster-coco-eval, 100
detections per image); Ultralytics' own mAP50-95 is printed next to it as a cross-check.
Time is whole-process wall and CPU (training + validation + prediction + start-up).

    python benchmarks/peers/detection.py [--epochs 30] [--rounds 1] [--size 128] [--batch 16]
        [--ultralytics-model yolov8n.yaml] [--out /tmp/peers_det]

The Ultralytics venv is made by ultralytics_venv.sh when it is missing.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, alternating, run_timed, table  # noqa: E402

PEER_PY = ROOT / "benchmarks" / ".venv-ultralytics" / "bin" / "python"


def ground_truth(data: Path, size: int) -> dict[str, dict]:
    """val image path -> {"boxes" xyxy pixels, "labels"} from the YOLO txt labels."""
    gts = {}
    for rel in (data / "val.txt").read_text().split():
        img = (data / rel).resolve()
        rows = [r.split() for r in (data / "labels" / "val" / f"{img.stem}.txt").read_text()
                .splitlines() if r.strip()]
        a = np.array([[float(v) for v in r] for r in rows], np.float64).reshape(-1, 5)
        cx, cy, w, h = (a[:, 1:] * size).T
        gts[str(img)] = {"boxes": np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1),
                         "labels": a[:, 0].astype(np.int64), "size": (size, size)}
    return gts


def score(preds: list[dict], gts: dict[str, dict]) -> dict[str, float]:
    from aicore.tasks.detection.evaluator import DetectionEvaluator
    ev = DetectionEvaluator(num_classes=3, max_dets=100)
    by_path = {str(Path(p["path"]).resolve()): p for p in preds}
    if set(by_path) != set(gts):
        raise SystemExit(f"predictions cover {len(by_path)} images, ground truth {len(gts)}")
    for path, gt in gts.items():
        p = by_path[path]
        ev.update([{"boxes": np.array(p["boxes"], np.float64).reshape(-1, 4),
                    "scores": np.array(p["scores"], np.float64),
                    "labels": np.array(p["labels"], np.int64)}], [gt])
    m = ev.compute()
    return {"mAP": m["mAP"], "AP50": m["AP50"]}


def aicore_map(work: Path) -> dict[str, float]:
    """The last epoch's validation of the weights AICore keeps (EMA where it has them)."""
    rows = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines() if x]
    last = [r for r in rows if r.get("epoch") == rows[-1].get("epoch") and "mAP" in r]
    row = next((r for r in last if r.get("weights") == "ema"), last[-1])
    return {"mAP": float(row["mAP"]), "AP50": float(row["AP50"])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--ultralytics-model", default="yolov8n.yaml")
    p.add_argument("--out", type=Path, default=Path("/tmp/peers_det"))
    a = p.parse_args()
    data = a.out / "data"
    if not (data / "labels.txt").is_file():
        from detection_data import main as make
        make([str(data), "--size", str(a.size)])
    if not PEER_PY.is_file():
        subprocess.run(["bash", str(ROOT / "benchmarks/peers/ultralytics_venv.sh")], check=True)
    gts = ground_truth(data, a.size)
    work = a.out / "aicore_run"
    res: dict[str, list] = {"aicore YOLOX-nano": [], f"ultralytics {a.ultralytics_model}": []}
    for r, who in alternating(list(res), a.rounds):
        if who.startswith("aicore"):
            run = run_timed([sys.executable, str(ROOT / "main.py"),
                             "-c", str(ROOT / "configs/detection/yolox_nano.json"),
                             "-o", f"data.root={data}", "-o", f"work_dir={work}",
                             "-o", f"data.input_size=[{a.size},{a.size}]",
                             "-o", f"data.batch_size={a.batch}",
                             "-o", f"data.num_workers={a.workers}",
                             "-o", f"train.epochs={a.epochs}", "-o", "train.overwrite=true",
                             "-o", f"seed={r}"])
            row = {**run, **aicore_map(work)}
        else:
            out = a.out / f"ultralytics_r{r}.json"
            run = run_timed([str(PEER_PY), str(ROOT / "benchmarks/peers/ultralytics_run.py"),
                             str(data), a.ultralytics_model, str(a.epochs), str(a.size),
                             str(a.batch), str(a.workers), str(out)], cwd=a.out)
            got = json.loads(out.read_text())
            row = {**run, **score(got["preds"], gts), "own_mAP": got["own_map"]}
        res[who].append(row)
        print(f"round {r + 1} {who}: wall {row['wall_s']:.1f} s cpu {row['cpu_s']:.1f} s "
              f"mAP {row['mAP']:.4f} AP50 {row['AP50']:.4f}"
              + (f" (own mAP {row['own_mAP']:.4f})" if "own_mAP" in row else ""), flush=True)
    print(f"\nmedians over {a.rounds} round(s), {a.epochs} epochs at {a.size} px, batch {a.batch}:")
    print(table(res, [("mAP", "mAP", ".4f"), ("AP50", "AP50", ".4f"),
                      ("own_mAP", "its own mAP", ".4f"), ("wall_s", "wall s", ".1f"),
                      ("cpu_s", "CPU s", ".1f"), ("peak_mb", "peak MB", ".0f")]))


if __name__ == "__main__":
    main()

"""AICore vs anomalib 2.7.0 on real textures: PaDiM (and PatchCore), same backbone weights.

    python benchmarks/peers/anomaly.py [--root /tmp/texture_ad] [--seeds 0 1 2]
        [--models PaDiM] [--image-size 256] [--out benchmarks/peers/anomaly_results.json]

Makes the texture data set (texture_data.py) when ROOT is missing and the anomalib venv
(anomalib_venv.sh) when it is missing. For every seed it saves one random-init timm resnet18
(torch.manual_seed(seed)); both sides load those weights, and PaDiM uses the same 100 channels.
Each (category, seed, model) runs AICore and anomalib as separate processes, the order
alternating from one run to the next. Both sides' test maps and scores are scored by the same
code here (image AUROC, pixel AUROC, PRO at FPR 0.3); time = fit + predict inside the process,
memory = the process's peak RSS, CPU seconds = the process's user + system time (includes
imports). Prints one markdown table per model: mean +- std over seeds.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from sklearn.metrics import roc_auc_score

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
from aicore.tasks.anomaly.metrics import pro_score  # noqa: E402

PEER_PY = REPO / "benchmarks" / ".venv-anomalib" / "bin" / "python"


def metrics(npz: Path) -> dict[str, float]:
    d = np.load(npz)
    masks, labels = [], []
    for p in d["paths"]:
        p = Path(str(p))
        if p.parent.name == "good":
            masks.append(np.zeros(d["maps"].shape[1:], bool))
            labels.append(0)
        else:
            gt = p.parents[2] / "ground_truth" / p.parent.name / f"{p.stem}_mask.png"
            masks.append(cv2.imread(str(gt), cv2.IMREAD_GRAYSCALE) > 0)
            labels.append(1)
    masks = np.stack(masks)
    return {"image_auroc": float(roc_auc_score(labels, d["scores"])),
            "pixel_auroc": float(roc_auc_score(masks.ravel(), d["maps"].ravel())),
            "pro": float(pro_score(d["maps"], masks)), "seconds": float(d["seconds"]),
            "n_test": len(labels)}


def run(python: Path, script: str, args: list[str], threads: int) -> tuple[float, float]:
    """Run one side; returns its peak RSS in MB and its CPU seconds (user + system), both from
    wait4, this child only (CPU seconds do not grow when other jobs load the machine)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore",
           "TQDM_DISABLE": "1"}
    # stderr goes to a file: a pipe read only after wait4 deadlocks once the child has written
    # 64 KB (anomalib's coreset progress bar did, and the run hung)
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen([str(python), str(HERE / script), *args], env=env,
                                cwd=str(REPO), stdout=subprocess.DEVNULL, stderr=log, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        err = log.read()
    if proc.returncode:
        raise SystemExit(f"{script} {' '.join(args)} failed:\n{err[-3000:]}")
    return usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=Path("/tmp/texture_ad"))
    ap.add_argument("--categories", nargs="+", default=["brick", "grass", "gravel"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--models", nargs="+", default=["PaDiM"])
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sides", nargs="+", default=["aicore", "anomalib"],
                    help="run only these sides (anomalib's PatchCore needs ~17-20 GB here)")
    ap.add_argument("--out", type=Path, default=HERE / "anomaly_results.json")
    args = ap.parse_args()
    if not args.root.exists():
        subprocess.run([sys.executable, str(HERE / "texture_data.py"), str(args.root)], check=True)
    if not PEER_PY.exists():
        subprocess.run(["bash", str(HERE / "anomalib_venv.sh")], check=True)
    import timm
    import torch

    work = args.root.parent / (args.root.name + "_runs")
    work.mkdir(exist_ok=True)
    rows = json.loads(args.out.read_text()) if args.out.exists() else []
    done = {(r["side"], r["model"], r["category"], r["seed"], r["image_size"]) for r in rows}
    sides = {"aicore": (Path(sys.executable), "anomaly_aicore_run.py"),
             "anomalib": (PEER_PY, "anomaly_anomalib_run.py")}
    k = 0
    for seed in args.seeds:
        weights = work / f"resnet18_seed{seed}.pth"
        if not weights.exists():
            torch.manual_seed(seed)
            torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), weights)
        for model in args.models:
            for cat in args.categories:
                order = ["aicore", "anomalib"] if k % 2 == 0 else ["anomalib", "aicore"]
                k += 1
                for side in order:
                    if (side, model, cat, seed, args.image_size) in done or \
                            side not in args.sides:
                        continue
                    npz = work / f"{side}_{model}_{cat}_{seed}_{args.image_size}.npz"
                    py, script = sides[side]
                    peak, cpu = run(py, script, [str(args.root), cat, model, str(seed), str(weights),
                                            str(npz), "--image-size", str(args.image_size)],
                               args.threads)
                    row = {"side": side, "model": model, "category": cat, "seed": seed,
                           "image_size": args.image_size, "peak_mb": peak, "cpu_s": cpu,
                           **metrics(npz)}
                    rows.append(row)
                    args.out.write_text(json.dumps(rows, indent=1))
                    print(json.dumps(row), flush=True)
    print(table(rows))


def table(rows: list[dict]) -> str:
    keys = ["image_auroc", "pixel_auroc", "pro", "seconds", "cpu_s", "peak_mb"]
    out = []
    for model in sorted({r["model"] for r in rows}):
        for size in sorted({r["image_size"] for r in rows}):
            out.append(f"\n{model}, input {size} px (mean ± std over seeds)\n")
            out.append("| category | side | seeds | image AUROC | pixel AUROC | PRO | fit+predict s"
                       " | process CPU s | peak MB |")
            out.append("|---|---|---|---|---|---|---|---|---|")
            for cat in sorted({r["category"] for r in rows}):
                for side in ("aicore", "anomalib"):
                    sel = [r for r in rows if (r["model"], r["image_size"], r["category"],
                                               r["side"]) == (model, size, cat, side)]
                    if not sel:
                        continue
                    cells = []
                    for key in keys:
                        v = np.array([r.get(key, np.nan) for r in sel], float)
                        fmt = ("{:.3f} ± {:.3f}" if key == "image_auroc" else
                               "{:.4f} ± {:.4f}" if key in keys[:3] else "{:.1f} ± {:.1f}")
                        cells.append(fmt.format(v.mean(), v.std()))
                    out.append(f"| {cat} | {side} | {len(sel)} | " + " | ".join(cells) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    main()

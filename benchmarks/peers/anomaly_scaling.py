"""How fit time and peak memory grow with the number of training images: AICore vs anomalib 2.7.0.

    python benchmarks/peers/anomaly_scaling.py [--counts 50 200 500 1000] [--size 64]
        [--models PaDiM PatchCore] [--category brick] [--out benchmarks/peers/anomaly_scaling.json]

For each count N it makes one texture category with N training images (texture_data.py, crops
of --size px, 10 good + 12 defective test images) and runs both sides' one-run scripts
(anomaly_aicore_run.py / anomaly_anomalib_run.py, seed 0, the same random-init resnet18 weights,
input = the images' own size) as separate processes, alternating which side goes first. Time is
fit + predict inside the process (the 22 test images are a small, fixed part of it); memory is
the process's peak RSS, so it includes each side's imports (anomalib's Lightning stack is
larger). Rows are kept in --out and skipped when already there, so an interrupted sweep resumes.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from anomaly import PEER_PY, metrics, run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--counts", nargs="+", type=int, default=[50, 200, 500, 1000])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--models", nargs="+", default=["PaDiM", "PatchCore"])
    ap.add_argument("--category", default="brick")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("/tmp/texture_scaling"))
    ap.add_argument("--out", type=Path, default=HERE / "anomaly_scaling.json")
    args = ap.parse_args()
    if not PEER_PY.exists():
        subprocess.run(["bash", str(HERE / "anomalib_venv.sh")], check=True)
    import timm
    import torch

    args.work.mkdir(parents=True, exist_ok=True)
    weights = args.work / "resnet18_seed0.pth"
    if not weights.exists():
        torch.manual_seed(0)
        torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), weights)
    rows = json.loads(args.out.read_text()) if args.out.exists() else []
    done = {(r["side"], r["model"], r["n_train"]) for r in rows}
    sides = {"aicore": (Path(sys.executable), "anomaly_aicore_run.py"),
             "anomalib": (PEER_PY, "anomaly_anomalib_run.py")}
    k = 0
    for n in args.counts:
        root = args.work / f"n{n}"
        if not root.exists():
            subprocess.run([sys.executable, str(HERE / "texture_data.py"), str(root), "--train",
                            str(n), "--good", "10", "--defects", "4", "--size", str(args.size),
                            "--categories", args.category], check=True,
                           stdout=subprocess.DEVNULL)
        for model in args.models:
            order = ["aicore", "anomalib"] if k % 2 == 0 else ["anomalib", "aicore"]
            k += 1
            for side in order:
                if (side, model, n) in done:
                    continue
                npz = args.work / f"{side}_{model}_{n}.npz"
                py, script = sides[side]
                peak, cpu = run(py, script, [str(root), args.category, model, "0", str(weights),
                                             str(npz), "--image-size", str(args.size)],
                                args.threads)
                m = metrics(npz)
                row = {"side": side, "model": model, "n_train": n, "size": args.size,
                       "seconds": m["seconds"], "cpu_s": cpu, "peak_mb": peak,
                       "image_auroc": m["image_auroc"], "pixel_auroc": m["pixel_auroc"]}
                rows.append(row)
                args.out.write_text(json.dumps(rows, indent=1))
                print(json.dumps(row), flush=True)
    print(table(rows))


def table(rows: list[dict]) -> str:
    out = ["| model | training images | AICore s | anomalib s | AICore peak MB |"
           " anomalib peak MB |", "|---|---|---|---|---|---|"]
    for model in sorted({r["model"] for r in rows}):
        for n in sorted({r["n_train"] for r in rows}):
            got = {r["side"]: r for r in rows if (r["model"], r["n_train"]) == (model, n)}
            cell = [f"{got[s]['seconds']:.1f}" if s in got else "-" for s in ("aicore", "anomalib")]
            mem = [f"{got[s]['peak_mb']:.0f}" if s in got else "-" for s in ("aicore", "anomalib")]
            out.append(f"| {model} | {n} | {cell[0]} | {cell[1]} | {mem[0]} | {mem[1]} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()

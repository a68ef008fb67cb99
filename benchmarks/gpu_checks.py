"""What only a GPU shows (issue 13), as one prepared run that fits the device tool's 15 minutes.

    python benchmarks/gpu_checks.py --out DIR [--device cuda] [--epochs 6] [--skip STEP ...]
        [--small]

Steps (each in its own processes, each with a time limit; a failing step is recorded and the
next one runs):

1. amp: the same small classification run (resnet10t, synthetic 3-class data at 64 px, AdamW)
   trained on the CPU in float32 and on the GPU in float32, bf16 autocast and fp16 autocast
   with GradScaler (`train.amp`); checks every logged loss is finite and the final val top-1
   is within 0.1 of the CPU run's.
2. speed: `benchmarks/overhead.py` on the GPU, AICore's trainer against a bare loop on the same
   data and model: float32, bf16, fp16 (GradScaler on both sides), bf16 + channels_last, and
   bf16 under `torchrun --nproc_per_node 1` (AICore through DistributedDataParallel over NCCL,
   the bare loop without it). Prints images/s of both and the ratio.
3. autobatch: `data.batch_size: -1` on the GPU; the chosen batch size from train.log.
4. export: FP16 ONNX export (`export.half: true`, built on the GPU) of step 1's GPU float32
   run; the export's own check against the float32 model; then the deploy runtime
   (`aicore.deploy.Predictor`) on the validation images with every onnxruntime execution
   provider it finds (CUDA / TensorRT where onnxruntime-gpu is installed, else CPU) against
   mode=demo's PyTorch prediction: same class, probability within `export.half_tolerance`.

Steps share `--budget` seconds (540); a step that would run past it is reported as not run.
Writes DIR/gpu_checks.json (every figure) and DIR/gpu_checks.md (the table for
benchmarks/RESULTS.md); exit status 1 when a check failed. It also runs on a CPU (`--device
cpu`: steps 2-4 then measure the CPU) to test the script itself.

On the device machine, whose image has torch but not every dependency, carry the wheels that
`bash benchmarks/gpu_wheels.sh` downloads (into .whl/, for its Python 3.12):

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
    PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1 python3 benchmarks/gpu_checks.py --out $OUT
"""
from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


DEADLINE = [math.inf]  # time.monotonic() by which every step must have finished (--budget)


def sh(cmd: list[str], log: Path, timeout: int) -> int:
    """Run cmd, output to log; the exit status (124 on timeout, also when --budget ran out)."""
    timeout = int(min(timeout, DEADLINE[0] - time.monotonic()))
    if timeout < 5:
        log.write_text("not run: --budget spent\n")
        return 124
    with open(log, "w") as f:
        try:
            return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout,
                                  cwd=ROOT).returncode
        except subprocess.TimeoutExpired:
            return 124


def config(data: Path, work: Path, device: str, epochs: int, **train) -> dict:
    return {"_base_": str(ROOT / "configs/_base_/classification.json"), "seed": 0,
            "work_dir": str(work),
            "data": {"root": str(data), "input_size": [64, 64], "batch_size": 32,
                     "num_workers": 2},
            "model": {"type": "TimmClassifier", "name": "resnet10t"},
            "train": {"epochs": epochs, "progress": False, "ema": None, "device": device,
                      **train},
            "export": {"formats": ["onnx"], "parity_images": 4}}


def main_py(cfg: dict, path: Path, log: Path, timeout: int, *overrides: str) -> int:
    path.write_text(json.dumps(cfg, indent=1))
    cmd = [sys.executable, str(ROOT / "main.py"), "-c", str(path)]
    for o in overrides:
        cmd += ["-o", o]
    return sh(cmd, log, timeout)


def run_summary(work: Path) -> dict:
    """Final val top-1 and whether every logged loss is finite, from metrics.jsonl."""
    rows = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()
            if line.strip()]
    losses = [v for r in rows for k, v in r.items()
              if "loss" in k and isinstance(v, (int, float))]
    top1 = [r[k] for r in rows for k in r if k.endswith("top1") and isinstance(r[k], float)]
    return {"top1": top1[-1] if top1 else None, "losses_logged": len(losses),
            "losses_finite": bool(losses) and all(math.isfinite(v) for v in losses)}


def step_amp(a, data: Path, out: Path) -> dict:
    res = {}
    for name, device, amp in (("cpu_fp32", "cpu", None), ("fp32", a.device, None),
                              ("bf16", a.device, "bf16"), ("fp16", a.device, "fp16")):
        if amp == "fp16" and device == "cpu":
            res[name] = {"skipped": "fp16 needs CUDA (GradScaler)"}
            continue
        work = out / "runs" / f"amp_{name}"
        t = time.perf_counter()
        rc = main_py(config(data, work, device, a.epochs, amp=amp), out / f"amp_{name}.json",
                     out / f"amp_{name}.log", 300)
        res[name] = {"rc": rc, "seconds": round(time.perf_counter() - t, 1),
                     **(run_summary(work) if rc == 0 else {})}
    ref = res["cpu_fp32"].get("top1")
    for name in ("fp32", "bf16", "fp16"):
        r = res[name]
        if "skipped" in r:
            continue
        r["ok"] = (r.get("rc") == 0 and r.get("losses_finite") and ref is not None
                   and r.get("top1") is not None and abs(r["top1"] - ref) <= 0.1)
    return res


def overhead(a, log: Path, extra: list[str], torchrun: bool = False) -> dict:
    size, per_class, batch = (32, 16, 16) if a.small else (64, 256, 128)
    args = [str(ROOT / "benchmarks/overhead.py"), "--device", a.device, "--epochs", "4",
            "--rounds", "2", "--size", str(size), "--batch", str(batch), "--per-class",
            str(per_class), "--workers", "4", *extra]
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", *args]
           if torchrun else [sys.executable, *args])
    rc = sh(cmd, log, 240)
    text = log.read_text()
    got = {"rc": rc}
    for key, pat in (("bare_img_s", r"bare PyTorch loop:\s+([\d.]+)"),
                     ("aicore_img_s", r"AICore trainer:\s+([\d.]+)"),
                     ("ratio", r"ratio AICore/bare:\s+([\d.]+)"),
                     ("setup", r"(device=\S+ model=.*)")):
        m = re.search(pat, text)
        if m:
            got[key] = m.group(1) if key == "setup" else float(m.group(1))
    got["ok"] = rc == 0 and "ratio" in got
    return got


def step_speed(a, out: Path) -> dict:
    cases = {"fp32": [], "bf16": ["--amp", "bf16"], "bf16_channels_last":
             ["--amp", "bf16", "--channels-last"], "bf16_ddp1": ["--amp", "bf16"]}
    if a.device != "cpu":
        cases["fp16"] = ["--amp", "fp16"]
    return {name: overhead(a, out / f"speed_{name}.log", extra, torchrun=name.endswith("ddp1"))
            for name, extra in cases.items()}


def step_autobatch(a, data: Path, out: Path) -> dict:
    work = out / "runs" / "autobatch"
    rc = main_py(config(data, work, a.device, 1, amp="bf16"), out / "autobatch.json",
                 out / "autobatch.log", 300, "data.batch_size=-1")
    text = (work / "train.log").read_text() if (work / "train.log").exists() else ""
    m = re.search(r"data\.batch_size = -1[^\n]*?(\d+)\s*$", text, re.M)
    return {"rc": rc, "line": m.group(0) if m else None,
            "batch_size": int(m.group(1)) if m else None, "ok": rc == 0 and m is not None}


def step_export(a, data: Path, out: Path) -> dict:
    import numpy as np
    work = out / "runs" / "amp_fp32"
    cfg_path = out / "amp_fp32.json"
    if not (work / "checkpoints" / "best.pth").exists():
        return {"ok": False, "error": "step amp's fp32 run left no checkpoint"}
    export = out / "runs" / "export_fp16"
    rc = sh([sys.executable, str(ROOT / "main.py"), "-c", str(cfg_path), "-o", "mode=export",
             "-o", "export.half=true", "-o", f"export.out={export}"], out / "export.log", 300)
    res: dict = {"rc": rc}
    if rc != 0:
        res["ok"] = False
        return res
    import onnxruntime as ort
    import aicore
    from aicore.deploy import Predictor
    from aicore.deploy.predictor import PREFERRED_PROVIDERS
    images = sorted((data / "val").rglob("*.png"))[:24]
    tol = 0.01  # export.half_tolerance's default
    available = ort.get_available_providers()
    res["onnxruntime"] = ort.__version__
    res["providers_available"] = available
    res["providers"] = {}
    # the run's best.pth through mode=demo's inference protocol (aicore.load)
    ref = aicore.load(work, device=a.device).predict(images)
    for prov in [p for p in PREFERRED_PROVIDERS if p in available]:
        pred = Predictor(export, providers=[prov])
        got = [pred.predict(p) for p in images]
        diffs = [abs(g.probability - r.probability) for g, r in zip(got, ref)]
        same = sum(g.class_name == r.class_name for g, r in zip(got, ref))
        res["providers"][prov] = {"session_providers": list(pred.providers),
                                  "images": len(images), "same_class": same,
                                  "max_prob_diff": float(np.max(diffs)),
                                  "ok": same == len(images) and max(diffs) <= tol}
    res["ok"] = bool(res["providers"]) and all(v["ok"] for v in res["providers"].values())
    return res


def _num(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def table(results: dict) -> str:
    lines = ["| check | result |", "| --- | --- |"]
    env = results["env"]
    lines.append(f"| device | {env['device']} (torch {env['torch']}, onnxruntime "
                 f"{env.get('onnxruntime')}) |")
    for name, r in results.get("amp", {}).items():
        lines.append(f"| train {name} | " + (r["skipped"] if "skipped" in r else
                     f"rc {r['rc']}, top-1 {_num(r.get('top1'))}, losses finite "
                     f"{r.get('losses_finite')}, {r['seconds']} s") + " |")
    for name, r in results.get("speed", {}).items():
        lines.append(f"| speed {name} | bare {r.get('bare_img_s')} img/s, AICore "
                     f"{r.get('aicore_img_s')} img/s, ratio {r.get('ratio')} (rc {r['rc']}) |")
    if "autobatch" in results:
        r = results["autobatch"]
        lines.append(f"| data.batch_size -1 | {r.get('batch_size')} (rc {r['rc']}) |")
    if "export" in results:
        for prov, r in results["export"].get("providers", {}).items():
            lines.append(f"| FP16 ONNX vs demo, {prov} | {r['same_class']}/{r['images']} same "
                         f"class, max probability difference {r['max_prob_diff']:.2e} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--budget", type=float, default=540,
                    help="seconds for all steps together; what is left out is reported")
    ap.add_argument("--small", action="store_true",
                    help="tiny speed runs (to test this script on a CPU)")
    ap.add_argument("--skip", nargs="*", default=[],
                    choices=["amp", "speed", "autobatch", "export"])
    a = ap.parse_args()
    import torch
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("error: --device cuda but torch sees no GPU; use --device cpu to test the "
                 "script itself")
    a.out.mkdir(parents=True, exist_ok=True)
    DEADLINE[0] = time.monotonic() + a.budget
    from aicore.tasks.classification.synthetic import make
    data = make(a.out / "data", size=64, n_train=96, n_val=24, n_test=2)
    results: dict = {"env": {"device": torch.cuda.get_device_name() if a.device != "cpu"
                             else "cpu", "torch": torch.__version__,
                             "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}}
    try:
        import onnxruntime
        results["env"]["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    steps = {"amp": lambda: step_amp(a, data, a.out), "speed": lambda: step_speed(a, a.out),
             "autobatch": lambda: step_autobatch(a, data, a.out),
             "export": lambda: step_export(a, data, a.out)}
    failed = []
    for name, fn in steps.items():
        if name in a.skip:
            continue
        t = time.perf_counter()
        try:
            results[name] = fn()
        except Exception as e:  # record it and go on: the device time is not to be wasted
            results[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        print(f"[{name}] {time.perf_counter() - t:.0f} s: {json.dumps(results[name])}",
              flush=True)
        r = results[name]
        oks = [r["ok"]] if "ok" in r else [v.get("ok", True) for v in r.values()
                                           if isinstance(v, dict)]
        if not all(oks):
            failed.append(name)
        (a.out / "gpu_checks.json").write_text(json.dumps(results, indent=1))
    md = table(results)
    (a.out / "gpu_checks.md").write_text(md + "\n")
    print(md)
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()

"""A task AICore does not ship (image regression: predict mean brightness), added entirely
from a project's custom_modules/ folder, runs trainval, eval, demo and export through the CLI.
The task file is tests/custom_task_regression.py."""
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tests.conftest import ROOT, run_cli, write_config

SIZE = 16


def _make_split(root: Path, split: str, n: int, rng: np.random.Generator) -> list[float]:
    """n grayscale images of one random level plus noise and a darker blob; the target is
    the image's true mean brightness (0..1)."""
    (root / split).mkdir(parents=True)
    targets = []
    with open(root / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", "brightness"])
        for i in range(n):
            img = np.full((SIZE, SIZE), rng.uniform(30, 225)) + rng.normal(0, 12, (SIZE, SIZE))
            y, x = rng.integers(0, SIZE - 4, 2)
            img[y:y + 4, x:x + 4] *= 0.5
            img = np.clip(img, 0, 255).astype(np.uint8)
            name = f"{split}/{i:03d}.png"
            cv2.imwrite(str(root / name), img)
            targets.append(float(img.mean()) / 255)
            w.writerow([name, f"{targets[-1]:.6f}"])
    return targets


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project folder: custom_modules/regression_task.py, data/, cfg.json (cwd for the
    CLI, so custom_modules/ is found as a user's would be)."""
    proj = tmp_path_factory.mktemp("regression_project")
    (proj / "custom_modules").mkdir()
    shutil.copy(ROOT / "tests" / "custom_task_regression.py",
                proj / "custom_modules" / "regression_task.py")
    rng = np.random.default_rng(0)
    train = _make_split(proj / "data", "train", 64, rng)
    val = _make_split(proj / "data", "val", 16, rng)
    cfg = write_config(proj / "cfg.json", {
        "task": "regression", "work_dir": str(proj / "run"), "seed": 0,
        "data": {"root": str(proj / "data"), "in_channels": 1, "input_size": [SIZE, SIZE],
                 "batch_size": 8, "num_workers": 0, "dataset": {"type": "BrightnessDataset"}},
        "model": {"type": "TinyRegressor", "width": 8},
        "loss": {"type": "RegressionMSE"},
        "optimizer": {"type": "AdamW", "lr": 0.01, "weight_decay": 0.0},
        "train": {"epochs": 8, "progress": False},
        "export": {"formats": ["onnx"], "parity_images": 4},
    })
    return proj, cfg, train, val


def test_trainval_eval_demo_export(project):
    proj, cfg, train, val = project
    run = proj / "run"
    assert run_cli("-c", str(cfg), cwd=proj) == 0
    assert (run / "checkpoints" / "best.pth").is_file()
    saved = json.loads((run / "config.json").read_text())
    # the task's defaults: its own key, and a shared key's default it changes
    assert saved["eval"]["max_abs_error"] == 0.5 and saved["train"]["best_mode"] == "min"
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(epochs) == 8

    assert run_cli("-c", str(cfg), "-o", "mode=eval", cwd=proj) == 0
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["samples"] == len(val)
    # learnt something: better than always answering the training mean
    baseline = float(np.abs(np.array(val) - np.mean(train)).mean())
    assert metrics["MAE"] < 0.5 * baseline, (metrics, baseline)
    assert metrics["RMSE"] >= metrics["MAE"]
    tolerance = json.loads((run / "eval" / "tolerance.json").read_text())
    assert tolerance["max_abs_error"] == 0.5 and tolerance["within"] == 1.0

    assert run_cli("-c", str(cfg), "-o", "mode=demo", "-o",
                   f"demo.source={proj / 'data' / 'val'}", cwd=proj) == 0
    with open(run / "demo" / "predictions.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(val)
    by_name = {Path(r["file"]).name if "file" in r else Path(r["source"]).name: r for r in rows}
    for i, target in enumerate(val):
        assert abs(float(by_name[f"{i:03d}.png"]["brightness"]) - target) < 3 * baseline

    assert run_cli("-c", str(cfg), "-o", "mode=export", cwd=proj) == 0
    export = run / "export"
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["task"] == "regression" and manifest["outputs"] == ["brightness"]
    assert manifest["postprocess"] == {"output": "brightness", "range": [0, 1]}
    _onnx_matches_checkpoint(export / "model.onnx", run / "checkpoints" / "best.pth", proj)


def _onnx_matches_checkpoint(onnx_path: Path, ckpt_path: Path, proj: Path) -> None:
    """model.onnx under onnxruntime against the checkpoint's weights in PyTorch."""
    import onnxruntime as ort

    from aicore.engine import checkpoint as ckpt_io
    module = sys.modules["aicore_custom_regression_task"]  # imported by the CLI runs above
    ckpt = ckpt_io.load(ckpt_path)
    model = module.TinyRegressor(in_chans=1, num_classes=1, width=8)
    model.load_state_dict(ckpt_io.state_dict_of(ckpt, (ckpt.get("best") or {}).get(
        "weights") == "ema"))
    model.eval()
    ds = module.BrightnessDataset(str(proj / "data"), "val", input_size=(SIZE, SIZE))
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    with torch.no_grad():
        ref = model(x).numpy()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert got.shape == ref.shape == (len(ds), 1)
    assert np.abs(got - ref).max() < 1e-4


def test_task_rules_and_listing(project, capsys):
    proj, cfg, _, _ = project
    assert run_cli("-c", str(cfg), "-o", "eval.max_abs_error=-1", "--check", cwd=proj) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: 'eval.max_abs_error' = -1 (set in -o eval.max_abs_error=-1): "
                   "expected a number > 0"), err
    assert run_cli("--list", "tasks", cwd=proj) == 0
    out = capsys.readouterr().out
    assert "regression" in out and "regression_task.py" in out and "classification" in out
    # --schema describes the custom task and its own key from its TaskSpec
    assert run_cli("--schema", str(proj / "schema.json"), cwd=proj) == 0
    schema = json.loads((proj / "schema.json").read_text(encoding="utf-8"))
    assert "regression" in schema["properties"]["task"]["enum"]
    key = schema["properties"]["eval"]["properties"]["max_abs_error"]
    assert key["exclusiveMinimum"] == 0 and key["default"] == 0.5


def test_a_run_imports_only_its_task(project):
    """The custom task's run imports no built-in task package (start-up stays small)."""
    proj, cfg, _, _ = project
    code = ("import sys, json\nfrom aicore.cli import run\nrun(sys.argv[1], [], True)\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('aicore.tasks.'))))")
    out = subprocess.run([sys.executable, "-c", code, str(cfg)], cwd=proj, check=True,
                         capture_output=True, text=True, timeout=120).stdout
    loaded = json.loads(out.strip().splitlines()[-1])
    assert loaded == ["aicore.tasks.spec"], loaded

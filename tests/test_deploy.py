"""The deploy runtime (aicore.deploy.Predictor, onnxruntime, no torch) predicts what mode=demo
(PyTorch) predicts, for every task, on real demo images of several sizes, grayscale and 16-bit.

Tolerances from issue 10: classification same class, probability within 1e-4; segmentation
masks equal on >= 99.9 % of pixels; detections matched one-to-one with IoU >= 0.99 and scores
within 1e-3; anomaly scores within 1e-4 relative, same verdict, maps within 1e-3.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests import deploy_fixtures as F
from tests.deploy_results import compare, read
from tests.conftest import ROOT, run_cli


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, dict]:
    base = F.keep_dir() or tmp_path_factory.mktemp("deploy")
    return F.build(base)


@pytest.fixture(scope="module")
def images(models, tmp_path_factory) -> dict[str, list[Path]]:
    base = F.keep_dir() or tmp_path_factory.mktemp("deploy_images")
    out = {}
    for task in models:
        cfg = json.loads(Path(models[task]["config"]).read_text())
        data_root = Path(cfg["data"]["root"])
        out[task] = F.test_images(Path(base) / "images" / task, data_root,
                                  F.IMAGE_PATTERNS[task])
    F.write_index(Path(base), models, out)
    return out


_read = read  # the name tests/test_deploy_fcos.py imports


TASKS = ["classification", "classification_slim", "segmentation", "segmentation_sw",
         "detection", "anomaly"]


@pytest.mark.parametrize("task", TASKS)
def test_runtime_equals_demo(task, models, images):
    from aicore.deploy import Predictor
    m = models[task]
    _, (_, demo) = F.torch_demo(m["config"], m["overrides"])  # (trainer, (protocol, predict))
    predictor = Predictor(m["export"], intra_op_num_threads=1)
    n_found = 0
    for path in images[task]:
        raw = _read(path)
        ref = demo(raw, str(path))
        compare(task, ref, predictor.predict(path), raw, f"{task} {path.name}")
        compare(task, ref, predictor.predict(raw), raw, f"{task} {path.name} (array)")
        n_found += len(getattr(ref, "scores", [1]))
    assert n_found > 0  # detection: the comparison saw boxes
    # a batch gives the same results as one image at a time
    batch = predictor.predict([_read(p) for p in images[task]])
    for path, got in zip(images[task], batch):
        compare(task, demo(_read(path), str(path)), got, _read(path), f"{task} batch")


def test_lone_onnx_carries_manifest(models, images):
    from aicore.deploy import Predictor
    m = models["classification"]
    folder = Predictor(m["export"])
    lone = Predictor(Path(m["export"]) / "model.onnx")
    assert lone.manifest == folder.manifest
    pre = lone.manifest["preprocess"]
    assert pre["color_order"] == "RGB" and pre["scale"]["uint16"] == 65535.0
    assert pre["resize"] == "stretch" and pre["interpolation"] == "linear"
    det = Predictor(models["detection"]["export"]).manifest
    assert det["preprocess"]["resize"] == "letterbox" and det["postprocess"]["max_det"] == 100
    sw = Predictor(models["segmentation_sw"]["export"]).manifest
    assert sw["postprocess"]["sliding_window"]["window"] == [32, 32]
    r = lone.predict(images["classification"][0], color_order="BGR").to_dict()
    assert isinstance(r["class_name"], str) and json.dumps(r)


def test_rgb_order_and_bad_inputs(models, images):
    from aicore.deploy import DeployError, Predictor
    p = Predictor(models["classification"]["export"])
    bgr = _read(images["classification"][0])
    a = p.predict(bgr)
    b = p.predict(bgr[:, :, ::-1].copy(), color_order="RGB")
    assert a.class_id == b.class_id and abs(a.probability - b.probability) < 1e-6
    with pytest.raises(DeployError, match="pixel type"):
        p.predict(bgr.astype(np.float64))
    with pytest.raises(DeployError, match="shape"):
        p.predict(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(DeployError, match="no such export"):
        Predictor(ROOT / "no_such_export")


def test_demo_backend_onnx_writes_the_same(models, images, tmp_path):
    m = models["detection"]
    src = images["detection"][0].parent
    outs = {}
    for backend in ("pytorch", "onnx"):
        outs[backend] = tmp_path / backend
        assert run_cli("-c", str(m["config"]), "-o", "mode=demo", "-o", f"demo.source={src}",
                       "-o", f"demo.out={outs[backend]}", "-o", f"demo.backend={backend}") == 0
    a = json.loads((outs["pytorch"] / "detections.json").read_text())["images"]
    b = json.loads((outs["onnx"] / "detections.json").read_text())["images"]
    assert [len(x["detections"]) for x in a] == [len(x["detections"]) for x in b]
    assert sorted(p.name for p in outs["onnx"].iterdir()) == \
        sorted(p.name for p in outs["pytorch"].iterdir())


_BLOCK = ("import sys\n"
          "class Block:\n"
          "    def find_spec(self, name, path=None, target=None):\n"
          "        if name.split('.')[0] in ('torch', 'torchvision', 'timm', 'albumentations'):\n"
          "            raise ImportError('blocked: ' + name)\n"
          "sys.meta_path.insert(0, Block())\n")


def test_runtime_runs_without_torch(models, images):
    """The runtime's predictions in a process where importing torch, timm or albumentations
    fails: the same results as in this process."""
    from aicore.deploy import Predictor
    index = F.write_index(Path(images["classification"][0]).parents[2], models, images)
    script = ROOT / "tests" / "deploy_torchless_check.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", _BLOCK + f"sys.argv = ['x', {str(index)!r}]\n"
                          f"exec(open({str(script)!r}).read())"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout)
    for task, m in models.items():
        p = Predictor(m["export"])
        want = [p.predict(path).to_dict() for path in images[task]]
        assert got[task] == json.loads(json.dumps(want)), task


def openvino_check(task: str, export, paths) -> list[int]:
    """backend="openvino" vs onnxruntime on the same export and images, compared by
    tests/deploy_openvino_check.py in a process of its own without torch (OpenVINO and
    PyTorch bring their own threading runtimes; loaded into the whole suite's process they
    crashed it later). Returns the number of results per image of the batch comparison."""
    res = subprocess.run([sys.executable, str(ROOT / "tests" / "deploy_openvino_check.py"), task,
                          str(export), *map(str, paths)], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("task", TASKS)
def test_openvino_equals_onnxruntime(task, models, images):
    """backend="openvino" (Intel line PCs) predicts what onnxruntime predicts, every task."""
    pytest.importorskip("openvino", reason="the openvino package is not installed "
                                           "(pip install -e .[openvino])")
    counts = openvino_check(task, models[task]["export"], images[task])
    assert len(counts) == len(images[task])


def test_nms_equals_torchvision():
    """The runtime's class-aware NMS keeps the same boxes, in the same order, as
    torchvision's batched_nms (which the PyTorch models use)."""
    import torch
    from torchvision.ops import batched_nms as tv_batched_nms

    from aicore.deploy.postprocess import batched_nms
    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(1, 200))
        xy = rng.uniform(0, 100, (n, 2)).astype(np.float32)
        wh = rng.uniform(2, 40, (n, 2)).astype(np.float32)
        boxes = np.concatenate([xy, xy + wh], 1)
        scores = rng.permutation(n).astype(np.float32) / n + 0.01  # distinct scores
        labels = rng.integers(0, 3, n)
        for iou in (0.3, 0.5, 0.65):
            want = tv_batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores),
                                  torch.from_numpy(labels), iou).numpy()
            np.testing.assert_array_equal(batched_nms(boxes, scores, labels, iou), want)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["classification", "segmentation", "detection", "anomaly"])
def test_predict_command_writes_what_demo_writes(task, models, images, tmp_path):
    """`python -m aicore.deploy predict` (a real subprocess, in which importing torch, timm or
    albumentations fails) writes the same annotated images, predictions.csv and task files as
    mode=demo through the same export."""
    m = models[task]
    src = images[task][0].parent
    demo_out, cli_out = tmp_path / "demo", tmp_path / "cli"
    assert run_cli("-c", str(m["config"]), "-o", "mode=demo", "-o", f"demo.source={src}",
                   "-o", f"demo.out={demo_out}", "-o", "demo.backend=onnx") == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = ["aicore.deploy", "predict", str(m["export"]), str(src), "--out", str(cli_out)]
    res = subprocess.run([sys.executable, "-c", _BLOCK + f"sys.argv = {argv!r}\n"
                          "import runpy; runpy.run_module('aicore.deploy', run_name='__main__')"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    files = sorted(str(p.relative_to(demo_out)) for p in demo_out.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(cli_out)) for p in cli_out.rglob("*")
                           if p.is_file())
    assert len(files) > len(images[task])
    for rel in files:
        a, b = demo_out / rel, cli_out / rel
        if rel.endswith(".png"):
            np.testing.assert_array_equal(_read(a), _read(b), err_msg=rel)
        else:
            assert a.read_text() == b.read_text(), rel


def test_predict_command_errors(models, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "aicore.deploy", "predict",
                          str(tmp_path / "missing"), str(tmp_path), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and res.stderr.startswith("error: ")
    assert not (tmp_path / "o").exists()


def test_anomaly_rule_at_the_threshold():
    """NG when score >= threshold; a score equal to the threshold, or below it by float32
    noise (the same image scored in a batch vs alone), is NG on every path."""
    from aicore.deploy.postprocess import is_defect
    thr = 7.631912
    assert is_defect(thr, thr) and is_defect(np.float32(thr), thr)
    assert is_defect(float(np.nextafter(np.float32(thr), np.float32(0))), thr)
    assert not is_defect(thr * (1 - 1e-3), thr) and is_defect(thr * 1.001, thr)
    assert is_defect(0.0, 0.0) and not is_defect(-0.01, 0.0)

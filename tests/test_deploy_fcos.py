"""A multi-label torchvision detector (FCOS) through export and the deploy runtime: with
export.nms = false (the runtime applies the manifest's recipe) and = true (NMS in the graph),
aicore.deploy.Predictor finds what mode=demo finds, on real demo images of several sizes.

One epoch on tiny images; the score thresholds are lowered so there are boxes to compare, and
NMS is loose so float noise between PyTorch and onnxruntime cannot flip which of two
near-tied boxes survives."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import deploy_fixtures as F
from tests.conftest import ROOT, run_cli, write_config
from tests.test_deploy import _read, compare, openvino_check


@pytest.fixture(scope="module")
def fcos(tmp_path_factory) -> dict:
    from aicore.tasks.detection.synthetic import make
    base = tmp_path_factory.mktemp("fcos")
    make(base / "data", size=64, n_train=4, n_val=2, n_test=1, seed=1)
    cfg = {"_base_": str(ROOT / "configs" / "_base_" / "detection.json"), "seed": 0,
           "work_dir": str(base / "run"),
           "data": {"root": str(base / "data"), "input_size": [64, 64], "batch_size": 4,
                    "num_workers": 0},
           "model": {"type": "FCOS", "backbone": "resnet18", "score_thresh": 0.05,
                     "nms_iou": 0.9, "max_det": 300},
           "train": {"epochs": 1, "progress": False, "hooks": []},
           "demo": {"score_thresh": 0.0},
           "export": {"formats": ["onnx"], "parity_images": 2, "tolerance": 0.01}}
    path = write_config(base / "fcos.json", cfg)
    assert run_cli("-c", str(path)) == 0
    exports = {}
    for nms in (False, True):
        out = base / f"export_nms_{str(nms).lower()}"
        assert run_cli("-c", str(path), "-o", "mode=export", "-o", f"export.nms={str(nms).lower()}",
                       "-o", f"export.out={out}") == 0
        exports[nms] = out
    images = F.test_images(base / "images", base / "data", "images/val_*.png")
    return {"config": path, "exports": exports, "images": images[:4]}


@pytest.mark.parametrize("nms", [False, True], ids=["dense", "nms_in_graph"])
def test_fcos_runtime_equals_demo(fcos, nms):
    from aicore.deploy import Predictor
    man = json.loads((Path(fcos["exports"][nms]) / "manifest.json").read_text())
    post = man["postprocess"]
    assert post["candidates"] == "multi_label" and post["max_det"] == 300
    assert post["format"] == ("nms_in_graph" if nms else "dense")
    if nms:  # the export compared the graph's rows with torchvision's own post-processing
        assert man["parity"]["postprocess_vs_model_max_abs_diff"]["detections"] <= 1e-4
    else:
        assert post["topk"]["per"] == "level" and post["topk"]["k"] == 1000
        assert "every (candidate, class) pair" in man["detection"]["output_format"]["scores"]
    _, (_, demo) = F.torch_demo(fcos["config"], [])  # (trainer, (protocol, predict))
    predictor = Predictor(fcos["exports"][nms], intra_op_num_threads=1)
    found = 0
    for path in fcos["images"]:
        raw = _read(path)
        ref = demo(raw, str(path))
        compare("detection", ref, predictor.predict(path), raw, f"nms={nms} {path.name}")
        found += len(ref.scores)
    assert found > 0  # the comparison saw boxes
    # several images in one batch: each image's rows are its own
    for path, got in zip(fcos["images"], predictor.predict([_read(p) for p in fcos["images"]])):
        compare("detection", demo(_read(path), str(path)), got, _read(path), f"batch {path.name}")


@pytest.mark.parametrize("nms", [False, True], ids=["dense", "nms_in_graph"])
def test_fcos_openvino_equals_onnxruntime(fcos, nms):
    pytest.importorskip("openvino", reason="the openvino package is not installed "
                                           "(pip install -e .[openvino])")
    counts = openvino_check("detection", fcos["exports"][nms], fcos["images"])
    assert len(counts) == len(fcos["images"]) and all(n > 0 for n in counts)

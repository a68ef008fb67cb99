"""The Python API (aicore/api.py): typed results, dict / shipped-name configs, the caller's
logging left alone, CLI errors as exceptions, and load().predict with deploy result types."""
from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from loguru import logger

from tests.conftest import ROOT, cls_config, write_config


def test_import_aicore_is_light():
    code = "import sys, aicore; aicore.ConfigError; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.fixture(scope="module")
def api_run(cls_root, tmp_path_factory):
    """A 1-epoch run through aicore.train with a dict config; the caller's own sink is kept."""
    import aicore
    work = tmp_path_factory.mktemp("api") / "run"
    sink = io.StringIO()
    handler = logger.add(sink, level="INFO", format="{message}")
    try:
        result = aicore.train(cls_config(cls_root, work), overrides={"train": {"epochs": 1}})
        logger.info("caller still here")
    finally:
        logger.remove(handler)
    return result, sink.getvalue(), work


def test_train_returns_typed_result_and_keeps_caller_logging(api_run):
    import aicore
    result, logged, work = api_run
    assert isinstance(result, aicore.TrainResult)
    assert result.work_dir == work and isinstance(result.work_dir, Path)
    assert result.best_checkpoint == work / "checkpoints" / "best.pth"
    assert result.best_checkpoint.is_file()
    assert result.best_epoch == 1 and isinstance(result.best_value, float)
    assert result.metrics and all(isinstance(v, float) for v in result.metrics.values())
    assert len(result.history) == 1
    # the run's messages reached the caller's sink, and the sink survived the run
    assert "caller still here" in logged and "epoch" in logged.lower()
    json.dumps(result.to_dict())


def test_evaluate_and_load_predict(api_run, cls_root):
    import aicore
    from aicore.deploy.results import ClassificationResult
    result, _, work = api_run
    cfg_path = work / "config.json"
    ev = aicore.evaluate(cfg_path, overrides=["eval.tsne=false"])
    assert isinstance(ev, aicore.EvalResult)
    assert ev.metrics and all(isinstance(v, float) for v in ev.metrics.values())
    assert isinstance(ev.out_dir, Path) and ev.out_dir.is_dir()

    model = aicore.load(work)
    images = sorted((cls_root / "val").rglob("*.png"))[:3]
    one = model.predict(images[0])
    assert isinstance(one, ClassificationResult)
    assert one.class_name in model.classes
    assert math.isclose(float(one.probs.sum()), 1.0, rel_tol=1e-4)
    arr = cv2.imread(str(images[1]))
    many = model.predict([images[1], arr])
    assert [r.class_id for r in many] == [many[0].class_id] * 2
    assert np.allclose(many[0].probs, many[1].probs, atol=1e-5)
    ex = aicore.export(cfg_path, {"export": {"formats": ["onnx"], "parity_images": 2}})
    assert isinstance(ex, aicore.ExportResult) and ex.onnx == work / "export" / "model.onnx"
    assert ex.onnx.is_file() and ex.torchscript is None and 0 <= ex.max_abs_diff <= 1e-4
    # a checkpoint file loads the same model
    again = aicore.load(work / "checkpoints" / "best.pth").predict(images[0])
    assert np.allclose(again.probs, one.probs, atol=1e-5)


def test_bad_input_raises_the_cli_errors(cls_root, tmp_path):
    import aicore
    from aicore.errors import CheckpointError, ConfigError
    with pytest.raises(ConfigError, match="trian"):
        aicore.train(cls_config(cls_root, tmp_path / "w"), overrides={"trian.epochs": 1})
    with pytest.raises(ConfigError, match="config file not found"):
        aicore.train(tmp_path / "missing.json")
    with pytest.raises(CheckpointError):
        aicore.load(tmp_path / "nothing_here")
    assert not (tmp_path / "w").exists()


def test_shipped_config_name_resolves(tmp_path):
    from aicore.api import load_cfg
    cfg = load_cfg("classification/quickstart", {"train.epochs": 1})
    assert cfg.task == "classification" and cfg.train.epochs == 1
    assert cfg.model.name == "resnet10t"
    # the same with a dict that names a shipped base
    cfg2 = load_cfg({"_base_": "configs/_base_/classification.json", "data": {"root": "x"}})
    assert cfg2.data.root == "x" and cfg2.optimizer

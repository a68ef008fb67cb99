"""The benchmark scripts that are meant to be run as they are (README's command table): they
must keep working as the engine changes. benchmarks/overhead.py once broke unnoticed when the
config value rules started rejecting one of its settings; gpu_checks.py is the prepared run for
a GPU machine, where a broken script would waste the lent minutes."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def _run(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_overhead_script_runs_and_prints_the_ratio():
    r = _run(["benchmarks/overhead.py", "--device", "cpu", "--epochs", "2", "--rounds", "1",
              "--size", "32", "--per-class", "8", "--batch", "8", "--model", "resnet10t"])
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "AICore=no DDP" in r.stdout
    ratio = float(re.search(r"ratio AICore/bare:\s+([\d.]+)", r.stdout).group(1))
    assert ratio > 0


@pytest.mark.slow
def test_gpu_checks_script_on_cpu(tmp_path):
    """The GPU run's own steps on the CPU: float32 and bf16 training against the CPU run,
    data.batch_size -1, FP16 export and the deploy runtime against mode=demo."""
    out = tmp_path / "gpu"
    r = _run(["benchmarks/gpu_checks.py", "--out", str(out), "--device", "cpu", "--epochs", "1",
              "--skip", "speed"], timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads((out / "gpu_checks.json").read_text())
    assert res["amp"]["fp32"]["ok"] and res["amp"]["bf16"]["ok"]
    assert res["amp"]["fp32"]["losses_finite"]
    assert res["autobatch"]["batch_size"] == 32  # the CPU default
    cpu = res["export"]["providers"]["CPUExecutionProvider"]
    assert cpu["same_class"] == cpu["images"] == 24 and cpu["max_prob_diff"] <= 0.01
    assert "FP16 ONNX vs demo" in (out / "gpu_checks.md").read_text()


def test_gpu_checks_refuses_cuda_without_a_gpu(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    r = _run(["benchmarks/gpu_checks.py", "--out", str(tmp_path / "g")])
    assert r.returncode == 1 and "torch sees no GPU" in r.stderr

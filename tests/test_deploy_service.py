"""The deploy HTTP service, started for real (`python -m aicore.deploy serve` in a subprocess
on a free localhost port) and spoken to over HTTP: results equal Predictor's, sequential and
concurrent load without a failure, every kind of bad input answered with a 4xx JSON message
while the service keeps serving, and a missing export refused at start with exit status 2."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests import deploy_fixtures as F
from tests.conftest import ROOT

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, dict]:
    return F.build(tmp_path_factory.mktemp("deploy_service"), tasks=("classification",
                                                                     "anomaly"))


def _start(export: Path, *extra: str):
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "aicore.deploy", "serve", str(export),
                             "--port", str(port), "--threads", "1", *extra], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"service exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    raise AssertionError("service did not come up within 120 s")


@pytest.fixture(scope="module")
def service(models):
    proc, url = _start(models["classification"]["export"], "--max-bytes", "200000",
                       "--max-pixels", "250000")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def _png(img: np.ndarray) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


def test_results_equal_predictor(models, service, tmp_path):
    from aicore.deploy import Predictor
    p = Predictor(models["classification"]["export"])
    paths = F.test_images(tmp_path / "img", Path(json.loads(
        Path(models["classification"]["config"]).read_text())["data"]["root"]),
        F.IMAGE_PATTERNS["classification"])
    for path in paths:
        want = json.loads(json.dumps(p.predict(path).to_dict()))
        data = path.read_bytes()
        assert httpx.post(service + "/predict", files={"file": (path.name, data)}).json() == want
        assert httpx.post(service + "/predict", content=data,
                          headers={"content-type": "image/png"}).json() == want
    many = httpx.post(service + "/predict",
                      files=[("files", (q.name, q.read_bytes())) for q in paths]).json()
    assert many["results"] == [json.loads(json.dumps(p.predict(q).to_dict())) for q in paths]
    assert httpx.get(service + "/model").json() == p.manifest
    assert httpx.get(service + "/docs").status_code == 200
    assert "/predict" in httpx.get(service + "/openapi.json").json()["paths"]


def test_sequential_and_concurrent_load(models, service):
    img = cv2.imread(str(sorted(Path(json.loads(Path(models["classification"]["config"])
                                                .read_text())["data"]["root"])
                               .rglob("val/*/*.png"))[0]))
    data = _png(img)
    want = httpx.post(service + "/predict", content=data).json()
    with httpx.Client(base_url=service) as client:
        for _ in range(200):
            r = client.post("/predict", content=data)
            assert r.status_code == 200 and r.json() == want

    def client_run(_):
        with httpx.Client(base_url=service, timeout=60) as c:
            return [c.post("/predict", content=data).json() == want for _ in range(25)]
    with ThreadPoolExecutor(8) as pool:
        ok = [x for run in pool.map(client_run, range(8)) for x in run]
    assert len(ok) == 200 and all(ok)


def test_bad_inputs_get_4xx_and_service_stays_up(service):
    import io
    buf = io.BytesIO()
    np.save(buf, np.zeros((8, 8, 2), np.uint8))  # a 2-channel raw array
    corrupt = _png(np.full((16, 16, 3), 90, np.uint8))[:40]
    cases = {
        "empty": (dict(content=b""), 400, "empty"),
        "text": (dict(content=b"hello, not an image"), 415, "not a decodable image"),
        "corrupt png": (dict(content=corrupt), 415, "not a decodable image"),
        "too many bytes": (dict(content=b"\x89PNG" + b"0" * 300_000), 413, "bytes"),
        "too many pixels": (dict(content=_png(np.zeros((600, 600), np.uint8))), 413, "pixels"),
        "two channels": (dict(content=buf.getvalue()), 422, "channels"),
        "no file field": (dict(files={"other": ("a.png", b"x")}), 400, "'file'"),
    }
    for name, (kwargs, status, needle) in cases.items():
        r = httpx.post(service + "/predict", **kwargs)
        assert r.status_code == status, (name, r.status_code, r.text)
        assert needle in r.json()["detail"], (name, r.json())
    assert httpx.get(service + "/health").json()["status"] == "ok"


def test_anomaly_service_returns_verdict_and_map(models, tmp_path):
    from aicore.deploy import Predictor
    export = models["anomaly"]["export"]
    img = sorted(Path(json.loads(Path(models["anomaly"]["config"]).read_text())["data"]["root"])
                 .rglob("test/*/*.png"))[0]
    proc, url = _start(export)
    try:
        got = httpx.post(url + "/predict?arrays=true", content=img.read_bytes()).json()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    want = Predictor(export).predict(img)
    assert got["verdict"] == want.verdict and abs(got["score"] - want.score) < 1e-6
    np.testing.assert_allclose(np.array(got["anomaly_map"]), want.anomaly_map, atol=1e-6)


def test_missing_export_refuses_to_start(tmp_path):
    res = subprocess.run([sys.executable, "-m", "aicore.deploy", "serve", str(tmp_path / "no"),
                          "--port", str(_free_port())], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert res.returncode == 2
    assert res.stderr.startswith("error: ") and res.stderr.strip().count("\n") == 0
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text('{"task": "classification", "manifest_version": 2}')
    res = subprocess.run([sys.executable, "-m", "aicore.deploy", "serve", str(broken),
                          "--port", str(_free_port())], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert res.returncode == 2 and res.stderr.startswith("error: "), res.stderr

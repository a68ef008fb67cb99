"""The app's HTTP API with FastAPI's TestClient: every route, bad inputs, path safety,
threshold maths against eval/predictions.csv, upload limits, launching a job."""
from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from app_fixtures import build_world  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("appworld"))


@pytest.fixture(scope="module")
def client(world):
    from aicore.app.server import create_app
    app = create_app(world.runs, world.data, max_upload=200_000)
    with TestClient(app) as c:
        yield c


def scores(run: Path):
    with open(run / "eval" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    good = [float(r["score"]) for r in rows if r["label"] == "good"]
    defect = [float(r["score"]) for r in rows if r["label"] != "good"]
    return good, defect


def test_runs_table(client):
    rows = {r["id"]: r for r in client.get("/api/runs").json()}
    assert set(rows) == {"cls_a", "cls_b", "anomaly"}
    a = rows["cls_a"]
    assert (a["task"], a["epochs_done"], a["epochs_total"], a["status"]) == \
        ("classification", 2, 2, "finished")
    assert a["best"]["name"] == "top1" and 0 <= a["best"]["value"] <= 1
    assert a["model"].startswith("TimmClassifier") and a["has_eval"]
    assert rows["anomaly"]["best"]["name"] == "image_AUROC"
    assert "<table id=\"runs\"" in client.get("/").text


def test_run_pages_and_api(client, world):
    page = client.get("/run/cls_a").text
    assert "Resolved config" in page and "best.pth" in page and "eval report" in page
    info = client.get("/api/run/cls_a").json()
    assert info["config"]["work_dir"] == str(world.runs / "cls_a")
    prog = client.get("/api/run/cls_a/progress").json()
    assert prog["epoch"] == 2 and prog["epochs"] == 2 and prog["status"] == "finished"
    curves = client.get("/api/run/cls_a/curves").json()
    assert [p[0] for p in curves["top1 [model]"]] == [1, 2] and "train loss" in curves
    report = client.get("/run/cls_a/report").text
    assert "Per class" in report and "confusion_matrix" in report
    assert client.get("/run/cls_b/report").status_code == 404  # never evaluated
    assert "threshold tuning" in client.get("/run/anomaly").text


def test_compare(client):
    data = client.get("/api/compare?run=cls_a&run=cls_b").json()
    keys = {d["key"]: d["values"] for d in data["diff"]}
    assert keys["optimizer.lr"] == [0.05, 0.01] and keys["train.epochs"] == [2, 1]
    assert set(data["curves"]) == {"cls_a", "cls_b"}
    assert "optimizer.lr" in client.get("/compare?run=cls_a&run=cls_b").text
    assert client.get("/api/compare?run=cls_a").status_code == 400
    assert client.get("/api/compare?run=cls_a&run=nope").status_code == 404


@pytest.mark.parametrize("url", [
    "/files/runs/../cls_a/config.json", "/files/runs/%2e%2e/data/cls/labels.txt",
    "/files/runs//etc/passwd", "/files/data/%2e%2e/runs/cls_a/config.json",
    "/files/data/..%2fruns%2fcls_a%2fconfig.json", "/files/runs/%2Fetc%2Fpasswd",
    "/files/other/x", "/run/..%2f..%2fetc", "/api/run/../../etc/progress",
    "/files/runs/cls_a/missing.png", "/files/runs/cls_a/.lock"])
def test_traversal_is_404(client, url):
    assert client.get(url).status_code == 404


def test_symlink_out_of_root_is_404(client, world, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("no")
    link = world.runs / "cls_a" / "leak.txt"
    os.symlink(secret, link)
    try:
        assert client.get("/files/runs/cls_a/leak.txt").status_code == 404
        assert client.get("/files/runs/cls_a/config.json").status_code == 200
    finally:
        link.unlink()


def test_threshold_rates_match_predictions_csv(client, world):
    run = world.runs / "anomaly"
    good, defect = scores(run)
    t = sorted(good + defect)[len(good + defect) // 2]
    r = client.get(f"/api/run/anomaly/threshold?t={t}").json()["rates"]
    assert r["escapes"] == sum(s < t for s in defect) and r["defects"] == len(defect)
    assert r["overkills"] == sum(s >= t for s in good) and r["goods"] == len(good)
    assert r["escape_rate"] == pytest.approx(r["escapes"] / len(defect))
    for target in (0.0, 0.34, 1.0):
        got = client.get(f"/api/run/anomaly/threshold?target_escape={target}").json()["rates"]
        assert got["escape_rate"] <= target + 1e-9
        # the highest such threshold: nudging it up lets one more defect escape
        higher = [s for s in defect if s > got["threshold"]]
        if higher:
            assert sum(s <= min(higher) for s in defect) / len(defect) > target
    assert client.get("/api/run/anomaly/threshold?target_escape=2").status_code == 400
    assert client.get("/api/run/cls_a/threshold").status_code == 400  # not anomaly


def test_threshold_rates_decide_like_the_deploy_runtime(client, world):
    """A score within the deploy runtime's tie band below the threshold is NG in the app's
    rates, as the runtime's is_defect decides, not OK as a plain score >= threshold would."""
    from aicore.app.threshold import rates
    from aicore.deploy.postprocess import SCORE_RTOL, is_defect
    thr = 0.5
    near, far = thr * (1 - SCORE_RTOL / 4), thr * (1 - 10 * SCORE_RTOL)
    assert near < thr and is_defect(near, thr) and not is_defect(far, thr)
    r = rates(good=[near, far], defect=[near, far], threshold=thr)
    assert (r["overkills"], r["escapes"]) == (1, 1)  # plain >= gives 0 overkills, 2 escapes
    # through the API, on a run's eval scores: a threshold just above one defect's score
    run = world.runs / "anomaly"
    good, defect = scores(run)
    t = sorted(defect)[len(defect) // 2] * (1 + SCORE_RTOL / 4)
    got = client.get(f"/api/run/anomaly/threshold?t={t!r}").json()["rates"]
    assert got["escapes"] == sum(not is_defect(s, t) for s in defect)
    assert got["overkills"] == sum(is_defect(s, t) for s in good)
    assert got["escapes"] < sum(s < t for s in defect)


def test_threshold_save_keeps_old_and_demo_reads_it(client, world):
    from conftest import run_cli
    ev = world.runs / "anomaly" / "eval"
    old = json.loads((ev / "threshold.json").read_text())
    new_t = old["image_threshold"] * 10  # every image OK
    r = client.post("/api/run/anomaly/threshold", json={"threshold": new_t})
    assert r.status_code == 200, r.text
    saved = json.loads((ev / "threshold.json").read_text())
    assert saved["image_threshold"] == new_t
    assert saved["checkpoint_fingerprint"] == old["checkpoint_fingerprint"]
    assert json.loads((ev / r.json()["previous"]).read_text()) == old
    cfg = world.runs / "anomaly" / "config.json"
    src = world.data / "anomaly" / "grid" / "test"
    assert run_cli("-c", str(cfg), "-o", "mode=demo", "-o", f"demo.source={src}") == 0
    with open(world.runs / "anomaly" / "demo" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and {r["verdict"] for r in rows} == {"OK"}
    assert float(rows[0]["threshold"]) == pytest.approx(new_t, rel=1e-5)
    for bad in ({"threshold": "x"}, {}, {"threshold": float("inf")}):
        assert client.post("/api/run/anomaly/threshold",
                           content=json.dumps(bad)).status_code == 400
    (ev / "threshold.json").write_text(json.dumps(old))  # leave the world as it was


def test_data_report_names_corrupt_file(client):
    rep = client.get("/api/data?root=cls_bad&task=classification").json()
    assert len(rep["files"]["corrupt"]) == 1 and rep["files"]["corrupt"][0].startswith("train/")
    bad = [d for d in rep["datasets"] if not d["ok"]]
    assert bad and bad[0]["split"] == "train"
    assert rep["files"]["corrupt"][0].split("/")[-1] in bad[0]["message"]
    good = client.get("/api/data?root=cls&task=classification").json()
    assert good["files"]["corrupt"] == [] and good["datasets"][0]["ok"]
    assert good["datasets"][0]["classes"] and good["files"]["samples"]
    assert client.get(good["files"]["samples"][0]["url"]).status_code == 200
    assert client.get("/api/data?root=../runs&task=classification").status_code == 404
    assert client.get("/api/data?root=cls&task=nope").status_code == 400


def test_predict_upload(client, world):
    img = sorted((world.data / "cls" / "val").rglob("*.png"))[0]
    r = client.post("/api/predict", data={"run": "cls_a"},
                    files={"file": ("x.png", img.read_bytes(), "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    classes = (world.data / "cls" / "labels.txt").read_text().split() if \
        (world.data / "cls" / "labels.txt").exists() else \
        sorted(p.name for p in (world.data / "cls" / "train").iterdir())
    assert body["result"]["predicted"] in classes and body["image"].startswith("data:image/png")
    assert "checkpoint" in body["backend"]
    assert client.post("/api/predict", data={"run": "cls_a"},
                       files={"file": ("x.png", b"garbage", "image/png")}).status_code == 400
    big = client.post("/api/predict", data={"run": "cls_a"},
                      files={"file": ("x.png", b"0" * 300_000, "image/png")})
    assert big.status_code == 413 and "upload limit" in big.text
    assert client.post("/api/predict", data={"run": "../x"},
                       files={"file": ("x.png", b"0", "image/png")}).status_code == 404


@pytest.mark.slow
def test_launch_validation_and_job(client, world):
    cfg = str(world.runs / "cls_b" / "config.json")
    configs = client.get("/api/configs").json()
    assert cfg in configs
    form = client.get("/api/config-form", params={"config": cfg}).json()
    assert {"train.epochs", "optimizer.lr", "work_dir"} <= {f["key"] for f in form["fields"]}
    assert client.get("/api/config-form", params={"config": "/etc/passwd"}).status_code == 404
    r = client.post("/api/jobs", json={"config": cfg, "overrides": {"train.epochz": "1"}})
    assert r.status_code == 400 and r.json()["detail"].startswith("error: ")
    assert "epochz" in r.json()["detail"]
    assert not (world.runs / "launched").exists()
    r = client.post("/api/jobs", json={"config": cfg, "overrides": {
        "work_dir": str(world.runs / "launched"), "train.epochs": "1"}})
    assert r.status_code == 200, r.text
    job = r.json()
    assert any(x["id"] == "launched" for x in client.get("/api/runs").json())
    deadline = time.time() + 240
    while time.time() < deadline:
        state = next(j for j in client.get("/api/jobs").json() if j["id"] == job["id"])["state"]
        if state not in ("queued", "running"):
            break
        time.sleep(1)
    assert state == "finished", state
    row = next(x for x in client.get("/api/runs").json() if x["id"] == "launched")
    assert row["status"] == "finished" and row["epochs_done"] == 1
    assert client.post("/api/jobs/nope/cancel").status_code == 404
    assert client.post("/api/jobs", content="{").status_code == 400


@pytest.mark.slow
def test_cancel_a_running_job(client, world):
    cfg = str(world.runs / "cls_b" / "config.json")
    r = client.post("/api/jobs", json={"config": cfg, "overrides": {
        "work_dir": str(world.runs / "cancelled"), "train.epochs": "50"}})
    job = r.json()
    deadline = time.time() + 120
    while time.time() < deadline and not (world.runs / "cancelled" / "train.log").exists():
        time.sleep(0.5)
    client.post(f"/api/jobs/{job['id']}/cancel")
    deadline = time.time() + 60
    while time.time() < deadline:
        state = next(j for j in client.get("/api/jobs").json() if j["id"] == job["id"])["state"]
        if state == "cancelled":
            break
        time.sleep(0.5)
    assert state == "cancelled"
    row = next(x for x in client.get("/api/runs").json() if x["id"] == "cancelled")
    assert row["status"] == "interrupted"


def test_token_required_off_localhost(world):
    from aicore.app.server import create_app
    with TestClient(create_app(world.runs, world.data, token="s3cret")) as c:
        assert c.get("/api/runs").status_code == 401
        assert c.get("/api/runs", headers={"x-aicore-token": "wrong"}).status_code == 401
        assert c.get("/?token=s3cret").status_code == 200
        assert c.get("/api/runs").status_code == 200  # the cookie set by the first visit


def test_cli_bad_arguments(tmp_path, capsys):
    from aicore.app.__main__ import main
    with pytest.raises(SystemExit) as e:
        main(["--runs", str(tmp_path), "--data", str(tmp_path / "missing")])
    assert e.value.code == 2
    assert capsys.readouterr().err.startswith("error: --data")


def _fake_run(folder: Path, epochs: int, log: list[str], lock_pid: int | None = None) -> Path:
    import socket
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"task": "classification",
                                                    "train": {"epochs": epochs}}))
    (folder / "train.log").write_text("\n".join(log) + "\n")
    if lock_pid is not None:
        (folder / ".lock").write_text(json.dumps({"pid": lock_pid, "host": socket.gethostname(),
                                                  "started": 0}))
    return folder


def test_status_and_live_progress(tmp_path):
    import subprocess
    import sys
    from aicore.app import runs
    ts = "2026-12-01 10:00:0{} | INFO    | "
    done1 = ts.format(1) + "epoch 1/3 done in 4.0s (10 img/s) mean loss=0.9000"
    it = ts.format(3) + "epoch 2/3 iter 5/10 loss=0.5000 lr=1.000e-03 (12 img/s, ETA 1m 03s)"
    err = ts.format(4) + "| ERROR   | boom"
    live = _fake_run(tmp_path / "live", 3, [done1, it], lock_pid=os.getpid())
    p = runs.progress(live)
    assert (p["epoch"], p["iter"], p["iters"], p["loss"]["loss"]) == (1, 5, 10, 0.5)
    assert p["eta_s"] == pytest.approx((3 - 1 - 0.5) * 4.0) and p["eta_text"] == "1m 03s"
    assert runs.summary(tmp_path, live)["status"] == "running"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = _fake_run(tmp_path / "stale", 3, [done1], lock_pid=dead.pid)
    assert runs.summary(tmp_path, stale)["status"] == "interrupted"
    failed = _fake_run(tmp_path / "failed", 3, [done1, err.replace("| INFO    | ", "")])
    assert runs.summary(tmp_path, failed)["status"] == "failed"
    assert runs.summary(tmp_path, failed, job_state="queued")["status"] == "queued"


@pytest.mark.slow
def test_predict_uses_export_through_deploy_runtime(client, world):
    pytest.importorskip("onnxruntime")
    from conftest import run_cli
    import shutil

    from aicore.app.predict import has_deploy
    if not has_deploy():
        pytest.skip("aicore.deploy is not importable")
    assert run_cli("-c", str(world.runs / "cls_a" / "config.json"), "-o", "mode=export") == 0
    img = sorted((world.data / "cls" / "val").rglob("*.png"))[0]
    try:
        r = client.post("/api/predict", data={"run": "cls_a"},
                        files={"file": ("x.png", img.read_bytes(), "image/png")})
        assert r.status_code == 200, r.text
        assert "deploy runtime" in r.json()["backend"]
        # without the export the checkpoint answers, with the same class
        shutil.move(str(world.runs / "cls_a" / "export"), str(world.runs / "cls_a" / "exp.bak"))
        r2 = client.post("/api/predict", data={"run": "cls_a"},
                         files={"file": ("x.png", img.read_bytes(), "image/png")})
        assert "checkpoint" in r2.json()["backend"]
        assert r2.json()["result"]["predicted"] == r.json()["result"]["predicted"]
    finally:
        bak = world.runs / "cls_a" / "exp.bak"
        if bak.exists():
            shutil.move(str(bak), str(world.runs / "cls_a" / "export"))

"""The app's per-task pages with FastAPI's TestClient: eval report pages of all four tasks, the
two-class OK/NG classification threshold (rates from eval/predictions.csv, saving with the old
file kept, demo and export reading it), the Data page's drawn samples, the job queue (one at a
time, cancel queued and running) and `aicore app`. The tests on the trained world (one small
run per task, about 80 s to build on 2 cores) are marked slow."""
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
from conftest import run_cli  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("appworld_tasks"), tasks=True)


@pytest.fixture(scope="module")
def client(world):
    from aicore.app.server import create_app
    with TestClient(create_app(world.runs, world.data)) as c:
        yield c


def p_defect(run: Path) -> tuple[list[float], list[float]]:
    """P(defect) of the good and of the defect eval images, from predictions.csv."""
    with open(run / "eval" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    p = [(r["true"], float(r["true_probability"]) if r["true"] == "defect"
          else 1 - float(r["true_probability"])) for r in rows]
    return [v for t, v in p if t == "good"], [v for t, v in p if t == "defect"]


def demo_labels(world, run: str) -> dict[str, str]:
    """mode=demo on the eval images: file name -> predicted class."""
    src = world.data / "okng" / "val"
    assert run_cli("-c", str(world.runs / run / "config.json"), "-o", "mode=demo",
                   "-o", f"demo.source={src}") == 0
    with open(world.runs / run / "demo" / "predictions.csv", newline="") as f:
        return {f"{Path(r['source']).parent.name}/{Path(r['source']).name}": r["predicted"]
                for r in csv.DictReader(f)}


def eval_argmax(run: Path) -> dict[str, str]:
    with open(run / "eval" / "predictions.csv", newline="") as f:
        return {f"{Path(r['path']).parent.name}/{Path(r['path']).name}": r["predicted"]
                for r in csv.DictReader(f)}


# -- report pages ---------------------------------------------------------------------------

@pytest.mark.slow
def test_report_pages_per_task(client, world):
    cls = client.get("/run/cls_a/report").text
    assert "Confusion matrix" in cls and "Most confident mistakes" in cls and "Per class" in cls
    seg = client.get("/run/seg/report").text
    assert "Per-class IoU" in seg and "per_class_iou.png" in seg
    assert 'id="overlays"' in seg and seg.count('<figure class="pair">') >= 1
    assert seg.count("data:image/png;base64,") >= 2  # truth and prediction
    det = client.get("/run/det/report").text
    assert "Per-class AP" in det and "Precision-recall curves" in det and 'id="boxes"' in det
    assert "ground-truth boxes" in det
    an = client.get("/run/anomaly/report").text
    assert "Score histogram" in an and "ROC and PRO" in an and 'id="heatmaps"' in an
    heat = sorted((world.runs / "anomaly" / "eval" / "heatmaps").glob("*.png"))
    assert heat and all(f"/files/runs/anomaly/eval/heatmaps/{p.name}" in an for p in heat)
    assert client.get(f"/files/runs/anomaly/eval/heatmaps/{heat[0].name}").status_code == 200
    assert "threshold tuning" in client.get("/run/okng/report").text
    assert "threshold tuning" not in client.get("/run/cls_a").text  # four classes


def test_anomaly_heatmaps_put_mistakes_first():
    import numpy as np

    from aicore.tasks.anomaly.report import pick
    labels = np.array([0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.9, 0.2, 0.6, 0.8])
    # threshold 0.5: the defect at 0.2 escapes, the good part at 0.9 is an overkill
    assert pick(labels, scores, 0.5, 10) == [2, 1, 4, 3]
    assert pick(labels, scores, 0.5, 2) == [2, 1]


# -- two-class OK/NG threshold ----------------------------------------------------------------

@pytest.mark.slow
def test_binary_threshold_rates_match_predictions_csv(client, world):
    good, defect = p_defect(world.runs / "okng")
    data = client.get("/api/run/okng/threshold").json()
    assert (data["task"], data["ng_class"], data["ok_class"]) == \
        ("classification", "defect", "good")  # inferred: "good" is the OK name
    assert data["range"] == [0.0, 1.0] and data["threshold"] == 0.5
    assert sorted(data["good"]) == pytest.approx(sorted(good))
    assert sorted(data["defect"]) == pytest.approx(sorted(defect))
    for t in (0.0, 0.25, 0.5, 0.9, 1.0):
        r = client.get(f"/api/run/okng/threshold?t={t}").json()["rates"]
        assert r["escapes"] == sum(p < t for p in defect) and r["defects"] == len(defect)
        assert r["overkills"] == sum(p >= t for p in good) and r["goods"] == len(good)
    for target in (0.0, 0.5):
        got = client.get(f"/api/run/okng/threshold?target_escape={target}").json()["rates"]
        assert got["escape_rate"] <= target
    swapped = client.get("/api/run/okng/threshold?ng=good").json()
    assert swapped["ng_class"] == "good" and len(swapped["defect"]) == len(good)
    r = client.get("/api/run/okng/threshold?ng=nope")
    assert r.status_code == 400 and r.json()["detail"].startswith("error: ng='nope'")
    r = client.get("/api/run/cls_a/threshold")
    assert r.status_code == 400 and "exactly two" in r.json()["detail"]
    for url in ("/api/run/..%2fokng/threshold", "/api/run/../okng/threshold",
                "/api/run/%2fetc/threshold"):
        assert client.get(url).status_code == 404


@pytest.mark.slow
def test_binary_threshold_save_keeps_old_and_demo_reads_it(client, world):
    ev = world.runs / "okng" / "eval"
    good, defect = p_defect(world.runs / "okng")
    assert not (ev / "threshold.json").exists()  # eval does not write one for classification
    r = client.post("/api/run/okng/threshold", json={"threshold": 0.0})
    assert r.status_code == 200, r.text
    assert r.json()["previous"] is None
    first = json.loads((ev / "threshold.json").read_text())
    assert (first["ng_class"], first["ng_threshold"]) == ("defect", 0.0)
    assert set(demo_labels(world, "okng").values()) == {"defect"}  # P(NG) >= 0: all NG
    above = max(good + defect) + 1e-6
    r = client.post("/api/run/okng/threshold", json={"threshold": min(1.0, above),
                                                    "ng_class": "defect"})
    assert r.status_code == 200, r.text
    assert json.loads((ev / r.json()["previous"]).read_text()) == first
    if above <= 1.0:
        assert set(demo_labels(world, "okng").values()) == {"good"}
    for bad in ({"threshold": 1.5}, {"threshold": -0.1}, {"threshold": "x"}, {},
                {"threshold": 0.5, "ng_class": 3}, {"threshold": 0.5, "ng_class": "nope"}):
        assert client.post("/api/run/okng/threshold", json=bad).status_code == 400, bad
    assert client.post("/api/run/okng/threshold", content="[1]").status_code == 400
    # a retrained checkpoint: the saved threshold no longer applies, demo uses the argmax
    ckpt = world.runs / "okng" / "checkpoints" / "best.pth"
    st = ckpt.stat()
    os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    try:
        assert demo_labels(world, "okng") == eval_argmax(world.runs / "okng")
        from aicore.tasks.classification.threshold import load
        assert load(ev / "threshold.json", ["defect", "good"], ckpt) is None
    finally:
        os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns))
    (ev / "threshold.json").unlink()


@pytest.mark.slow
def test_binary_threshold_reaches_export_and_deploy_runtime(client, world):
    pytest.importorskip("onnxruntime")
    from aicore.deploy.predictor import Predictor
    run = world.runs / "okng"
    assert client.post("/api/run/okng/threshold", json={"threshold": 0.0}).status_code == 200
    try:
        assert run_cli("-c", str(run / "config.json"), "-o", "mode=export",
                       "-o", "export.formats=[\"onnx\"]") == 0
        post = json.loads((run / "export" / "manifest.json").read_text())["postprocess"]
        assert (post["ng_class"], post["ng_threshold"]) == ("defect", 0.0)
        predictor = Predictor(run / "export")
        imgs = sorted((world.data / "okng" / "val" / "good").glob("*.png"))[:3]
        assert {predictor.predict(str(p)).class_name for p in imgs} == {"defect"}
    finally:
        (run / "eval" / "threshold.json").unlink()


# -- data page ------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("root,task,caption", [
    ("cls", "classification", "circle"), ("seg", "segmentation", ""),
    ("det", "detection", "boxes"), ("anomaly/grid", "anomaly", "good")])
def test_data_samples_are_drawn_with_ground_truth(client, root, task, caption):
    r = client.get(f"/api/data?root={root}&task={task}")
    assert r.status_code == 200, r.text
    drawn = r.json()["drawn"]
    assert drawn and drawn["samples"]
    assert all(s["image"].startswith("data:image/png;base64,") for s in drawn["samples"])
    assert any(caption in s["caption"] for s in drawn["samples"])
    assert not any("error:" in s["caption"] for s in drawn["samples"])


def test_data_grid_draws_the_annotation(tmp_path):
    """The drawn sample differs from the bare image exactly where the label is."""
    import cv2
    import numpy as np

    from aicore.app.annotate import draw_sample

    class Seg:
        classes = ["background", "a"]
        samples = []
    tmp = tmp_path
    img = np.full((64, 64, 3), 100, np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[10:20, 10:20] = 1
    cv2.imwrite(str(tmp / "i.png"), img)
    cv2.imwrite(str(tmp / "m.png"), mask)
    Seg.samples = [(str(tmp / "i.png"), str(tmp / "m.png"))]
    drawn, caption = draw_sample("segmentation", Seg, 0)
    assert caption.endswith(": a")
    small = cv2.resize(drawn, (64, 64), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(small[14, 14] - 100).sum() > 30 and np.abs(small[50, 50] - 100).sum() < 5


# -- job queue ------------------------------------------------------------------------------

@pytest.mark.slow
def test_queue_runs_one_at_a_time_and_cancels(client, world):
    cfg = str(world.runs / "cls_b" / "config.json")
    first = client.post("/api/jobs", json={"config": cfg, "overrides": {
        "work_dir": str(world.runs / "q_first"), "train.epochs": "50"}}).json()
    second = client.post("/api/jobs", json={"config": cfg, "overrides": {
        "work_dir": str(world.runs / "q_second"), "train.epochs": "1"}}).json()
    rows = {r["id"]: r for r in client.get("/api/runs").json()}
    assert rows["q_second"]["status"] == "queued"  # listed at once, before it writes anything
    assert rows["q_first"]["status"] in ("queued", "running")
    deadline = time.time() + 120
    while time.time() < deadline:
        jobs = {j["id"]: j for j in client.get("/api/jobs").json()}
        if jobs[first["id"]]["state"] != "queued":
            break
        time.sleep(0.3)
    assert jobs[first["id"]]["state"] == "running" and jobs[second["id"]]["state"] == "queued"
    time.sleep(1.0)  # still one at a time a moment later
    assert client.get("/api/jobs").json()[0]["state"] == "queued"  # newest first: the second
    assert client.post(f"/api/jobs/{second['id']}/cancel").json()["state"] == "cancelled"
    client.post(f"/api/jobs/{first['id']}/cancel")
    deadline = time.time() + 60
    while time.time() < deadline:
        jobs = {j["id"]: j for j in client.get("/api/jobs").json()}
        if jobs[first["id"]]["state"] == "cancelled":
            break
        time.sleep(0.5)
    assert jobs[first["id"]]["state"] == "cancelled"
    time.sleep(1.0)  # the queue loop would have started the second job by now
    assert jobs[second["id"]]["state"] == "cancelled"
    assert not (world.runs / "q_second").exists()  # the cancelled queued job never ran
    assert client.post(f"/api/jobs/{second['id']}/cancel").json()["state"] == "cancelled"


# -- the aicore command ---------------------------------------------------------------------

def test_aicore_app_command(tmp_path, capsys):
    from aicore.commands import main
    with pytest.raises(SystemExit) as e:
        main(["app", "--help"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("usage: aicore app")
    with pytest.raises(SystemExit) as e:
        main(["app", "--runs", str(tmp_path), "--data", str(tmp_path / "missing")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --data") and len(err.strip().splitlines()) == 1

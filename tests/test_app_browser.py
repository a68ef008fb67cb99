"""End to end in a real headless Chromium (Debian's chromium via Playwright): the app served
by uvicorn on a free port, driven like a user. Screenshots go to the test's tmp folder
(AICORE_APP_SHOTS=folder copies them there too, e.g. notes/app)."""
from __future__ import annotations

import csv
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists()
                                        else None)
if CHROMIUM is None:
    print("test_app_browser: skipped, no chromium executable (apt-get install chromium)")
    pytest.skip("no chromium executable (apt-get install chromium)", allow_module_level=True)
pw = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

from app_fixtures import build_world  # noqa: E402

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("appworld_browser"))


@pytest.fixture(scope="module")
def server(world):
    import uvicorn

    from aicore.app.server import create_app
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(world.runs, world.data), host="127.0.0.1",
                                        port=port, log_level="warning"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.1)
    assert srv.started
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    t.join(15)


@pytest.fixture(scope="module")
def page(server, tmp_path_factory):
    with pw.sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=CHROMIUM,
                                        args=["--no-sandbox", "--disable-gpu"])
        except Exception as e:  # chromium present but unusable here
            print(f"test_app_browser: skipped, chromium does not start: {e}")
            pytest.skip(f"chromium does not start: {e}")
        pg = browser.new_page(viewport={"width": 1280, "height": 900})
        pg.set_default_timeout(60_000)
        yield pg
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return tmp_path_factory.mktemp("screenshots")


def snap(page, shots: Path, name: str) -> None:
    page.screenshot(path=str(shots / f"{name}.png"), full_page=False)
    extra = os.environ.get("AICORE_APP_SHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(shots / f"{name}.png", Path(extra) / f"{name}.png")


def test_runs_run_report_compare(page, server, shots):
    page.goto(server + "/")
    page.wait_for_selector("#runs tbody tr[data-id='cls_a']")
    assert page.locator("#runs tbody tr[data-id='cls_a'] .status").inner_text() == "finished"
    page.fill("#filter", "anomaly")
    assert page.locator("#runs tbody tr").count() == 1
    page.fill("#filter", "")
    snap(page, shots, "runs")
    page.click("a[href='/run/cls_a']")
    page.wait_for_selector("#curves svg[data-title='top1 [model]']")
    assert "finished" in page.inner_text("#progress")
    snap(page, shots, "run")
    page.click("a[href='/run/cls_a/report']")
    page.wait_for_selector("text=Per class")
    assert page.locator(".plots img").count() >= 1
    snap(page, shots, "report")
    page.goto(server + "/")
    page.wait_for_selector("#runs tbody tr[data-id='cls_b']")
    page.check(".pick[value='cls_a']")
    page.check(".pick[value='cls_b']")
    page.click("#compare")
    page.wait_for_selector("#curves svg[data-title='top1 [model]']")
    labels = page.locator("svg[data-title='top1 [model]'] path.series").evaluate_all(
        "els => els.map(e => e.dataset.label)")
    assert sorted(labels) == ["cls_a", "cls_b"]
    assert "optimizer.lr" in page.inner_text("main")
    snap(page, shots, "compare")


def test_threshold_slider_matches_predictions_csv(page, server, world, shots):
    with open(world.runs / "anomaly" / "eval" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    good = [float(r["score"]) for r in rows if r["label"] == "good"]
    defect = [float(r["score"]) for r in rows if r["label"] != "good"]
    page.goto(server + "/run/anomaly/threshold")
    page.wait_for_selector("#hist svg")
    for t in sorted(good + defect)[::3]:
        page.eval_on_selector("#thr-slider", "(s, t) => { s.value = t; s.dispatchEvent("
                              "new Event('input')); }", t)
        t_used = float(page.input_value("#thr-value"))
        esc = sum(s < t_used for s in defect)
        over = sum(s >= t_used for s in good)
        assert page.locator("#escape").get_attribute("data-count") == str(esc)
        assert page.locator("#overkill").get_attribute("data-count") == str(over)
        assert f"({esc} of {len(defect)})" in page.inner_text("#escape")
        assert f"{100 * over / len(good):.2f} %" in page.inner_text("#overkill")
    snap(page, shots, "threshold")


def test_data_page_names_corrupt_file(page, server, shots):
    page.goto(server + "/data")
    page.select_option("#data-root", "cls_bad")
    page.select_option("#data-task", "classification")
    page.click("#data-form button")
    page.wait_for_selector("#corrupt li")
    name = page.inner_text("#corrupt li")
    assert name.startswith("train/") and name.endswith(".png")
    assert Path(name).name in page.inner_text("#checks")
    snap(page, shots, "data")


def test_predict_upload_shows_class(page, server, world, shots):
    img = sorted((world.data / "cls" / "val").rglob("*.png"))[0]
    classes = sorted(p.name for p in (world.data / "cls" / "train").iterdir() if p.is_dir())
    page.goto(server + "/predict")
    page.select_option("#predict-run", "cls_a")
    page.set_input_files("#predict-file", str(img))
    page.click("#predict-form button")
    page.wait_for_selector(".prediction pre.result")
    text = page.inner_text(".prediction pre.result")
    assert any(f'"predicted": "{c}"' in text for c in classes), text
    snap(page, shots, "predict")


def test_launch_one_epoch_reaches_finished(page, server, world, shots):
    cfg = str(world.runs / "cls_b" / "config.json")
    page.goto(server + "/launch")
    page.select_option("#launch-config", cfg)
    page.wait_for_selector("input[name='train.epochs']")
    page.fill("input[name='train.epochs']", "1")
    page.fill("input[name='work_dir']", f'"{world.runs / "from_browser"}"')
    page.click("#launch-start")
    page.wait_for_selector("#jobs tbody tr")
    page.wait_for_function("() => [...document.querySelectorAll('.job-state')]"
                           ".some(e => e.textContent === 'finished')", timeout=240_000)
    snap(page, shots, "launch")
    page.goto(server + "/")
    page.wait_for_selector("#runs tbody tr[data-id='from_browser']")
    assert page.locator("#runs tbody tr[data-id='from_browser'] .status").inner_text() == \
        "finished"

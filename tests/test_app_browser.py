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
    return build_world(tmp_path_factory.mktemp("appworld_browser"), tasks=True)


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


def snap(page, shots: Path, name: str, at: str | None = None) -> None:
    """A screenshot of the viewport, scrolled to the element `at` when given."""
    if at:
        page.locator(at).first.scroll_into_view_if_needed()
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


def slide_threshold(page, t: float, good: list[float], defect: list[float],
                    task: str = "anomaly") -> tuple[int, int]:
    """Move the threshold slider to `t` as a user would; the page must count the escapes
    (defect scores the deployed model calls OK at the threshold it settled on) and overkills
    (good scores it calls NG) that the eval scores give, by the deploy runtime's rule.
    Returns (escapes, overkills)."""
    from aicore.app.threshold import verdict_rule
    is_ng = verdict_rule(task)
    page.eval_on_selector("#thr-slider", "(s, t) => { s.value = t; s.dispatchEvent("
                          "new Event('input')); }", t)
    t_used = float(page.input_value("#thr-value"))
    esc = sum(not is_ng(v, t_used) for v in defect)
    over = sum(is_ng(v, t_used) for v in good)
    # the page asks the server for the counts: wait for its answer
    page.wait_for_function("([e, o]) => document.querySelector('#escape').dataset.count === e "
                           "&& document.querySelector('#overkill').dataset.count === o",
                           arg=[str(esc), str(over)], timeout=10_000)
    return esc, over


def test_threshold_slider_matches_predictions_csv(page, server, world, shots):
    with open(world.runs / "anomaly" / "eval" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    good = [float(r["score"]) for r in rows if r["label"] == "good"]
    defect = [float(r["score"]) for r in rows if r["label"] != "good"]
    page.goto(server + "/run/anomaly/threshold")
    page.wait_for_selector("#hist svg")
    for t in sorted(good + defect)[::3]:
        esc, over = slide_threshold(page, t, good, defect)
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


@pytest.mark.parametrize("run,section,shot", [
    ("seg", "#overlays figure.pair img", "report_segmentation"),
    ("det", "#boxes figure img", "report_detection"),
    ("anomaly", "#heatmaps figure img", "report_anomaly")])
def test_report_page_of_each_task(page, server, run, section, shot, shots):
    page.goto(f"{server}/run/{run}/report")
    page.wait_for_selector(".task-plot img")
    imgs = page.locator(section)
    assert imgs.count() >= 1
    # every image on the page decoded (served or drawn by the app), none broken
    page.wait_for_function("() => [...document.images].every(i => i.complete)")
    broken = page.eval_on_selector_all("img", "els => els.filter(i => !i.naturalWidth).length")
    assert broken == 0
    snap(page, shots, shot, at=section.split()[0])


def test_binary_threshold_slider_matches_predictions_csv(page, server, world, shots):
    with open(world.runs / "okng" / "eval" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # P(defect) from the two-class softmax of each eval image
    p = [(r["true"], float(r["true_probability"]) if r["true"] == "defect"
          else 1 - float(r["true_probability"])) for r in rows]
    good = [v for t, v in p if t == "good"]
    defect = [v for t, v in p if t == "defect"]
    page.goto(server + "/run/okng/threshold")
    page.wait_for_selector("#hist svg")
    assert page.inner_text("#score-name") == "P(defect)"
    assert page.input_value("#ng-class") == "defect"
    for t in (0.0, 0.3, 0.45, 0.5, 0.55, 0.9):
        _, over = slide_threshold(page, t, good, defect, "classification")
        assert f"({over} of {len(good)})" in page.inner_text("#overkill")
    page.fill("#target", "0")
    page.click("#apply-target")
    page.wait_for_function("() => document.querySelector('#escape').dataset.count === '0'")
    snap(page, shots, "threshold_classification")
    ev = world.runs / "okng" / "eval"
    page.click("#save")
    page.wait_for_selector("#save-msg:has-text('saved')")
    try:
        import json
        saved = json.loads((ev / "threshold.json").read_text())
        assert saved["ng_class"] == "defect"
        assert saved["ng_threshold"] == pytest.approx(float(page.input_value("#thr-value")))
    finally:
        (ev / "threshold.json").unlink()


def test_data_grid_shows_masks_and_boxes(page, server, shots):
    page.goto(server + "/data")
    for root, task, word in (("det", "detection", "boxes"), ("seg", "segmentation", "")):
        page.select_option("#data-root", root)
        page.select_option("#data-task", task)
        page.click("#data-form button")
        page.wait_for_selector("#drawn figure img")
        assert page.locator("#drawn figure").count() >= 4
        assert word in page.inner_text("#drawn")
        page.wait_for_function("() => [...document.querySelectorAll('#drawn img')]"
                               ".every(i => i.complete && i.naturalWidth > 0)")
    snap(page, shots, "data_segmentation", at="#drawn")


def wait_for_job(page, name: str, state: str, timeout: float | None = None) -> None:
    """Wait until a row of the jobs table names the job `name` and shows `state`."""
    page.wait_for_function("([n, s]) => [...document.querySelectorAll('#jobs tr')].some(r => "
                           "r.textContent.includes(n) && r.textContent.includes(s))",
                           arg=[name, state], timeout=timeout)


def test_queue_and_cancel_from_the_launch_page(page, server, world, shots):
    cfg = str(world.runs / "cls_b" / "config.json")
    page.goto(server + "/launch")
    for name, epochs in (("queue_a", "50"), ("queue_b", "1")):
        page.select_option("#launch-config", cfg)
        page.wait_for_selector("input[name='train.epochs']")
        page.fill("input[name='train.epochs']", epochs)
        page.fill("input[name='work_dir']", f'"{world.runs / name}"')
        page.click("#launch-start")
        page.wait_for_function("n => [...document.querySelectorAll('#jobs td')]"
                               ".some(e => e.textContent.endsWith(n))", arg=name)
    row = page.locator("#jobs tbody tr", has_text="queue_b")
    row.locator(".job-state").wait_for()
    assert row.locator(".job-state").inner_text() == "queued"  # one job at a time
    first = page.locator("#jobs tbody tr", has_text="queue_a")
    wait_for_job(page, "queue_a", "running", timeout=120_000)
    snap(page, shots, "launch_queue", at="#jobs")
    row.locator("button[data-cancel]").click()
    wait_for_job(page, "queue_b", "cancelled")
    first.locator("button[data-cancel]").click()
    wait_for_job(page, "queue_a", "cancelled", timeout=60_000)
    assert not (world.runs / "queue_b").exists()
    page.goto(server + "/")
    page.wait_for_selector("#runs tbody tr[data-id='queue_a']")

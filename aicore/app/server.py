"""The FastAPI application: pages, JSON API and files, all from the runs and data roots."""
from __future__ import annotations

import json
import math
import secrets
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request, UploadFile, Form
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from aicore.app import annotate, datacheck, jobs, pages, runs, threshold
from aicore.app.paths import NotInRoot, resolve_any, safe_join

STATIC = Path(__file__).parent / "static"
MAX_UPLOAD = 20 * 1024 * 1024


def create_app(runs_root: str | Path, data_root: str | Path | None = None,
               token: str | None = None, configs_dir: str | Path | None = None,
               max_upload: int = MAX_UPLOAD, cwd: str | Path | None = None) -> FastAPI:
    runs_root = Path(runs_root).resolve()
    runs_root.mkdir(parents=True, exist_ok=True)
    data_root = Path(data_root).resolve() if data_root else None
    cwd = Path(cwd or Path.cwd()).resolve()
    configs_dir = Path(configs_dir or cwd / "configs").resolve()
    queue = jobs.JobQueue(runs_root / ".aicore_app", cwd)
    app = FastAPI(title="AICore", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.queue = queue
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.middleware("http")
    async def check_token(request: Request, call_next):
        if token is not None and not request.url.path.startswith("/static/"):
            given = request.query_params.get("token") or request.headers.get("x-aicore-token") \
                or request.cookies.get("aicore_token")
            if not given or not secrets.compare_digest(given, token):
                return JSONResponse({"error": "access token required: open the URL printed "
                                              "at start (…?token=...)"}, status_code=401)
            response = await call_next(request)
            if request.query_params.get("token"):
                response.set_cookie("aicore_token", token, httponly=True, samesite="strict")
            return response
        return await call_next(request)

    @app.on_event("shutdown")
    def _stop() -> None:
        queue.shutdown()

    def bad(msg: str, code: int = 400):
        raise HTTPException(code, msg)

    def run_dir(run_id: str) -> Path:
        if run_id == ".":
            run = runs_root
        else:
            try:
                run = safe_join(runs_root, run_id)
            except NotInRoot:
                raise HTTPException(404, "no such run") from None
        if not (run / "config.json").is_file():
            raise HTTPException(404, "no such run")
        return run

    def summaries() -> list[dict[str, Any]]:
        out = [runs.summary(runs_root, r, queue.state_of(r)) for r in runs.find_runs(runs_root)]
        known = {str((runs_root / s["id"]).resolve()) for s in out}
        for job in queue.list():  # launched, not written yet: shown at once
            if job.work_dir not in known and job.state in ("queued", "running") and \
                    Path(job.work_dir).is_relative_to(runs_root):
                out.append({"id": Path(job.work_dir).relative_to(runs_root).as_posix(),
                            "task": job.task, "model": "", "data_root": "", "epochs_done": 0,
                            "epochs_total": None, "best": None, "status": job.state,
                            "start": job.submitted, "duration": None, "has_eval": False,
                            "has_export": False, "pending": True})
        return out

    # -- pages ------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse)
    def page_runs():
        return pages.runs_page()

    @app.get("/run/{run_id:path}/report", response_class=HTMLResponse)
    def page_report(run_id: str):
        run = run_dir(run_id)
        metrics = runs.read_json(run / "eval" / "metrics.json")
        if not isinstance(metrics, dict):
            raise HTTPException(404, "this run has no eval/metrics.json: run -o mode=eval")
        roots = [r for r in (data_root, runs_root) if r]

        def resolve(path: str) -> Path | None:
            try:
                return resolve_any(roots, path) if path else None
            except NotInRoot:
                return None

        def thumb(path: str) -> str | None:
            p = resolve(path)
            for kind, root in (("data", data_root), ("runs", runs_root)):
                if p and root and p.is_relative_to(root):
                    return pages.file_url(kind, p.relative_to(root).as_posix())
            return None
        task = (runs.read_json(run / "config.json") or {}).get("task", "")
        gallery = {}
        try:
            if task == "segmentation":
                from aicore.app import predict
                gallery["segmentation"] = annotate.segmentation_worst(run, resolve,
                                                                      predict.predict)
            elif task == "detection":
                gallery["detection"] = annotate.detection_images(
                    run, resolve, truth=annotate.ground_truth_boxes(run))
        except Exception as e:  # the report's tables and plots still show
            gallery = {"error": f"error: cannot draw the report images: {type(e).__name__}: {e}"}
        tunable = task == "anomaly" or (task == "classification"
                                        and len(threshold.classes_of(run)) == 2)
        return pages.report_page(run_id, run, metrics, thumb, task, gallery, tunable)

    @app.get("/run/{run_id:path}/threshold", response_class=HTMLResponse)
    def page_threshold(run_id: str):
        run_dir(run_id)
        return pages.threshold_page(run_id)

    @app.get("/run/{run_id:path}", response_class=HTMLResponse)
    def page_run(run_id: str):
        run = run_dir(run_id)
        summary = runs.summary(runs_root, run, queue.state_of(run))
        summary["tunable"] = summary["has_eval"] and (
            summary["task"] == "anomaly" or (summary["task"] == "classification"
                                             and len(threshold.classes_of(run)) == 2))
        return pages.run_page(run_id, summary, runs.read_json(run / "config.json") or {},
                              runs.checkpoints(run))

    @app.get("/compare", response_class=HTMLResponse)
    def page_compare(request: Request):
        ids = request.query_params.getlist("run")
        if len(ids) < 2:
            bad("compare needs two or more ?run=ID parameters")
        return pages.compare_page(ids, runs.config_diff([run_dir(i) for i in ids]))

    @app.get("/data", response_class=HTMLResponse)
    def page_data():
        return pages.data_page(data_choices())

    @app.get("/predict", response_class=HTMLResponse)
    def page_predict():
        ids = [s["id"] for s in summaries() if not s.get("pending")]
        return pages.predict_page(ids)

    @app.get("/launch", response_class=HTMLResponse)
    def page_launch():
        return pages.launch_page(config_choices())

    # -- runs API ---------------------------------------------------------------------------
    @app.get("/api/runs")
    def api_runs():
        return summaries()

    @app.get("/api/run/{run_id:path}/progress")
    def api_progress(run_id: str):
        run = run_dir(run_id)
        return {**runs.progress(run), "status": runs.summary(runs_root, run,
                                                             queue.state_of(run))["status"]}

    @app.get("/api/run/{run_id:path}/curves")
    def api_curves(run_id: str):
        return runs.curves(run_dir(run_id))

    @app.get("/api/run/{run_id:path}/threshold")
    def api_threshold(run_id: str, t: float | None = None, target_escape: float | None = None,
                      ng: str | None = None):
        run = run_dir(run_id)
        try:
            data = threshold.load_scores(run, ng)
            if target_escape is not None:
                t = threshold.for_escape_rate(data["defect"], target_escape)
        except threshold.ThresholdError as e:
            bad(f"error: {e}", 404 if "not found" in str(e) else 400)
        if t is None:
            t = data["threshold"]
        if t is None or not math.isfinite(t):
            bad("error: give a finite threshold t")
        return {**data, "rates": threshold.rates(data["good"], data["defect"], t, data["task"])}

    @app.post("/api/run/{run_id:path}/threshold")
    async def api_threshold_save(run_id: str, request: Request):
        run = run_dir(run_id)
        try:
            body = await request.json()
            value = float(body["threshold"])
            ng = body.get("ng_class")
            assert ng is None or isinstance(ng, str)
        except (ValueError, KeyError, TypeError, AttributeError, AssertionError):
            bad("error: send JSON {\"threshold\": NUMBER} (and \"ng_class\": NAME for a "
                "classification run)")
        try:
            return threshold.save(run, value, ng)
        except threshold.ThresholdError as e:
            bad(f"error: {e}")

    @app.get("/api/run/{run_id:path}")
    def api_run(run_id: str):
        run = run_dir(run_id)
        return {"summary": runs.summary(runs_root, run, queue.state_of(run)),
                "config": runs.read_json(run / "config.json"),
                "checkpoints": runs.checkpoints(run)}

    @app.get("/api/compare")
    def api_compare(request: Request):
        ids = request.query_params.getlist("run")
        if len(ids) < 2:
            bad("compare needs two or more ?run=ID parameters")
        dirs = [run_dir(i) for i in ids]
        return {"curves": {i: runs.curves(d) for i, d in zip(ids, dirs)},
                "diff": runs.config_diff(dirs)}

    # -- files -----------------------------------------------------------------------------
    @app.get("/files/{kind}/{rel:path}")
    def files(kind: str, rel: str):
        root = {"runs": runs_root, "data": data_root}.get(kind)
        if root is None:
            raise HTTPException(404, "not found")
        try:
            p = safe_join(root, rel)
        except NotInRoot:
            raise HTTPException(404, "not found") from None
        if not p.is_file() or p.name == ".lock":
            raise HTTPException(404, "not found")
        return FileResponse(p)

    # -- data ------------------------------------------------------------------------------
    def data_choices() -> list[str]:
        if data_root is None or not data_root.is_dir():
            return []
        tops = [p for p in data_root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        # category folders one level down (MVTec layout: root/<category>/train/good)
        cats = [c for t in tops if not (t / "train").is_dir() for c in t.iterdir()
                if c.is_dir() and (c / "train").is_dir()]
        return ["."] + sorted(p.relative_to(data_root).as_posix() for p in tops + cats)

    @app.get("/api/data")
    def api_data(root: str, task: str):
        if data_root is None:
            bad("error: the app was started without --data")
        try:
            folder = data_root if root == "." else safe_join(data_root, root)
        except NotInRoot:
            raise HTTPException(404, "no such dataset folder") from None
        if not folder.is_dir():
            raise HTTPException(404, "no such dataset folder")
        try:
            rep = datacheck.report(folder, task, configs_dir)
        except ValueError as e:
            bad(f"error: {e}")
        prefix = "" if root == "." else root.rstrip("/") + "/"
        for s in rep["files"]["samples"]:
            s["url"] = pages.file_url("data", prefix + s["path"])
        return rep

    # -- predict ---------------------------------------------------------------------------
    @app.post("/api/predict")
    async def api_predict(run: str = Form(...), file: UploadFile = None):
        from aicore.app import predict
        from aicore.errors import AICoreError
        folder = run_dir(run)
        if file is None:
            bad("error: attach an image as 'file'")
        data = await file.read(max_upload + 1)
        if len(data) > max_upload:
            bad(f"error: {file.filename} is larger than the upload limit of "
                f"{max_upload // (1024 * 1024)} MB", 413)
        try:
            return predict.predict(folder, data, file.filename or "upload")
        except (predict.PredictError, AICoreError) as e:
            bad(f"error: {e}")

    # -- launch ----------------------------------------------------------------------------
    def config_choices() -> list[str]:
        shipped = sorted(p.relative_to(cwd).as_posix() if p.is_relative_to(cwd) else str(p)
                         for p in configs_dir.rglob("*.json") if "_base_" not in p.parts) \
            if configs_dir.is_dir() else []
        own = [str((r / "config.json").relative_to(cwd)) if r.is_relative_to(cwd)
               else str(r / "config.json") for r in runs.find_runs(runs_root)]
        return shipped + own

    @app.get("/api/configs")
    def api_configs():
        return config_choices()

    @app.get("/api/config-form")
    def api_config_form(config: str):
        if config not in config_choices():
            raise HTTPException(404, "not a shipped config or one from the runs folder")
        try:
            resolved = jobs.check_config(config, [], cwd)
        except jobs.LaunchError as e:
            bad(str(e))
        flat = runs.flatten({k: v for k, v in resolved.items() if k != "custom_imports"})
        fields = [{"key": k, "type": type(v).__name__ if v is not None else "null",
                   "value": json.dumps(v)} for k, v in flat.items()
                  if not isinstance(v, (dict,)) and not k.endswith("_origins")]
        stem = Path(config).stem if Path(config).name != "config.json" else \
            Path(config).parent.name
        for f in fields:
            if f["key"] == "work_dir":
                f["value"] = json.dumps(str(runs_root / f"app_{stem}"))
        return {"config": config, "fields": fields}

    @app.post("/api/jobs")
    async def api_submit(request: Request):
        try:
            body = await request.json()
            config, overrides = body["config"], body.get("overrides") or {}
            assert isinstance(overrides, dict)
        except (ValueError, KeyError, TypeError, AssertionError):
            bad("error: send JSON {\"config\": PATH, \"overrides\": {KEY: VALUE}}")
        if config not in config_choices():
            raise HTTPException(404, "not a shipped config or one from the runs folder")
        args = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in overrides.items()]
        try:
            return queue.submit(config, args).public()
        except jobs.LaunchError as e:
            bad(str(e))

    @app.get("/api/jobs")
    def api_jobs():
        return [j.public() for j in queue.list()]

    @app.post("/api/jobs/{job_id}/cancel")
    def api_cancel(job_id: str):
        if job_id not in queue.jobs:
            raise HTTPException(404, "no such job")
        return queue.cancel(job_id).public()

    return app

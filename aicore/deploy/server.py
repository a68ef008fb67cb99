"""The HTTP service: FastAPI + uvicorn around one Predictor.

POST /predict   an image as multipart field `file`, several as repeated `files`, or the raw
                image bytes as the body (PNG, JPEG, TIFF, ... or a .npy array in OpenCV's BGR
                order); ?arrays=true adds the mask / anomaly map
GET  /health    {"status": "ok", ...}
GET  /model     the export's manifest
GET  /docs      OpenAPI docs

Bad input gets a 4xx answer with {"detail": "..."} naming the problem; the service keeps
serving. The model is loaded before the port is opened, so a missing or inconsistent export
folder stops the start with one error line (exit status 2).
"""

from typing import Any

import numpy as np

from aicore.deploy.manifest import DeployError
from aicore.deploy.predictor import Predictor, decode_image

_BODY_DOC = {"requestBody": {"content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "file": {"type": "string", "format": "binary"},
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    "image/png": {"schema": {"type": "string", "format": "binary"}}}}}


def create_app(predictor: Predictor, max_bytes: int = 20_000_000,
               max_pixels: int = 40_000_000):
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import JSONResponse

    app = FastAPI(title="AICore deploy", version="1",
                  description=f"{predictor.task} model {predictor.onnx_path.name}; classes "
                              f"{', '.join(predictor.classes)}")

    def check_size(n: int, name: str) -> None:
        if n == 0:
            raise HTTPException(400, f"{name}: empty; send an image file")
        if n > max_bytes:
            raise HTTPException(413, f"{name}: {n} bytes is over the limit of {max_bytes} "
                                     f"bytes (serve --max-bytes)")

    def decode(data: bytes, name: str) -> np.ndarray:
        check_size(len(data), name)
        if data.startswith(b"\x93NUMPY"):  # a raw array saved with np.save (.npy)
            import io
            try:
                img = np.load(io.BytesIO(data), allow_pickle=False)
            except ValueError as e:
                raise HTTPException(415, f"{name}: not a readable .npy array ({e})") from None
            if img.ndim not in (2, 3) or img.dtype not in (np.uint8, np.uint16):
                raise HTTPException(422, f"{name}: array {img.dtype} {img.shape}; send HxW or "
                                         f"HxWxC uint8/uint16")
        else:
            try:
                img = decode_image(data, name)
            except DeployError as e:
                raise HTTPException(415, str(e)) from None
        if img.shape[0] * img.shape[1] > max_pixels:
            raise HTTPException(413, f"{name}: {img.shape[1]}x{img.shape[0]} pixels is over "
                                     f"the limit of {max_pixels} (serve --max-pixels)")
        if img.ndim == 3 and img.shape[2] not in (1, 3, 4):
            raise HTTPException(422, f"{name}: {img.shape[2]} channels; send a grayscale, "
                                     f"colour or colour+alpha image")
        return img

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", **predictor.info()}

    @app.get("/model")
    def model() -> dict[str, Any]:
        return predictor.manifest

    @app.post("/predict", openapi_extra=_BODY_DOC, response_class=JSONResponse,
              responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}})
    async def predict(request: Request, arrays: bool = False) -> JSONResponse:
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            try:
                form = await request.form()
            except Exception as e:  # malformed multipart body
                raise HTTPException(400, f"cannot parse the multipart body: {e}") from None
            uploads = [(f"file {getattr(u, 'filename', '') or i}", u) for i, u in
                       enumerate(form.getlist("file") + form.getlist("files"))]
            if not uploads:
                raise HTTPException(400, "no image: send it as multipart field 'file' (or "
                                         "several as 'files'), or as the raw request body")
            images, single = [], len(form.getlist("files")) == 0 and len(uploads) == 1
            for name, u in uploads:
                if isinstance(u, str):
                    raise HTTPException(400, f"{name}: a text field, not a file upload")
                images.append(decode(await u.read(), name))
        else:
            body = await request.body()
            images, single = [decode(body, "request body")], True
        try:
            results = await run_in_threadpool(predictor.predict, images)
        except DeployError as e:
            raise HTTPException(422, str(e)) from None
        dicts = [r.to_dict(arrays=arrays) for r in results]
        # to_dict() is plain JSON already: a JSONResponse skips FastAPI's jsonable_encoder and
        # response-model pass, which walked every box and contour point again (the larger part
        # of the per-request overhead for detection and anomaly)
        return JSONResponse(dicts[0] if single else {"results": dicts})

    return app


def run(export: str, host: str = "127.0.0.1", port: int = 8000, max_bytes: int = 20_000_000,
        max_pixels: int = 40_000_000, providers=None, threads: int | None = None) -> None:
    try:
        import uvicorn
    except ImportError:
        raise DeployError("serve needs fastapi and uvicorn: pip install -r "
                          "aicore/deploy/requirements.txt (or the 'deploy' extra)") from None
    predictor = Predictor(export, providers=providers, intra_op_num_threads=threads)
    app = create_app(predictor, max_bytes, max_pixels)
    print(f"serving {predictor.task} model {predictor.onnx_path} on http://{host}:{port} "
          f"(docs at /docs)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")

"""One uploaded image through a run's model: its export through the deploy runtime when the
run has one (and aicore.deploy is installed), else its checkpoint the way ``mode=demo`` runs
it (the task's inference protocol: preprocess, predict, draw and csv_row)."""
from __future__ import annotations

import base64
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np

_CACHE: dict[str, tuple[float, Any]] = {}
_LOCK = threading.Lock()


class PredictError(ValueError):
    pass


def decode(data: bytes, name: str) -> np.ndarray:
    buf = np.frombuffer(data, np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if img is None:
        raise PredictError(f"{name}: not a decodable image (empty, corrupt or another format)")
    return img


def _trainer_for(run: Path):
    from aicore import config as C
    from aicore.cli import import_custom_modules
    from aicore.tasks import import_tasks
    from aicore.tasks.spec import apply_task_defaults, trainer_class
    import_tasks()
    cfg = C.load_config(run / "config.json", ["mode=demo", f"work_dir={run}",
                                              "demo.checkpoint=null", "demo.weights=\"auto\""])
    import_custom_modules(list(cfg.custom_imports or []))
    apply_task_defaults(cfg)
    return trainer_class(cfg)(cfg), cfg


def _loaded(run: Path, use_export: bool):
    key_file = run / ("export/manifest.json" if use_export else "checkpoints/best.pth")
    if not key_file.is_file():
        raise PredictError(f"{key_file} not found: train this run first")
    stamp = key_file.stat().st_mtime
    key = f"{run}|{use_export}"
    with _LOCK:
        hit = _CACHE.get(key)
        if hit and hit[0] == stamp:
            return hit[1]
        from aicore.engine.protocol import make_protocol
        trainer, cfg = _trainer_for(run)
        if use_export:
            from aicore.deploy.predictor import Predictor
            model = Predictor(run / "export")
            protocol = make_protocol(trainer, postprocess=model.post)
        else:
            from aicore.engine.runners import checkpoint_path, load_model
            trainer.setup_device()
            model, _ = load_model(trainer, cfg, "demo")
            protocol = make_protocol(trainer, model=model,
                                     checkpoint=checkpoint_path(cfg, "demo"))
        _CACHE[key] = (stamp, (protocol, cfg, model))
        return protocol, cfg, model


def has_deploy() -> bool:
    try:
        import aicore.deploy.predictor  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def predict(run: Path, data: bytes, name: str) -> dict[str, Any]:
    from aicore.data.io import to_channels
    raw = decode(data, name)
    use_export = (run / "export" / "manifest.json").is_file() and has_deploy()
    protocol, cfg, model = _loaded(run, use_export)
    if use_export:
        pred = model.predict(raw)
        backend = f"export ({run.name}/export, deploy runtime)"
    else:
        x, meta = protocol.preprocess(raw, name)
        pred = protocol.predict(model, x[None], [meta])[0]
        backend = "checkpoint (checkpoints/best.pth, PyTorch)"
    display = to_channels(raw, 3, name)
    if display.dtype != np.uint8:
        display = (display * 255).clip(0, 255).astype(np.uint8)
    drawn = protocol.draw(display, pred)
    ok, png = cv2.imencode(".png", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
    row = {k: (v.item() if hasattr(v, "item") else v) for k, v in protocol.csv_row(pred).items()}
    return {"name": name, "backend": backend, "task": cfg.task, "result": row,
            "image": "data:image/png;base64," + base64.b64encode(png.tobytes()).decode()}

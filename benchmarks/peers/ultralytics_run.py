"""One Ultralytics training run from scratch (run with the peer venv's python, see
ultralytics_venv.sh), the counterpart of AICore's main.py in detection.py.

    python ultralytics_run.py DATA_DIR MODEL_YAML EPOCHS IMGSZ BATCH WORKERS OUT.json

Builds MODEL_YAML (e.g. yolov8n.yaml: random init, nothing downloaded), trains on
DATA_DIR/ultralytics.yaml with Ultralytics' default recipe for EPOCHS at IMGSZ on the CPU,
then predicts every val image (conf 0.001, at most 100 boxes, the usual mAP setting) and
writes the boxes (xyxy pixels), scores and labels per image, Ultralytics' own mAP50-95 and the
seconds of training + prediction to OUT.json. Online features are off: no settings sync, no
font download (plots=False), no AMP check (CPU).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")


def main() -> None:
    data, model_yaml, epochs, imgsz, batch, workers, out = sys.argv[1:8]
    from ultralytics import YOLO, settings

    off = ("sync", "hub", "mlflow", "tensorboard", "wandb", "clearml", "comet", "dvc", "raytune",
           "vscode_msg", "openvino_msg")
    settings.update({k: False for k in off if k in settings})  # keys differ between versions
    data = Path(data)
    work = Path(out).with_suffix("")
    t0 = time.perf_counter()
    model = YOLO(model_yaml)
    model.train(data=str(data / "ultralytics.yaml"), epochs=int(epochs), imgsz=int(imgsz),
                batch=int(batch), workers=int(workers), device="cpu", plots=False, amp=False,
                pretrained=False, project=str(work), name="train", exist_ok=True, seed=0,
                deterministic=False, verbose=False)
    train_s = time.perf_counter() - t0
    val = [line.strip() for line in (data / "ultralytics_val.txt").read_text().splitlines()
           if line.strip()]
    t1 = time.perf_counter()
    preds = []
    for i in range(0, len(val), 32):
        for r in model.predict(val[i:i + 32], imgsz=int(imgsz), conf=0.001, iou=0.65,
                               max_det=100, device="cpu", verbose=False):
            b = r.boxes
            preds.append({"path": r.path, "boxes": b.xyxy.tolist(), "scores": b.conf.tolist(),
                          "labels": [int(c) for c in b.cls.tolist()]})
    predict_s = time.perf_counter() - t1
    own = model.val(data=str(data / "ultralytics.yaml"), imgsz=int(imgsz), batch=int(batch),
                    device="cpu", plots=False, verbose=False, project=str(work), name="val",
                    exist_ok=True)
    Path(out).write_text(json.dumps({"train_s": train_s, "predict_s": predict_s,
                                     "own_map": float(own.box.map),
                                     "own_map50": float(own.box.map50), "preds": preds}))


if __name__ == "__main__":
    main()

"""Walk a demo/predict source: one image, a folder of images (recursively, sorted; with a
limit, a spread over its sub-folders) or a video; and write what a prediction pass over it
produces (annotated images or video, predictions.csv).

Torch-free, so both `mode=demo` (aicore/engine/runners.py) and the deploy runtime's `predict`
command (aicore/deploy/cli.py) read their inputs and write their outputs through this code.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np

from aicore.data.io import IMAGE_EXTENSIONS, imwrite, is_image, to_channels
from aicore.errors import DataError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def read_unchanged(path: str | Path, error: type[Exception] = DataError) -> np.ndarray:
    """An image file as OpenCV reads it unchanged (BGR(A), 8 or 16 bit); unicode paths too.
    The one image reader of mode=demo and the deploy runtime (which raises its DeployError:
    `error`)."""
    try:
        buf = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        raise error(f"cannot read image {path}: {e.strerror}") from None
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if img is None:
        raise error(f"cannot decode image {path}: the file is empty, corrupt or not an image")
    return img


def video_fps(path: str | Path, default: float = 25.0) -> float:
    """The frame rate a video file declares (``default`` when it declares none, as some
    containers and image sequences do), so a demo video plays at the source's speed."""
    cap = cv2.VideoCapture(str(path))
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS)) if cap.isOpened() else 0.0
    finally:
        cap.release()
    return fps if np.isfinite(fps) and 0 < fps <= 1000 else default


def spread(files: list[Path], n: int | None) -> list[Path]:
    """`n` of the (sorted) files that cover the source rather than its first `n`: shared out
    across the sub-folders in turn (classes, good and each defect type), evenly spaced within
    each, returned in sorted order."""
    if n is None or n >= len(files):
        return files
    groups: dict[Path, list[Path]] = {}
    for p in files:
        groups.setdefault(p.parent, []).append(p)
    quota = dict.fromkeys(groups, 0)
    left = max(0, int(n))
    while left:
        for g, members in groups.items():
            if left and quota[g] < len(members):
                quota[g] += 1
                left -= 1
    chosen = []
    for g, members in groups.items():
        if quota[g]:
            picks = np.linspace(0, len(members) - 1, quota[g]).round().astype(int)
            chosen += [members[i] for i in picks]
    return sorted(chosen)


def iter_sources(source: str, max_images: int | None = None, key: str = ""
                 ) -> Iterator[tuple[str, np.ndarray, Any]]:
    """(name, image as read from disk, video-frame index or None). `key` names the setting in
    error messages (e.g. "demo.source")."""
    where = f"{key} = {source}" if key else str(source)
    path = Path(source)
    if not path.exists():
        raise DataError(f"{where}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and is_image(p))
        if not files:
            raise DataError(f"{where}: the folder has no images ({'/'.join(IMAGE_EXTENSIONS)})")
        for p in spread(files, max_images):
            yield str(p), read_unchanged(p), None
    elif path.suffix.lower() in VIDEO_EXTENSIONS:
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise DataError(f"{where}: cannot open the video")
        n = 0
        try:
            while max_images is None or n < max_images:
                ok, frame = cap.read()
                if not ok:
                    break
                yield str(path), frame, n
                n += 1
        finally:
            cap.release()
        if n == 0:
            raise DataError(f"{where}: the video has no readable frames")
    elif is_image(path):
        yield str(path), read_unchanged(path), None
    else:
        raise DataError(f"{where}: not an image ({'/'.join(IMAGE_EXTENSIONS)}), a video "
                        f"({'/'.join(VIDEO_EXTENSIONS)}) or a folder")


def display_image(raw: np.ndarray, name: str) -> np.ndarray:
    """An image as read from disk as the 8-bit RGB picture predictions are drawn on."""
    display = to_channels(raw, 3, name)
    if display.dtype != np.uint8:
        display = (display * 255).clip(0, 255).astype(np.uint8)
    return display


def write_predictions(source: str, out: Path, predict: Callable[[np.ndarray, str], Any],
                      draw: Callable[[np.ndarray, Any], np.ndarray],
                      csv_row: Callable[[Any], dict[str, Any]], max_images: int | None = None,
                      key: str = "") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Predict every image or video frame of `source` (see iter_sources) and write into `out`
    the annotated images (a folder's sub-folders mirrored, so equal file names never collide),
    a video's frames as <stem>_pred.mp4 at the source's frame rate, and predictions.csv.

    predict(image as read, name) -> prediction; draw(8-bit RGB, prediction) -> annotated
    RGB; csv_row(prediction) -> the task's CSV columns. Returns the CSV rows and, for task
    reports beyond the CSV, one {"source", "frame", "prediction"} per image or frame."""
    rows: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    root = Path(source)
    writer = None
    try:
        for name, raw, frame in iter_sources(source, max_images, key=key):
            pred = predict(raw, name)
            drawn = draw(display_image(raw, name), pred)
            if frame is None:
                rel = Path(name).relative_to(root) if root.is_dir() else Path(Path(name).name)
                imwrite(out / rel.with_suffix(".png"), drawn)
            else:
                if writer is None:
                    h, w = drawn.shape[:2]
                    writer = cv2.VideoWriter(str(out / (Path(name).stem + "_pred.mp4")),
                                             cv2.VideoWriter_fourcc(*"mp4v"), video_fps(name),
                                             (w, h))
                writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
            rows.append({"source": name, "frame": "" if frame is None else frame,
                         **csv_row(pred)})
            results.append({"source": name, "frame": frame, "prediction": pred})
    finally:
        if writer is not None:
            writer.release()
    # file names that are not valid UTF-8 are written with backslash escapes
    with open(out / "predictions.csv", "w", newline="", encoding="utf-8",
              errors="backslashreplace") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return rows, results

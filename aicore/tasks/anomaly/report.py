"""Heat maps for the anomaly eval report: eval/heatmaps/<rank>_<verdict>_<name>.png.

The images most worth a look come first: the mistakes at the threshold (defects called OK,
lowest score first; good parts called NG, highest score first), then the highest-scored
defects. Each is drawn with the demo's overlay (heat map, defect contour, OK/NG banner), so
what the report shows is what demo would show for that image.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from aicore.data.io import imread, imwrite
from aicore.deploy.postprocess import is_defect


def pick(labels: np.ndarray, scores: np.ndarray, thr: float, limit: int) -> list[int]:
    """Positions into the evaluator's arrays, in the order described above."""
    ng = np.array([is_defect(s, thr) for s in scores], bool) if np.isfinite(thr) else \
        np.zeros(len(scores), bool)
    escapes = [int(j) for j in np.argsort(scores) if labels[j] == 1 and not ng[j]]
    overkills = [int(j) for j in np.argsort(-scores) if labels[j] == 0 and ng[j]]
    rest = [int(j) for j in np.argsort(-scores) if labels[j] == 1 and ng[j]]
    return (escapes + overkills + rest)[:limit]


def write_heatmaps(evaluator, dataset, out: Path, limit: int = 12) -> list[Path]:
    from aicore.tasks.anomaly.visualize import overlay
    if evaluator.maps is None or evaluator.scores is None:
        return []
    cal = getattr(evaluator, "calibration", None) or {}
    thr = float(cal.get("image_threshold", float("nan")))
    folder = out / "heatmaps"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for rank, j in enumerate(pick(evaluator.labels, evaluator.scores, thr, limit)):
        i = int(evaluator.indices[j])
        path = dataset.samples[i][0]
        rgb = imread(path, 3)
        if rgb.dtype != np.uint8:  # 16-bit images come back as [0, 1] floats
            rgb = (rgb.clip(0, 1) * 255).astype(np.uint8)
        score = float(evaluator.scores[j])
        drawn = overlay(rgb, evaluator.maps[j], score, thr,
                        float(cal.get("pixel_threshold", float("nan"))),
                        float(cal.get("map_min", float("nan"))),
                        float(cal.get("map_max", float("nan"))))
        verdict = "NG" if np.isfinite(thr) and is_defect(score, thr) else "OK"
        stem = re.sub(r"[^\w.-]+", "_", f"{dataset.samples[i][2]}_{Path(path).stem}")
        target = folder / f"{rank:02d}_{verdict}_{stem}.png"
        imwrite(target, drawn)
        written.append(target)
    return written

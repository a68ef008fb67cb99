"""Drawing detections, and the per-class AP and precision-recall plots of eval."""
from __future__ import annotations

import colorsys
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from aicore.engine.mpl import pyplot


def class_color(k: int) -> tuple[int, int, int]:
    """A bright, stable RGB colour per class (golden-ratio hue steps keep neighbours apart)."""
    r, g, b = colorsys.hsv_to_rgb((k * 0.618034) % 1.0, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_detections(rgb: np.ndarray, boxes: np.ndarray, scores: np.ndarray | None,
                    labels: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Boxes with "class score" tags (just "class" for ground truth, scores=None) on a copy of
    the image; small images are enlarged first so the text stays readable."""
    out = rgb.copy()
    scale = 1
    if min(out.shape[:2]) < 320:
        scale = int(np.ceil(320 / min(out.shape[:2])))
        out = cv2.resize(out, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    thick = max(1, round(min(out.shape[:2]) / 300))
    font = max(0.35, min(out.shape[:2]) / 900)
    if scores is None:
        scores = [None] * len(labels)
    order = sorted(range(len(labels)), key=lambda i: -1 if scores[i] is None else scores[i])
    for i in order:  # highest score drawn last, on top
        box, score, label = boxes[i], scores[i], labels[i]
        x1, y1, x2, y2 = (int(round(v * scale)) for v in box)
        color = class_color(int(label))
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thick, cv2.LINE_AA)
        text = names[int(label)] if score is None else f"{names[int(label)]} {float(score):.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font, 1)
        ty = y1 - 2 if y1 - th - base - 2 >= 0 else y1 + th + base + 2  # inside if no room
        cv2.rectangle(out, (x1, ty - th - base), (x1 + tw + 2, ty + 1), color, -1)
        cv2.putText(out, text, (x1 + 1, ty - base // 2), cv2.FONT_HERSHEY_SIMPLEX, font,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return out


def save_train_batch(images: np.ndarray, targets: list[dict], names: Sequence[str],
                     path: Path, max_images: int = 16) -> None:
    """The first training batch as the model sees it (after letterbox, mosaic, mixup and the
    albumentations pipeline), with its boxes: a wrong box transform shows up here at once.
    images: (B, H, W, 3) uint8 RGB, already de-normalised."""
    tiles = [draw_detections(img, t["boxes"].numpy(), None, t["labels"].numpy(), names)
             for img, t in zip(images[:max_images], targets[:max_images])]
    from aicore.data.tiles import tile_images
    cv2.imwrite(str(path), cv2.cvtColor(tile_images(tiles, 4), cv2.COLOR_RGB2BGR))


def plot_per_class_ap(per_class: dict[str, dict[str, Any]], path: Path) -> None:
    """Horizontal bars of AP@[.5:.95] and AP50 per class (classes without boxes are marked)."""
    names = list(per_class)
    ap = [per_class[n]["AP"] or 0.0 for n in names]
    ap50 = [per_class[n]["AP50"] or 0.0 for n in names]
    y = np.arange(len(names))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 1.5 + 0.35 * len(names)), dpi=100)
    ax.barh(y + 0.2, ap50, height=0.4, label="AP50", color="#8fbce6")
    ax.barh(y - 0.2, ap, height=0.4, label="AP@[.5:.95]", color="#1f5f99")
    labels = [f"{n} (n={per_class[n]['num_gt']})" if per_class[n]["AP"] is not None
              else f"{n} (no boxes)" for n in names]
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("average precision")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("AP per class")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_pr_curves(precision: np.ndarray, recall: np.ndarray, names: Sequence[str],
                   path: Path) -> None:
    """Precision-recall curves per class at IoU 0.5 and 0.75 (COCO's interpolated precision
    at 101 recall points; a class with no boxes in the split is left out)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=100, sharey=True)
    for ax, t, title in ((axes[0], 0, "IoU 0.50"), (axes[1], 5, "IoU 0.75")):
        for k, name in enumerate(names):
            p = precision[t, :, k]
            if (p < 0).all():
                continue
            ap = float(np.mean(np.maximum(p, 0)))
            ax.plot(recall, np.maximum(p, 0), color=np.array(class_color(k)) / 255,
                    label=f"{name} AP={ap:.3f}")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_title(f"precision-recall, {title}")
        ax.grid(alpha=0.3)
        if len(names) <= 20:
            ax.legend(fontsize=7, loc="lower left")
    axes[0].set_ylabel("precision")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_detections_json(results: list[dict[str, Any]], score_thresh: float | None,
                          out: Path) -> None:
    """detections.json of mode=demo and `aicore.deploy predict`: per image (or video frame)
    its boxes in original pixels."""
    import json
    items = [{"source": r["source"], "frame": r["frame"],
              "detections": [{"class": n, "label": int(k), "score": round(float(s), 5),
                              "bbox_xyxy": [round(float(v), 2) for v in b]}
                             for n, k, s, b in zip(r["prediction"]["names"],
                                                   r["prediction"]["labels"],
                                                   r["prediction"]["scores"],
                                                   r["prediction"]["boxes"])]}
             for r in results]
    (out / "detections.json").write_text(
        json.dumps({"score_thresh": score_thresh, "images": items}, indent=1), encoding="utf-8")

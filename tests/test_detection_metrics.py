"""DetectionEvaluator (faster-coco-eval) against pycocotools, the reference: the default
max_dets, other max_dets (where pycocotools' printed summary is -1 for mAP), crowd boxes,
classes without boxes, and shards gathered from DDP ranks without image ids."""
import contextlib
import io

import numpy as np
import pytest
import torch

from aicore.tasks.detection.evaluator import DetectionEvaluator


def random_split(n_images=40, n_classes=3, seed=0, max_boxes=6, dets_per_image=12):
    """Ground truth with crowd boxes, and noisy detections: hits with jittered boxes, wrong
    classes and pure false positives, scores drawn at random."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n_images):
        k = int(rng.integers(0, max_boxes + 1))
        xy = rng.uniform(0, 150, (k, 2))
        wh = rng.uniform(8, 60, (k, 2))
        gt_boxes = np.concatenate([xy, xy + wh], 1)
        gt_labels = rng.integers(0, n_classes - 1, k)  # the last class never has a box
        crowd = rng.random(k) < 0.1
        dets = []
        for box, label in zip(gt_boxes, gt_labels):
            if rng.random() < 0.8:
                jitter = rng.normal(0, 4, 4)
                wrong = rng.random() < 0.15
                dets.append((box + jitter, (label + 1) % n_classes if wrong else label))
        while len(dets) < dets_per_image:
            xy = rng.uniform(0, 150, 2)
            dets.append((np.concatenate([xy, xy + rng.uniform(8, 60, 2)]),
                         int(rng.integers(0, n_classes))))
        boxes = np.array([d[0] for d in dets], np.float32).reshape(-1, 4)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        images.append({
            "gt": {"boxes": torch.tensor(gt_boxes, dtype=torch.float32).reshape(-1, 4),
                   "labels": torch.tensor(gt_labels, dtype=torch.long),
                   "iscrowd": torch.tensor(crowd), "size": (220, 220)},
            "pred": {"boxes": torch.tensor(boxes), "labels": torch.tensor([d[1] for d in dets]),
                     "scores": torch.tensor(rng.random(len(dets)), dtype=torch.float32)}})
    return images


def pycocotools_reference(images, n_classes, max_dets):
    """mAP, AP50, AP75 by pycocotools on the same split, read the way its summary reads them,
    but at max_dets (for max_dets = 100 the printed stats are checked to agree)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    imgs, anns, dets = [], [], []
    for i, im in enumerate(images, start=1):
        imgs.append({"id": i, "width": 220, "height": 220})
        g = im["gt"]
        for box, label, crowd in zip(g["boxes"].numpy(), g["labels"].numpy(), g["iscrowd"].numpy()):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(label) + 1,
                         "bbox": [float(box[0]), float(box[1]), w, h], "area": w * h,
                         "iscrowd": int(crowd)})
        p = im["pred"]
        for box, label, score in zip(p["boxes"].numpy(), p["labels"].numpy(), p["scores"].numpy()):
            dets.append([i, box[0], box[1], box[2] - box[0], box[3] - box[1], score, label + 1])
    gt = COCO()
    gt.dataset = {"images": imgs, "annotations": anns,
                  "categories": [{"id": k + 1, "name": str(k)} for k in range(n_classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(np.asarray(dets, np.float64)), "bbox")
        ev.params.maxDets = sorted({1, 10, max_dets})
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    m = ev.params.maxDets.index(max_dets)
    precision = ev.eval["precision"][:, :, :, 0, m]

    def mean(p):
        return float(p[p > -1].mean())
    ref = {"mAP": mean(precision), "AP50": mean(precision[0]), "AP75": mean(precision[5]),
           "per_class": precision}
    if max_dets == 100:
        assert ref["mAP"] == pytest.approx(ev.stats[0], abs=1e-12)
    if max_dets == ev.params.maxDets[-1]:
        assert (ref["AP50"], ref["AP75"]) == pytest.approx(tuple(ev.stats[1:3]), abs=1e-12)
    return ref


@pytest.mark.parametrize("max_dets", [100, 5, 300])
def test_matches_pycocotools(max_dets):
    images = random_split(seed=max_dets)
    ev = DetectionEvaluator(num_classes=3, class_names=["a", "b", "c"], max_dets=max_dets)
    for im in images:
        ev.update([im["pred"]], [im["gt"]])
    got = ev.compute()
    ref = pycocotools_reference(images, 3, max_dets)
    assert 0.01 < got["mAP"] < 0.95  # a real mix of hits and misses, not a degenerate case
    for key in ("mAP", "AP50", "AP75"):
        assert got[key] == pytest.approx(ref[key], abs=1e-9), key
    for k, name in enumerate("ab"):
        p = ref["per_class"][:, :, k]
        assert got["per_class"][name]["AP"] == pytest.approx(p.mean(), abs=1e-9)
    assert got["per_class"]["c"]["AP"] is None  # no box of class c


def test_max_dets_limits_the_detections_counted():
    # 12 detections per image, the true hits ranked last: only max_dets >= 12 finds them
    images = random_split(seed=1)
    for im in images:
        im["pred"]["scores"] = torch.linspace(1, 0.1, len(im["pred"]["scores"])).flip(0)
    results = {}
    for max_dets in (3, 100):
        ev = DetectionEvaluator(num_classes=3, max_dets=max_dets)
        for im in images:
            ev.update([im["pred"]], [im["gt"]])
        results[max_dets] = ev.compute()["mAP"]
        assert results[max_dets] == pytest.approx(
            pycocotools_reference(images, 3, max_dets)["mAP"], abs=1e-9)
    assert 0 < results[3] < results[100]


def test_ddp_shards_without_image_ids_keep_every_image(monkeypatch):
    """Each rank numbers its images from 0; gathering must keep both ranks' images (all_gather
    is handed the two shards as torchrun's ranks would send them)."""
    from aicore.engine import dist
    images = random_split(n_images=10, seed=7)
    single = DetectionEvaluator(num_classes=3)
    for im in images:
        single.update([im["pred"]], [im["gt"]])
    expected = single.compute()
    ranks = [DetectionEvaluator(num_classes=3), DetectionEvaluator(num_classes=3)]
    for k, im in enumerate(images):
        ranks[k * 2 // len(images)].update([im["pred"]], [im["gt"]])
    parts = [r._records for r in ranks]
    monkeypatch.setattr(dist, "all_gather_object", lambda obj: parts)
    got = ranks[0].compute()
    assert len(ranks[0].records) == len(images)
    assert got == expected
    assert got["mAP"] == pytest.approx(pycocotools_reference(images, 3, 100)["mAP"], abs=1e-9)

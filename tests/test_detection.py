"""Object detection: dataset layouts and their errors, COCO mAP on hand-checked cases, SimOTA,
letterbox mapping, collate and mosaic, every torchvision wrapper, and train -> eval -> demo ->
export through the CLI for YOLOX and SSDlite."""
import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from aicore.tasks import import_tasks
from tests.conftest import ROOT, run_cli, write_config

import_tasks()

from aicore.engine.hooks import Hook  # noqa: E402
from aicore.errors import DataError  # noqa: E402
from aicore.registry import HOOKS  # noqa: E402
from aicore.tasks.detection.boxes import boxes_to_original, letterbox  # noqa: E402
from aicore.tasks.detection.export import nms_in_graph  # noqa: E402
from aicore.tasks.detection.datasets import (  # noqa: E402
    COCODetectionDataset, YOLODetectionDataset, detection_collate)
from aicore.tasks.detection.evaluator import DetectionEvaluator  # noqa: E402
from aicore.tasks.detection.synthetic import make  # noqa: E402
from aicore.tasks.detection.yolox import YOLOX, simota_assign  # noqa: E402

SIZE = [64, 64]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="session")
def det_root(tmp_path_factory) -> Path:
    """Tiny 3-class data set, YOLO files plus COCO JSON for the same images."""
    return make(tmp_path_factory.mktemp("data") / "det", size=64, n_train=12, n_val=6, n_test=3,
                layout="coco", seed=1)


def det_config(root: Path, work: Path, **over) -> dict:
    cfg = {
        "_base_": str(ROOT / "configs" / "_base_" / "detection.json"),
        "work_dir": str(work), "seed": 0,
        "data": {"root": str(root), "input_size": SIZE, "batch_size": 4, "num_workers": 0,
                 "train": {"dataset": {"mosaic": 0.5, "mixup": 0.5}}},
        "model": {"type": "YOLOX", "size": "nano"},
        "train": {"epochs": 2, "progress": False, "ema": {"decay": 0.9},
                  "hooks": [{"type": "CloseMosaicHook", "epochs": 1},
                            {"type": "MultiScaleHook", "sizes": [64, 96], "interval": 2}]},
    }
    for key, value in over.items():
        node = cfg
        *parents, last = key.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return cfg


# ------------------------------------------------------------------------------------------
# datasets


def _label_file(root: Path) -> Path:
    """The label file of the first training image that has boxes."""
    for line in (root / "train.txt").read_text().split():
        f = root / "labels" / (Path(line).stem + ".txt")
        if f.read_text().strip():
            return f
    raise AssertionError("no labelled image")


@pytest.mark.parametrize("bad_line,needle", [
    ("0 0.5 0.5 0.2", "expected 5 values 'class cx cy w h'"),
    ("7 0.5 0.5 0.2 0.2", "class id 7 is out of range"),
    ("0 0.95 0.5 0.3 0.2", "outside the 64x64 image"),
    ("a 0.5 0.5 0.2 0.2", "cannot parse"),
])
def test_bad_labels_fail_with_file_and_line(det_root, tmp_path, capsys, bad_line, needle):
    root = tmp_path / "data"
    shutil.copytree(det_root, root)
    label = _label_file(root)
    n_lines = len(label.read_text().splitlines())
    label.write_text(label.read_text() + bad_line + "\n")
    work = tmp_path / "run"
    cfg = write_config(tmp_path / "c.json", det_config(root, work))
    assert run_cli("-c", str(cfg)) == 2
    err = capsys.readouterr().err
    assert f"{label}:{n_lines + 1}" in err and needle in err, err
    assert not work.exists()  # nothing written before the data was checked


def test_coco_layout_matches_yolo_and_checks_boxes(det_root, tmp_path):
    coco = COCODetectionDataset(str(det_root), "val", input_size=SIZE)
    yolo = YOLODetectionDataset(str(det_root), "val", input_size=SIZE)
    assert coco.classes == yolo.classes == ["circle", "square", "triangle"]
    assert len(coco) == len(yolo) == 6
    for a, b in zip(coco.records, yolo.records):
        assert Path(a.path).name == Path(b.path).name
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        np.testing.assert_array_equal(a.labels, b.labels)
    root = tmp_path / "coco"
    shutil.copytree(det_root, root)
    ann = root / "annotations" / "instances_val.json"
    data = json.loads(ann.read_text())
    data["annotations"][0]["bbox"] = [50.0, 10.0, 30.0, 10.0]  # x2 = 80 > width 64
    ann.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"annotation id 1 .* outside the 64x64 image"):
        COCODetectionDataset(str(root), "val", input_size=SIZE)


def test_list_by_stem_empty_images_and_grayscale_16bit(tmp_path):
    root = make(tmp_path / "g", channels=1, size=64, n_train=4, n_val=2, n_test=1, seed=3)
    stems = [Path(p).stem for p in (root / "train.txt").read_text().split()]
    (root / "train.txt").write_text("\n".join(stems))  # bare stems resolve under images/
    (root / "labels" / f"{stems[0]}.txt").unlink()  # no label file = no objects
    img = cv2.imread(str(root / "images" / f"{stems[1]}.png"), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(root / "images" / f"{stems[1]}.png"), img.astype(np.uint16) * 257)
    ds = YOLODetectionDataset(str(root), "train", in_channels=1, input_size=SIZE, mosaic=1.0)
    assert len(ds) == 4 and len(ds.records[0].boxes) == 0
    for i in range(4):
        x, target, _ = ds[i]
        assert x.shape == (1, 64, 64) and x.dtype == torch.float32
        assert target["boxes"].shape[1] == 4 and len(target["boxes"]) == len(target["labels"])
    # the 16-bit file is read as [0, 1] floats and normalised like its 8-bit original
    plain = YOLODetectionDataset(str(root), "train", in_channels=1, input_size=SIZE)
    x16 = plain[1][0]
    cv2.imwrite(str(root / "images" / f"{stems[1]}.png"), img)
    x8 = YOLODetectionDataset(str(root), "train", in_channels=1, input_size=SIZE)[1][0]
    torch.testing.assert_close(x16, x8, atol=1e-5, rtol=0)
    images, targets, _ = detection_collate([ds[i] for i in range(4)])
    parts = YOLOX(num_classes=3, in_chans=1, size="nano")(images, targets)
    assert torch.isfinite(sum(parts.values()))


def test_voc_layout(tmp_path):
    from aicore.tasks.detection.datasets import VOCDetectionDataset
    root = tmp_path / "voc"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    cv2.imwrite(str(root / "JPEGImages" / "a.jpg"), np.zeros((40, 60, 3), np.uint8))
    obj = "<object><name>{}</name><difficult>{}</difficult><bndbox><xmin>{}</xmin>" \
          "<ymin>5</ymin><xmax>30</xmax><ymax>20</ymax></bndbox></object>"
    (root / "Annotations" / "a.xml").write_text(
        "<annotation>" + obj.format("cat", 0, 1) + obj.format("dog", 1, 11) + "</annotation>")
    (root / "ImageSets" / "Main" / "val.txt").write_text("a\n")
    (root / "labels.txt").write_text("cat\ndog\n")
    ds = VOCDetectionDataset(str(root), "val", input_size=SIZE)
    rec = ds.records[0]
    np.testing.assert_allclose(rec.boxes, [[0, 4, 30, 20], [10, 4, 30, 20]])  # 1-based -> 0-based
    assert rec.labels.tolist() == [0, 1] and rec.crowd.tolist() == [False, True]
    assert ds.class_counts == [1, 0]  # difficult boxes are not trained on
    (root / "labels.txt").write_text("cat\n")
    with pytest.raises(DataError, match=r"a.xml: object 2: class 'dog' is not among"):
        VOCDetectionDataset(str(root), "val", input_size=SIZE)


def test_collate_keeps_variable_box_counts(det_root):
    ds = YOLODetectionDataset(str(det_root), "train", input_size=SIZE)
    counts = [len(r.boxes) for r in ds.records]
    images, targets, metas = detection_collate([ds[i] for i in range(len(ds))])
    assert images.shape == (12, 3, 64, 64)
    assert [len(t["boxes"]) for t in targets] == counts and len(set(counts)) > 1
    assert [m["index"] for m in metas] == list(range(12))


def test_mosaic_is_reproducible_and_keeps_boxes_inside(det_root):
    ds = YOLODetectionDataset(str(det_root), "train", input_size=SIZE, mosaic=1.0, mixup=0.5)
    ds.reseed(5)
    first = [ds[i] for i in range(6)]
    ds.reseed(5)
    again = [ds[i] for i in range(6)]
    ds.reseed(6)
    other = [ds[i] for i in range(6)]
    for a, b in zip(first, again):
        torch.testing.assert_close(a[0], b[0])
        torch.testing.assert_close(a[1]["boxes"], b[1]["boxes"])
    assert any(not torch.equal(a[0], c[0]) for a, c in zip(first, other))
    boxes = torch.cat([s[1]["boxes"] for s in first])
    assert len(boxes) > 0 and boxes.min() >= 0 and boxes.max() <= 64
    assert ((boxes[:, 2:] - boxes[:, :2]) >= 2).all()


# ------------------------------------------------------------------------------------------
# geometry


def test_letterbox_and_mapping_back_to_original():
    img = np.full((50, 100, 3), 200, np.uint8)  # h=50, w=100 into 64x64: scale 0.64
    out, r = letterbox(img, (64, 64))
    assert out.shape == (64, 64, 3) and r == pytest.approx(0.64)
    assert (out[:32] == 200).all() and (out[32:] == 114).all()  # padded at the bottom only
    original = torch.tensor([[10.0, 5.0, 90.0, 45.0]])
    mapped = boxes_to_original(original * r, r, (50, 100))
    torch.testing.assert_close(mapped, original)
    # a box reaching into the padding is clipped to the image
    clipped = boxes_to_original(torch.tensor([[0.0, 0.0, 64.0, 64.0]]), r, (50, 100))
    torch.testing.assert_close(clipped, torch.tensor([[0.0, 0.0, 100.0, 50.0]]))


def test_predict_batch_reports_original_pixels(det_root, tmp_path):
    from aicore import config as C
    from aicore.tasks.detection.trainer import DetectionTrainer
    cfg = C.load_config(write_config(tmp_path / "c.json", det_config(det_root, tmp_path / "w")))
    trainer = DetectionTrainer(cfg)
    trainer.classes = ["circle", "square", "triangle"]

    class Echo(torch.nn.Module):
        """Predicts, for the first image, the ground truth as letterboxed (input pixels)."""

        def forward(self, images):
            return [{"boxes": torch.tensor([[8.0, 16.0, 32.0, 48.0]]),
                     "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}
                    for _ in images]

    meta = {"scale": 0.5, "orig_size": (128, 100), "index": 3, "gt_boxes": np.zeros((0, 4)),
            "gt_labels": np.zeros(0, np.int64), "gt_crowd": np.zeros(0, bool)}
    outputs, targets = trainer.predict_batch(Echo(), (torch.zeros(1, 3, 64, 64), [{}], [meta]))
    torch.testing.assert_close(outputs[0]["boxes"], torch.tensor([[16.0, 32.0, 64.0, 96.0]]))
    assert targets[0]["image_id"] == 3 and targets[0]["size"] == (128, 100)


def test_yolox_validation_loss_from_one_pass_equals_the_two_pass_path(det_root, tmp_path):
    """predict_with_loss (one forward) gives the detections and val loss of the generic path
    (eval-mode predictions + a second, normalisation-frozen training-mode pass)."""
    from aicore import config as C
    from aicore.tasks.detection.trainer import DetectionTrainer
    cfg = C.load_config(write_config(tmp_path / "c.json", det_config(det_root, tmp_path / "w")))
    trainer = DetectionTrainer(cfg)
    trainer.loss_fn = lambda parts: {"loss": sum(parts.values()), **parts}
    torch.manual_seed(0)
    model = YOLOX(num_classes=3, size="nano", score_thresh=0.0)
    model.train()  # a few steps move BatchNorm statistics away from their initial values
    images = torch.randn(2, 3, 64, 64)
    boxes = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([2])},
             {"boxes": torch.tensor([[4.0, 20.0, 30.0, 60.0], [33.0, 2.0, 60.0, 30.0]]),
              "labels": torch.tensor([0, 1])}]
    for _ in range(2):
        model(images, boxes)
    model.eval()
    meta = {"scale": 1.0, "orig_size": (64, 64), "gt_boxes": np.zeros((0, 4)),
            "gt_labels": np.zeros(0, np.int64), "gt_crowd": np.zeros(0, bool)}
    batch = (images, boxes, [{**meta, "index": 0}, {**meta, "index": 1}])

    class TwoPass(torch.nn.Module):  # the same network without predict_with_loss
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, *args):
            return self.net(*args)

    one = trainer.predict_and_loss(model, batch)
    two = trainer.predict_and_loss(TwoPass(model).eval(), batch)
    assert not model.training and len(one[0][1]["boxes"]) > 0
    for a, b in zip(one[0], two[0]):
        for k in ("boxes", "scores", "labels"):
            torch.testing.assert_close(a[k], b[k])
    for k in ("loss", "loss_obj", "loss_iou", "loss_cls"):
        torch.testing.assert_close(one[2][k], two[2][k])


# ------------------------------------------------------------------------------------------
# metrics


def _img(boxes, labels, scores=None, **extra):
    d = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
         "labels": torch.tensor(labels, dtype=torch.long)}
    if scores is not None:
        d["scores"] = torch.tensor(scores, dtype=torch.float32)
    d.update(extra)
    return d


def test_map_hand_checked_cases():
    gt = _img([[10, 10, 50, 50], [60, 60, 90, 90]], [0, 0], size=(100, 100))
    ev = DetectionEvaluator(num_classes=2, class_names=["a", "b"])
    ev.update([_img([[10, 10, 50, 50], [60, 60, 90, 90]], [0, 0], [0.9, 0.8])], [gt])
    m = ev.compute()
    assert m["mAP"] == m["AP50"] == m["AP75"] == pytest.approx(1.0)
    assert m["per_class"]["a"]["AP"] == pytest.approx(1.0) and m["per_class"]["a"]["num_gt"] == 2
    assert m["per_class"]["b"]["AP"] is None  # no box of class b: AP undefined, not 0

    # one hit (ranked first) and one false positive: precision 1 up to recall 0.5, then
    # nothing; COCO's 101-point interpolation gives 51/101 at every IoU threshold
    ev.reset()
    ev.update([_img([[10, 10, 50, 50], [0, 0, 5, 5]], [0, 0], [0.9, 0.8])], [gt])
    m = ev.compute()
    assert m["mAP"] == m["AP50"] == pytest.approx(51 / 101, abs=1e-9)

    # the false positive ranked first: precision 1/2 at recall 0.5 -> 51 * 0.5 / 101
    ev.reset()
    ev.update([_img([[10, 10, 50, 50], [0, 0, 5, 5]], [0, 0], [0.5, 0.8])], [gt])
    assert ev.compute()["AP50"] == pytest.approx(25.5 / 101, abs=1e-9)

    # a loose box (40x25 inside 40x40: IoU 0.625) scores first: a hit at IoU 0.50, 0.55, 0.60;
    # from 0.65 on it is a false positive ranked above the other (exact) hit -> 25.5/101
    ev.reset()
    ev.update([_img([[10, 10, 50, 35], [60, 60, 90, 90]], [0, 0], [0.9, 0.8])], [gt])
    m = ev.compute()
    assert m["AP50"] == pytest.approx(1.0) and m["AP75"] == pytest.approx(25.5 / 101, abs=1e-9)
    assert m["mAP"] == pytest.approx((3 * 1.0 + 7 * 25.5 / 101) / 10, abs=1e-9)

    # the wrong class scores nothing; a detection on a crowd box is ignored, not a false positive
    ev.reset()
    ev.update([_img([[10, 10, 50, 50]], [1], [0.9])], [gt])
    assert ev.compute()["mAP"] == 0.0
    ev.reset()
    crowd = _img([[10, 10, 50, 50], [60, 60, 90, 90]], [0, 0], iscrowd=torch.tensor([False, True]))
    ev.update([_img([[60, 60, 90, 90], [10, 10, 50, 50]], [0, 0], [0.95, 0.9])], [crowd])
    assert ev.compute()["mAP"] == pytest.approx(1.0)


def test_map_accumulates_over_batches_and_images():
    ev = DetectionEvaluator(num_classes=1)
    for k in range(4):  # image k has one box; every other image is detected
        gt = _img([[10, 10, 30, 30]], [0], image_id=k)
        pred = _img([[10, 10, 30, 30]] if k % 2 == 0 else [], [0] if k % 2 == 0 else [],
                    [0.9] if k % 2 == 0 else [])
        ev.update([pred], [gt])
    assert ev.compute()["AP50"] == pytest.approx(51 / 101, abs=1e-9)  # recall stops at 0.5


def test_map_gathers_ranks_by_image_id(monkeypatch):
    """Under DDP each rank sees a shard of the images; compute() merges the shards by image id
    (torchrun runs in the README; here two shards are handed over as all_gather would)."""
    from aicore.engine import dist
    images = [(_img([[10, 10, 30, 30]], [0], image_id=k, size=(40, 40)),
               _img([[10, 10, 30, 30 + 4 * k]], [0], [0.9 - 0.1 * k])) for k in range(4)]
    single = DetectionEvaluator(num_classes=1)
    for gt, pred in images:
        single.update([pred], [gt])
    expected = single.compute()
    ranks = [DetectionEvaluator(num_classes=1), DetectionEvaluator(num_classes=1)]
    for k, (gt, pred) in enumerate(images):
        ranks[k // 2].update([pred], [gt])
    parts = [r._records for r in ranks]
    monkeypatch.setattr(dist, "all_gather_object", lambda obj: parts)
    assert ranks[1].compute() == expected and 0 < expected["mAP"] < 1


# ------------------------------------------------------------------------------------------
# SimOTA


def test_simota_assigns_nearby_candidates_and_prefers_good_predictions():
    stride = 8.0
    ys, xs = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    centers = (torch.stack([xs, ys], -1).reshape(-1, 2) + 0.5) * stride  # 8x8 grid on 64 px
    strides = torch.full((64,), stride)
    gt = torch.tensor([[4.0, 4.0, 28.0, 28.0], [36.0, 36.0, 60.0, 60.0]])
    labels = torch.tensor([0, 1])
    # every candidate predicts a small box around itself; two of them predict box 0 exactly
    preds = torch.cat([centers - 4, centers + 4], 1)
    preds[9] = gt[0]
    preds[18] = gt[0]
    cls = torch.full((64, 2), -4.0)
    obj = torch.full((64,), -4.0)
    fg, matched, iou = simota_assign(preds, cls, obj, centers, strides, gt, labels, 2)
    assert fg[9] and fg[18]  # the exact predictions are chosen
    fg_idx = fg.nonzero()[:, 0]
    assert len(matched) == len(fg_idx) == len(iou) and 2 <= len(fg_idx) <= 20
    assert set(matched.tolist()) == {0, 1}  # both boxes get positives
    for n, g in zip(fg_idx.tolist(), matched.tolist()):
        cx, cy = centers[n]
        x1, y1, x2, y2 = gt[g]
        # every positive sits inside its box (centre region of 2.5 strides lies inside too)
        assert x1 - 2.5 * stride < cx < x2 + 2.5 * stride
        assert y1 - 2.5 * stride < cy < y2 + 2.5 * stride
        assert abs(cx - (x1 + x2) / 2) < 2.5 * stride + 1e-6
    assert iou[(fg_idx == 9).nonzero()[0, 0]] == pytest.approx(1.0)
    # no candidate near any box: nothing assigned
    far = torch.tensor([[500.0, 500.0, 520.0, 520.0]])
    fg, matched, iou = simota_assign(preds, cls, obj, centers, strides, far, labels[:1], 2)
    assert not fg.any() and len(matched) == 0


def test_yolox_loss_and_background_images():
    model = YOLOX(num_classes=3, size="nano")
    images = torch.randn(2, 3, 64, 64)
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    parts = model(images, targets)
    assert set(parts) == {"loss_obj", "loss_iou", "loss_cls"}
    sum(parts.values()).backward()
    assert all(torch.isfinite(v) for v in parts.values())
    model.use_l1 = True
    assert "loss_l1" in model(images, targets)
    empty = [targets[1], targets[1]]  # a batch without a single box still trains (objectness)
    parts = model(images, empty)
    assert parts["loss_iou"] == 0 and parts["loss_obj"] > 0
    model.eval()
    with torch.no_grad():
        dets = model(images)
        boxes, scores = model.export_forward(images)
    assert len(dets) == 2 and boxes.shape == (2, 64 + 16 + 4, 4) and scores.shape[-1] == 3
    rows = nms_in_graph(boxes, scores, 0.0, 0.5)
    assert rows.shape[1] == 7 and set(rows[:, 0].long().tolist()) <= {0, 1}


def test_yolox_on_a_timm_backbone():
    backbone = {"type": "TimmFeatures", "name": "resnet18"}
    model = YOLOX(num_classes=2, size="nano", backbone=backbone)
    assert model.strides == [8, 16, 32] and model.backbone.out_channels == [128, 256, 512]
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([1])}]
    parts = model(torch.randn(1, 3, 64, 64), targets)
    sum(parts.values()).backward()
    assert model.backbone.body.conv1.weight.grad is not None


@pytest.mark.parametrize("name,kwargs", [
    ("FCOS", {"backbone": "resnet18"}),
    ("RetinaNet", {"backbone": "mobilenet_v3_large", "anchor_sizes": [16, 32, 64, 128, 256]}),
    ("FasterRCNN", {"backbone": "mobilenet_v3_large"}),
    ("SSDlite", {}),
])
def test_torchvision_detectors_share_the_interface(name, kwargs):
    from aicore.errors import ConfigError, ExportError
    from aicore.registry import MODELS
    model = MODELS.get(name)(num_classes=3, in_chans=1, **kwargs)
    images = torch.randn(2, 1, 64, 64)
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    parts = model.train()(images, targets)
    assert parts and all(k.startswith("loss") for k in parts)
    sum(parts.values()).backward()
    model.eval()
    with torch.no_grad():
        dets = model(images)
    assert len(dets) == 2 and set(dets[0]) == {"boxes", "scores", "labels"}
    assert dets[0]["labels"].numel() == 0 or dets[0]["labels"].max() < 3
    if name == "FasterRCNN":
        with pytest.raises(ExportError, match="data-dependent"):
            model.export_forward(images)
    else:
        with torch.no_grad():
            boxes, scores = model.export_forward(images)
        assert boxes.shape[:2] == scores.shape[:2] and scores.shape[2] == 3
    if "anchor_sizes" in kwargs:
        with pytest.raises(ConfigError, match="one per feature level"):
            MODELS.get(name)(num_classes=3, **{**kwargs, "anchor_sizes": [16]})


# ------------------------------------------------------------------------------------------
# end to end through the CLI


def _check_run(cfg: Path, run: Path, root: Path, nms_export: bool) -> None:
    for name in ("config.json", "train.log", "metrics.jsonl", "checkpoints/last.pth",
                 "checkpoints/best.pth", "results.png", "results.csv", "train_batch.jpg"):
        assert (run / name).is_file(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"mAP", "AP50", "AP75", "per_class"} <= set(records[-1])

    assert run_cli("-c", str(cfg), "-o", "mode=eval") == 0
    m = json.loads((run / "eval" / "metrics.json").read_text())
    assert all(0.0 <= m[k] <= 1.0 for k in ("mAP", "AP50", "AP75"))
    assert set(m["per_class"]) == {"circle", "square", "triangle"}
    for name in ("per_class_ap.png", "pr_curves.png", "detections.json"):
        assert (run / "eval" / name).stat().st_size > 0, name
    rows = list(csv.DictReader(open(run / "eval" / "predictions.csv")))
    assert {Path(r["image"]).name for r in rows} == {f"val_{i:04d}.png" for i in range(6)}

    src = root / "images"
    assert run_cli("-c", str(cfg), "-o", "mode=demo", "-o", f"demo.source={src}",
                   "-o", "demo.max_images=3", "-o", "demo.score_thresh=0.0") == 0
    demo = run / "demo"
    assert len(list(demo.glob("*.png"))) == 3
    assert len(list(csv.DictReader(open(demo / "predictions.csv")))) == 3
    dets = json.loads((demo / "detections.json").read_text())
    assert len(dets["images"]) == 3
    for item in dets["images"]:  # boxes are in the original image's pixels
        for d in item["detections"]:
            x1, y1, x2, y2 = d["bbox_xyxy"]
            assert 0 <= x1 <= x2 <= 64 and 0 <= y1 <= y2 <= 64 and d["class"] in m["per_class"]

    assert run_cli("-c", str(cfg), "-o", "mode=export") == 0
    man = json.loads((run / "export" / "manifest.json").read_text())
    assert man["outputs"] == ["boxes", "scores"] and man["input"]["shape"] == ["batch", 3, 64, 64]
    assert "letterbox" in man["input"]["preprocess"] and man["detection"]["nms_iou"] > 0
    assert max(man["parity"]["onnxruntime_max_abs_diff"].values()) <= 1e-4
    import onnxruntime as ort
    sess = ort.InferenceSession(str(run / "export" / "model.onnx"))
    boxes, scores = sess.run(None, {"images": np.zeros((2, 3, 64, 64), np.float32)})
    assert boxes.shape[0] == 2 and boxes.shape[2] == 4 and scores.shape[2] == 3
    if nms_export:
        out = run / "export_nms"
        assert run_cli("-c", str(cfg), "-o", "mode=export", "-o", "export.nms=true",
                       "-o", f"export.out={out}", "-o", "export.formats=[\"onnx\"]") == 0
        man = json.loads((out / "manifest.json").read_text())
        assert man["outputs"] == ["detections"] and man["detection"]["nms_in_graph"]
        sess = ort.InferenceSession(str(out / "model.onnx"))
        x = np.random.default_rng(0).normal(size=(3, 3, 64, 64)).astype(np.float32)
        (rows,) = sess.run(None, {"images": x})
        assert rows.ndim == 2 and rows.shape[1] == 7 and set(rows[:, 0]) <= {0, 1, 2}


def _val_losses(run):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["val_loss"] for r in records]


def test_yolox_train_eval_demo_export(det_root, tmp_path):
    run = tmp_path / "run"
    cfg = write_config(tmp_path / "yolox.json", det_config(det_root, run))
    assert run_cli("-c", str(cfg)) == 0
    losses = _val_losses(run)  # detectors' loss needs training mode: computed on a second pass
    assert losses and all(np.isfinite(v) and v > 0 for v in losses)
    log = (run / "train.log").read_text()
    assert "mosaic/mixup off for the last 1 epochs" in log and "CloseMosaicHook(5)" in log
    _check_run(cfg, run, det_root, nms_export=True)


def test_ssdlite_on_coco_layout(det_root, tmp_path):
    run = tmp_path / "run"
    cfg = write_config(tmp_path / "ssd.json", det_config(
        det_root, run, data__dataset={"type": "COCODetectionDataset"},
        model={"type": "SSDlite"}, train__epochs=1, train__ema=None, train__hooks=[],
        optimizer={"type": "AdamW", "lr": 0.001}))
    assert run_cli("-c", str(cfg)) == 0
    assert all(np.isfinite(v) and v > 0 for v in _val_losses(run))
    _check_run(cfg, run, det_root, nms_export=False)


@HOOKS.register("StopAfterEpochForTest")
class StopAfterEpoch(Hook):
    """Interrupts training after `epoch` epochs (after last.pth is written), like a killed
    job, while the config, and so the schedule and the close-mosaic epoch, stays the same."""

    priority = 60

    def __init__(self, epoch: int = 1, priority: int | None = None) -> None:
        super().__init__(priority)
        self.epoch = epoch

    def after_epoch(self, trainer) -> None:
        trainer.stop_requested = trainer.epoch + 1 >= self.epoch


@pytest.mark.parametrize("workers", [0, 1])
def test_resume_with_mosaic_continues_exactly(det_root, tmp_path, workers):
    """3 epochs in one go == 1 epoch, interruption, resume for 2 more, with mosaic, mixup and
    multi-scale drawn in the main process or a data-loader worker and the mosaic closing in the
    last epoch."""
    hooks = [{"type": "CloseMosaicHook", "epochs": 1},
             {"type": "MultiScaleHook", "sizes": [64, 96], "interval": 2}]

    def config(name, extra_hooks=()):
        return write_config(tmp_path / f"{name}.json", det_config(
            det_root, tmp_path / name, data__num_workers=workers, train__epochs=3,
            train__hooks=hooks + list(extra_hooks)))

    assert run_cli("-c", str(config("full"))) == 0
    assert run_cli("-c", str(config("part", [{"type": "StopAfterEpochForTest"}]))) == 0
    assert torch.load(tmp_path / "part" / "checkpoints" / "last.pth",
                      weights_only=True)["epoch"] == 1
    assert run_cli("-c", str(config("part")), "-o", "train.resume=true") == 0
    a, b = (torch.load(tmp_path / n / "checkpoints" / "last.pth", weights_only=True)
            for n in ("full", "part"))
    assert a["epoch"] == b["epoch"] == 3 and a["iter"] == b["iter"]
    for key in ("model", "ema"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)


def test_input_size_must_be_a_multiple_of_32(det_root, tmp_path, capsys):
    cfg = write_config(tmp_path / "c.json", det_config(det_root, tmp_path / "w",
                                                       data__input_size=[60, 60]))
    assert run_cli("-c", str(cfg)) == 2
    assert "multiples of 32; use e.g. [64, 64]" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "detection").glob("*.json")),
                         ids=lambda p: p.name)
def test_every_detection_config_validates(path, capsys):
    assert run_cli("-c", str(path), "--check") == 0, capsys.readouterr().err
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["task"] == "detection" and cfg["model"]["type"]

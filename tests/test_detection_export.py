"""Detection export post-processing reproduces the model's own, for YOLOX (best class per
candidate) and torchvision's multi-label FCOS, RetinaNet and SSDlite: the in-graph NMS rows
(export.nms = true, in PyTorch and through onnxruntime) and the deploy runtime's dense recipe
(export.nms = false) both equal what model(images) returns in eval mode.

Random-init models with thresholds low enough for many detections, and torchvision's top-k
lowered so it actually limits the candidates."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from aicore.tasks import import_tasks

import_tasks(["detection"])

from aicore.deploy.postprocess import detections_from_dense  # noqa: E402
from aicore.registry import MODELS  # noqa: E402
from aicore.tasks.detection.export import (ExportWithNMS, detections_as_rows,  # noqa: E402
                                           manifest_sections, postprocess_recipe)

SIZE = (64, 96)
CASES = {
    "YOLOX": ({"size": "nano", "score_thresh": 1e-6, "nms_iou": 0.5, "max_det": 30}, None),
    "FCOS": ({"backbone": "resnet18", "score_thresh": 0.05, "nms_iou": 0.5, "max_det": 40}, 25),
    "RetinaNet": ({"backbone": "resnet18", "score_thresh": 0.005, "nms_iou": 0.5,
                   "max_det": 40, "anchor_sizes": [16, 32, 64, 128, 256]}, 60),
    "SSDlite": ({"score_thresh": 0.2, "nms_iou": 0.5, "max_det": 40}, 30),
}


def _model(name: str):
    kwargs, topk = CASES[name]
    torch.manual_seed(0)
    model = MODELS.get(name)(num_classes=3, in_chans=3, **kwargs).eval()
    if topk is not None:
        model.net.topk_candidates = topk
    if name == "SSDlite":  # random-init SSDlite scores many boxes exactly alike (ties have
        with torch.no_grad():  # no defined order): give its BatchNorms trained-like statistics
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.normal_(0, 0.1)
                    m.running_var.uniform_(0.5, 2)
                    m.weight.normal_(1, 0.2)
                    m.bias.normal_(0, 0.2)
    return model


def _images() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(3, 3, *SIZE, generator=g)


def _canonical(rows: np.ndarray) -> np.ndarray:
    """Rows by image, then score (to 1e-5), class and box: rows of equal score have no
    defined order (random-init SSDlite scores some boxes exactly alike)."""
    keys = [np.round(rows[:, c], 1) for c in (4, 3, 2, 1)] + [rows[:, 6],
                                                              -np.round(rows[:, 5], 5), rows[:, 0]]
    return rows[np.lexsort(keys)]


def _assert_rows_equal(got: np.ndarray, ref: np.ndarray, what: str) -> None:
    assert got.shape == ref.shape, f"{what}: {got.shape} vs {ref.shape}"
    got, ref = _canonical(got), _canonical(ref)
    np.testing.assert_array_equal(got[:, 0], ref[:, 0], err_msg=what)
    np.testing.assert_array_equal(got[:, 6], ref[:, 6], err_msg=what)
    np.testing.assert_allclose(got[:, 5], ref[:, 5], atol=1e-4, err_msg=what)
    # Boxes equal, except where candidates tie exactly in score: which of them NMS keeps is
    # then undefined, and onnxruntime's float order can pick the neighbouring anchor
    # (random-init SSDlite has such ties); those may differ in a few rows, never the scores.
    box_off = np.abs(got[:, 1:5] - ref[:, 1:5]).max(1) > 1e-4
    assert box_off.sum() <= max(1, 0.05 * len(got)), (
        f"{what}: {int(box_off.sum())} of {len(got)} rows have other boxes; first "
        f"{got[box_off][:3]} vs {ref[box_off][:3]}")


@pytest.mark.parametrize("name", list(CASES))
def test_export_postprocess_equals_the_model(name, tmp_path):
    model, images = _model(name), _images()
    recipe = postprocess_recipe(model, SIZE)
    multi = name != "YOLOX"
    assert recipe["candidates"] == ("multi_label" if multi else "best_class")
    assert recipe["max_det"] == CASES[name][0]["max_det"]
    with torch.no_grad():
        ref_dets = model(images)
        ref = detections_as_rows(ref_dets).numpy()
        boxes, scores = model.export_forward(images)
    assert len(ref) > 20, "thresholds too high: nothing to compare"
    if multi and name != "SSDlite":
        assert sum(recipe["topk"]["level_sizes"]) == boxes.shape[1]
        # the lowered top-k limits some level: without it there would be more candidates
        assert (scores[0] > recipe["score_thresh"]).sum() > recipe["topk"]["k"]

    wrapper = ExportWithNMS(model, recipe).eval()
    with torch.no_grad():
        rows = wrapper(images).numpy()
    _assert_rows_equal(rows, ref, f"{name} in-graph (PyTorch)")

    # the deploy runtime's dense recipe, numpy only
    post = manifest_sections(recipe, False, 0.0)["postprocess"]
    for b, det in enumerate(ref_dets):
        bx, sc, lb = detections_from_dense(boxes[b].numpy(), scores[b].numpy(), post)
        got = np.concatenate([np.full((len(sc), 1), b), bx, sc[:, None], lb[:, None]], 1)
        _assert_rows_equal(got.astype(np.float32), ref[ref[:, 0] == b], f"{name} dense image {b}")

    # the same graph through onnxruntime, with another batch size than it was traced with
    import onnxruntime as ort
    path = tmp_path / "model.onnx"
    torch.onnx.export(wrapper, (images[:1],), str(path), dynamo=False, input_names=["images"],
                      output_names=["detections"],
                      dynamic_axes={"images": {0: "batch"}, "detections": {0: "batch"}},
                      opset_version=17)
    (got,) = ort.InferenceSession(str(path)).run(None, {"images": images.numpy()})
    _assert_rows_equal(got, ref, f"{name} in-graph (onnxruntime)")


def test_manifest_words_follow_the_recipe():
    fcos = postprocess_recipe(_model("FCOS"), SIZE)
    words = manifest_sections(fcos, False, 0.3)["detection"]["output_format"]["scores"]
    assert "every (candidate, class) pair" in words and "25 highest pairs" in words
    ssd = manifest_sections(postprocess_recipe(_model("SSDlite"), SIZE), False, 0.3)
    assert ssd["postprocess"]["topk"] == {"per": "class", "k": 30}
    assert "of each class" in ssd["detection"]["output_format"]["scores"]
    yolox = manifest_sections(postprocess_recipe(_model("YOLOX"), SIZE), True, 0.3)
    assert yolox["postprocess"]["format"] == "nms_in_graph"
    assert yolox["postprocess"]["candidates"] == "best_class" and "topk" not in yolox["postprocess"]

"""Pretrained starting points from local files: the official YOLOX checkpoints (names and
shapes from the shared fixture), torchvision COCO detectors, timm weights for classification
and smp/timm encoders for segmentation. Every checkpoint here is random tensors written to
tmp; nothing is downloaded."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from aicore.tasks import import_tasks
from tests.conftest import ROOT, run_cli, write_config

import_tasks(["detection", "classification", "segmentation"])

from aicore.engine import checkpoint as ckpt_io  # noqa: E402
from aicore.tasks.detection import yolox_official  # noqa: E402
from aicore.tasks.detection.yolox import YOLOX  # noqa: E402

#: official YOLOX key names and shapes per size (a copy of ../shared/fixtures' file)
FIXTURE = ROOT / "tests" / "fixtures" / "yolox_official_state_dict_shapes.json"
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _fixture() -> dict:
    return json.loads(FIXTURE.read_text())


def _random_official(shapes: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in shapes.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(1000, dtype=torch.long)
        elif k.endswith("running_var"):
            sd[k] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[k] = torch.randn(shape, generator=g)
    return sd


SIZES = ["nano", "tiny", "s", "m", "l"]


@pytest.mark.parametrize("size", SIZES)
def test_official_yolox_checkpoint_lands_in_our_model(size, tmp_path):
    shapes = _fixture()["state_dict_shapes"][size]
    official = _random_official(shapes)
    path = tmp_path / f"yolox_{size}.pth"
    torch.save({"model": official, "start_epoch": 300}, path)
    model = YOLOX(num_classes=3, size=size)
    report = ckpt_io.load_for_finetune(model, str(path), IMAGENET)
    own = model.state_dict()
    folded = {yolox_official.STEM_CONV, yolox_official.STEM_BN_MEAN}
    checked = 0
    for k, v in official.items():
        if not k.startswith("backbone."):
            continue
        ours = yolox_official.rename(k)
        assert ours in own, f"{k} has no counterpart ({ours})"
        if ours not in folded:
            assert torch.equal(own[ours], v), k
        checked += 1
    # every backbone and neck tensor of ours came from the checkpoint
    body = [k for k in own if k.startswith(("backbone.", "neck."))]
    assert checked == len(body) and not [k for k in report["missing"] if k in body]
    # head: the towers load; the 80-class predictors do not fit 3 classes and stay as built
    assert [k for k in report["missing"]] == [f"head.cls_preds.{i}.{p}" for i in range(3)
                                              for p in ("weight", "bias")]
    assert torch.equal(own["head.reg_preds.2.weight"], official["head.reg_preds.2.weight"])
    assert torch.allclose(own["head.cls_preds.0.bias"], torch.full((3,), -4.59512), atol=1e-4)
    assert not report["unexpected"]


def test_official_yolox_80_classes_loads_everything(tmp_path):
    shapes = _fixture()["state_dict_shapes"]["nano"]
    path = tmp_path / "yolox_nano.pth"
    torch.save({"model": _random_official(shapes, seed=3)}, path)
    model = YOLOX(num_classes=80, size="nano")
    report = ckpt_io.load_for_finetune(model, str(path), IMAGENET)
    assert report["missing"] == [] and report["skipped_shape"] == []
    assert torch.equal(model.state_dict()["head.cls_preds.1.weight"],
                       torch.load(path)["model"]["head.cls_preds.1.weight"])


@pytest.mark.parametrize("in_chans", [3, 1])
def test_official_stem_folded_into_our_input_convention(in_chans):
    """Our stem on (pixel / 255 - mean) / std RGB (or grey) gives what the official stem gives
    on BGR 0..255 pixels, away from the one-pixel border."""
    shapes = _fixture()["state_dict_shapes"]["s"]
    official = _random_official(shapes, seed=1)
    norm = IMAGENET if in_chans == 3 else {"mean": [0.5], "std": [0.25]}
    model = YOLOX(num_classes=80, size="s", in_chans=in_chans).eval()
    sd, notes = model.adapt_state_dict(official, norm)
    model.load_state_dict(sd)
    assert any("stem converted" in n for n in notes)

    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (1, in_chans, 32, 32), generator=g).float()
    mean = torch.tensor(norm["mean"])[:, None, None]
    std = torch.tensor(norm["std"])[:, None, None]
    ours = model.backbone.stem((pixels / 255 - mean) / std)

    bgr = pixels.flip(1) if in_chans == 3 else pixels.expand(-1, 3, -1, -1)
    focus = torch.cat([bgr[..., ::2, ::2], bgr[..., 1::2, ::2], bgr[..., ::2, 1::2],
                       bgr[..., 1::2, 1::2]], 1)
    p = "backbone.backbone.stem.conv."
    y = F.conv2d(focus, official[p + "conv.weight"], padding=1)
    y = F.batch_norm(y, official[p + "bn.running_mean"], official[p + "bn.running_var"],
                     official[p + "bn.weight"], official[p + "bn.bias"], eps=1e-3)
    ref = F.silu(y)
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    assert torch.allclose(ours[inner], ref[inner], rtol=1e-4, atol=1e-3 * ref.abs().max())


# ------------------------------------------------------------------------------------------
# torchvision COCO detectors


def _to_old_torchvision_names(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Spell keys as torchvision < 0.13 did (the published COCO files): FPN, RPN and
    RetinaNet head convolutions without the Conv2dNormActivation level."""
    import re
    out = {}
    for k, v in sd.items():
        k = re.sub(r"^(backbone\.fpn\.(?:inner|layer)_blocks\.\d+)\.0\.", r"\1.", k)
        k = re.sub(r"^(rpn\.head\.conv)\.0\.0\.", r"\1.", k)
        k = re.sub(r"^(head\.(?:classification|regression)_head\.conv)\.(\d+)\.0\.",
                   lambda m: f"{m.group(1)}.{2 * int(m.group(2))}.", k)
        out[k] = v
    return out


def test_torchvision_coco_faster_rcnn_from_local_file(tmp_path):
    """torchvision's own Faster R-CNN builder (91 COCO classes), saved with the old layer
    names, loads into our 3-class FasterRCNN: body, FPN, RPN conv and box head land; the class
    and box predictors (and the RPN predictors: torchvision's mobilenet recipe lays 15 anchors
    per cell, ours 3) keep their initial values."""
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn

    from aicore.tasks.detection.torchvision_models import faster_rcnn
    torch.manual_seed(0)
    coco = fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None,
                                             num_classes=91).state_dict()
    old = _to_old_torchvision_names(coco)
    assert "backbone.fpn.inner_blocks.0.weight" in old and "rpn.head.conv.weight" in old
    path = tmp_path / "fasterrcnn_coco.pth"
    torch.save(old, path)
    model = faster_rcnn(3, backbone="mobilenet_v3_large")
    report = ckpt_io.load_for_finetune(model, str(path))
    own = model.state_dict()
    for k, v in coco.items():
        if k.startswith(("backbone.", "roi_heads.box_head.", "rpn.head.conv.")):
            assert torch.equal(own[f"net.{k}"], v), k
    assert sorted(k.split(":")[0] for k in report["skipped_shape"]) == sorted(
        f"net.{p}.{w}" for p in ("rpn.head.cls_logits", "rpn.head.bbox_pred",
                                 "roi_heads.box_predictor.cls_score",
                                 "roi_heads.box_predictor.bbox_pred") for w in ("weight", "bias"))
    assert not report["unexpected"]


def test_torchvision_coco_retinanet_old_head_names(tmp_path):
    from aicore.tasks.detection.torchvision_models import retinanet
    torch.manual_seed(0)
    coco = {k[len("net."):]: v for k, v in retinanet(91, backbone="resnet18").state_dict().items()
            if not k.endswith("num_batches_tracked")}  # frozen BatchNorm keeps no counter
    path = tmp_path / "retinanet_coco.pth"
    torch.save(_to_old_torchvision_names(coco), path)
    model = retinanet(3, backbone="resnet18")
    report = ckpt_io.load_for_finetune(model, str(path))
    own = model.state_dict()
    for k, v in coco.items():
        if "cls_logits" not in k:
            assert torch.equal(own[f"net.{k}"], v), k
    assert [k.split(":")[0] for k in report["skipped_shape"]] == [
        "net.head.classification_head.cls_logits.weight",
        "net.head.classification_head.cls_logits.bias"]
    assert not report["unexpected"]


# ------------------------------------------------------------------------------------------
# segmentation encoders


def test_tu_encoder_takes_a_plain_timm_state_dict(tmp_path):
    """A `tu-` encoder (timm inside smp, keys under .model) loads timm's own state dict; a
    1-channel model gets the first convolution adapted as timm does."""
    import timm
    from timm.models import adapt_input_conv

    from aicore.tasks.segmentation.models import smp_model
    torch.manual_seed(0)
    sd = timm.create_model("resnet10t").state_dict()
    path = tmp_path / "resnet10t.pth"
    torch.save(sd, path)
    model = smp_model("Unet", 2, in_chans=1, encoder_name="tu-resnet10t",
                      encoder_weights=str(path))
    enc = model.encoder.state_dict()
    loaded = [k for k in sd if f"model.{k}" in enc]
    assert len(loaded) == len(enc) and not [k for k in loaded if k.startswith("fc.")]
    for k in loaded:
        want = adapt_input_conv(1, sd[k]) if k == "conv1.0.weight" else sd[k]
        assert torch.equal(enc[f"model.{k}"], want), k


def test_smp_encoder_from_a_torchvision_classifier_file(tmp_path):
    import torchvision

    from aicore.tasks.segmentation.models import smp_model
    torch.manual_seed(0)
    sd = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(sd, path)
    model = smp_model("FPN", 3, encoder_name="resnet18", encoder_weights=str(path))
    enc = model.encoder.state_dict()
    assert set(enc) == {k for k in sd if not k.startswith("fc.")}
    assert all(torch.equal(enc[k], sd[k]) for k in enc)


# ------------------------------------------------------------------------------------------
# classification: the shipped fine-tuning recipe


FINETUNE = ROOT / "configs" / "classification" / "finetune_timm.json"


def test_finetune_config_is_valid():
    assert run_cli("-c", str(FINETUNE), "--check") == 0
    cfg = json.loads(FINETUNE.read_text())
    assert cfg["data"]["input_size"] == [224, 224] and cfg["model"]["pretrained"] is True


def test_finetune_recipe_from_a_local_weights_file(tmp_path, cls_root):
    """The shipped recipe (mixup/cutmix, frozen backbone for the first epoch, warm-up, AdamW,
    cosine) for one epoch with model.pretrained pointing at a local file; a smaller timm model
    and input keep it fast. The backbone was frozen in that epoch, so the saved weights are
    exactly the file's, and the 1000-class head became a 4-class one."""
    import timm
    torch.manual_seed(0)
    src = timm.create_model("resnet10t", num_classes=1000).state_dict()
    weights = tmp_path / "resnet10t.pth"
    torch.save(src, weights)
    work = tmp_path / "run"
    code = run_cli("-c", str(FINETUNE), "-o", f"data.root={cls_root}", "-o", f"work_dir={work}",
                   "-o", "model.name=resnet10t", "-o", f"model.pretrained={weights}",
                   "-o", "data.input_size=[48,48]", "-o", "data.batch_size=8",
                   "-o", "data.num_workers=0", "-o", "train.epochs=1",
                   "-o", "train.progress=false", "-o", "train.save_train_batch=true")
    assert code == 0
    ckpt = torch.load(work / "checkpoints" / "last.pth", weights_only=True)
    model = ckpt["model"]
    assert model["fc.weight"].shape == (4, src["fc.weight"].shape[1])
    body = [k for k in src if not k.startswith("fc.")]
    assert body and all(torch.equal(model[k], src[k]) for k in body)
    assert (work / "train_batch.jpg").is_file()
    # the head learns at lr, the pretrained backbone at lr * backbone_lr_mult, after warm-up too
    lrs = [g["lr"] for g in ckpt["optimizer"]["param_groups"]]
    assert len(lrs) == 4 and lrs[0] == lrs[1] and lrs[2] == lrs[3]
    assert lrs[2] == pytest.approx(0.2 * lrs[0])


def test_backbone_lr_mult_groups():
    import timm

    from aicore.optim.optimizers import adamw
    from aicore.optim.schedulers import cosine
    model = timm.create_model("resnet10t", num_classes=3)
    opt = adamw(model, lr=0.01, backbone_lr_mult=0.1)
    head = {id(p) for p in model.fc.parameters()}
    groups = opt.param_groups
    assert [g["lr"] for g in groups] == pytest.approx([0.01, 0.01, 0.001, 0.001])
    assert {id(p) for g in groups[:2] for p in g["params"]} == head
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0, 0.05, 0.0]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    sched = cosine(opt, epochs=2, iters_per_epoch=5, warmup_epochs=1)
    for _ in range(7):
        opt.step()
        sched.step()
    assert groups[2]["lr"] == pytest.approx(0.1 * groups[0]["lr"]) and groups[0]["lr"] < 0.01
    assert len(adamw(model, lr=0.01).param_groups) == 2  # without it: the usual two groups


def test_detection_trains_from_an_official_yolox_file(tmp_path):
    """mode=trainval with model.init_from = an official-format yolox_nano.pth: train.log lists
    the conversion, what each part loaded and the re-initialised class predictors."""
    from aicore.tasks.detection.synthetic import make
    root = make(tmp_path / "det", size=64, n_train=8, n_val=4, n_test=2, seed=1)
    official = {k: (v * 0.05 if v.is_floating_point() and not k.endswith("running_var") else v)
                for k, v in _random_official(_fixture()["state_dict_shapes"]["nano"]).items()}
    weights = tmp_path / "yolox_nano.pth"
    torch.save({"model": official}, weights)
    cfg = {"_base_": str(ROOT / "configs" / "_base_" / "detection.json"),
           "work_dir": str(tmp_path / "run"), "seed": 0,
           "data": {"root": str(root), "input_size": [64, 64], "batch_size": 4, "num_workers": 0},
           "model": {"type": "YOLOX", "size": "nano", "init_from": str(weights)},
           "train": {"epochs": 1, "progress": False, "hooks": []}}
    assert run_cli("-c", str(write_config(tmp_path / "det.json", cfg))) == 0
    log = (tmp_path / "run" / "train.log").read_text()
    assert "official YOLOX checkpoint" in log and "stem converted" in log
    assert "loaded per part: backbone " in log and "the checkpoint's head predicts 80" in log
    assert "skipped (shape differs) head.cls_preds.0.weight: (80, 64, 1, 1) -> (3, 64, 1, 1)" in log

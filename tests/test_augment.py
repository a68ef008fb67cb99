"""Policy augmentations (RandAugment, AutoAugment, TrivialAugmentWide, AugMix), CutOut and the
custom_modules/ example transform: reproducibility under the loader's reseeding, 1/3 channels,
8/16-bit, config validation, and a resumed training run through the CLI."""
import importlib.util
import json
import sys

import numpy as np
import pytest
import torch

from aicore.config import check_transform
from aicore.data.transforms import build_pipeline
from aicore.errors import ConfigError, DataError
from aicore.tasks import import_tasks
from tests.conftest import ROOT, cls_config, run_cli, write_config

import_tasks()  # registers the augmentations, as the CLI does

EXAMPLE = ROOT / "custom_modules" / "example_transform.py"


def _import_example() -> None:
    """Import custom_modules/example_transform.py under the name the CLI gives it, so the CLI
    later finds it already imported (and the registration is the same one)."""
    name = "aicore_custom_example_transform"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, EXAMPLE)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)


_import_example()


pytestmark = pytest.mark.usefixtures("one_torch_thread")

NODES = {
    "RandAugment": {"type": "RandAugment", "num_ops": 2, "magnitude": 9, "p": 1.0},
    "AutoAugment-imagenet": {"type": "AutoAugment", "policy": "imagenet"},
    "AutoAugment-cifar10": {"type": "AutoAugment", "policy": "cifar10"},
    "AutoAugment-svhn": {"type": "AutoAugment", "policy": "svhn", "fill": 128},
    "TrivialAugmentWide": {"type": "TrivialAugmentWide"},
    "AugMix": {"type": "AugMix", "severity": 3, "mixture_width": 2},
    "CutOut": {"type": "CutOut", "num_holes": 2, "size": 0.3, "p": 1.0},
    "LineScanBanding": {"type": "LineScanBanding", "column_gain": 0.05, "row_flicker": 0.1,
                        "p": 1.0},
}
POLICIES = ["RandAugment", "AutoAugment-imagenet", "TrivialAugmentWide", "AugMix"]


def _images(n: int, channels: int, dtype=np.uint8, size=(24, 32)) -> list[np.ndarray]:
    """Smooth gradients plus a bright square: structure every op visibly changes."""
    rng = np.random.default_rng(123)
    out = []
    for _ in range(n):
        h, w = size
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = 40 + 100 * (xx / w) + 60 * (yy / h)
        img = np.repeat(base[:, :, None], channels, axis=2)
        y, x = rng.integers(2, h - 10), rng.integers(2, w - 10)
        img[y:y + 8, x:x + 8] = rng.uniform(180, 250, channels)
        img = img + rng.normal(0, 4, img.shape)
        img = np.clip(img, 0, 255).astype(np.uint8)
        if dtype == np.uint8:
            out.append(img)
        else:  # a genuine 16-bit image as imread returns it: float32 in [0, 1], finer than 1/255
            img16 = np.minimum(img.astype(np.int64) * 257 + rng.integers(0, 257, img.shape),
                               65535)
            out.append((img16 / 65535).astype(np.float32))
    return out


def _run(pipe, images, seed):
    pipe.set_random_seed(seed)  # what aicore.data.loaders does per epoch and per worker
    return [pipe(image=img)["image"] for img in images]


@pytest.mark.parametrize("name", list(NODES))
def test_validates_builds_and_reproduces_with_seed(name):
    node = NODES[name]
    check_transform(node, "data.train.transforms.0", {})
    pipe = build_pipeline([node], "data.train.transforms")
    images = _images(6, 3)
    torch_state = torch.get_rng_state()
    a, b = _run(pipe, images, seed=7), _run(pipe, images, seed=7)
    c = _run(build_pipeline([node], "data.train.transforms"), images, seed=7)  # a fresh Compose
    d = _run(pipe, images, seed=8)
    for x, y, z in zip(a, b, c):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)
    assert any(not np.array_equal(x, y) for x, y in zip(a, d)), "seed has no effect"
    assert any(not np.array_equal(x, img) for x, img in zip(a, images)), "nothing changed"
    # the model's RNG stream (dropout, samplers) is not consumed or re-seeded by augmentation
    assert torch.equal(torch_state, torch.get_rng_state())


def test_pipeline_transforms_draw_independently():
    """build_pipeline's Compose gives each transform its own stream when reseeded; with
    albumentations' plain Compose two p=0.5 flips would always fire together."""
    nodes = [{"type": "HorizontalFlip", "p": 0.5}, {"type": "VerticalFlip", "p": 0.5},
             NODES["CutOut"] | {"p": 0.5}, NODES["LineScanBanding"] | {"p": 0.5}]
    pipe = build_pipeline(nodes, "data.train.transforms", save_applied_params=True)

    def applied(seed):
        pipe.set_random_seed(seed)
        return [tuple(name for name, _ in pipe(image=img)["applied_transforms"])
                for img in _images(40, 3)]

    combos = applied(0)
    assert combos == applied(0)
    assert ("HorizontalFlip",) in combos and ("VerticalFlip",) in combos
    assert len(set(combos)) > 8  # 16 possible on/off patterns of the four transforms


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32], ids=["8bit", "16bit"])
@pytest.mark.parametrize("name", list(NODES))
def test_shapes_and_dtypes(name, channels, dtype):
    pipe = build_pipeline([NODES[name]], "data.train.transforms")
    images = _images(4, channels, dtype)
    outs = _run(pipe, images, 0)
    for img, out in zip(images, outs):
        assert out.shape == img.shape and out.dtype == img.dtype
        if dtype == np.float32:
            assert 0.0 <= out.min() and out.max() <= 1.0
    if dtype == np.float32:
        # 16-bit precision survives (only Posterize / Equalize, when drawn, quantise to 8 bits)
        assert any(not np.allclose(out * 255, np.round(out * 255)) for out in outs)


@pytest.mark.parametrize("name", POLICIES)
def test_policy_accepts_2d_images(name):
    pipe = build_pipeline([NODES[name]], "x")
    img = _images(1, 1)[0][:, :, 0]
    assert _run(pipe, [img], 0)[0].shape == img.shape


@pytest.mark.parametrize("name", POLICIES)
def test_policy_rejects_images_it_cannot_handle(name):
    pipe = build_pipeline([NODES[name]], "x")
    normalised = (_images(1, 3, np.float32)[0] - 0.5) / 0.25  # a Normalize ran before it
    with pytest.raises(DataError, match="before any step that rescales"):
        pipe(image=normalised)
    with pytest.raises(DataError, match="uint16"):
        pipe(image=np.zeros((8, 8, 3), np.uint16))
    with pytest.raises(DataError, match="1- or 3-channel"):
        pipe(image=np.zeros((8, 8, 4), np.uint8))
    # geometric ops on the image alone would desynchronise a segmentation mask
    with pytest.raises(ConfigError, match="classification only"):
        pipe(image=np.zeros((8, 8, 3), np.uint8), mask=np.zeros((8, 8), np.uint8))


@pytest.mark.parametrize("node, match", [
    ({"type": "RandAugment", "magnitude": 31}, "magnitude must be an integer in 0..30"),
    ({"type": "RandAugment", "num_ops": -1}, "num_ops"),
    ({"type": "AutoAugment", "policy": "coco"}, "policy must be one of imagenet, cifar10, svhn"),
    ({"type": "TrivialAugmentWide", "interpolation": "cubic"}, "nearest, bilinear"),
    ({"type": "AugMix", "severity": 11}, "severity"),
    ({"type": "AugMix", "fill": 300}, "grey level"),
    ({"type": "CutOut", "size": 0}, "size must be > 0"),
    ({"type": "LineScanBanding", "period_range": [10, 2]}, "period_range"),
])
def test_bad_arguments_name_the_config_key(node, match):
    with pytest.raises(ConfigError, match=match) as e:
        build_pipeline([{"type": "HorizontalFlip"}, node], "data.train.transforms")
    assert "'data.train.transforms.1'" in str(e.value)


def test_unknown_argument_is_caught_by_validation():
    with pytest.raises(ConfigError, match="Did you mean: magnitude") as e:
        check_transform({"type": "RandAugment", "magnitud": 9}, "data.train.transforms.0", {})
    assert "data.train.transforms.0.magnitud" in str(e.value)


def test_cutout_square_holes_pixels_and_fraction():
    img = np.full((40, 60, 3), 200, np.uint8)
    frac = build_pipeline([{"type": "CutOut", "num_holes": 1, "size": 0.25, "p": 1.0}], "x")
    px = build_pipeline([{"type": "CutOut", "num_holes": 3, "size": 6, "fill": 17, "p": 1.0}], "x")
    for seed in range(20):
        out = _run(frac, [img], seed)[0]
        ys, xs = np.nonzero(out[:, :, 0] == 0)
        # side = 0.25 * shorter side = 10 px, clipped where the hole crosses the border
        assert ys.size and np.ptp(ys) + 1 <= 10 and np.ptp(xs) + 1 <= 10
        assert ys.size == (np.ptp(ys) + 1) * (np.ptp(xs) + 1)  # one filled rectangle
        holes = _run(px, [img], seed)[0]
        assert set(np.unique(holes)) <= {17, 200} and 0 < (holes[:, :, 0] == 17).sum() <= 3 * 36
    # a hole of the full size appears somewhere away from the border
    sizes = {int((_run(frac, [img], s)[0][:, :, 0] == 0).sum()) for s in range(20)}
    assert 100 in sizes
    # numeric fills are 8-bit units, scaled for 16-bit (float) images
    grey = build_pipeline([{"type": "CutOut", "size": 8, "fill": 255, "p": 1.0}], "x")
    out = _run(grey, [np.zeros((16, 16, 1), np.float32)], 0)[0]
    assert out.max() == pytest.approx(1.0)


def test_loader_reseeding_makes_epochs_reproducible(cls_root):
    """Through the real data path: ClassificationDataset + build_loader + set_epoch, with and
    without worker processes."""
    from aicore.data.loaders import build_loader, set_epoch
    from aicore.tasks.classification.datasets import ClassificationDataset
    nodes = [NODES["RandAugment"], NODES["AugMix"], NODES["CutOut"]]

    def epoch_batches(workers, epoch):
        ds = ClassificationDataset(str(cls_root), "train", transform=build_pipeline(nodes, "t"),
                                   input_size=[32, 32], cache=True)
        loader = build_loader(ds, batch_size=16, train=True, num_workers=workers, seed=3)
        set_epoch(loader, epoch)
        return [x for x, _, _ in loader]

    for workers in (0, 2):
        a, b, c = epoch_batches(workers, 0), epoch_batches(workers, 0), epoch_batches(workers, 1)
        assert all(torch.equal(x, y) for x, y in zip(a, b))
        assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_training_with_policies_resumes_exactly(tmp_path, cls_root):
    """A short CLI run with RandAugment + CutOut + the custom example transform: it trains, and
    1 epoch + resume gives exactly the weights of 2 epochs in one go."""
    transforms = [{"type": "RandAugment", "num_ops": 2, "magnitude": 9, "p": 1.0},
                  {"type": "CutOut", "num_holes": 1, "size": 0.25, "p": 0.5},
                  {"type": "LineScanBanding", "column_gain": 0.04, "row_flicker": 0.08,
                   "p": 0.5},
                  {"type": "HorizontalFlip", "p": 0.5}]

    def config(name):
        cfg = cls_config(cls_root, tmp_path / name)
        cfg["data"]["train"]["transforms"] = transforms
        cfg["custom_imports"] = [str(EXAMPLE)]
        return write_config(tmp_path / f"{name}.json", cfg)

    full, part = config("full"), config("part")
    assert run_cli("-c", str(full), "--check") == 0
    assert run_cli("-c", str(full)) == 0
    assert run_cli("-c", str(part), "-o", "train.epochs=1") == 0
    assert run_cli("-c", str(part), "-o", "train.resume=true") == 0
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.pth", weights_only=True)
    b = torch.load(tmp_path / "part" / "checkpoints" / "last.pth", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    metrics = [json.loads(line) for line in
               (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2] and 0 <= metrics[-1]["top1"] <= 1
    saved = json.loads((tmp_path / "full" / "config.json").read_text())
    assert [t["type"] for t in saved["data"]["train"]["transforms"]][:3] == \
        ["RandAugment", "CutOut", "LineScanBanding"]


def test_bad_policy_argument_through_the_cli(tmp_path, cls_root, capsys):
    cfg = cls_config(cls_root, tmp_path / "bad")
    cfg["data"]["train"]["transforms"] = [{"type": "RandAugment", "magnitude": 99}]
    path = write_config(tmp_path / "bad.json", cfg)
    assert run_cli("-c", str(path)) == 2
    err = capsys.readouterr().err
    assert "data.train.transforms.0" in err and "magnitude" in err
    assert not (tmp_path / "bad" / "checkpoints").exists()


class _Flagged(torch.utils.data.Dataset):
    """Returns (its flag, a draw from NumPy's global generator) for every index."""

    def __init__(self) -> None:
        self.flag = 0

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i):
        return torch.tensor([self.flag, np.random.randint(1 << 30)])


def test_persistent_workers_reseed_per_pass_and_restart_on_change():
    """Loader workers live for the whole run, yet every epoch's randomness depends only on
    (seed, epoch, number of workers): the same epoch twice, or after a partial pass (the
    train_batch.jpg preview), gives the same batches. A changed dataset setting reaches the
    workers after restart_workers()."""
    from aicore.data.loaders import build_loader, restart_workers, set_epoch

    def batches(loader, epoch):
        set_epoch(loader, epoch)
        return torch.cat(list(loader))

    data = _Flagged()
    fresh, two = build_loader(_Flagged(), 4, True, 2, seed=5), build_loader(data, 4, True, 2, seed=5)
    assert two.persistent_workers
    next(iter(two))  # a partial pass first, as the preview does
    e0 = batches(two, 0)
    assert torch.equal(e0, batches(fresh, 0))
    assert not torch.equal(e0, batches(two, 1))
    assert torch.equal(e0, batches(two, 0))  # the same workers, epoch 0 again: same draws
    data.flag = 1  # what CloseMosaicHook does to trainer.train_set: the workers still hold 0
    assert int(batches(two, 2)[:, 0].max()) == 0
    restart_workers(two)
    assert int(batches(two, 2)[:, 0].min()) == 1

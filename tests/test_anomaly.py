"""Anomaly detection: metrics against scikit-learn and independent implementations, PaDiM and
PatchCore fitting, checkpoints, the coreset sampler, dataset errors, and the CLI end to end
(trainval -> eval -> demo -> export, several categories, grayscale) on tiny synthetic data."""
import csv
import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from aicore.engine import checkpoint as ckpt_io
from aicore.tasks.anomaly.coreset import k_center_greedy
from aicore.tasks.anomaly.datasets import MVTecDataset
from aicore.tasks.anomaly.evaluator import AnomalyEvaluator
from aicore.tasks.anomaly.metrics import f1_max, pro_score
from aicore.tasks.anomaly.models import PaDiM, PatchCore
from aicore.tasks.anomaly.synthetic import make
from tests.conftest import ROOT, run_cli, snapshot, write_config

SIZE = 48


@pytest.fixture(scope="session")
def mvtec_root(tmp_path_factory) -> Path:
    """Two tiny categories (weave, grid): 12 good training images, 6 good + 3 per defect type
    (scratch, spot, missing) test images, 48 px."""
    return make(tmp_path_factory.mktemp("anomaly") / "mvtec", size=SIZE, n_train=12,
                n_test_good=6, n_test_defect=3)


def an_config(root: Path, work_dir: Path, model: dict | None = None,
              dataset: dict | None = None, **data) -> dict:
    """A fast anomaly config on the tiny data: PaDiM on a random-init ResNet-18, 48 px."""
    return {
        "_base_": str(ROOT / "configs" / "_base_" / "anomaly.json"),
        "work_dir": str(work_dir),
        "seed": 0,
        "data": {"root": str(root), "input_size": [SIZE, SIZE], "batch_size": 8,
                 "num_workers": 0, **data,
                 "dataset": {"type": "MVTecDataset", "cache": True, **(dataset or {})}},
        "model": model or {"type": "PaDiM", "backbone": "resnet18", "n_features": 32},
        "train": {"progress": False},
        "export": {"formats": ["onnx"], "parity_images": 2},
    }


def tensors(root: Path, category: str, split: str, channels: int = 3):
    ds = MVTecDataset(str(root), split, in_channels=channels, input_size=[SIZE, SIZE],
                      category=category)
    items = [ds[i] for i in range(len(ds))]
    return (torch.stack([x for x, *_ in items]), torch.stack([m for _, m, *_ in items]),
            np.array(ds.labels))


def fit(model, images: torch.Tensor):
    model.eval()
    model.start_fit()
    for i in range(0, len(images), 5):  # several batches: the fit accumulates
        model.accumulate(images[i:i + 5])
    model.finish_fit()
    return model


# ------------------------------------------------------------------------------------------
# metrics


def test_auroc_and_f1_match_scikit_learn():
    rng = np.random.default_rng(0)
    n = 40
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]
    scores = rng.normal(size=n) + labels
    masks = rng.random((n, 1, 8, 8)) < 0.1
    maps = rng.normal(size=(n, 1, 8, 8)) + 1.5 * masks
    ev = AnomalyEvaluator()
    for s in range(0, n, 16):  # accumulated over batches
        ev.update((torch.from_numpy(maps[s:s + 16]).float(),
                   torch.from_numpy(scores[s:s + 16]).float()),
                  (torch.from_numpy(masks[s:s + 16]).float(), torch.from_numpy(labels[s:s + 16]),
                   torch.arange(s, min(n, s + 16))))
    m = ev.compute()
    scores32, maps32 = scores.astype(np.float32), maps.astype(np.float32)
    assert m["image_AUROC"] == pytest.approx(roc_auc_score(labels, scores32), abs=1e-12)
    assert m["pixel_AUROC"] == pytest.approx(roc_auc_score(masks.ravel(), maps32.ravel()),
                                             abs=1e-12)
    # F1_max by brute force over every candidate threshold (predict defect when score >= t);
    # among equally good thresholds the lowest (fewest missed defects)
    ts = np.unique(scores32)
    f1s = np.array([2 * ((scores32 >= t) & (labels == 1)).sum() /
                    ((scores32 >= t).sum() + (labels == 1).sum()) for t in ts])
    assert m["F1_max"] == pytest.approx(f1s.max())
    assert m["threshold"] == pytest.approx(ts[np.isclose(f1s, f1s.max())].min())
    assert 0 <= m["PRO"] <= 1 and ev.calibration["image_threshold"] == m["threshold"]


def reference_pro(maps: np.ndarray, masks: np.ndarray, limit: float = 0.3) -> float:
    """Straightforward AUPRO: loop over every distinct threshold, label regions with scipy."""
    regions = []  # (image index, boolean region), 8-connected as in MVTec AD's evaluation
    for i, m in enumerate(masks):
        labeled, n = ndimage.label(m, structure=np.ones((3, 3)))
        regions += [(i, labeled == k) for k in range(1, n + 1)]
    good = ~masks
    points = [(0.0, 0.0)]
    for t in np.unique(maps)[::-1]:
        pred = maps >= t
        fpr = (pred & good).sum() / good.sum()
        overlaps = [(pred[i] & r).sum() / r.sum() for i, r in regions]
        points.append((fpr, float(np.mean(overlaps))))
    fprs, pros = map(np.array, zip(*points))
    i = np.searchsorted(fprs, limit, side="right")  # first point beyond the limit
    xs, ys = list(fprs[:i]), list(pros[:i])
    if xs[-1] < limit:
        ys.append(pros[i - 1] + (pros[i] - pros[i - 1]) * (limit - fprs[i - 1]) /
                  (fprs[i] - fprs[i - 1]))
        xs.append(limit)
    area = sum((xs[k + 1] - xs[k]) * (ys[k + 1] + ys[k]) / 2 for k in range(len(xs) - 1))
    return area / limit


def test_pro_matches_a_straightforward_implementation():
    rng = np.random.default_rng(1)
    masks = np.zeros((3, 24, 24), bool)
    masks[0, 2:6, 3:9] = True  # two regions of different size in one image
    masks[0, 15:22, 15:17] = True
    masks[1, 10:12, 10:12] = True
    masks[1, 11:20, 20] = True
    masks[2, 5, 5] = masks[2, 6, 6] = True  # diagonal neighbours: one region
    maps = rng.normal(size=masks.shape) + 1.2 * masks
    maps = np.round(maps, 1)  # ties: a threshold takes all equal scores at once
    got = pro_score(maps, masks)
    assert got == pytest.approx(reference_pro(maps, masks), abs=1e-9)
    assert 0 < got < 1
    assert pro_score(masks.astype(float), masks) == pytest.approx(1.0)  # a perfect map


def test_f1_max_threshold_is_a_decision_rule():
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.7, 0.6, 0.8, 0.9])
    f1, thr = f1_max(labels, scores)
    pred = scores >= thr
    tp = (pred & (labels == 1)).sum()
    assert f1 == pytest.approx(2 * tp / (pred.sum() + labels.sum()))
    assert f1 == pytest.approx(6 / 7) and thr == pytest.approx(0.6)


# ------------------------------------------------------------------------------------------
# models


def test_padim_statistics_match_numpy():
    torch.manual_seed(0)
    images = torch.randn(23, 3, 32, 32)
    model = fit(PaDiM(input_size=(32, 32), n_features=12), images)
    with torch.no_grad():
        e = model.embed(images).flatten(2).permute(2, 0, 1).double().numpy()  # (L, N, d)
        test = torch.randn(2, 3, 32, 32)
        patches, _ = model.score_patches(test)
        et = model.embed(test).flatten(2).permute(2, 0, 1).double().numpy()
    assert e.shape == (8 * 8, 23, 12)  # layer1 grid of a 32 px image, 12 chosen channels
    for pos in (0, 17, 63):
        mean = e[pos].mean(0)
        cov = np.cov(e[pos].T) + model.eps * np.eye(12)
        diff = et[pos] - mean
        ref = np.sqrt(np.einsum("bi,ij,bj->b", diff, np.linalg.inv(cov), diff))
        np.testing.assert_allclose(model.mean[pos].numpy(), mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(patches.flatten(1)[:, pos].numpy(), ref, rtol=1e-3)
    assert int(model.n_train) == 23


@pytest.mark.parametrize("kind", ["PaDiM", "PatchCore"])
def test_fit_and_score_tiny_data(mvtec_root, kind):
    torch.manual_seed(0)
    model = PaDiM(input_size=(SIZE, SIZE), n_features=32) if kind == "PaDiM" else \
        PatchCore(backbone="resnet18", input_size=(SIZE, SIZE), coreset_ratio=0.25)
    train, _, _ = tensors(mvtec_root, "weave", "train")
    fit(model, train)
    images, masks, labels = tensors(mvtec_root, "weave", "val")
    with torch.no_grad():
        maps, scores = model(images)
    assert maps.shape == (len(images), 1, SIZE, SIZE) and scores.shape == (len(images),)
    assert torch.isfinite(maps).all() and (maps >= 0).all() and (scores >= 0).all()
    # better than chance on both levels, even with a random-init backbone on 12 images
    assert roc_auc_score(labels, scores.numpy()) > 0.65
    assert roc_auc_score(masks.numpy().ravel() > 0, maps.numpy().ravel()) > 0.65
    if kind == "PatchCore":
        n_patches = len(train) * (SIZE // 8) ** 2  # layer2 (stride 8) grid
        assert model.memory_bank.shape == (math.ceil(0.25 * n_patches), 128 + 256)


@pytest.mark.parametrize("kind", ["PaDiM", "PatchCore"])
def test_checkpoint_round_trip(tmp_path, kind):
    def build():
        return PaDiM(input_size=(32, 32), n_features=16) if kind == "PaDiM" else \
            PatchCore(backbone="resnet18", input_size=(32, 32), coreset_ratio=0.3)

    torch.manual_seed(0)
    model = fit(build(), torch.randn(6, 3, 32, 32))
    model.calibrate(1.5, 2.5, 0.1, 9.0)
    torch.save({"model": model.state_dict()}, tmp_path / "m.pth")
    state = ckpt_io.load(tmp_path / "m.pth")  # weights_only=True
    torch.manual_seed(1)  # another random init: everything must come from the file
    fresh = build().eval()
    assert not fresh.is_fitted
    ckpt_io.load_weights_strict(fresh, state["model"], "m.pth")
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        for a, b in zip(model(x), fresh(x)):
            torch.testing.assert_close(a, b)
    assert fresh.calibration() == {"image_threshold": 1.5, "pixel_threshold": 2.5,
                                   "map_min": pytest.approx(0.1), "map_max": 9.0}
    assert fresh.is_fitted


def test_patchcore_subsamples_huge_patch_sets():
    """max_patches bounds what is kept while collecting (a uniform random subset of all
    patches seen); the coreset then takes its ratio of that subset."""
    torch.manual_seed(0)
    model = PatchCore(backbone="resnet18", input_size=(32, 32), coreset_ratio=0.5,
                      max_patches=40).eval()
    model.start_fit()
    kept = []
    for _ in range(5):  # 5 x 2 images x 16 patches = 160 patches
        model.accumulate(torch.randn(2, 3, 32, 32))
        kept.append(sum(f.shape[0] for f in model._feats))
    assert max(kept) <= 40 * 5 // 4 + 32  # never much more than the cap in memory
    model.finish_fit()
    assert model.memory_bank.shape == (20, 128 + 256) and int(model.n_train) == 10


def test_coreset_sampler():
    # 30 clusters, most of them rare (as rare normal patches are): a coreset of 30 must keep
    # one point of each, which a random subset of the same size does not
    g = torch.Generator().manual_seed(0)
    sizes = [300] * 3 + [3] * 27
    centers = torch.randn(30, 40, generator=g) * 5
    x = torch.cat([c + 0.1 * torch.randn(n, 40, generator=g) for c, n in zip(centers, sizes)])
    idx = k_center_greedy(x, 30, proj_dim=16, seed=3)
    assert len(idx) == 30 and len(set(idx.tolist())) == 30
    assert torch.equal(idx, k_center_greedy(x, 30, proj_dim=16, seed=3))  # deterministic
    assert torch.equal(k_center_greedy(x, len(x)), torch.arange(len(x)))  # nothing to drop

    def radius(sel):  # largest distance from any point to its nearest chosen point
        return torch.cdist(x, x[sel]).min(1).values.max()

    assert radius(idx) < 1.5  # within the noise of a cluster: every cluster is covered
    assert radius(torch.randperm(len(x), generator=g)[:30]) > 5
    # without projection, each pick is the point farthest from those chosen before it
    exact = k_center_greedy(x, 5, proj_dim=None, seed=0)
    for k in range(1, 5):
        d = torch.cdist(x, x[exact[:k]]).min(1).values
        assert int(exact[k]) == int(d.argmax())
    # exact duplicates: never the same row twice
    dup = torch.cat([torch.zeros(50, 4), torch.ones(50, 4)])
    sel = k_center_greedy(dup, 10, proj_dim=None)
    assert len(set(sel.tolist())) == 10


# ------------------------------------------------------------------------------------------
# dataset errors: exit status 2, the file and the fix, nothing written


@pytest.mark.parametrize("breakage,needles", [
    ("no_train", ["train/good", "not found", "defect-free"]),
    ("no_mask", ["spot/001.png", "without a mask", "001_mask.png"]),
    ("mask_size", ["001_mask.png", "20x20", f"{SIZE}x{SIZE}", "Re-export"]),
])
def test_dataset_errors(capsys, tmp_path, mvtec_root, breakage, needles):
    root = tmp_path / "data"
    cat = root / "weave"
    shutil.copytree(mvtec_root / "weave", cat)
    if breakage == "no_train":
        shutil.rmtree(cat / "train" / "good")
    elif breakage == "no_mask":
        (cat / "ground_truth" / "spot" / "001_mask.png").unlink()
    else:
        cv2.imwrite(str(cat / "ground_truth" / "spot" / "001_mask.png"),
                    np.zeros((20, 20), np.uint8))
    work = tmp_path / "run"
    for category in ("all", "weave"):  # checked up front for all, by the dataset for one
        cfg = write_config(tmp_path / "c.json", an_config(root, work,
                                                          dataset={"category": category}))
        assert run_cli("-c", str(cfg)) == 2
        err = capsys.readouterr().err
        for needle in needles:
            assert needle in err, err
        assert not work.exists()


def test_config_needs_no_optimizer_and_one_epoch(capsys, tmp_path, mvtec_root):
    cfg = write_config(tmp_path / "c.json", an_config(mvtec_root, tmp_path / "run"))
    assert run_cli("-c", str(cfg), "--check") == 0  # no loss, no optimizer
    capsys.readouterr()
    assert run_cli("-c", str(cfg), "-o", "train.epochs=3", "-o",
                   "data.dataset.category=grid") == 2
    assert "train.epochs" in capsys.readouterr().err
    assert run_cli("-c", str(cfg), "-o", "data.dataset.category=carpet") == 2
    err = capsys.readouterr().err
    assert "carpet" in err and "grid" in err and "weave" in err


# ------------------------------------------------------------------------------------------
# the CLI end to end


@pytest.fixture(scope="module")
def weave_run(mvtec_root, tmp_path_factory):
    """PaDiM fitted on the weave category: (config path, work_dir)."""
    base = tmp_path_factory.mktemp("weave_run")
    cfg = write_config(base / "c.json", an_config(mvtec_root, base / "run",
                                                  dataset={"category": "weave"}))
    assert run_cli("-c", str(cfg)) == 0
    return cfg, base / "run"


def test_trainval_eval_demo_export(weave_run, mvtec_root):
    import onnxruntime as ort
    cfg, run = weave_run
    for f in ("config.json", "train.log", "metrics.jsonl", "checkpoints/best.pth",
              "checkpoints/last.pth"):
        assert (run / f).is_file(), f
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("image_AUROC", "pixel_AUROC", "PRO", "F1_max", "threshold"):
        assert key in record
    assert "val_loss" not in record  # a fitted model has no loss, and no curves
    assert not (run / "results.png").exists() and not (run / "results.csv").exists()
    ckpt = ckpt_io.load(run / "checkpoints" / "best.pth")  # weights_only=True
    assert ckpt["optimizer"] is None and ckpt["task"] == "anomaly"
    assert {"mean", "whitening", "channel_idx", "image_threshold"} <= set(ckpt["model"])
    assert float(ckpt["model"]["image_threshold"]) == pytest.approx(record["threshold"])

    assert run_cli("-c", str(cfg), "-o", "mode=eval") == 0
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    for key in ("image_AUROC", "pixel_AUROC", "PRO", "F1_max", "threshold"):
        assert key in metrics
    assert metrics["image_AUROC"] == pytest.approx(record["image_AUROC"])  # same model
    for f in ("roc_curve.png", "score_histogram.png", "pro_curve.png", "predictions.csv",
              "per_defect.csv", "threshold.json"):
        assert (run / "eval" / f).is_file(), f
    with open(run / "eval" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 + 3 * 3 and {r["verdict"] for r in rows} <= {"OK", "NG"}

    source = mvtec_root / "weave" / "test"
    assert run_cli("-c", str(cfg), "-o", "mode=demo", "-o", f"demo.source={source}") == 0
    with open(run / "demo" / "predictions.csv") as f:
        demo = {Path(r["source"]).relative_to(source).as_posix(): r for r in csv.DictReader(f)}
    assert len(demo) == 15 and (run / "demo" / "spot" / "000.png").is_file()
    for r in rows:  # demo scores every image as eval did, with the threshold from eval
        d = demo[Path(r["path"]).relative_to(source).as_posix()]
        assert float(d["score"]) == pytest.approx(float(r["score"]), rel=1e-4)
        assert d["verdict"] == r["verdict"]

    # editing eval/threshold.json moves the operating point of demo and export
    th = json.loads((run / "eval" / "threshold.json").read_text())
    th["image_threshold"] = -1.0
    (run / "eval" / "threshold.json").write_text(json.dumps(th))
    assert run_cli("-c", str(cfg), "-o", "mode=demo", "-o", f"demo.source={source}/good",
                   "-o", "demo.out=" + str(run / "demo_all_ng")) == 0
    with open(run / "demo_all_ng" / "predictions.csv") as f:
        assert {r["verdict"] for r in csv.DictReader(f)} == {"NG"}

    assert run_cli("-c", str(cfg), "-o", "mode=export") == 0
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    assert manifest["outputs"] == ["anomaly_map", "score"]
    assert manifest["thresholds"]["image"] == -1.0
    assert manifest["input"]["mean"] and manifest["anomaly_map_range"]["max"] > 0
    sess = ort.InferenceSession(str(run / "export" / "model.onnx"),
                                providers=["CPUExecutionProvider"])
    images, _, _ = tensors(mvtec_root, "weave", "val")
    amap, score = sess.run(None, {"images": images[:3].numpy()})
    assert amap.shape == (3, 1, SIZE, SIZE) and score.shape == (3,)
    expected = [float(r["score"]) for r in rows[:3]]
    np.testing.assert_allclose(score, expected, rtol=1e-4)


def test_rerun_refuses_to_overwrite(capsys, weave_run):
    cfg, run = weave_run
    before = snapshot(run / "checkpoints")
    assert run_cli("-c", str(cfg)) == 2
    assert "already holds a training run" in capsys.readouterr().err
    assert snapshot(run / "checkpoints") == before


def test_all_categories_with_summary(capsys, tmp_path, mvtec_root):
    work = tmp_path / "run"
    cfg = write_config(tmp_path / "c.json", an_config(mvtec_root, work,
                                                      dataset={"category": "all"}))
    assert run_cli("-c", str(cfg)) == 0
    for cat in ("grid", "weave"):  # one ordinary run folder per category
        assert (work / cat / "checkpoints" / "best.pth").is_file()
        assert json.loads((work / cat / "config.json").read_text())["data"]["dataset"][
            "category"] == cat
    with open(work / "summary.csv") as f:
        rows = {r["category"]: r for r in csv.DictReader(f)}
    assert list(rows) == ["grid", "weave", "mean"]
    for key in ("image_AUROC", "pixel_AUROC", "PRO", "F1_max"):
        vals = [float(rows[c][key]) for c in ("grid", "weave")]
        assert float(rows["mean"][key]) == pytest.approx(sum(vals) / 2, abs=1e-4)
    assert rows["mean"]["threshold"] == ""  # thresholds are per category, not averaged
    md = (work / "summary.md").read_text()
    assert "| grid |" in md and "**mean**" in md

    assert run_cli("-c", str(cfg), "-o", "mode=eval") == 0
    with open(work / "eval" / "summary.csv") as f:
        assert [r["category"] for r in csv.DictReader(f)] == ["grid", "weave", "mean"]
    assert (work / "weave" / "eval" / "metrics.json").is_file()

    # demo: one source for every category is ambiguous; {category} names each one's own
    capsys.readouterr()
    assert run_cli("-c", str(cfg), "-o", "mode=demo", "-o", f"demo.source={mvtec_root}") == 2
    assert "{category}" in capsys.readouterr().err
    assert run_cli("-c", str(cfg), "-o", "mode=demo", "-o", "demo.max_images=2", "-o",
                   f"demo.source={mvtec_root}/{{category}}/test/spot") == 0
    for cat in ("grid", "weave"):
        with open(work / cat / "demo" / "predictions.csv") as f:
            assert [Path(r["source"]).parts[-4] for r in csv.DictReader(f)] == [cat, cat]


def test_grayscale_patchcore_export(tmp_path):
    root = make(tmp_path / "gray", channels=1, size=SIZE, n_train=8, n_test_good=3,
                n_test_defect=2, categories=("grid",))
    assert cv2.imread(str(root / "grid" / "train" / "good" / "000.png"),
                      cv2.IMREAD_UNCHANGED).ndim == 2
    work = tmp_path / "run"
    model = {"type": "PatchCore", "backbone": "resnet18", "coreset_ratio": 0.2}
    cfg = write_config(tmp_path / "c.json", an_config(root / "grid", work, model, in_channels=1))
    assert run_cli("-c", str(cfg)) == 0  # data.root is the category folder itself
    bank = ckpt_io.load(work / "checkpoints" / "best.pth")["model"]["memory_bank"]
    assert bank.shape == (math.ceil(0.2 * 8 * (SIZE // 8) ** 2), 128 + 256)
    assert run_cli("-c", str(cfg), "-o", "mode=export") == 0  # parity checked by the runner
    manifest = json.loads((work / "export" / "manifest.json").read_text())
    assert manifest["input"]["shape"][1] == 1 and manifest["input"]["color_order"] == "GRAY"
    assert manifest["parity"]["onnxruntime_max_abs_diff"]["score"] < 1e-4


def test_torchrun_two_processes_fit_like_one(weave_run, tmp_path):
    """PaDiM's per-process sums are combined exactly, and every process starts from rank 0's
    random-init backbone: two processes give the single-process model and metrics."""
    import subprocess
    import sys

    from tests.test_ddp import _env, _free_port
    cfg, run = weave_run
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(_free_port()), str(ROOT / "main.py"), "-c", str(cfg),
           "-o", f"work_dir={tmp_path / 'ddp'}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world_size=2" in proc.stderr
    single = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    ddp = json.loads((tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("image_AUROC", "pixel_AUROC", "PRO", "F1_max", "threshold"):
        assert ddp[key] == pytest.approx(single[key], rel=1e-4), key
    a = ckpt_io.load(run / "checkpoints" / "last.pth")["model"]
    b = ckpt_io.load(tmp_path / "ddp" / "checkpoints" / "last.pth")["model"]
    for k in ("mean", "whitening"):
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_quickstart_reaches_target(tmp_path):
    """README's anomaly quickstart: demo data + configs/anomaly/quickstart.json (PaDiM on a
    random-init ResNet-18, every category) -> mean image AUROC >= 0.95."""
    from aicore.tools.demo_data import main as demo_data
    demo_data([str(tmp_path / "demo"), "--task", "anomaly"])
    work = tmp_path / "qs"
    assert run_cli("-c", str(ROOT / "configs/anomaly/quickstart.json"),
                   "-o", f"data.root={tmp_path / 'demo' / 'anomaly'}",
                   "-o", f"work_dir={work}", "-o", "train.progress=false") == 0
    with open(work / "summary.csv") as f:
        rows = {r["category"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"grid", "weave", "mean"}
    assert float(rows["mean"]["image_AUROC"]) >= 0.95
    assert min(float(rows[c]["image_AUROC"]) for c in ("grid", "weave")) >= 0.9

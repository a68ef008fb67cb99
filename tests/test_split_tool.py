"""python -m aicore.tools.split_dataset: exact stratified counts, both layouts loading with
ClassificationDataset, reproducibility, hard links, and refusals that leave everything as it
was."""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from aicore.tasks.classification.datasets import ClassificationDataset
from aicore.tools.split_dataset import main, split_counts
from tests.conftest import ROOT, snapshot

# class -> number of images; "dent" and "rare" are the tiny classes
SIZES = {"good": 10, "scratch": 7, "dent": 3, "rare": 1}


def _make_src(root: Path, sizes: dict[str, int] = SIZES) -> Path:
    rng = np.random.default_rng(0)
    for name, n in sizes.items():
        for i in range(n):
            # one nested sub-folder in "good", to check that relative paths are kept
            sub = root / name / ("batch2" if name == "good" and i >= 8 else "")
            sub.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(sub / f"{name}_{i:02d}.png"),
                        rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    if "good" in sizes:
        (root / "good" / "notes.txt").write_text("not an image")
    return root


def _src_files(src: Path) -> dict[str, bytes]:
    return {p.relative_to(src).as_posix(): p.read_bytes()
            for p in src.rglob("*.png")}


@pytest.fixture()
def src(tmp_path) -> Path:
    return _make_src(tmp_path / "src")


def _split(src: Path, out: Path, *extra: str, ratios=("0.7", "0.2", "0.1")) -> int:
    return main([str(src), str(out), "--ratios", *ratios, *extra])


@pytest.mark.parametrize("n, ratios, min_per_split, expected", [
    (10, (0.7, 0.2, 0.1), 1, [7, 2, 1]),
    (7, (0.7, 0.2, 0.1), 1, [5, 1, 1]),   # 4.9 1.4 0.7: leftovers to train (.9) and test (.7)
    (3, (0.7, 0.2, 0.1), 1, [1, 1, 1]),   # 2 1 0 by rounding, then test takes one from train
    (2, (0.7, 0.2, 0.1), 1, [1, 1, 0]),   # too small for all three: train, then val
    (1, (0.7, 0.2, 0.1), 1, [1, 0, 0]),
    (0, (0.7, 0.2, 0.1), 1, [0, 0, 0]),
    (2, (0.7, 0.2, 0.1), 0, [2, 0, 0]),   # pure rounding: .4 vs .4 tie goes to train
    (5, (0.8, 0.2, 0.0), 1, [4, 1, 0]),   # a zero ratio leaves the split out
    (1, (0.3, 0.7, 0.0), 0, [0, 1, 0]),   # pure rounding may leave train without the class
    (10, (0.34, 0.33, 0.33), 1, [4, 3, 3]),
])
def test_split_counts(n, ratios, min_per_split, expected):
    assert split_counts(n, ratios, min_per_split) == expected


def test_split_counts_properties():
    for ratios in [(0.7, 0.2, 0.1), (0.6, 0.2, 0.2), (0.5, 0.5, 0.0), (0.9, 0.05, 0.05)]:
        active = sum(r > 0 for r in ratios)
        for min_per_split in (0, 1, 2):
            for n in range(0, 80):
                counts = split_counts(n, ratios, min_per_split)
                assert sum(counts) == n
                assert all(c == 0 for c, r in zip(counts, ratios) if r == 0)
                if min_per_split == 0:  # largest remainder: never more than 1 off the quota
                    assert all(abs(c - n * r) < 1 for c, r in zip(counts, ratios))
                elif n >= min_per_split * active:
                    assert all(c >= min_per_split for c, r in zip(counts, ratios) if r > 0)


@pytest.mark.parametrize("layout", ["folder", "list"])
def test_output_loads_with_classification_dataset(src, tmp_path, layout, capsys):
    out = tmp_path / "out"
    assert _split(src, out, "--layout", layout, "--seed", "3") == 0
    assert "wrote" in capsys.readouterr().out
    classes = sorted(SIZES)
    assert (out / "labels.txt").read_text().split() == classes
    seen: dict[str, bytes] = {}
    for split in ("train", "val", "test"):
        ds = ClassificationDataset(str(out), split, input_size=[8, 8])
        assert ds.layout == layout and ds.classes == classes
        # every class gets exactly the documented count in every split
        expected = [split_counts(SIZES[c], (0.7, 0.2, 0.1))[("train", "val", "test").index(split)]
                    for c in classes]
        assert ds.class_counts == expected
        for path, target in ds.samples:
            rel = Path(path).relative_to(out / (split if layout == "folder" else "")).as_posix()
            assert rel.split("/")[0] == classes[target]
            assert rel not in seen, f"{rel} is in two splits"
            seen[rel] = Path(path).read_bytes()
        x, label, _ = ds[0]
        assert x.shape == (3, 8, 8)
    # together the splits are exactly SRC's images, byte for byte, nested paths kept
    assert seen == _src_files(src)
    assert "good/batch2/good_09.png" in seen
    info = json.loads((out / "split.json").read_text())
    assert info["seed"] == 3 and info["counts"]["dent"] == {"train": 1, "val": 1, "test": 1}


def test_same_seed_same_split_other_seed_differs(src, tmp_path):
    def assignment(out):
        return {p.relative_to(out).as_posix() for p in out.rglob("*.png")}
    assert _split(src, tmp_path / "a", "--seed", "5") == 0
    assert _split(src, tmp_path / "b", "--seed", "5") == 0
    assert _split(src, tmp_path / "c", "--seed", "6") == 0
    assert assignment(tmp_path / "a") == assignment(tmp_path / "b")
    assert assignment(tmp_path / "a") != assignment(tmp_path / "c")
    # adding a class leaves the other classes' assignment unchanged (per-class seeding)
    _make_src(src, {"new_class": 4})
    assert _split(src, tmp_path / "d", "--seed", "5") == 0
    assert {p for p in assignment(tmp_path / "d") if "new_class" not in p} == \
        assignment(tmp_path / "a")


def test_two_ratios_and_hard_links(src, tmp_path):
    out = tmp_path / "out"
    assert _split(src, out, "--link", "--layout", "list", ratios=("0.8", "0.2")) == 0
    assert not (out / "test.txt").exists()
    lines = (out / "train.txt").read_text().split()
    assert os.path.samefile(out / lines[0], src / lines[0])  # a hard link, not a copy
    assert not any(p.name.startswith(".split_dataset") for p in out.iterdir())
    assert len(ClassificationDataset(str(out), "val", input_size=[8, 8])) == 2 + 1 + 1 + 0


def test_class_names_with_spaces(tmp_path):
    src = _make_src(tmp_path / "src", {"big dent 2": 3, "ok": 3})
    out = tmp_path / "out"
    assert _split(src, out, "--layout", "list") == 0
    ds = ClassificationDataset(str(out), "train", input_size=[8, 8])
    assert ds.classes == ["big dent 2", "ok"] and ds.class_counts == [1, 1]


@pytest.mark.parametrize("case, args, match", [
    ("missing src", ["{tmp}/nope", "{tmp}/out", "--ratios", "0.7", "0.2", "0.1"], "not found"),
    ("bad sum", ["{src}", "{tmp}/out", "--ratios", "0.7", "0.2", "0.2"], "add up to 1"),
    ("negative", ["{src}", "{tmp}/out", "--ratios", "1.2", "-0.2"], ">= 0"),
    ("four ratios", ["{src}", "{tmp}/out", "--ratios", "0.4", "0.2", "0.2", "0.2"],
     "2 (train val) or 3"),
    ("out in src", ["{src}", "{src}/out", "--ratios", "0.7", "0.3"], "inside SRC"),
])
def test_bad_arguments_exit_2(src, tmp_path, capsys, case, args, match):
    args = [a.format(tmp=tmp_path, src=src) for a in args]
    before = snapshot(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err, err
    assert snapshot(tmp_path) == before and not (tmp_path / "out").exists()


def test_empty_class_folder_is_refused(src, tmp_path, capsys):
    (src / "empty").mkdir()
    (src / "empty" / "readme.txt").write_text("no images here")
    assert _split(src, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "error: class folder" in err and "empty" in err and "no images" in err
    assert not (tmp_path / "out").exists()


def test_already_split_src_is_refused(src, tmp_path, capsys):
    assert _split(src, tmp_path / "split") == 0
    assert _split(tmp_path / "split", tmp_path / "again") == 2
    assert "already split" in capsys.readouterr().err


def test_non_empty_out_is_never_damaged(src, tmp_path, capsys):
    out = tmp_path / "out"
    assert _split(src, out) == 0
    (out / "mine.txt").write_text("keep me")
    before = snapshot(out)
    # a second split into the same folder: refused without --force, and with --force too,
    # because it would overwrite files of the first split
    assert _split(src, out, "--seed", "9") == 2
    assert "not empty" in capsys.readouterr().err
    assert _split(src, out, "--seed", "9", "--force") == 2
    assert "already has" in capsys.readouterr().err
    assert snapshot(out) == before
    # --force next to unrelated content works and leaves that content alone
    other = tmp_path / "other"
    other.mkdir()
    (other / "mine.txt").write_text("keep me")
    assert _split(src, other, "--force", "--layout", "list") == 0
    assert (other / "mine.txt").read_text() == "keep me"
    assert len(ClassificationDataset(str(other), "test", input_size=[8, 8])) == 1 + 1 + 1 + 0


def test_module_entry_point(src, tmp_path):
    """`python -m aicore.tools.split_dataset` runs and reports errors with exit status 2."""
    ok = subprocess.run([sys.executable, "-m", "aicore.tools.split_dataset", str(src),
                         str(tmp_path / "out"), "--ratios", "0.7", "0.2", "0.1"],
                        cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "total" in ok.stdout and "ignored 1 file" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "aicore.tools.split_dataset", str(src),
                          str(tmp_path / "out2"), "--ratios", "0.5", "0.2"],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and bad.stdout == ""

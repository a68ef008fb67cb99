"""Split a folder of class folders into train / val / test, stratified per class.

    python -m aicore.tools.split_dataset SRC OUT --ratios 0.7 0.2 0.1
        [--layout folder|list] [--seed 0] [--copy|--link] [--min-per-split 1] [--force]

SRC holds one folder per class (``SRC/<class>/**/*.png|jpg|bmp|tif|...``; nested sub-folders
are kept). OUT is written in one of the two classification layouts of notes/contract.md:

- folder: ``OUT/{train,val,test}/<class>/...`` plus ``OUT/labels.txt``
- list:   ``OUT/<class>/...`` plus ``OUT/{train,val,test}.txt`` (relative paths) and
          ``OUT/labels.txt``

plus ``OUT/split.json`` (arguments and per-class counts), so the split can be traced later.

How images are assigned, per class:
- Counts: every class is split in the given ratios with largest-remainder rounding: each
  split gets floor(n * ratio) images, and the images left over go one each to the splits with
  the largest fractional parts (ties: train, then val, then test). The counts are exact and add
  up to the class size. Two ratios (``--ratios 0.8 0.2``) mean train and val only; a ratio of 0
  leaves that split out.
- Tiny classes (``--min-per-split N``, default 1): a class with at least N images for every
  split whose ratio is above 0 gives each such split at least N images, taking them one at a
  time from the split that has the most. A class smaller than that is dealt out one image at a
  time in the order train, val, test (so 1 image goes to train; 2 images to train and val),
  because a class absent from train cannot be learnt and one absent from val cannot be
  measured. ``--min-per-split 0`` keeps pure proportional rounding.
- Which images: the class's files, sorted by path, are shuffled with a random generator seeded
  from ``--seed`` and the class name; so the same SRC and seed always give the same split,
  and adding a class does not reshuffle the others.

Files are copied (``--copy``, the default, keeps timestamps) or hard-linked (``--link``: no extra
disk space, needs OUT on the same file system as SRC; an edit to one name shows in the other).
Nothing existing is ever overwritten: a non-empty OUT is refused unless ``--force``, and even
then any file the split would write that already exists stops the tool before it writes.
Errors print ``error: ...`` on stderr and exit with status 2.
"""
from __future__ import annotations

import argparse
import errno
import json
import math
import os
import random
import shutil
import sys
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Sequence

from aicore.data.io import IMAGE_EXTENSIONS, is_image
from aicore.errors import AICoreError, DataError

SPLITS = ("train", "val", "test")
LAYOUTS = ("folder", "list")
_RATIO_TOLERANCE = 1e-6


@dataclass
class SplitResult:
    """What split_dataset wrote: classes in label order, and per split the list of
    ``(source path, path relative to OUT, class index)``."""
    classes: list[str]
    files: dict[str, list[tuple[Path, str, int]]]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # class -> split -> count
    ignored: list[Path] = field(default_factory=list)  # non-image files and loose images


def split_counts(n: int, ratios: Sequence[float], min_per_split: int = 1) -> list[int]:
    """Images per split for a class of ``n`` images (see the module docstring for the rules).

    The result always sums to ``n``; a split whose ratio is 0 always gets 0.
    """
    if n < 0 or min_per_split < 0:
        raise ValueError(f"n and min_per_split must be >= 0, got {n}, {min_per_split}")
    # exact fractions: with floats 2 * 0.7 leaves a remainder of 0.3999..., which would lose a
    # tie against 2 * 0.2 = 0.4 and break the documented tie order
    exact = [Fraction(str(r)) for r in ratios]
    total = sum(exact)
    if total <= 0:
        raise ValueError(f"ratios must not all be 0, got {list(ratios)}")
    exact = [r / total for r in exact]
    active = [i for i, r in enumerate(exact) if r > 0]
    counts = [0] * len(ratios)
    if min_per_split and n < min_per_split * len(active):
        # too small to give every split its minimum: deal round-robin, train first
        for k in range(n):
            counts[active[k % len(active)]] += 1
        return counts
    quotas = [n * r for r in exact]
    counts = [math.floor(q) for q in quotas]
    left = n - sum(counts)  # 0 <= left < number of active splits, as the quotas add up to n
    by_remainder = sorted(active, key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in by_remainder[:left]:
        counts[i] += 1
    for i in active:
        while counts[i] < min_per_split:
            donor = max(active, key=lambda j: (counts[j], -j))  # the largest split gives
            counts[donor] -= 1
            counts[i] += 1
    return counts


def _check_ratios(ratios: Sequence[float]) -> list[float]:
    if not 2 <= len(ratios) <= 3:
        raise DataError(f"--ratios takes 2 (train val) or 3 (train val test) numbers, got "
                        f"{len(ratios)}: {' '.join(map(str, ratios))}")
    if any(not math.isfinite(r) or r < 0 for r in ratios):
        raise DataError(f"--ratios must be numbers >= 0, got {' '.join(map(str, ratios))}")
    total = sum(ratios)
    if abs(total - 1.0) > _RATIO_TOLERANCE:
        raise DataError(f"--ratios must add up to 1, got {' + '.join(map(str, ratios))} = "
                        f"{total:g}; e.g. --ratios 0.7 0.2 0.1")
    if ratios[0] <= 0:
        raise DataError("--ratios: the train ratio (the first number) must be above 0")
    return list(ratios) + [0.0] * (3 - len(ratios))


def _check_src(src: Path) -> None:
    if not src.exists():
        raise DataError(f"SRC {src} not found: give the folder that holds one sub-folder per "
                        f"class")
    if not src.is_dir():
        raise DataError(f"SRC {src} is a file; give the folder that holds one sub-folder per "
                        f"class")


def scan_classes(src: Path) -> tuple[dict[str, list[Path]], list[Path]]:
    """Class name -> sorted image files under ``src/<class>/`` (recursively), and the files that
    are ignored (non-images, and images lying directly in ``src``). Hidden entries are skipped."""
    _check_src(src)
    classes: dict[str, list[Path]] = {}
    ignored = [p for p in sorted(src.iterdir()) if p.is_file() and not p.name.startswith(".")]
    for folder in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files, other = [], []
        for p in sorted(folder.rglob("*")):
            rel = p.relative_to(folder)
            if not p.is_file() or any(part.startswith(".") for part in rel.parts):
                continue
            (files if is_image(p) else other).append(p)
        if not files:
            raise DataError(f"class folder {folder} has no images ({'/'.join(IMAGE_EXTENSIONS)}"
                            f"). Add images or remove the folder from SRC")
        classes[folder.name] = files
        ignored += other
    if not classes:
        raise DataError(f"SRC {src} has no class folders; expected {src}/<class_name>/*.png "
                        f"(one folder per class)")
    if set(classes) <= set(SPLITS) and all(any(p.is_dir() for p in (src / c).iterdir())
                                            for c in classes):
        raise DataError(f"SRC {src} looks already split ({', '.join(sorted(classes))} folders "
                        f"holding class folders). Give the folder whose sub-folders are the "
                        f"classes, e.g. merge the splits into one folder first")
    return classes, ignored


def _labels_text(classes: list[str]) -> str:
    # labels.txt is "one class name per line"; names that contain whitespace would be misread
    # as "name index" by the loader, so then every line carries its index explicitly
    if any(len(c.split()) != 1 or c != c.strip() for c in classes):
        return "".join(f"{c} {i}\n" for i, c in enumerate(classes))
    return "".join(f"{c}\n" for c in classes)


def _check_out(src: Path, out: Path, force: bool) -> None:
    s, o = src.resolve(), out.resolve()
    if o == s or s in o.parents:
        raise DataError(f"OUT {out} is inside SRC {src}; it would be read as a class folder on "
                        f"the next run. Choose an OUT outside SRC")
    if o in s.parents:
        raise DataError(f"SRC {src} is inside OUT {out}; choose a separate OUT folder")
    if out.exists() and not out.is_dir():
        raise DataError(f"OUT {out} is a file; give a folder (new or empty)")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise DataError(f"OUT {out} is not empty; give a new or empty folder, or --force to add "
                        f"the split next to what is there (existing files are never "
                        f"overwritten)")


def _transfer(src: Path, dst: Path, link: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(src, dst)
        except OSError as e:
            if e.errno in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
                raise DataError(f"cannot hard-link {src} to {dst} ({e.strerror}): --link needs "
                                f"OUT on the same file system as SRC; use --copy") from None
            raise
    else:
        shutil.copy2(src, dst)


def split_dataset(src: str | os.PathLike, out: str | os.PathLike, ratios: Sequence[float],
                  layout: str = "folder", seed: int = 0, link: bool = False,
                  min_per_split: int = 1, force: bool = False) -> SplitResult:
    """Split SRC's class folders into OUT (see the module docstring). Everything is checked
    before the first file is written, so a refused call leaves OUT as it was."""
    src, out = Path(src), Path(out)
    if layout not in LAYOUTS:
        raise DataError(f"--layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if min_per_split < 0:
        raise DataError(f"--min-per-split must be >= 0, got {min_per_split}")
    full_ratios = _check_ratios(ratios)
    _check_src(src)
    _check_out(src, out, force)  # before scanning, which would read an OUT inside SRC as a class
    by_class, ignored = scan_classes(src)

    classes = sorted(by_class)  # labels.txt order; ClassificationDataset sorts the same way
    result = SplitResult(classes=classes, files={s: [] for s in SPLITS}, ignored=ignored)
    for index, name in enumerate(classes):
        files = list(by_class[name])
        random.Random(f"{seed}/{name}").shuffle(files)  # str seed: stable across processes
        counts = split_counts(len(files), full_ratios, min_per_split)
        result.counts[name] = dict(zip(SPLITS, counts))
        start = 0
        for split, count in zip(SPLITS, counts):
            for path in sorted(files[start:start + count]):
                rel = (Path(name) / path.relative_to(src / name)).as_posix()
                result.files[split].append(
                    (path, f"{split}/{rel}" if layout == "folder" else rel, index))
            start += count

    written = [s for s in SPLITS if result.files[s]]
    targets = [out / r for s in written for _, r, _ in result.files[s]] + [out / "labels.txt",
                                                                          out / "split.json"]
    if layout == "list":
        targets += [out / f"{s}.txt" for s in written]
    clash = [t for t in targets if os.path.lexists(t)]
    if clash:
        shown = ", ".join(str(t) for t in clash[:3]) + (" ..." if len(clash) > 3 else "")
        raise DataError(f"OUT {out} already has {len(clash)} of the files this split would write "
                        f"({shown}); nothing was written. Choose another OUT")

    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    if link:  # find out now, before any file is written, whether hard links work here
        probe = out / f".split_dataset_link_probe_{os.getpid()}"
        try:
            _transfer(next(f for s in written for f, _, _ in result.files[s]), probe, link=True)
        except DataError:
            if created:
                out.rmdir()  # empty, and of our own making
            raise
        probe.unlink()
    for split in written:
        for path, rel, _ in result.files[split]:
            _transfer(path, out / rel, link)
    if layout == "list":
        for split in written:
            (out / f"{split}.txt").write_text(
                "".join(f"{rel}\n" for _, rel, _ in result.files[split]), encoding="utf-8")
    (out / "labels.txt").write_text(_labels_text(classes), encoding="utf-8")
    info = {"src": str(src.resolve()), "layout": layout, "seed": seed,
            "ratios": dict(zip(SPLITS, full_ratios)), "min_per_split": min_per_split,
            "mode": "link" if link else "copy", "classes": classes, "counts": result.counts}
    (out / "split.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return result


def _summary(result: SplitResult, out: Path) -> str:
    width = max(len("class"), *(len(c) for c in result.classes))
    lines = [f"{'class':<{width}}  " + "  ".join(f"{s:>6}" for s in SPLITS) + "   total"]
    for c in result.classes:
        n = result.counts[c]
        lines.append(f"{c:<{width}}  " + "  ".join(f"{n[s]:>6}" for s in SPLITS) +
                     f"  {sum(n.values()):>6}")
    totals = [len(result.files[s]) for s in SPLITS]
    lines.append(f"{'total':<{width}}  " + "  ".join(f"{t:>6}" for t in totals) +
                 f"  {sum(totals):>6}")
    if result.ignored:
        lines.append(f"ignored {len(result.ignored)} file(s) that are not images or not inside "
                     f"a class folder, e.g. {result.ignored[0]}")
    lines.append(f"wrote {out}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 2 user error)."""
    p = argparse.ArgumentParser(prog="python -m aicore.tools.split_dataset",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("src", metavar="SRC", help="folder with one sub-folder per class")
    p.add_argument("out", metavar="OUT", help="output folder (new or empty)")
    p.add_argument("--ratios", type=float, nargs="+", required=True, metavar="R",
                   help="train val [test] fractions, adding up to 1, e.g. 0.7 0.2 0.1")
    p.add_argument("--layout", choices=LAYOUTS, default="folder",
                   help="folder: OUT/<split>/<class>/...; list: OUT/<class>/... + OUT/<split>.txt")
    p.add_argument("--seed", type=int, default=0, help="shuffling seed (default 0)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--copy", dest="link", action="store_false",
                      help="copy the images (default)")
    mode.add_argument("--link", dest="link", action="store_true",
                      help="hard-link the images (same file system only)")
    p.set_defaults(link=False)  # both flags share `link`; without this --copy's True wins
    p.add_argument("--min-per-split", type=int, default=1, metavar="N",
                   help="images every split gets from each class that is big enough "
                        "(default 1; 0 = pure proportional rounding)")
    p.add_argument("--force", action="store_true",
                   help="allow a non-empty OUT (existing files are still never overwritten)")
    a = p.parse_args(argv)
    try:
        result = split_dataset(a.src, a.out, a.ratios, layout=a.layout, seed=a.seed,
                               link=a.link, min_per_split=a.min_per_split, force=a.force)
    except AICoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(_summary(result, Path(a.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

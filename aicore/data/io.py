"""Image reading for every task: 8- and 16-bit files, grayscale or colour, unicode paths;
label and list files; whole-file text writes."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import cv2
import numpy as np

from aicore.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def is_image(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def imread(path: str | os.PathLike, in_channels: int = 3) -> np.ndarray:
    """Read an image as HxWxC (C = in_channels), RGB order.

    8-bit files come back as uint8; 16-bit files as float32 scaled to [0, 1], so every later
    step (augmentation, normalisation) sees one of two dtypes with a known range.
    """
    try:
        buf = np.fromfile(str(path), dtype=np.uint8)  # np.fromfile + imdecode: unicode paths work
    except OSError as e:
        raise DataError(f"cannot read image {path}: {e.strerror}") from None
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if img is None:
        raise DataError(f"cannot decode image {path}: the file is empty or corrupt. Replace it or "
                        f"remove it from the dataset (and from its list file, if any)")
    return to_channels(img, in_channels, path)


def to_channels(img: np.ndarray, in_channels: int, path: str | os.PathLike = "") -> np.ndarray:
    if img.dtype == np.uint16:
        img = img.astype(np.float32) / 65535.0
    elif img.dtype not in (np.uint8, np.float32):
        raise DataError(f"{path}: unsupported pixel type {img.dtype}; use 8- or 16-bit images")
    if img.ndim == 2:
        img = img[:, :, None]
    c = img.shape[2]
    if c == 4:
        img, c = img[:, :, :3], 3
    if in_channels == 1:
        if c == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)[:, :, None]
    else:
        img = np.repeat(img, 3, axis=2) if c == 1 else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(img)


def imwrite(path: str | os.PathLike, rgb: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 and rgb.shape[2] == 3 else rgb
    ok, buf = cv2.imencode(path.suffix or ".png", bgr)
    if not ok:
        raise DataError(f"cannot encode image for {path}")
    buf.tofile(str(path))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Replace `path` with `text` (UTF-8) all at once: written in full to a hidden temp file in
    the same folder, then renamed over it, so a reader or a crash never sees half a file. The
    file gets the permissions any new file of the user gets (0666 minus the umask)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_lines(path: Path) -> list[tuple[int, str]]:
    """Non-empty, non-comment lines with their 1-based line numbers."""
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if line and not line.startswith("#"):
                out.append((n, line))
    return out


def read_labels_file(path: Path, separator: str | None) -> list[str]:
    """labels.txt: one class name per line, optionally ``name<sep>index`` (indices 0..N-1)."""
    names: dict[int, str] = {}
    first_line: dict[str, int] = {}
    for n, line in read_lines(path):
        parts = line.split(separator) if separator else line.split()
        if len(parts) >= 2 and parts[-1].strip().lstrip("-").isdigit():
            name, idx = (separator or " ").join(parts[:-1]).strip(), int(parts[-1])
        else:
            name, idx = line, len(names)
        if idx in names:
            raise DataError(f"{path}:{n}: class index {idx} is used twice")
        if name in first_line:
            raise DataError(f"{path}:{n}: class name {name!r} is already on line "
                            f"{first_line[name]}; each class needs its own name")
        first_line[name] = n
        names[idx] = name
    if not names:
        raise DataError(f"{path} lists no classes; write one class name per line")
    if sorted(names) != list(range(len(names))):
        raise DataError(f"{path}: class indices must be 0..{len(names) - 1} without gaps, "
                        f"got {sorted(names)}")
    return [names[i] for i in range(len(names))]


def dataset_root(root: str | os.PathLike | None, task: str) -> Path:
    """`data.root` as an existing folder, or a DataError saying how to get one."""
    demo = f"`python -m aicore.tools.demo_data data/demo --task {task}`"
    if root is None:
        raise DataError(f"data.root is not set: point it at the dataset folder, e.g. "
                        f"-o data.root=data/demo/{task} (create it with {demo})")
    path = Path(root)
    if not path.is_dir():
        raise DataError(f"data.root = {root}: folder not found. Create the demo data with "
                        f"{demo} or fix the path")
    return path

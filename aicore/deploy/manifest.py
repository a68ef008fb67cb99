"""Finding and checking an export: a folder with manifest.json and model.onnx, or a lone
model.onnx whose metadata_props carry the manifest (key "aicore_manifest")."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aicore.errors import AICoreError

TASKS = ("classification", "segmentation", "detection", "anomaly")
METADATA_KEY = "aicore_manifest"


class DeployError(AICoreError):
    """The export folder, its manifest or an input cannot be used; the message says why."""


def _from_onnx(path: Path) -> dict[str, Any]:
    import onnxruntime as ort
    try:
        meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]
                                    ).get_modelmeta().custom_metadata_map
    except Exception as e:  # onnxruntime raises its own exception types
        raise DeployError(f"{path}: not a readable ONNX model ({e})") from None
    if METADATA_KEY not in meta:
        raise DeployError(f"{path} carries no AICore manifest in its metadata; pass the export "
                          f"folder (with manifest.json) or re-export with this AICore version")
    return json.loads(meta[METADATA_KEY])


def load(path: str | Path) -> tuple[dict[str, Any], Path]:
    """(manifest, path of the ONNX model) of an export folder or a lone .onnx file."""
    path = Path(path)
    if path.is_file() and path.suffix == ".onnx":
        manifest, onnx_path = _from_onnx(path), path
    elif path.is_dir():
        mpath = path / "manifest.json"
        if not mpath.is_file():
            raise DeployError(f"{path}: no manifest.json; point at the folder mode=export "
                              f"wrote (work_dir/export) or at its model.onnx")
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except ValueError as e:
            raise DeployError(f"{mpath}: not valid JSON ({e}); export again") from None
        name = (manifest.get("files") or {}).get("onnx")
        if not name:
            raise DeployError(f"{mpath}: the export has no ONNX model (export.formats lacked "
                              f"\"onnx\"); export again with -o 'export.formats=[\"onnx\"]'")
        onnx_path = path / name
        if not onnx_path.is_file():
            raise DeployError(f"{mpath} names {name}, but {onnx_path} is missing; copy the "
                              f"whole export folder")
    else:
        raise DeployError(f"{path}: no such export folder or .onnx file")
    check(manifest, str(path))
    return manifest, onnx_path


def check(manifest: dict[str, Any], where: str) -> None:
    """Fail with one clear message when the manifest lacks what the runtime needs."""
    if manifest.get("task") not in TASKS:
        raise DeployError(f"{where}: manifest task {manifest.get('task')!r} is not one of "
                          f"{', '.join(TASKS)}")
    if int(manifest.get("manifest_version", 1)) < 2 or "preprocess" not in manifest:
        raise DeployError(f"{where}: the manifest predates the deploy runtime (no "
                          f"\"preprocess\" section); export again with -o mode=export")
    pre = manifest["preprocess"]
    missing = [k for k in ("channels", "size", "mean", "std", "resize") if k not in pre]
    if missing:
        raise DeployError(f"{where}: manifest preprocess lacks {missing}; export again")
    if pre.get("val_transforms"):
        names = [t.get("type") for t in pre["val_transforms"]]
        raise DeployError(f"{where}: the export's data.val.transforms {names} are not part of "
                          f"the runtime's preprocessing; move resizing into data.input_size "
                          f"(and use an empty data.val.transforms) and export again")
    if manifest["task"] != "classification" and "postprocess" not in manifest:
        raise DeployError(f"{where}: manifest lacks its \"postprocess\" section; export again")
    if not manifest.get("classes"):
        raise DeployError(f"{where}: manifest lists no classes; export again")

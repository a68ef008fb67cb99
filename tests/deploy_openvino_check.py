"""backend="openvino" against onnxruntime on one export, in a process without torch.

    python tests/deploy_openvino_check.py TASK EXPORT_DIR IMAGE [IMAGE ...]

Compares image by image and as one batch (tests/deploy_results.compare); prints, as JSON, the
number of results per image of the batch (detection: boxes). Exit status 1 on a difference.
"""
import json
import sys

from deploy_results import compare, read

from aicore.deploy import Predictor

task, export, *paths = sys.argv[1:]
ort_p = Predictor(export, intra_op_num_threads=1)
ov_p = Predictor(export, intra_op_num_threads=1, backend="openvino")
assert ov_p.providers == ["OpenVINO:CPU"], ov_p.providers
for path in paths:
    raw = read(path)
    compare(task, ort_p.predict(raw), ov_p.predict(raw), raw, f"openvino {task} {path}")
batch = [read(p) for p in paths]
counts = []
for raw, a, b in zip(batch, ort_p.predict(batch), ov_p.predict(batch)):
    compare(task, a, b, raw, f"openvino {task} batch")
    counts.append(len(getattr(a, "scores", [1])))
heavy = [m for m in ("torch", "timm", "albumentations") if m in sys.modules]
if heavy:
    sys.exit(f"error: the deploy runtime imported {heavy}")
print(json.dumps(counts))

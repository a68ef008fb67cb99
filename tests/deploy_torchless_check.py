"""Run every export of an index.json (written by tests/test_deploy.py) through the deploy
runtime and print the results as JSON; fails when torch, timm or albumentations got imported.

Usage in a virtual environment with only the runtime's requirements:
    python tests/deploy_torchless_check.py INDEX.json
"""
import json
import sys

from aicore.deploy import Predictor

index = json.loads(open(sys.argv[1], encoding="utf-8").read())
out = {}
for task, item in index.items():
    p = Predictor(item["export"])
    out[task] = [p.predict(path).to_dict() for path in item["images"]]
heavy = [m for m in ("torch", "timm", "albumentations", "torchvision") if m in sys.modules]
if heavy:
    sys.exit(f"error: the deploy runtime imported {heavy}")
print(json.dumps(out))

"""Compare two outputs of tests/deploy_torchless_check.py (the runtime with and without torch
installed): same keys, same labels, numbers within 1e-5. Exit 1 on a difference."""
import json
import math
import sys


def diff(a, b, path="$"):
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{path}: keys {sorted(a)} != {sorted(b)}"
        return next((d for k in a if (d := diff(a[k], b[k], f"{path}.{k}"))), None)
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: length {len(a)} != {len(b)}"
        return next((d for i, (x, y) in enumerate(zip(a, b)) if (d := diff(x, y, f"{path}[{i}]"))), None)
    if isinstance(a, float) or isinstance(b, float):
        ok = isinstance(a, (int, float)) and isinstance(b, (int, float)) and \
            math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-5)
        return None if ok else f"{path}: {a} != {b}"
    return None if a == b else f"{path}: {a!r} != {b!r}"


a, b = (json.load(open(p, encoding="utf-8")) for p in sys.argv[1:3])
d = diff(a, b)
if d:
    sys.exit(f"error: the torch-less runtime disagrees with the training venv's: {d}")
n = sum(len(v) for v in a.values())
print(f"deploy runtime without torch: {n} predictions over {len(a)} tasks equal the training venv's")

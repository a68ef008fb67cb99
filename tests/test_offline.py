"""No network at run time: importing AICore's augmentation code with every socket blocked makes
no connection attempt and prints no albumentations update warning."""
from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT

BLOCK = """
import socket, sys
attempts = []
def refuse(self, *a, **k):
    attempts.append(a)
    raise OSError("network blocked by the test")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = lambda *a, **k: refuse(None, *a)
{imports}
import warnings
print("ATTEMPTS", len(attempts))
"""


def _run(imports: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "always"})
    return subprocess.run([sys.executable, "-c", BLOCK.format(imports=imports)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


def test_albumentations_update_check_is_off():
    out = _run("import aicore.data.transforms\nimport albumentations")
    assert out.returncode == 0, out.stderr
    assert "ATTEMPTS 0" in out.stdout
    assert "version" not in out.stderr.lower(), out.stderr


def test_the_blocker_would_see_the_check():
    """Control: albumentations imported on its own does try the network (so the test above
    can fail)."""
    out = _run("import albumentations")
    assert out.returncode == 0, out.stderr
    assert "ATTEMPTS 0" not in out.stdout, out.stdout

#!/usr/bin/env bash
# Create the peer venv for Ultralytics (issue 13: YOLOX-nano vs an Ultralytics nano model).
# Like anomalib_venv.sh, the venv reuses the project's torch 2.14.1 / torchvision 0.29.1 through a
# .pth file, so both sides run the very same torch build; ultralytics and what it needs beyond
# that go into the peer venv only. Nothing is downloaded at run time: ultralytics_run.py builds
# the model from its yaml (random init) and switches ultralytics' online checks off.
# Usage: benchmarks/peers/ultralytics_venv.sh [VENV_DIR]   (default benchmarks/.venv-ultralytics)
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${1:-$here/benchmarks/.venv-ultralytics}"
main_site="$("$here/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
if [ ! -x "$venv/bin/python" ]; then
  "$here/.venv/bin/python" -m venv "$venv"
fi
peer_site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$main_site" > "$peer_site/zz_aicore_torch.pth"
"$venv/bin/python" -m pip install -q "ultralytics==8.4.190" "torch==2.14.1" "torchvision==0.29.1"
"$venv/bin/python" - <<'PY'
import os
os.environ.setdefault("YOLO_OFFLINE", "1")
import torch, ultralytics
print("ultralytics", ultralytics.__version__, "torch", torch.__version__)
PY

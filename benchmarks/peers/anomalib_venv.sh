#!/usr/bin/env bash
# Create the peer venv for anomalib 2.7.0 (issue 13).
# The venv reuses the project's torch 2.14.1 / torchvision 0.29.1 through a .pth file so both
# sides run the very same torch build; everything anomalib needs beyond that is installed into
# the peer venv only (pip never uninstalls packages outside its own environment).
# Usage: benchmarks/peers/anomalib_venv.sh [VENV_DIR]   (default benchmarks/.venv-anomalib)
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${1:-$here/benchmarks/.venv-anomalib}"
main_site="$("$here/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
if [ ! -x "$venv/bin/python" ]; then
  "$here/.venv/bin/python" -m venv "$venv"
fi
peer_site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$main_site" > "$peer_site/zz_aicore_torch.pth"
"$venv/bin/python" -m pip install -q "anomalib==2.7.0" "torch==2.14.1" "torchvision==0.29.1"
"$venv/bin/python" - <<'PY'
import anomalib, torch, torchvision
print("anomalib", anomalib.__version__, "torch", torch.__version__, "torchvision", torchvision.__version__)
PY

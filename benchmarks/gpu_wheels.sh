#!/usr/bin/env bash
# Wheels of the dependencies the device tool's GPU image lacks (it has torch, torchvision, timm,
# onnx, onnxruntime, OpenCV, scikit-learn, scipy, matplotlib, tensorboard; see the device
# tool's KINDS.md), for its Python 3.12 on x86-64, into .whl/ (git-ignored; about 9 MB), so
# benchmarks/gpu_checks.py can run there with `carry: [".whl"]`. Run from the repository root
# on a machine that reaches PyPI:  bash benchmarks/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
mkdir -p .whl
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
      --platform manylinux1_x86_64)
# the versions verified with the project on CPU (pip show in its venv)
for spec in loguru==0.8.0 dotmap==1.3.30 albumentations==2.0.8 albucore==0.0.24 \
            segmentation-models-pytorch==0.6.0 faster-coco-eval==1.8.0 ttach==0.0.3 \
            pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 \
            typing-inspection==0.4.5 stringzilla==5.3.2 simsimd==6.5.16; do
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${plat[@]}" -d .whl "$spec"
done
# grad-cam ships only a source archive; it is pure Python, so build its wheel here
"$PY" -m pip wheel -q --no-deps -w .whl grad-cam==1.5.7
ls -la .whl
du -sh .whl

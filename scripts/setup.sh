#!/usr/bin/env bash
# First command on a fresh machine: create .venv, install, fetch the models, then check
# ResNet-8 (image_classification) against LiteRT and benchmark it.
#   PYTHON=python3.11 scripts/setup.sh      # choose the interpreter (>= 3.10)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv

if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV with $("$PYTHON" --version)"
    "$PYTHON" -m venv "$VENV"
fi
echo "== installing tvm_qnn_ext[test,onnx]"
"$VENV/bin/python" -m pip install --disable-pip-version-check -q -e ".[test,onnx]"

echo "== fetching models"
"$VENV/bin/tvm-qnn" models fetch
MODEL=$("$VENV/bin/python" -c \
    'from tvm_qnn_ext.models import model_path; print(model_path("image_classification"))')

echo "== tvm-qnn check $MODEL --samples 20 --seed 0"
"$VENV/bin/tvm-qnn" check "$MODEL" --samples 20 --seed 0
echo "== tvm-qnn bench $MODEL"
"$VENV/bin/tvm-qnn" bench "$MODEL"

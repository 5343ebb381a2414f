"""Every dialect op legalizes to integer-only TIR in every integer rounding mode."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from tvm import relax

from tvm_qnn_ext import op as qnn
from tvm_qnn_ext.op import OPS
from tvm_qnn_ext.op.pytorch_epilogue import fbgemm_depthwise_conv2d
from tvm_qnn_ext.quantization import INTEGER_MODES

Q = dict(
    lhs_scale=0.02,
    lhs_zero_point=3,
    rhs_scale=0.05,
    rhs_zero_point=-7,
    output_scale=0.04,
    output_zero_point=1,
    out_dtype="int8",
)
ACT = dict(
    input_scale=0.05, input_zero_point=2, output_scale=0.03, output_zero_point=-4, out_dtype="int8"
)
W = np.arange(3 * 3 * 3 * 8, dtype=np.int64).reshape(8, 3, 3, 3) % 255 - 127
X = ((1, 6, 6, 3), "int8")


def _const(a, dtype):
    return relax.const(np.asarray(a, dtype=dtype), dtype)


# op name -> builder(rounding, *vars) and its input types; rounding=None for ops without modes.
BUILDERS = {
    "qnn.requantize": (
        lambda r, x: qnn.requantize(
            x,
            [0.001, 0.002, 0.003],
            0,
            0.05,
            3,
            "int8",
            axis=3,
            rounding=r,
            out_min=-100,
            out_max=100,
        ),
        [((1, 4, 4, 3), "int32")],
    ),
    "qnn.conv2d": (
        lambda r, x: qnn.requantize(
            qnn.conv2d(
                x,
                _const(W.transpose(0, 1, 2, 3), "int8"),
                _const(np.arange(8), "int32"),
                strides=(2, 1),
                padding=(1, 0, 1, 2),
                input_zero_point=5,
            ),
            np.linspace(1e-4, 1e-3, 8),
            0,
            0.05,
            -3,
            "int8",
            axis=3,
            rounding=r,
        ),
        [X],
    ),
    "qnn.dense": (
        lambda r, x: qnn.requantize(
            qnn.dense(x, _const(np.ones((5, 12)), "int8"), input_zero_point=-3),
            0.001,
            0,
            0.02,
            1,
            "int8",
            rounding=r,
        ),
        [((2, 12), "int8")],
    ),
    "qnn.add": (lambda r, a, b: qnn.add(a, b, rounding=r, **Q), [((2, 5), "int8"), ((5,), "int8")]),
    "qnn.subtract": (
        lambda r, a, b: qnn.subtract(a, b, rounding=r, **Q),
        [((2, 5), "int8"), ((2, 5), "int8")],
    ),
    "qnn.multiply": (
        lambda r, a, b: qnn.multiply(a, b, rounding=r, **Q),
        [((2, 5), "int8"), ((1, 5), "int8")],
    ),
    "qnn.prelu": (
        lambda r, a, b: qnn.elementwise.prelu(a, b, rounding=r, **Q),
        [((2, 5), "int8"), ((5,), "int8")],
    ),
    "qnn.concatenate": (
        lambda r, a, b: qnn.concatenate(
            [a, b],
            axis=1,
            input_scales=[0.02, 0.05],
            input_zero_points=[3, -7],
            output_scale=0.04,
            output_zero_point=1,
            out_dtype="int8",
            rounding=r,
        ),
        [((2, 5), "int8"), ((2, 3), "int8")],
    ),
    "qnn.avg_pool2d": (
        lambda r, x: qnn.avg_pool2d(
            x, pool_size=(3, 3), strides=(2, 2), padding=(1, 1, 1, 1), rounding=r
        ),
        [X],
    ),
    "qnn.max_pool2d": (lambda r, x: qnn.max_pool2d(x, pool_size=(2, 2), strides=(2, 2)), [X]),
    "qnn.mean": (
        lambda r, x: qnn.mean(x, axis=[1, 2], keepdims=True, rounding=r, **ACT),
        [X],
    ),
    "qnn.lookup_table": (lambda r, x: qnn.tanh(x, **ACT), [X]),
    "qnn.softmax": (
        lambda r, x: qnn.softmax(
            x, axis=-1, beta=1.0, **{**ACT, "output_scale": 1 / 256, "output_zero_point": -128}
        ),
        [((2, 10), "int8")],
    ),
    "qnn.fbgemm_depthwise_conv2d": (
        lambda r, x: fbgemm_depthwise_conv2d(
            x,
            (np.arange(8 * 9).reshape(8, 1, 3, 3) % 255 - 127),
            strides=(1, 1),
            input_zero_point=3,
            kernel_zero_point=0,
        ),
        [((1, 8, 6, 6), "uint8")],
    ),
}

# Float at the edges by definition, or PyTorch's float epilogues ("float" mode only).
FLOAT_OPS = {
    "qnn.onednn_requantize",
    "qnn.quantize",
    "qnn.dequantize",
    "qnn.fbgemm_requantize",
    "qnn.torch_add",
    "qnn.torch_batch_norm",
    "qnn.torch_global_avg_pool",
}
MODELESS = {"qnn.max_pool2d", "qnn.lookup_table", "qnn.softmax", "qnn.fbgemm_depthwise_conv2d"}


def _legalized_tir(op_name: str, rounding: str) -> list[str]:
    build, inputs = BUILDERS[op_name]
    bb = relax.BlockBuilder()
    params = [relax.Var(f"x{i}", relax.TensorType(s, d)) for i, (s, d) in enumerate(inputs)]
    with bb.function("main", params):
        bb.emit_func_output(bb.emit(build(rounding, *params)))
    mod = relax.transform.LegalizeOps()(bb.get())
    return [f.script() for _, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)]


def test_every_integer_op_is_covered():
    missing = set(OPS) - set(BUILDERS) - FLOAT_OPS
    assert not missing, f"add a builder for {sorted(missing)}"


CASES = [
    (name, mode)
    for name in sorted(BUILDERS)
    for mode in (("tflite",) if name in MODELESS else INTEGER_MODES)
]


@pytest.mark.parametrize("op_name,rounding", CASES)
def test_legalized_tir_has_no_float(op_name, rounding):
    funcs = _legalized_tir(op_name, rounding)
    assert funcs, f"{op_name} produced no TIR"
    for text in funcs:
        hits = re.findall(r".*(?:float|bfloat|half).*", text)
        assert not hits, f"{op_name} ({rounding}) has float in TIR:\n" + "\n".join(hits[:5])


def test_walker_sees_float():
    """The check above can fail: the float modes do produce float TIR."""
    texts = _legalized_tir("qnn.requantize", "float")
    assert any("float" in t for t in texts)

"""qnn.requantize, qnn.quantize and qnn.dequantize compiled by TVM equal the numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
from tvm import relax

from tvm_qnn_ext import op
from tvm_qnn_ext.op import QnnTypeError
from tvm_qnn_ext.quantization import (
    INTEGER_MODES,
    QuantizationParamError,
    dequantize,
    dtype_range,
    quantize,
    requantize,
)
from tvm_qnn_ext.testing.batch import Case, run_cases

MODES = (*INTEGER_MODES, "float")
CASES = 240


def _shape(rng) -> tuple[int, ...]:
    return tuple(int(d) for d in rng.integers(1, 7, rng.integers(1, 5)))


def _scales(rng, n: int, lo: float, hi: float) -> np.ndarray:
    return np.exp(rng.uniform(np.log(lo), np.log(hi), n))


def _requantize_case(rng, i: int) -> Case:
    shape = _shape(rng)
    in_dtype = ("int32", "int8", "uint8", "int16")[i % 4]
    out_dtype = ("int8", "uint8", "int16", "int32")[rng.integers(0, 4)]
    rounding = MODES[i % len(MODES)]
    axis = int(rng.integers(0, len(shape))) if rng.random() < 0.5 else None
    n = shape[axis] if axis is not None else 1
    lo, hi = dtype_range(in_dtype)
    if in_dtype == "int32" and rng.random() < 0.5:
        lo, hi = -50000, 50000  # realistic accumulators; the full range saturates mostly
    x = rng.integers(lo, hi, shape, endpoint=True).astype(in_dtype)
    in_zp = int(rng.integers(*dtype_range(in_dtype))) if in_dtype != "int32" else 0
    out_zp = int(rng.integers(*dtype_range(out_dtype))) if out_dtype != "int32" else 0
    in_scale = _scales(rng, n, 1e-6, 10.0)
    out_scale = float(_scales(rng, 1, 1e-3, 1.0)[0])
    ratio = in_scale / out_scale
    in_scale = np.where(ratio > 2**30, out_scale, in_scale)  # keep shifts within [-31, 30]
    bounds = sorted(rng.integers(*dtype_range(out_dtype), 2)) if rng.random() < 0.3 else None
    out_min, out_max = (int(bounds[0]), int(bounds[1])) if bounds is not None else (None, None)
    neon = int(rng.integers(0, n + 1)) if axis is not None and rounding == "tflite" else 0
    kw = dict(axis=axis, rounding=rounding, out_min=out_min, out_max=out_max)
    expected = requantize(
        x, in_scale, in_zp, out_scale, out_zp, out_dtype, neon_channels=neon, **kw
    )

    def build(v, a=(in_scale, in_zp, out_scale, out_zp, out_dtype, kw, neon)):
        s, z, so, zo, dt, k, nc = a
        return op.requantize(
            v, s if s.size > 1 else float(s[0]), z, so, zo, dt, neon_channels=nc, **k
        )

    return Case([x], build, dict(expected=expected, rounding=rounding))


def _quantize_case(rng, i: int) -> Case:
    shape = _shape(rng)
    dtype = ("int8", "uint8")[i % 2]
    rounding = ("tflite", "tflite_neon", "float")[i % 3]
    axis = int(rng.integers(0, len(shape))) if rng.random() < 0.4 else None
    n = shape[axis] if axis is not None else 1
    scale = _scales(rng, n, 1e-3, 1.0)
    zp = rng.integers(*dtype_range(dtype), n)
    q = rng.integers(-300, 300, shape)
    # Values on and near rounding ties, and beyond the representable range.
    bshape = [1] * len(shape)
    if axis is not None:
        bshape[axis] = n
    s = scale.astype(np.float32).reshape(bshape)
    x = ((q + rng.choice([0.0, 0.5, -0.5, 0.49999], shape)) * s).astype(np.float32)
    scale_arg = scale if axis is not None else float(scale[0])
    zp_arg = zp if axis is not None else int(zp[0])
    expected = quantize(x, scale_arg, zp_arg, dtype, axis=axis, rounding=rounding)
    return Case(
        [x],
        lambda v, a=(scale_arg, zp_arg, dtype, axis, rounding): op.quantize(v, *a),
        dict(expected=expected, rounding=rounding),
    )


def _dequantize_case(rng, i: int) -> Case:
    shape = _shape(rng)
    dtype = ("int8", "uint8", "int32")[i % 3]
    axis = int(rng.integers(0, len(shape))) if rng.random() < 0.4 else None
    n = shape[axis] if axis is not None else 1
    scale = _scales(rng, n, 1e-4, 10.0)
    lo, hi = dtype_range(dtype) if dtype != "int32" else (-(2**20), 2**20)
    zp = rng.integers(max(lo, -128), min(hi, 255), n)
    x = rng.integers(lo, hi, shape, endpoint=True).astype(dtype)
    scale_arg = scale if axis is not None else float(scale[0])
    zp_arg = zp if axis is not None else int(zp[0])
    expected = dequantize(x, scale_arg, zp_arg, axis=axis)
    return Case(
        [x],
        lambda v, a=(scale_arg, zp_arg, axis): op.dequantize(v, a[0], a[1], axis=a[2]),
        dict(expected=expected, rounding=None),
    )


@pytest.mark.parametrize(
    "make", [_requantize_case, _quantize_case, _dequantize_case], ids=lambda f: f.__name__[1:-5]
)
def test_matches_reference(make):
    rng = np.random.default_rng(2024)
    cases = [make(rng, i) for i in range(CASES)]
    outs = run_cases(cases)
    bad = [
        (i, c.meta["rounding"])
        for i, (c, o) in enumerate(zip(cases, outs, strict=True))
        if o.dtype != c.meta["expected"].dtype or not np.array_equal(o, c.meta["expected"])
    ]
    assert not bad, f"{len(bad)} of {len(cases)} cases differ, e.g. {bad[:5]}"


def _emit(build, shape, dtype):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, dtype))
    with bb.function("main", [x]):
        bb.emit_func_output(bb.emit(build(x)))


def test_bad_parameters_are_named():
    with pytest.raises(QuantizationParamError, match="scale"):
        _emit(lambda x: op.requantize(x, 0.0, 0, 1.0, 0), (4,), "int32")
    with pytest.raises(QuantizationParamError, match="scale"):
        _emit(lambda x: op.requantize(x, float("nan"), 0, 1.0, 0), (4,), "int32")
    with pytest.raises(QuantizationParamError, match="zero point"):
        _emit(lambda x: op.requantize(x, 0.1, 0, 1.0, 300, "int8"), (4,), "int32")
    with pytest.raises(QnnTypeError, match="axis 1 has length 4"):
        _emit(lambda x: op.requantize(x, [0.1, 0.2], 0, 1.0, 0, axis=1), (2, 4), "int32")
    with pytest.raises(QnnTypeError, match="dtype float32"):
        _emit(lambda x: op.requantize(x, 0.1, 0, 1.0, 0), (4,), "float32")
    with pytest.raises(QnnTypeError, match="qnn.quantize"):
        _emit(lambda x: op.quantize(x, 0.1, 0), (4,), "int8")

"""TFLite int8/uint8 activations: the numpy reference against LiteRT's builtin kernels, and the
QNN ops compiled by TVM against the numpy reference, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from tvm_qnn_ext import op as qop
from tvm_qnn_ext.op.registry import QnnTypeError
from tvm_qnn_ext.quantization import QuantizationParamError, dtype_range
from tvm_qnn_ext.quantization import activation as ref
from tvm_qnn_ext.testing.batch import Case, build_module, run_cases
from tvm_qnn_ext.testing.litert import LiteRTRunner
from tvm_qnn_ext.testing.tflite_builder import single_op_model

DTYPES = ("int8", "uint8")
KINDS = ("LOGISTIC", "TANH", "HARD_SWISH", "LEAKY_RELU", "RELU", "RELU6", "RELU_N1_TO_1")
RELU_BOUNDS = {"RELU": (0.0, None), "RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0)}


def _params(rng, kind: str, dtype: str) -> dict:
    """Random quantization parameters that LiteRT accepts for ``kind``."""
    lo, hi = dtype_range(dtype)
    p = dict(
        input_scale=float(10 ** rng.uniform(-3, 0)),
        input_zero_point=int(rng.integers(lo, hi + 1)),
        output_scale=float(10 ** rng.uniform(-3, 0)),
        output_zero_point=int(rng.integers(lo, hi + 1)),
    )
    if kind == "LOGISTIC":
        p["output_scale"] = 1.0 / 256  # LiteRT requires it
        if rng.random() < 0.5:
            p["output_zero_point"] = lo
    if kind == "HARD_SWISH":  # LiteRT requires input_scale < 128 * output_scale
        p["output_scale"] = max(p["output_scale"], p["input_scale"] / 100)
    if kind == "LEAKY_RELU":
        p["alpha"] = float(rng.uniform(-1.5, 1.5))
    return p


def _ref_table(kind: str, dtype: str, p: dict) -> np.ndarray:
    q = (p["input_scale"], p["input_zero_point"], p["output_scale"], p["output_zero_point"])
    if kind == "LOGISTIC":
        return ref.logistic_table(*q, dtype)
    if kind == "TANH":
        return ref.tanh_table(*q, dtype)
    if kind == "HARD_SWISH":
        return ref.hard_swish_table(*q, dtype)
    if kind == "LEAKY_RELU":
        return ref.leaky_relu_table(p["alpha"], *q, dtype)
    lo, hi = RELU_BOUNDS[kind]
    return ref.relu_table(*q, dtype, lo=lo, hi=hi)


def _constructor(kind: str, p: dict, dtype: str):
    kw = {k: v for k, v in p.items() if k != "alpha"}
    if kind == "LOGISTIC":
        return lambda x: qop.logistic(x, out_dtype=dtype, **kw)
    if kind == "TANH":
        return lambda x: qop.tanh(x, out_dtype=dtype, **kw)
    if kind == "HARD_SWISH":
        return lambda x: qop.hard_swish(x, out_dtype=dtype, **kw)
    if kind == "LEAKY_RELU":
        return lambda x: qop.leaky_relu(x, p["alpha"], out_dtype=dtype, **kw)
    lo, hi = RELU_BOUNDS[kind]
    return lambda x: qop.relu(x, out_dtype=dtype, lo=lo, hi=hi, **kw)


def _tflite_model(kind, dtype, p, shape, **options):
    q_in = dict(shape=shape, dtype=dtype, scale=p["input_scale"], zero_point=p["input_zero_point"])
    q_out = dict(
        shape=shape, dtype=dtype, scale=p["output_scale"], zero_point=p["output_zero_point"]
    )
    return single_op_model(kind, [q_in], [q_out], **options)


def _all_values(dtype: str) -> np.ndarray:
    return ref.table_inputs(dtype).astype(dtype).reshape(1, 256)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_reference_matches_litert(kind, dtype):
    """Every input value, 25 random quantizations per (op, dtype)."""
    rng = np.random.default_rng(abs(hash((kind, dtype))) % 2**32)
    x = _all_values(dtype)
    for _ in range(25):
        p = _params(rng, kind, dtype)
        opts = {"alpha": p["alpha"]} if kind == "LEAKY_RELU" else {}
        got = LiteRTRunner(_tflite_model(kind, dtype, p, x.shape, **opts))([x])[0]
        np.testing.assert_array_equal(
            got, ref.apply_table(x, _ref_table(kind, dtype, p), dtype), err_msg=f"{kind} {p}"
        )


def _softmax_params(rng, dtype):
    lo, _ = dtype_range(dtype)
    return dict(
        beta=float(rng.choice([1.0, rng.uniform(0.05, 4.0)])),
        input_scale=float(10 ** rng.uniform(-3, 1)),
        input_zero_point=int(rng.integers(lo, dtype_range(dtype)[1] + 1)),
        output_scale=1.0 / 256,
        output_zero_point=lo,
    )


def _ref_softmax(x, p, axis=-1, dtype=None):
    y = ref.softmax(
        np.moveaxis(x, axis, -1),
        p["beta"],
        p["input_scale"],
        p["input_zero_point"],
        p["output_scale"],
        p["output_zero_point"],
        dtype,
    )
    return np.moveaxis(y, -1, axis)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_reference_matches_litert(dtype):
    rng = np.random.default_rng(7 if dtype == "int8" else 8)
    lo, hi = dtype_range(dtype)
    for _ in range(60):
        p = _softmax_params(rng, dtype)
        shape = tuple(int(d) for d in rng.integers(1, 5, int(rng.integers(1, 4)))) + (
            int(rng.integers(1, 70)),
        )
        x = rng.integers(lo, hi + 1, shape).astype(dtype)
        q_in = dict(shape=shape, dtype=dtype, scale=p["input_scale"])
        q_in["zero_point"] = p["input_zero_point"]
        q_out = dict(shape=shape, dtype=dtype, scale=1 / 256, zero_point=lo)
        model = single_op_model("SOFTMAX", [q_in], [q_out], beta=p["beta"])
        got = LiteRTRunner(model)([x])[0]
        np.testing.assert_array_equal(got, _ref_softmax(x, p), err_msg=str(p))


def _lookup_cases(rng, n: int) -> tuple[list[Case], list[np.ndarray]]:
    cases, wants = [], []
    for i in range(n):
        kind, dtype = KINDS[i % len(KINDS)], DTYPES[(i // len(KINDS)) % 2]
        p = _params(rng, kind, dtype)
        x = _all_values(dtype)
        cases.append(Case([x], _constructor(kind, p, dtype), meta=dict(kind=kind, p=p)))
        wants.append(ref.apply_table(x, _ref_table(kind, dtype, p), dtype))
    return cases, wants


def test_lookup_table_ops_match_reference():
    """210 cases (30 per activation, both dtypes), each over all 256 input values."""
    cases, wants = _lookup_cases(np.random.default_rng(11), 210)
    for case, got, want in zip(cases, run_cases(cases), wants, strict=True):
        np.testing.assert_array_equal(got, want, err_msg=str(case.meta))


def _softmax_cases(rng, n: int) -> tuple[list[Case], list[np.ndarray]]:
    cases, wants = [], []
    for i in range(n):
        dtype = DTYPES[i % 2]
        lo, hi = dtype_range(dtype)
        p = _softmax_params(rng, dtype)
        if i % 3 == 1:  # outside LiteRT's accepted output quantization: same formula
            p["output_scale"] = float(10 ** rng.uniform(-3, 0))
            p["output_zero_point"] = int(rng.integers(lo, hi + 1))
        shape = (int(rng.integers(1, 5)), int(rng.integers(1, 6)), int(rng.integers(1, 40)))
        axis = int(rng.choice([-1, 0, 1]))
        x = rng.integers(lo, hi + 1, shape).astype(dtype)
        kw = {k: v for k, v in p.items() if k != "beta"}
        cases.append(
            Case(
                [x],
                lambda v, a=axis, b=p["beta"], kw=kw, d=dtype: qop.softmax(
                    v, a, b, out_dtype=d, **kw
                ),
                meta=dict(p=p, axis=axis),
            )
        )
        wants.append(_ref_softmax(x, p, axis))
    return cases, wants


def _check_softmax(n: int, seed: int):
    cases, wants = _softmax_cases(np.random.default_rng(seed), n)
    for case, got, want in zip(cases, run_cases(cases), wants, strict=True):
        np.testing.assert_array_equal(got, want, err_msg=str(case.meta))


def test_softmax_op_matches_reference():
    """24 quantizations x up to 20 rows each (the float32 emulation runs per row); the slow
    variant runs 240."""
    _check_softmax(24, 12)


@pytest.mark.slow
def test_softmax_op_matches_reference_many():
    _check_softmax(240, 13)


def test_legalized_tir_is_integer_only():
    rng = np.random.default_rng(3)
    cases = _lookup_cases(rng, 7)[0] + _softmax_cases(rng, 4)[0]
    mod = relax.transform.LegalizeOps()(build_module(cases))
    prim_funcs = [f for _, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert len(prim_funcs) >= 2
    for f in prim_funcs:
        text = f.script()
        assert "float" not in text and "T.round" not in text, text[:2000]


def test_bad_input_raises():
    x = relax.Var("x", relax.TensorType((4,), "int8"))
    with pytest.raises(QnnTypeError, match="256 entries"):
        qop.lookup_table(x, np.zeros(10, np.int8), "int8")
    with pytest.raises(QnnTypeError, match="differs from out_dtype"):
        qop.tanh(
            x,
            input_scale=0.1,
            input_zero_point=0,
            output_scale=0.1,
            output_zero_point=0,
            out_dtype="uint8",
        )
    with pytest.raises(QuantizationParamError, match="too large"):
        ref.hard_swish_table(1.0, 0, 0.001, 0, "int8")
    with pytest.raises(QuantizationParamError, match="scale"):
        ref.logistic_table(-1.0, 0, 1 / 256, -128, "int8")
    with pytest.raises(QnnTypeError, match="beta"):
        qop.softmax(x, beta=0.0, input_scale=0.1, input_zero_point=0)
    bb = relax.BlockBuilder()
    f = relax.Var("f", relax.TensorType((4,), "float32"))
    with pytest.raises(Exception, match="int8"):
        with bb.function("main", [f]):
            bb.emit(qop.softmax(f, input_scale=0.1, input_zero_point=0))

"""PRELU (int8/uint8) against LiteRT's builtin kernel, bit for bit: the numpy reference on 200
random models, and imported + compiled models (one module) on 16."""

from __future__ import annotations

import numpy as np
import pytest

from tvm_qnn_ext.quantization import dtype_range
from tvm_qnn_ext.quantization import elementwise as ref

pytest.importorskip("ai_edge_litert")


def _case(i: int) -> dict:
    rng = np.random.default_rng(500 + i)
    dtype = ("int8", "uint8")[i % 2]
    lo, hi = dtype_range(dtype)
    shape = (1, int(rng.integers(1, 6)), int(rng.integers(1, 6)), int(rng.choice([1, 3, 8, 17])))
    ashape = [shape, shape[-1:], (1, 1, shape[-1]), (1,), (1, shape[1], 1, 1)][i % 5]
    s_in, s_alpha = (float(np.float32(np.exp(rng.uniform(-6, 0)))) for _ in range(2))
    s_out = float(np.float32(s_in * np.exp(rng.uniform(-1, 1))))
    if i % 3 == 0:  # scales with exact ratios: many results on rounding ties
        s_in, s_alpha, s_out = 0.05, 1 / 128, 0.05 * 2.0 ** int(rng.integers(-1, 2))
    q = dict(
        lhs_scale=s_in,
        lhs_zero_point=int(rng.integers(lo, hi + 1)),
        rhs_scale=s_alpha,
        rhs_zero_point=int(rng.integers(lo, hi + 1)),
        output_scale=s_out,
        output_zero_point=int(rng.integers(lo, hi + 1)),
    )
    alpha = rng.integers(lo, hi + 1, ashape).astype(dtype)
    return dict(dtype=dtype, shape=shape, alpha=alpha, const=i % 4 != 3, q=q, seed=i)


def _model(case) -> bytes:
    from tvm_qnn_ext.testing.tflite_builder import single_op_model

    q, dtype, alpha = case["q"], case["dtype"], case["alpha"]
    extra = {"data": alpha} if case["const"] else {}
    return single_op_model(
        "PRELU",
        [
            dict(shape=case["shape"], dtype=dtype, scale=[q["lhs_scale"]],
                 zero_point=[q["lhs_zero_point"]]),
            dict(shape=alpha.shape, dtype=dtype, scale=[q["rhs_scale"]],
                 zero_point=[q["rhs_zero_point"]], **extra),
        ],
        [dict(shape=case["shape"], dtype=dtype, scale=[q["output_scale"]],
              zero_point=[q["output_zero_point"]])],
    )  # fmt: skip


def _inputs(case, rng) -> list[np.ndarray]:
    lo, hi = dtype_range(case["dtype"])
    x = rng.integers(lo, hi + 1, case["shape"]).astype(case["dtype"])
    return [x] if case["const"] else [x, case["alpha"]]


def test_prelu_reference_matches_litert():
    from tvm_qnn_ext.testing.litert import LiteRTRunner

    for i in range(200):
        case = _case(i)
        runner = LiteRTRunner(_model(case))
        rng = np.random.default_rng(i)
        for _ in range(2):
            inputs = _inputs(case, rng)
            (want,) = runner(inputs)
            got = ref.prelu(inputs[0], case["alpha"], **case["q"], out_dtype=case["dtype"])
            np.testing.assert_array_equal(got, want, err_msg=str(case))


def test_prelu_compiled_matches_litert():
    from tvm_qnn_ext.frontend import from_tflite
    from tvm_qnn_ext.testing.fuzz_tflite import compile_batch, run_vm
    from tvm_qnn_ext.testing.litert import LiteRTRunner

    cases = [_case(i) for i in range(16)]
    models = [_model(c) for c in cases]
    vm = compile_batch({f"case_{i}": from_tflite(m) for i, m in enumerate(models)})
    for i, (case, model) in enumerate(zip(cases, models, strict=True)):
        runner, rng = LiteRTRunner(model), np.random.default_rng(i)
        for _ in range(3):
            inputs = _inputs(case, rng)
            np.testing.assert_array_equal(
                run_vm(vm, f"case_{i}", inputs)[0], runner(inputs)[0], err_msg=str(case)
            )


def test_prelu_float_rounding_rejected():
    x = np.zeros((2, 3), np.int8)
    q = _case(1)["q"]
    q = dict(q, lhs_zero_point=0, rhs_zero_point=0, output_zero_point=0)
    with pytest.raises(ValueError, match="qnn.prelu: rounding 'float'"):
        ref.prelu(x, x, **q, rounding="float")

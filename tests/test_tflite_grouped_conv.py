"""Grouped CONV_2D (filter depth below the input's) against LiteRT's builtin kernel.

LiteRT runs grouped convolutions in TFLite's reference kernel, which rounds the requantize
ties away from zero (ungrouped CONV_2D goes through ruy, which rounds them up).  Scales chosen
so that s_in * s_w / s_out = 1/32 put one accumulator in 32 on a tie.
"""

from __future__ import annotations

import numpy as np
import pytest

from tvm_qnn_ext.quantization import dtype_range

pytest.importorskip("ai_edge_litert")


def _model(rng, dtype: str, groups: int, per_group_in: int, per_group_out: int) -> bytes:
    from tvm_qnn_ext.testing.tflite_builder import single_op_model

    cin, cout = groups * per_group_in, groups * per_group_out
    zp_w = 0 if dtype == "int8" else 128
    w = (zp_w + rng.integers(-4, 5, (cout, 3, 3, per_group_in))).astype(dtype)
    s_in, s_out = 0.5, 1 / 4
    s_w = [1 / 64] * (cout if dtype == "int8" else 1)
    zp_w = [zp_w] * len(s_w)
    bias = rng.integers(-200, 200, cout).astype(np.int32)
    zp_in, zp_out = (3, -5) if dtype == "int8" else (130, 120)
    return single_op_model(
        "CONV_2D",
        [
            dict(shape=(1, 6, 7, cin), dtype=dtype, scale=[s_in], zero_point=[zp_in]),
            dict(shape=w.shape, dtype=dtype, scale=s_w, zero_point=zp_w, data=w),
            dict(shape=(cout,), dtype="int32", scale=[s_in * s for s in s_w],
                 zero_point=[0] * len(s_w), data=bias),
        ],
        [dict(shape=(1, 6, 7, cout), dtype=dtype, scale=[s_out], zero_point=[zp_out])],
        padding="SAME",
    )  # fmt: skip


def _ours(model: bytes):
    from tvm_qnn_ext.frontend import from_tflite

    return from_tflite(model)


def _tvm_import_then_qdq_to_qnn(model: bytes):
    import tflite
    from tvm.relax.frontend.tflite import from_tflite

    from tvm_qnn_ext.transform.qdq_to_qnn import qdq_to_qnn

    return qdq_to_qnn(from_tflite(tflite.Model.GetRootAsModel(model, 0)), hard_fail=True)[0]


@pytest.mark.parametrize("importer", [_ours, _tvm_import_then_qdq_to_qnn])
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_grouped_conv_rounds_like_litert(dtype, importer):
    """Both paths share quantization.conv.litert_rounding (the QDQ path once rounded grouped
    convs ties-up: 45 int8 and 44 uint8 values off here)."""
    from tvm_qnn_ext.testing.fuzz_tflite import compile_batch, run_vm
    from tvm_qnn_ext.testing.litert import LiteRTRunner

    rng = np.random.default_rng(3 + (dtype == "uint8"))
    shapes = [(2, 1, 3), (3, 2, 2), (4, 3, 1)]  # (groups, in per group, out per group)
    models = [_model(rng, dtype, *s) for s in shapes]
    vm = compile_batch({f"case_{i}": importer(m) for i, m in enumerate(models)})
    lo, hi = dtype_range(dtype)
    for i, model in enumerate(models):
        runner = LiteRTRunner(model)
        cin = shapes[i][0] * shapes[i][1]
        for _ in range(4):
            x = rng.integers(lo, hi + 1, (1, 6, 7, cin)).astype(dtype)
            np.testing.assert_array_equal(run_vm(vm, f"case_{i}", [x])[0], runner([x])[0])

"""Which product of scales LiteRT's FULLY_CONNECTED and CONV_2D requantize with (issue 3).

FULLY_CONNECTED with one weight scale forms s_in * s_w in float32 (the legacy
GetQuantizedConvolutionMultipler); per-channel FULLY_CONNECTED and CONV_2D form it in double.
The two multipliers differ by a few units, which moves an output only when the accumulator
lands next to a rounding tie, so the cases are searched for: scales and accumulators where the
double and float32 products give different int8 outputs.  LiteRT builtin is the oracle.
"""

from __future__ import annotations

import numpy as np
import pytest

from tvm_qnn_ext import compile_model
from tvm_qnn_ext.oracle import litert
from tvm_qnn_ext.quantization import quantize_multiplier
from tvm_qnn_ext.quantization.fixed_point import multiply_by_quantized_multiplier
from tvm_qnn_ext.testing.tflite_builder import ModelBuilder

F32 = np.float32


def _requant(acc: np.ndarray, scale: np.ndarray) -> np.ndarray:
    m, shift = quantize_multiplier(np.asarray(scale, np.float64))
    return multiply_by_quantized_multiplier(acc, m, shift, "tflite_neon")


def _ties(rng, si: F32, so: F32, count: int) -> list[tuple[F32, int]]:
    """(weight scale, accumulator) pairs whose double and float32 products round apart."""
    # Effective scales of 0.03-0.5 round only once or twice after the multiply: ties are common.
    sw = (rng.uniform(0.03, 0.5, 100_000) * float(so) / float(si)).astype(F32)
    double = float(si) * sw.astype(np.float64) / float(so)
    single = (si * sw).astype(np.float64) / float(so)
    found: list[tuple[F32, int]] = []
    for acc in range(1, 250):
        a = np.full(sw.shape, acc, np.int64)
        d, s = _requant(a, double), _requant(a, single)
        for i in np.nonzero((d != s) & (np.abs(s) < 120))[0][:2]:
            found.append((sw[i], acc))
        if len(found) >= count:
            return found
    raise AssertionError("no rounding ties found; widen the search")


def _model(op: str, batch: int, si, sw: np.ndarray, so, bias: np.ndarray, per_channel: bool):
    units = len(bias)
    if op == "FULLY_CONNECTED":
        xs, ws, ys, kw = (batch, 1), (units, 1), (batch, units), {}
    else:
        xs, ws, ys = (1, batch, 1, 1), (units, 1, 1, 1), (1, batch, 1, units)
        kw = dict(padding="VALID")
    wscale = [float(s) for s in sw] if per_channel else float(sw[0])
    bscale = [float(si * s) for s in sw] if per_channel else float(si * sw[0])
    zp = [0] * units if per_channel else 0
    mb = ModelBuilder()
    x = mb.add_tensor("x", xs, "int8", scale=float(si), zero_point=0)
    w = mb.add_tensor("w", ws, "int8", scale=wscale, zero_point=zp, data=np.ones(ws, np.int8))
    b = mb.add_tensor("b", (units,), "int32", scale=bscale, zero_point=zp, data=bias)
    y = mb.add_tensor("y", ys, "int8", scale=float(so), zero_point=0)
    mb.add_op(op, [x, w, b], [y], **kw)
    return mb.finish(inputs=[x], outputs=[y]), xs


def _check(model: bytes, xs: tuple, expect_product: str, si, sw, so, bias) -> None:
    x = np.random.default_rng(1).integers(-3, 4, xs).astype(np.int8)
    want = litert(model)([x])[0]
    got = compile_model(model)(x)[0]
    np.testing.assert_array_equal(got, want)
    # The case discriminates: the other product would have been wrong somewhere.
    acc = x.reshape(-1, 1).astype(np.int64) + bias.astype(np.int64)[None, :]
    other = "double" if expect_product == "float32" else "float32"
    scale = (
        float(si) * sw.astype(np.float64) / float(so)
        if other == "double"
        else (si * sw).astype(np.float64) / float(so)
    )
    wrong = np.clip(_requant(acc, np.broadcast_to(scale, bias.shape)), -128, 127)
    assert np.any(wrong != want.reshape(acc.shape)), f"{other} product not excluded"


@pytest.mark.parametrize("batch", [1, 4])
def test_fully_connected_per_tensor_uses_float32_product(batch):
    rng = np.random.default_rng(batch)
    si, so = F32(0.0163), F32(0.0095)
    sw, acc = _ties(rng, si, so, 1)[0]
    bias = np.array([acc, acc - 1, acc + 1, -acc], np.int32)
    model, xs = _model("FULLY_CONNECTED", batch, si, np.array([sw] * 4), so, bias, False)
    _check(model, xs, "float32", si, np.array([sw] * 4), so, bias)


@pytest.mark.parametrize("op", ["FULLY_CONNECTED", "CONV_2D"])
def test_per_channel_and_conv_use_double_product(op):
    rng = np.random.default_rng(7)
    si, so = F32(0.021), F32(0.0113)
    per_channel = op == "FULLY_CONNECTED"
    if per_channel:
        pairs = _ties(rng, si, so, 8)
        sw = np.array([s for s, _ in pairs], F32)
        bias = np.array([a for _, a in pairs], np.int32)
    else:
        s, a = _ties(rng, si, so, 1)[0]
        sw, bias = np.array([s] * 4, F32), np.array([a, a - 1, a + 1, -a], np.int32)
    model, xs = _model(op, 4, si, sw, so, bias, per_channel)
    _check(model, xs, "double", si, sw, so, bias)


def _f32(bits: int) -> float:
    return float(np.array([bits], np.uint32).view(F32)[0])


def test_fuzzer_case_2027_2416():
    """benchmarks/fuzz_tflite.py --seed 2027 case 2416: 126 x K=5 FC, RELU_N1_TO_1, one row."""
    si, sw, so = _f32(1015413478), _f32(1024210120), _f32(1008472225)
    w = np.array([[-107, 83, -70, 73, -8], [109, 33, 120, -43, -78]], np.int8)
    bias = np.array([8516, -11198], np.int32)
    mb = ModelBuilder()
    x = mb.add_tensor("x", (1, 3, 2, 5), "int8", scale=si, zero_point=52)
    wt = mb.add_tensor("w", (2, 5), "int8", scale=sw, zero_point=0, data=w)
    b = mb.add_tensor("b", (2,), "int32", scale=_f32(974307755), zero_point=0, data=bias)
    y = mb.add_tensor("y", (6, 2), "int8", scale=so, zero_point=-26)
    mb.add_op("FULLY_CONNECTED", [x, wt, b], [y], fused_activation="RELU_N1_TO_1")
    model = mb.finish(inputs=[x], outputs=[y])
    rows = np.array([[114, 118, 65, 88, 8]] * 6, np.int8)  # row 0 accumulates 1182 on unit 1
    rows[1:] = np.random.default_rng(0).integers(-128, 128, (5, 5))
    inp = rows.reshape(1, 3, 2, 5)
    want = litert(model)([inp])[0]
    assert want[0, 1] == 44  # exact value 69.46875 - 26; double product rounds to 43
    np.testing.assert_array_equal(compile_model(model)(inp)[0], want)

"""The model builder and LiteRT oracle against the numpy reference arithmetic.

Each model is built with ``ModelBuilder``, run with LiteRT's builtin kernels, and compared bit
for bit with integer accumulators computed here in numpy and requantized with
``tvm_qnn_ext.quantization``: a mismatch means the builder wrote the wrong model or the
reference is wrong.
"""

from __future__ import annotations

import numpy as np
import pytest

from tvm_qnn_ext.quantization import (
    dtype_range,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    requantize,
)
from tvm_qnn_ext.testing.litert import LiteRTRunner, model_details, run_litert
from tvm_qnn_ext.testing.tflite_builder import ModelBuilder, TFLiteBuildError, single_op_model

F32 = np.float32


def _f32(x):
    """Scales as TFLite stores them (float32), widened to double as its kernels use them."""
    return np.asarray(x, dtype=F32).astype(np.float64)


def _gemm_requantize(acc, in_scale, out_scale, out_zp, dtype, axis=None, lo=None, hi=None):
    """Requantize as LiteRT's CONV_2D / FULLY_CONNECTED do on x86 (measured): the gemm runs in
    ruy, whose output stage is SaturatingRoundingDoublingHighMul followed by a right shift
    rounding ties toward +inf, not TFLite's RoundingDivideByPOT (ties away from zero).
    DEPTHWISE_CONV_2D uses TFLite's own double rounding, i.e. ``requantize``."""
    real = np.asarray(in_scale, np.float64) / np.float64(out_scale)
    if axis is not None and real.size > 1:
        shape = [1] * acc.ndim
        shape[axis] = real.size
        real = real.reshape(shape)
    m, shift = quantize_multiplier(real)
    left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
    high = multiply_by_quantized_multiplier(acc.astype(np.int64) << left, m, 0).astype(np.int64)
    out = ((high + ((np.int64(1) << right) >> 1)) >> right) + out_zp
    qlo, qhi = dtype_range(dtype)
    lo, hi = qlo if lo is None else lo, qhi if hi is None else hi
    return np.clip(out, lo, hi).astype(dtype)


def _rand(rng, shape, dtype):
    lo, hi = dtype_range(dtype)
    return rng.integers(lo, hi + 1, size=shape).astype(dtype)


def _act_range(act: str, scale: float, zp: int, dtype: str) -> tuple[int, int]:
    lo, hi = dtype_range(dtype)
    if act == "RELU":
        lo = max(lo, zp)
    elif act == "RELU6":
        lo, hi = max(lo, zp), min(hi, zp + int(np.round(6.0 / float(F32(scale)))))
    return lo, hi


def _conv_acc(x, w, bias, zp_x, stride, pad, depthwise=False, zp_w=0):
    """int64 NHWC conv accumulator; w is OHWI (or 1HWC for depthwise, multiplier 1)."""
    xc = x.astype(np.int64) - zp_x
    xc = np.pad(xc, ((0, 0), pad[0], pad[1], (0, 0)))  # padding by zp_x == 0 after centering
    wc = w.astype(np.int64) - zp_w
    kh, kw = w.shape[1:3]
    oh = (xc.shape[1] - kh) // stride + 1
    ow = (xc.shape[2] - kw) // stride + 1
    cout = w.shape[3] if depthwise else w.shape[0]
    acc = np.zeros((x.shape[0], oh, ow, cout), np.int64)
    for i in range(kh):
        for j in range(kw):
            patch = xc[:, i : i + stride * oh : stride, j : j + stride * ow : stride, :]
            if depthwise:
                acc += patch * wc[0, i, j, :]
            else:
                acc += np.einsum("nhwc,oc->nhwo", patch, wc[:, i, j, :])
    return acc + bias.astype(np.int64)


def _same_pad(size, k, stride):
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return (total // 2, total - total // 2)


@pytest.mark.parametrize("act", ["NONE", "RELU", "RELU6"])
def test_conv2d_per_channel(act):
    rng = np.random.default_rng(1)
    n, h, w_, cin, cout, k, stride = 2, 7, 6, 3, 5, 3, 2
    s_in, zp_in, s_out, zp_out = 0.04, -5, 0.15, 3
    s_w = rng.uniform(0.002, 0.02, cout).astype(F32)
    s_b = (_f32(s_in) * _f32(s_w)).astype(F32)
    w = _rand(rng, (cout, k, k, cin), "int8")
    w[w == -128] = -127
    bias = rng.integers(-3000, 3000, cout).astype(np.int32)
    mb = ModelBuilder()
    x_t = mb.add_tensor("x", (n, h, w_, cin), "int8", s_in, zp_in)
    w_t = mb.add_tensor("w", w.shape, "int8", s_w, [0] * cout, 0, data=w)
    b_t = mb.add_tensor("b", (cout,), "int32", s_b, [0] * cout, 0, data=bias)
    pad = (_same_pad(h, k, stride), _same_pad(w_, k, stride))
    oh, ow = -(-h // stride), -(-w_ // stride)
    y_t = mb.add_tensor("y", (n, oh, ow, cout), "int8", s_out, zp_out)
    mb.add_op(
        "CONV_2D", [x_t, w_t, b_t], [y_t], padding="SAME", stride_w=stride, stride_h=stride,
        fused_activation=act,
    )  # fmt: skip
    runner = LiteRTRunner(mb.finish([x_t], [y_t]))
    lo, hi = _act_range(act, s_out, zp_out, "int8")
    for _ in range(20):
        x = _rand(rng, (n, h, w_, cin), "int8")
        acc = _conv_acc(x, w, bias, zp_in, stride, pad)
        want = _gemm_requantize(acc, _f32(s_in) * _f32(s_w), _f32(s_out), zp_out, "int8", 3, lo, hi)
        (got,) = runner([x])
        np.testing.assert_array_equal(got, want)


def test_depthwise_conv2d_per_channel():
    rng = np.random.default_rng(2)
    n, h, w_, c, k = 1, 9, 9, 6, 3
    s_in, zp_in, s_out, zp_out = 0.02, 10, 0.05, -7
    s_w = rng.uniform(0.005, 0.05, c).astype(F32)
    w = _rand(rng, (1, k, k, c), "int8")
    w[w == -128] = -127
    bias = rng.integers(-500, 500, c).astype(np.int32)
    mb = ModelBuilder()
    x_t = mb.add_tensor("x", (n, h, w_, c), "int8", s_in, zp_in)
    w_t = mb.add_tensor("w", w.shape, "int8", s_w, 0, quantized_dimension=3, data=w)
    b_t = mb.add_tensor("b", (c,), "int32", _f32(s_in) * _f32(s_w), 0, data=bias)
    y_t = mb.add_tensor("y", (n, h - k + 1, w_ - k + 1, c), "int8", s_out, zp_out)
    mb.add_op("DEPTHWISE_CONV_2D", [x_t, w_t, b_t], [y_t], padding="VALID", depth_multiplier=1)
    runner = LiteRTRunner(mb.finish([x_t], [y_t]))
    for _ in range(20):
        x = _rand(rng, (n, h, w_, c), "int8")
        acc = _conv_acc(x, w, bias, zp_in, 1, ((0, 0), (0, 0)), depthwise=True)
        want = requantize(acc, _f32(s_in) * _f32(s_w), 0, _f32(s_out), zp_out, "int8", axis=3)
        np.testing.assert_array_equal(runner([x])[0], want)


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_fully_connected(dtype):
    rng = np.random.default_rng(3)
    batch, k, units = 4, 17, 9
    s_in, s_w, s_out = 0.03, 0.011, 0.2
    zp_in, zp_out = (-4, 6) if dtype == "int8" else (120, 130)
    zp_w = 0 if dtype == "int8" else 128
    w = _rand(rng, (units, k), dtype)
    if dtype == "int8":
        w[w == -128] = -127
    bias = rng.integers(-2000, 2000, units).astype(np.int32)
    model = single_op_model(
        "FULLY_CONNECTED",
        [
            dict(shape=(batch, k), dtype=dtype, scale=s_in, zero_point=zp_in),
            dict(shape=w.shape, dtype=dtype, scale=s_w, zero_point=zp_w, data=w),
            dict(shape=(units,), dtype="int32", scale=_f32(s_in) * _f32(s_w), data=bias),
        ],
        [dict(shape=(batch, units), dtype=dtype, scale=s_out, zero_point=zp_out)],
    )
    runner = LiteRTRunner(model)
    for _ in range(40):
        x = _rand(rng, (batch, k), dtype)
        acc = (x.astype(np.int64) - zp_in) @ (w.astype(np.int64) - zp_w).T + bias
        want = _gemm_requantize(acc, _f32(s_in) * _f32(s_w), _f32(s_out), zp_out, dtype)
        np.testing.assert_array_equal(runner([x])[0], want)


def _tflite_add(x1, x2, q1, q2, qo, dtype, sign=1):
    """TFLite's int8/uint8 ADD (SUB with sign=-1): both inputs brought to a common scale."""
    (s1, z1), (s2, z2), (so, zo) = q1, q2, qo
    twice_max = 2.0 * max(_f32(s1), _f32(s2))
    left = 20
    m1, sh1 = quantize_multiplier(_f32(s1) / twice_max)
    m2, sh2 = quantize_multiplier(_f32(s2) / twice_max)
    mo, sho = quantize_multiplier(twice_max / ((1 << left) * _f32(so)))
    a1 = multiply_by_quantized_multiplier((x1.astype(np.int64) - z1) << left, m1, sh1)
    a2 = multiply_by_quantized_multiplier((x2.astype(np.int64) - z2) << left, m2, sh2)
    out = multiply_by_quantized_multiplier(a1.astype(np.int64) + sign * a2, mo, sho)
    lo, hi = dtype_range(dtype)
    return np.clip(out.astype(np.int64) + zo, lo, hi).astype(dtype)


@pytest.mark.parametrize("op", ["ADD", "SUB"])
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_add_sub_broadcast(op, dtype):
    rng = np.random.default_rng(4)
    lo, hi = dtype_range(dtype)
    for trial in range(6):
        q = [(float(rng.uniform(0.005, 0.5)), int(rng.integers(lo, hi + 1))) for _ in range(3)]
        shape2 = (1, 1, 5) if trial % 2 else (3, 4, 5)
        model = single_op_model(
            op,
            [
                dict(shape=(3, 4, 5), dtype=dtype, scale=q[0][0], zero_point=q[0][1]),
                dict(shape=shape2, dtype=dtype, scale=q[1][0], zero_point=q[1][1]),
            ],
            [dict(shape=(3, 4, 5), dtype=dtype, scale=q[2][0], zero_point=q[2][1])],
        )
        x1, x2 = _rand(rng, (3, 4, 5), dtype), _rand(rng, shape2, dtype)
        want = _tflite_add(x1, x2, *q, dtype, sign=1 if op == "ADD" else -1)
        np.testing.assert_array_equal(run_litert(model, [x1, x2])[0], want)


def test_three_op_chain():
    """CONV_2D (RELU6) -> MAX_POOL_2D -> FULLY_CONNECTED, int8, per-channel conv weights."""
    rng = np.random.default_rng(5)
    s_in, zp_in, s_mid, zp_mid, s_out, zp_out = 0.05, 2, 0.03, -100, 0.4, 1
    w1 = _rand(rng, (4, 3, 3, 2), "int8")
    s_w1 = rng.uniform(0.01, 0.03, 4).astype(F32)
    b1 = rng.integers(-100, 100, 4).astype(np.int32)
    w2 = _rand(rng, (3, 2 * 2 * 4), "int8")
    s_w2 = 0.02
    b2 = rng.integers(-100, 100, 3).astype(np.int32)
    mb = ModelBuilder()
    x = mb.add_tensor("x", (1, 6, 6, 2), "int8", s_in, zp_in)
    c1 = mb.add_tensor("w1", w1.shape, "int8", s_w1, 0, data=w1)
    c2 = mb.add_tensor("b1", (4,), "int32", _f32(s_in) * _f32(s_w1), 0, data=b1)
    y1 = mb.add_tensor("conv", (1, 4, 4, 4), "int8", s_mid, zp_mid)
    y2 = mb.add_tensor("pool", (1, 2, 2, 4), "int8", s_mid, zp_mid)
    c3 = mb.add_tensor("w2", w2.shape, "int8", s_w2, 0, data=w2)
    c4 = mb.add_tensor("b2", (3,), "int32", _f32(s_mid) * _f32(s_w2), 0, data=b2)
    y3 = mb.add_tensor("fc", (1, 3), "int8", s_out, zp_out)
    mb.add_op("CONV_2D", [x, c1, c2], [y1], padding="VALID", fused_activation="RELU6")
    mb.add_op(
        "MAX_POOL_2D", [y1], [y2], padding="VALID", stride_w=2, stride_h=2, filter_w=2, filter_h=2
    )
    mb.add_op("FULLY_CONNECTED", [y2, c3, c4], [y3])
    runner = LiteRTRunner(mb.finish([x], [y3]))
    assert [t.shape for t in runner.outputs] == [(1, 3)]
    lo, hi = _act_range("RELU6", s_mid, zp_mid, "int8")
    for _ in range(5):
        xv = _rand(rng, (1, 6, 6, 2), "int8")
        acc = _conv_acc(xv, w1, b1, zp_in, 1, ((0, 0), (0, 0)))
        conv = _gemm_requantize(
            acc, _f32(s_in) * _f32(s_w1), _f32(s_mid), zp_mid, "int8", 3, lo, hi
        )
        pool = conv.reshape(1, 2, 2, 2, 2, 4).max(axis=(2, 4))
        acc2 = (pool.reshape(1, -1).astype(np.int64) - zp_mid) @ w2.astype(np.int64).T + b2
        want = _gemm_requantize(acc2, _f32(s_mid) * _f32(s_w2), _f32(s_out), zp_out, "int8")
        np.testing.assert_array_equal(runner([xv])[0], want)


@pytest.mark.parametrize(
    "op, options, in_shape, extra, out_shapes, dtype",
    [
        ("RESHAPE", dict(new_shape=[6, 4]), (2, 3, 4), [], [(6, 4)], "int8"),
        ("SQUEEZE", dict(squeeze_dims=[0]), (1, 3, 4), [], [(3, 4)], "uint8"),
        ("TRANSPOSE", {}, (2, 3, 4), [np.array([2, 0, 1], np.int32)], [(4, 2, 3)], "int8"),
        ("PAD", {}, (2, 3), [np.array([[1, 0], [0, 2]], np.int32)], [(3, 5)], "int8"),
        ("SPLIT", {}, (4, 6), "split", [(4, 3), (4, 3)], "int8"),
        ("CONCATENATION", dict(axis=1), (2, 3), "concat", [(2, 6)], "uint8"),
        ("PACK", dict(axis=0), (2, 3), "concat", [(2, 2, 3)], "int16"),
        (
            "STRIDED_SLICE",
            {},
            (5, 6),
            [np.array([1, 0], np.int32), np.array([5, 6], np.int32), np.array([2, 3], np.int32)],
            [(2, 2)],
            "int8",
        ),
    ],
)
def test_data_movement_ops(op, options, in_shape, extra, out_shapes, dtype):
    """Ops that move quantized values unchanged, against the numpy equivalent."""
    rng = np.random.default_rng(6)
    q = dict(scale=0.1, zero_point=0 if dtype == "int16" else 3)
    mb = ModelBuilder()
    x = mb.add_tensor("x", in_shape, dtype, **q)
    graph_in, op_in = [x], [x]
    if extra == "split":
        op_in = [mb.add_const("axis", np.array(1, np.int32)), x]
    elif extra == "concat":
        x2 = mb.add_tensor("x2", in_shape, dtype, **q)
        graph_in, op_in = [x, x2], [x, x2]
    else:
        op_in += [mb.add_const(f"c{i}", e) for i, e in enumerate(extra)]
    outs = [mb.add_tensor(f"y{i}", s, dtype, **q) for i, s in enumerate(out_shapes)]
    mb.add_op(op, op_in, outs, **options)
    xs = [_rand(rng, in_shape, dtype) for _ in graph_in]
    got = run_litert(mb.finish(graph_in, outs), xs)
    a = xs[0]
    want = {
        "RESHAPE": lambda: [a.reshape(6, 4)],
        "SQUEEZE": lambda: [a[0]],
        "TRANSPOSE": lambda: [a.transpose(2, 0, 1)],
        "PAD": lambda: [np.pad(a, ((1, 0), (0, 2)), constant_values=3)],
        "SPLIT": lambda: np.split(a, 2, axis=1),
        "CONCATENATION": lambda: [np.concatenate(xs, axis=1)],
        "PACK": lambda: [np.stack(xs, axis=0)],
        "STRIDED_SLICE": lambda: [a[1:5:2, 0:6:3]],
    }[op]()
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_details_report_quantization():
    model = single_op_model(
        "DEQUANTIZE",
        [dict(name="q", shape=(2, 3), dtype="uint8", scale=0.25, zero_point=128)],
        [dict(name="f", shape=(2, 3), dtype="float32")],
    )
    ins, outs = model_details(model)
    assert (ins[0].name, ins[0].shape, ins[0].dtype) == ("q", (2, 3), "uint8")
    assert ins[0].scale.tolist() == [0.25] and ins[0].zero_point.tolist() == [128]
    assert outs[0].dtype == "float32" and outs[0].scale.size == 0
    x = np.arange(250, 256, dtype=np.uint8).reshape(2, 3)
    np.testing.assert_array_equal(
        run_litert(model, [x])[0], (x.astype(np.float32) - 128) * np.float32(0.25)
    )


def test_bad_input_raises():
    mb = ModelBuilder()
    with pytest.raises(TFLiteBuildError, match="unknown TFLite builtin"):
        mb.add_op("NOT_AN_OP", [], [])
    with pytest.raises(TFLiteBuildError, match="per-channel"):
        mb.add_tensor("w", (3, 2), "int8", scale=[0.1, 0.2], zero_point=0)
    with pytest.raises(TFLiteBuildError, match="unsupported tensor dtype"):
        mb.add_tensor("x", (3,), "complex64")
    x = mb.add_tensor("x", (3,), "int8", 0.1, 0)
    with pytest.raises(TFLiteBuildError, match="no field 'bogus'"):
        mb.add_op("SOFTMAX", [x], [x], bogus=1)
    with pytest.raises(TFLiteBuildError, match="does not exist"):
        mb.add_op("RELU", [x], [7])
    model = single_op_model(
        "RELU", [dict(shape=(3,), dtype="int8", scale=0.1)], [dict(shape=(3,), dtype="int8")]
    )
    with pytest.raises(ValueError, match="expected int8"):
        LiteRTRunner(model)([np.zeros(3, np.uint8)])

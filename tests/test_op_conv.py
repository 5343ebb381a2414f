"""qnn.conv2d and qnn.dense against the numpy reference (bit for bit) and LiteRT's builtins.

The random batches compile at LLVM -O0 (3x faster to build; the integer semantics are the
same); the requantize chain and the LiteRT comparisons use the default optimisation level, and
``-m slow`` reruns the random batches at -O3 with more cases.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from tvm import relax

from tvm_qnn_ext import op
from tvm_qnn_ext.op import QnnTypeError
from tvm_qnn_ext.quantization import (
    INTEGER_MODES,
    QuantizationParamError,
    dtype_range,
    quantize_multiplier,
    requantize,
)
from tvm_qnn_ext.quantization import conv as ref
from tvm_qnn_ext.testing.batch import Case, run_cases
from tvm_qnn_ext.testing.tflite_builder import single_op_model

N_CASES = 210
FAST = {"kind": "llvm", "opt-level": 0}
KERNEL_LAYOUTS = ("OHWI", "HWIO", "OIHW", "IHWO")


def _rand_int(rng, shape, dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return rng.integers(info.min, int(info.max) + 1, shape).astype(dtype)


def _rand_zp(rng, dtype) -> int:
    info = np.iinfo(dtype)
    return int(rng.integers(info.min, int(info.max) + 1))


def _kernel_zp(rng, dtype, channels):
    """Zero, per tensor or per output channel, as the frameworks produce them."""
    kind = rng.integers(3)
    if kind == 0:
        return 0
    if kind == 1:
        return _rand_zp(rng, dtype)
    return [_rand_zp(rng, dtype) for _ in range(channels)]


def _weight_layout(w_oihw: np.ndarray, layout: str) -> np.ndarray:
    return np.ascontiguousarray(w_oihw.transpose(["OIHW".index(a) for a in layout]))


def _operands(rng, data, weight, bias):
    """Random mix of runtime inputs and constants: exercises both legalization paths."""
    w_const, b_mode = bool(rng.integers(2)), int(rng.integers(3))  # bias: none/input/const
    inputs = [data] + ([] if w_const else [weight]) + ([bias] if b_mode == 1 else [])

    def bind(params):
        it = iter(params)
        x = next(it)
        w = relax.const(weight) if w_const else next(it)
        b = {0: None, 1: lambda: next(it), 2: lambda: relax.const(bias)}[b_mode]
        return x, w, (b() if b else None)

    return inputs, bind, (bias if b_mode else None)


def _conv_params(rng, kind: str):
    """Random (data, weight, bias, attrs) of one conv2d: regular, depthwise or grouped."""
    data_layout = ("NHWC", "NCHW")[rng.integers(2)]
    n = int(rng.integers(1, 3))
    if kind == "depthwise":
        c = int(rng.integers(1, 7))
        groups, ig, o = c, 1, c * int(rng.integers(1, 4))
        kernel_layout = ("IHWO", "IHWO", "OIHW", "OHWI")[rng.integers(4)]
    elif kind == "grouped":
        groups, ig = int(rng.integers(2, 5)), int(rng.integers(1, 4))
        c, o = groups * ig, groups * int(rng.integers(1, 4))
        kernel_layout = KERNEL_LAYOUTS[rng.integers(4)]
    else:
        c, o, groups = int(rng.integers(1, 9)), int(rng.integers(1, 9)), 1
        ig = c
        kernel_layout = KERNEL_LAYOUTS[rng.integers(4)]
    while True:
        h, w = (int(v) for v in rng.integers(1, 10, 2))
        kh, kw = (int(v) for v in rng.integers(1, 5, 2))
        strides = tuple(int(v) for v in rng.integers(1, 4, 2))
        dilation = tuple(int(v) for v in rng.integers(1, 4, 2))
        padding = tuple(int(v) for v in rng.integers(0, 4, 4))
        if (
            h + padding[0] + padding[2] >= dilation[0] * (kh - 1) + 1
            and w + padding[1] + padding[3] >= dilation[1] * (kw - 1) + 1
        ):
            break
    dtype_x, dtype_w = (("int8", "uint8")[i] for i in rng.integers(2, size=2))
    shape = (n, h, w, c) if data_layout == "NHWC" else (n, c, h, w)
    data = _rand_int(rng, shape, dtype_x)
    weight = _weight_layout(_rand_int(rng, (o, ig, kh, kw), dtype_w), kernel_layout)
    bias = rng.integers(-(2**20), 2**20, o).astype("int32")
    attrs = dict(
        strides=strides,
        padding=padding,
        dilation=dilation,
        groups=groups,
        data_layout=data_layout,
        kernel_layout=kernel_layout,
        input_zero_point=_rand_zp(rng, dtype_x),
        kernel_zero_point=_kernel_zp(rng, dtype_w, o),
    )
    return data, weight, bias, attrs


def _conv_case(rng, kind: str) -> Case:
    data, weight, bias, attrs = _conv_params(rng, kind)
    inputs, bind, used_bias = _operands(rng, data, weight, bias)
    expected = ref.conv2d(data, weight, used_bias, **attrs)
    return Case(inputs, lambda *p: op.conv2d(*bind(p), **attrs), dict(attrs, expected=expected))


def _dense_case(rng):
    k, units = int(rng.integers(1, 41)), int(rng.integers(1, 11))
    lead = tuple(int(v) for v in rng.integers(1, 4, rng.integers(0, 3)))
    dtype_x, dtype_w = (("int8", "uint8")[i] for i in rng.integers(2, size=2))
    layout = ("NK", "KN")[rng.integers(2)]
    data = _rand_int(rng, lead + (k,), dtype_x)
    weight = _rand_int(rng, (units, k) if layout == "NK" else (k, units), dtype_w)
    bias = rng.integers(-(2**20), 2**20, units).astype("int32")
    attrs = dict(
        input_zero_point=_rand_zp(rng, dtype_x),
        kernel_zero_point=_kernel_zp(rng, dtype_w, units),
        weight_layout=layout,
    )
    inputs, bind, used_bias = _operands(rng, data, weight, bias)
    expected = ref.dense(data, weight, used_bias, **attrs)
    return Case(inputs, lambda *p: op.dense(*bind(p), **attrs), dict(attrs, expected=expected))


def _check(cases, target=FAST):
    outs = run_cases(cases, target)
    for i, (case, out) in enumerate(zip(cases, outs, strict=True)):
        expected = case.meta["expected"]
        assert out.dtype == np.int32 and out.shape == expected.shape, (i, case.meta)
        np.testing.assert_array_equal(out, expected, err_msg=f"case {i}: {case.meta}")


CONV_KINDS = ("regular", "depthwise", "grouped")


@pytest.mark.parametrize("kind", CONV_KINDS)
def test_conv2d_random_matches_reference(kind):
    rng = np.random.default_rng(1 + CONV_KINDS.index(kind))
    _check([_conv_case(rng, kind) for _ in range(N_CASES)])


def test_dense_random_matches_reference():
    rng = np.random.default_rng(4)
    _check([_dense_case(rng) for _ in range(N_CASES)])


@pytest.mark.slow
@pytest.mark.parametrize("kind", CONV_KINDS + ("dense",))
def test_random_matches_reference_optimized(kind):
    rng = np.random.default_rng(100 + len(kind))
    make = _dense_case if kind == "dense" else lambda r: _conv_case(r, kind)
    _check([make(rng) for _ in range(400)], target="llvm")


def _brute_conv(data, weight, bias, strides, padding, dilation, groups, zx, zw):
    """Scalar loops over NCHW data and OIHW weight: checks the reference itself."""
    n, c, h, w = data.shape
    o, ig, kh, kw = weight.shape
    zw = np.broadcast_to(np.asarray(zw, np.int64), (o,))
    oh = (h + padding[0] + padding[2] - dilation[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (w + padding[1] + padding[3] - dilation[1] * (kw - 1) - 1) // strides[1] + 1
    out = np.zeros((n, o, oh, ow), np.int64)
    for b, oc, y, x in itertools.product(range(n), range(o), range(oh), range(ow)):
        acc = int(bias[oc]) if bias is not None else 0
        for ic, i, j in itertools.product(range(ig), range(kh), range(kw)):
            yy = y * strides[0] + i * dilation[0] - padding[0]
            xx = x * strides[1] + j * dilation[1] - padding[1]
            cin = oc // (o // groups) * ig + ic
            v = int(data[b, cin, yy, xx]) if 0 <= yy < h and 0 <= xx < w else zx
            acc += (v - zx) * (int(weight[oc, ic, i, j]) - int(zw[oc]))
        out[b, oc, y, x] = acc
    return out


def test_reference_conv2d_matches_scalar_loops():
    rng = np.random.default_rng(5)
    for i in range(30):
        data, weight, bias, a = _conv_params(rng, ("regular", "depthwise", "grouped")[i % 3])
        got = ref.conv2d(data, weight, bias, **a)
        nhwc = a["data_layout"] == "NHWC"
        x = data.transpose(0, 3, 1, 2) if nhwc else data
        w = weight.transpose([a["kernel_layout"].index(d) for d in "OIHW"])
        want = _brute_conv(
            x,
            w,
            bias,
            *(a[k] for k in ("strides", "padding", "dilation", "groups")),
            a["input_zero_point"],
            a["kernel_zero_point"],
        )
        np.testing.assert_array_equal(got.transpose(0, 3, 1, 2) if nhwc else got, want)


def test_reference_depthwise_ihwo_channel_mapping():
    """TFLite depthwise: output channel o = i * M + m reads input channel i."""
    rng = np.random.default_rng(6)
    c, m = 3, 2
    data = _rand_int(rng, (1, 4, 4, c), "int8")
    weight = _rand_int(rng, (1, 2, 2, c * m), "int8")
    got = ref.conv2d(data, weight, groups=c, kernel_layout="IHWO", input_zero_point=3)
    for oc in range(c * m):
        single = ref.conv2d(
            data[..., oc // m : oc // m + 1],
            weight[..., oc : oc + 1],
            kernel_layout="IHWO",
            input_zero_point=3,
        )
        np.testing.assert_array_equal(got[..., oc], single[..., 0])


def test_reference_dense_matches_scalar_loops():
    rng = np.random.default_rng(7)
    x = _rand_int(rng, (3, 7), "uint8")
    w = _rand_int(rng, (5, 7), "int8")
    b = rng.integers(-99, 99, 5).astype("int32")
    zw = [int(v) for v in rng.integers(-5, 5, 5)]
    got = ref.dense(x, w, b, input_zero_point=17, kernel_zero_point=zw)
    want = [
        [
            b[n] + sum((int(x[r, k]) - 17) * (int(w[n, k]) - zw[n]) for k in range(7))
            for n in range(5)
        ]
        for r in range(3)
    ]
    np.testing.assert_array_equal(got, want)


# ---- accumulator + qnn.requantize ----------------------------------------------------------


def test_requantize_per_channel_after_conv2d_and_dense():
    """The documented chain: accumulator, then per-output-channel requantize."""
    rng = np.random.default_rng(8)
    modes = INTEGER_MODES + ("float",)
    cases = []
    for i in range(32):
        kind = (*CONV_KINDS, "dense")[i % 4]
        if kind == "dense":
            x, w, b = (np.asarray(a) for a in _dense_parts(rng))
            attrs = dict(input_zero_point=int(rng.integers(-20, 20)), kernel_zero_point=0)
            acc = ref.dense(x, w, b, **attrs)
            channels, axis = w.shape[0], acc.ndim - 1
            build = lambda X, W, B, attrs=attrs: op.dense(X, W, B, **attrs)
        else:
            x, w, b, attrs = _conv_params(rng, kind)
            acc = ref.conv2d(x, w, b, **attrs)
            axis = 3 if attrs["data_layout"] == "NHWC" else 1
            channels = acc.shape[axis]
            build = lambda X, W, B, attrs=attrs: op.conv2d(X, W, B, **attrs)
        s_in = float(rng.uniform(0.005, 0.05))
        in_scale = [s_in * float(s) for s in rng.uniform(0.001, 0.02, channels)]
        out_scale = float(rng.uniform(0.05, 5.0))
        out_dtype = ("int8", "uint8")[i % 2]
        out_zp = _rand_zp(rng, out_dtype)
        rounding = modes[i % len(modes)]
        expected = requantize(acc, in_scale, 0, out_scale, out_zp, out_dtype, rounding, axis)

        def chain(X, W, B, build=build, q=(in_scale, out_scale, out_zp, out_dtype, axis, rounding)):
            in_s, out_s, zp, dtype, ax, rnd = q
            return op.requantize(build(X, W, B), in_s, 0, out_s, zp, dtype, axis=ax, rounding=rnd)

        cases.append(Case([x, w, b], chain, dict(kind=kind, rounding=rounding, expected=expected)))
    outs = run_cases(cases)
    for case, out in zip(cases, outs, strict=True):
        np.testing.assert_array_equal(out, case.meta["expected"], err_msg=str(case.meta))


def _dense_parts(rng):
    k, units = int(rng.integers(1, 30)), int(rng.integers(1, 9))
    x = _rand_int(rng, (int(rng.integers(1, 4)), k), "int8")
    w = _rand_int(rng, (units, k), "int8")
    return x, w, rng.integers(-5000, 5000, units).astype("int32")


# ---- legalization structure -------------------------------------------------------------------


def _legalized(expr_fn, *inputs):
    bb = relax.BlockBuilder()
    params = [
        relax.Var(f"x{i}", relax.TensorType(a.shape, str(a.dtype))) for i, a in enumerate(inputs)
    ]
    with bb.function("main", params):
        bb.emit_func_output(bb.emit(expr_fn(*params)))
    mod = relax.transform.LegalizeOps()(bb.get())
    return {gv.name_hint: f for gv, f in mod.functions.items() if gv.name_hint != "main"}


def _blocks(func) -> set[str]:
    lines = func.script().splitlines()
    return {ln.split('"')[1] for ln in lines if "T.sblock(" in ln} - {"root"}


def test_legalized_names_and_zero_point_folding():
    rng = np.random.default_rng(9)
    x = _rand_int(rng, (1, 6, 6, 4), "uint8")
    w = _rand_int(rng, (4, 3, 3, 4), "int8")
    dw = _rand_int(rng, (1, 3, 3, 8), "int8")
    # Constant weight, zero weight zp: zp_x * sum(w) folds into one constant; no extra stages.
    funcs = _legalized(
        lambda X: op.conv2d(X, relax.const(w), input_zero_point=7, padding=(1, 1, 1, 1)), x
    )
    assert set(funcs) == {"qnn_conv2d"}
    assert _blocks(funcs["qnn_conv2d"]) == {"pad", "dot", "accumulate"}
    # Runtime weight with a weight zp: the kernel and window sums are computed in the kernel.
    funcs = _legalized(lambda X, W: op.conv2d(X, W, input_zero_point=7, kernel_zero_point=3), x, w)
    assert _blocks(funcs["qnn_conv2d"]) == {"dot", "window_sum", "kernel_sum", "accumulate"}
    # Nothing to add: the dot product is the output.
    funcs = _legalized(lambda X, W: op.conv2d(X, W, groups=4, kernel_layout="IHWO"), x, dw)
    assert set(funcs) == {"qnn_depthwise_conv2d"}
    assert _blocks(funcs["qnn_depthwise_conv2d"]) == {"dot"}
    funcs = _legalized(lambda X: op.dense(X, relax.const(w.reshape(4, 36))), x.reshape(4, 36))
    assert set(funcs) == {"qnn_dense"} and _blocks(funcs["qnn_dense"]) == {"dot"}


# ---- bad input --------------------------------------------------------------------------------


def _emit(expr_fn, *types):
    bb = relax.BlockBuilder()
    params = [relax.Var(f"x{i}", relax.TensorType(s, d)) for i, (s, d) in enumerate(types)]
    with bb.function("main", params):
        bb.emit_func_output(bb.emit(expr_fn(*params)))


X8 = ((1, 5, 5, 4), "int8")
W8 = ((6, 3, 3, 4), "int8")


@pytest.mark.parametrize(
    "fn, types, match",
    [
        (lambda x, w: op.conv2d(x, w), [((1, 5, 5, 4), "float32"), W8], "data has dtype float32"),
        (lambda x, w: op.conv2d(x, w), [X8, ((6, 3, 3, 4), "int16")], "weight has dtype int16"),
        (lambda x, w: op.conv2d(x, w), [X8, ((6, 3, 3, 5), "int8")], "5 input channels"),
        (lambda x, w: op.conv2d(x, w, groups=3), [X8, ((6, 3, 3, 1), "int8")], "groups=3"),
        (lambda x, w: op.conv2d(x, w), [((5, 5, 4), "int8"), W8], "data has rank 3"),
        (lambda x, w, b: op.conv2d(x, w, b), [X8, W8, ((5,), "int32")], "bias has length 5"),
        (lambda x, w, b: op.conv2d(x, w, b), [X8, W8, ((6,), "int8")], "bias has dtype int8"),
        (
            lambda x, w: op.conv2d(x, w, kernel_zero_point=[0, 1, 2]),
            [X8, W8],
            "kernel_zero_point has 3 values",
        ),
        (lambda x, w: op.conv2d(x, w), [((1, 2, 2, 4), "int8"), W8], "empty output"),
        (lambda x, w: op.dense(x, w), [((3, 7), "int8"), ((4, 6), "int8")], "7 input features"),
        (lambda x, w: op.dense(x, w), [((3, 6), "int32"), ((4, 6), "int8")], "data has dtype"),
        (
            lambda x, w, b: op.dense(x, w, b),
            [((3, 6), "uint8"), ((4, 6), "int8"), ((6,), "int32")],
            "bias has length 6",
        ),
        (
            lambda x, w: op.dense(x, w, kernel_zero_point=[1, 2]),
            [((3, 6), "uint8"), ((4, 6), "uint8")],
            "kernel_zero_point has 2 values",
        ),
    ],
)
def test_bad_input_raises_qnn_type_error(fn, types, match):
    with pytest.raises(QnnTypeError, match=match) as info:
        _emit(fn, *types)
    assert "qnn.conv2d" in str(info.value) or "qnn.dense" in str(info.value)


def test_bad_attributes_raise():
    x = relax.Var("x", relax.TensorType(*X8))
    w = relax.Var("w", relax.TensorType(*W8))
    with pytest.raises(QnnTypeError, match="qnn.conv2d: data_layout"):
        op.conv2d(x, w, data_layout="NHCW")
    with pytest.raises(QnnTypeError, match="qnn.conv2d: kernel_layout"):
        op.conv2d(x, w, kernel_layout="OHWW")
    with pytest.raises(QnnTypeError, match="qnn.conv2d: strides"):
        op.conv2d(x, w, strides=(0, 1))
    with pytest.raises(QnnTypeError, match="qnn.dense: weight_layout"):
        op.dense(x, w, weight_layout="NN")
    with pytest.raises(QuantizationParamError, match="qnn.conv2d kernel_zero_point"):
        _emit(lambda a, b: op.conv2d(a, b, kernel_zero_point=200), X8, W8)
    with pytest.raises(QuantizationParamError, match="qnn.conv2d input_zero_point"):
        _emit(lambda a, b: op.conv2d(a, b, input_zero_point=-1), ((1, 5, 5, 4), "uint8"), W8)


# ---- LiteRT builtin kernels -------------------------------------------------------------------
#
# Measured on LiteRT 2.3 (x86, BUILTIN_WITHOUT_DEFAULT_DELEGATES): CONV_2D and FULLY_CONNECTED
# run their gemm in ruy, whose output stage rounds SaturatingRoundingDoublingHighMul's result
# with a right shift rounding ties toward +inf (qnn.requantize rounding "tflite_neon") instead
# of TFLite's RoundingDivideByPOT (ties away from zero, "tflite").  int8 per-channel
# DEPTHWISE_CONV_2D rounds its first 8 * (C // 8) output channels (SIMD blocks) ties-up and the
# remaining C % 8 ties-away (``neon_channels``); uint8 DEPTHWISE_CONV_2D is "tflite" throughout.
# ``_ruy_requantize`` re-derives the ties-up rounding independently of the package.

F32 = np.float32


def _ruy_requantize(acc, in_scale, out_scale, out_zp, dtype, lo, hi):
    m, shift = quantize_multiplier(np.asarray(in_scale, np.float64) / np.float64(out_scale))
    left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
    prod = (acc.astype(np.int64) << left) * m.astype(np.int64)
    nudge = np.where(prod >= 0, 1 << 30, 1 - (1 << 30))
    v = prod + nudge
    high = np.where(v >= 0, v >> 31, -((-v) >> 31))  # C division truncates toward zero
    out = ((high + ((np.int64(1) << right) >> 1)) >> right) + out_zp
    return np.clip(out, lo, hi).astype(dtype)


def _tflite_act_range(act, scale, zp, dtype):
    lo, hi = dtype_range(dtype)

    def q(v):  # TFLite: zp + round(v / scale) in float32, ties away from zero
        r = F32(v) / F32(scale)
        return zp + int(np.sign(r) * np.floor(abs(r) + F32(0.5)))

    if act in ("RELU", "RELU6"):
        lo = max(lo, q(0.0))
    if act == "RELU6":
        hi = min(hi, q(6.0))
    return lo, hi


def _same_padding(size, k, stride, dilation):
    eff = (k - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + eff - size, 0)
    return out, total // 2, total - total // 2


def _litert_case(rng, kind):
    """One random single-op TFLite model, its input, and how TVM computes the same thing."""
    opname, dtype = kind.split("_")
    per_channel = dtype == "int8"
    lo, hi = dtype_range(dtype)
    # Roundings differ only on ties below the output zero point (about 1 output in 500):
    # large outputs and mostly no fused activation give the comparison its power.
    n = int(rng.integers(1, 5))
    h, w_ = (int(v) for v in rng.integers(1, 21, 2))
    cin, mult = int(rng.integers(1, 9)), int(rng.integers(1, 4))
    kh, kw = (int(v) for v in rng.integers(1, 4, 2))
    strides = tuple(int(v) for v in rng.integers(1, 3, 2))
    dilation = tuple(int(v) for v in rng.integers(1, 3, 2))
    pad_mode = ("SAME", "VALID")[rng.integers(2)]
    if opname == "dw":
        cout, wshape, qdim = cin * mult, (1, kh, kw, cin * mult), 3
    elif opname == "conv":
        cout, wshape, qdim = int(rng.integers(1, 12)), None, 0
        wshape = (cout, kh, kw, cin)
    else:
        cout, wshape, qdim = int(rng.integers(1, 20)), None, 0
        k = int(rng.integers(1, 50))
        wshape = (cout, k)
    if opname != "fc":
        if pad_mode == "SAME":
            (oh, pt, pb), (ow, pl, pr) = (
                _same_padding(s, kk, st, d)
                for s, kk, st, d in zip((h, w_), (kh, kw), strides, dilation, strict=True)
            )
        else:
            eff_h, eff_w = (kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1
            h, w_ = max(h, eff_h), max(w_, eff_w)
            oh, ow = (h - eff_h) // strides[0] + 1, (w_ - eff_w) // strides[1] + 1
            pt = pl = pb = pr = 0
    s_in = float(F32(rng.uniform(0.005, 0.05)))
    nw = cout if per_channel and opname != "fc" else 1
    s_w = rng.uniform(0.001, 0.02, nw).astype(F32)
    zp_in, zp_out = _rand_zp(rng, dtype), _rand_zp(rng, dtype)
    zp_w = 0 if per_channel else _rand_zp(rng, dtype)
    in_scale = [float(s_in) * float(s) for s in s_w]  # double, as TFLite forms it
    # Half the models have small weights and bias: small accumulators, so the multiplier's
    # right shift is short and rounding ties (where LiteRT's two roundings differ) are common.
    spread = 2 if rng.random() < 0.5 else 255
    wlo, whi = max(-127 if per_channel else 0, zp_w - spread), min(hi, zp_w + spread)
    weight = rng.integers(wlo, whi + 1, wshape).astype(dtype)
    bias_max = 2**14 if spread > 2 else 64
    bias = rng.integers(-bias_max, bias_max, cout).astype(np.int32)
    act = ("NONE", "NONE", "NONE", "RELU", "RELU6")[rng.integers(5)]

    if opname == "fc":
        x_shape, y_shape = (n * h * w_, wshape[1]), (n * h * w_, cout)
        opts = dict(fused_activation=act)
        attrs = dict(input_zero_point=zp_in, kernel_zero_point=zp_w)
        acc_fn = lambda X: op.dense(X, relax.const(weight), relax.const(bias), **attrs)
        reference = lambda x: ref.dense(x, weight, bias, **attrs)
    else:
        x_shape, y_shape = (n, h, w_, cin), (n, oh, ow, cout)
        opts = dict(
            padding=pad_mode,
            stride_h=strides[0],
            stride_w=strides[1],
            dilation_h=dilation[0],
            dilation_w=dilation[1],
            fused_activation=act,
        )
        if opname == "dw":
            opts["depth_multiplier"] = mult
        attrs = dict(
            strides=strides,
            padding=(pt, pl, pb, pr),
            dilation=dilation,
            groups=cin if opname == "dw" else 1,
            kernel_layout="IHWO" if opname == "dw" else "OHWI",
            input_zero_point=zp_in,
            kernel_zero_point=zp_w,
        )
        acc_fn = lambda X: op.conv2d(X, relax.const(weight), relax.const(bias), **attrs)
        reference = lambda x: ref.conv2d(x, weight, bias, **attrs)
    x = rng.integers(lo, hi + 1, x_shape).astype(dtype)
    expected = reference(x)
    # Output scale: most outputs in range (so rounding differences show), sometimes a
    # multiplier above 1 (left shift, saturation).
    if rng.random() < 0.15:
        s_out = float(F32(min(in_scale) * rng.uniform(0.2, 1.0)))
    else:
        s_out = float(F32(np.mean(in_scale) * max(expected.std(), 1.0) / rng.uniform(10, 60)))
    out_lo, out_hi = _tflite_act_range(act, s_out, zp_out, dtype)
    tfl_op = {"conv": "CONV_2D", "dw": "DEPTHWISE_CONV_2D", "fc": "FULLY_CONNECTED"}[opname]
    model = single_op_model(
        tfl_op,
        [
            dict(shape=x_shape, dtype=dtype, scale=s_in, zero_point=zp_in),
            dict(
                shape=wshape,
                dtype=dtype,
                scale=s_w,
                zero_point=[zp_w] * nw,
                quantized_dimension=qdim,
                data=weight,
            ),
            dict(shape=(cout,), dtype="int32", scale=in_scale, zero_point=[0] * nw, data=bias),
        ],
        [dict(shape=y_shape, dtype=dtype, scale=s_out, zero_point=zp_out)],
        **opts,
    )
    axis = len(y_shape) - 1
    axis = axis if nw > 1 else None
    if opname == "dw" and dtype == "int8":
        ruy_channels, rounding = 8 * (cout // 8), "tflite"
    elif opname == "dw":
        ruy_channels, rounding = 0, "tflite"
    else:
        ruy_channels, rounding = cout, "tflite_neon"
    rq = dict(axis=axis, rounding=rounding, out_min=out_lo, out_max=out_hi)
    if rounding == "tflite" and ruy_channels:
        rq["neon_channels"] = ruy_channels
    chain = lambda X: op.requantize(acc_fn(X), in_scale, 0, s_out, zp_out, dtype, **rq)
    meta = dict(
        kind=kind,
        model=model,
        reference=expected,
        ruy=lambda acc: _ruy_requantize(acc, in_scale, s_out, zp_out, dtype, out_lo, out_hi),
        tflite=lambda acc: requantize(
            acc, in_scale, 0, s_out, zp_out, dtype, "tflite", axis, out_lo, out_hi
        ),
        ruy_channels=ruy_channels,
        attrs=attrs,
        act=act,
    )
    return [Case([x], acc_fn, meta), Case([x], chain, meta)]


LITERT_KINDS = ("conv_int8", "conv_uint8", "dw_int8", "dw_uint8", "fc_int8", "fc_uint8")


def test_against_litert_builtin():
    pytest.importorskip("ai_edge_litert")
    from tvm_qnn_ext.testing.litert import run_litert

    rng = np.random.default_rng(10)
    cases = [c for i in range(12) for kind in LITERT_KINDS for c in _litert_case(rng, kind)]
    outs = run_cases(cases, FAST)
    # outputs where the two roundings differ, i.e. where the comparison tells them apart
    telling = {"ruy": 0, "tflite": 0, "dw_int8 ruy": 0, "dw_int8 tflite": 0}
    for i in range(0, len(cases), 2):
        meta, acc, rq = cases[i].meta, outs[i], outs[i + 1]
        np.testing.assert_array_equal(acc, meta["reference"], err_msg=str(meta["attrs"]))
        (want,) = run_litert(meta["model"], list(cases[i].inputs))
        np.testing.assert_array_equal(rq, want, err_msg=f"{meta['kind']} {meta['attrs']}")
        split, ruy, tfl = meta["ruy_channels"], meta["ruy"](acc), meta["tflite"](acc)
        # The independent numpy model of LiteRT agrees too.
        np.testing.assert_array_equal(
            np.concatenate([ruy[..., :split], tfl[..., split:]], -1), want
        )
        differ = ruy != tfl
        for key, n in (("ruy", differ[..., :split].sum()), ("tflite", differ[..., split:].sum())):
            telling[key] += int(n)
            if meta["kind"] == "dw_int8":
                telling[f"dw_int8 {key}"] += int(n)
    assert min(telling.values()) >= 20, telling


# ---- performance sanity -------------------------------------------------------------------------


@pytest.mark.slow
def test_resnet_sized_conv_compiles_and_runs_in_reasonable_time():
    """1x56x56x64 -> 64, 3x3, untuned: measured about 0.15 s to build and 9 ms per run here."""
    import time

    import tvm

    from tvm_qnn_ext.target import resolve_target

    rng = np.random.default_rng(11)
    x = _rand_int(rng, (1, 56, 56, 64), "int8")
    w = _rand_int(rng, (64, 3, 3, 64), "int8")
    b = rng.integers(-1000, 1000, 64).astype("int32")
    attrs = dict(padding=(1, 1, 1, 1), input_zero_point=-5, kernel_zero_point=0)
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType(x.shape, "int8"))
    with bb.function("main", [xv]):
        bb.emit_func_output(bb.emit(op.conv2d(xv, relax.const(w), relax.const(b), **attrs)))
    start = time.perf_counter()
    ex = tvm.compile(relax.transform.LegalizeOps()(bb.get()), resolve_target("native"))
    build = time.perf_counter() - start
    vm = relax.VirtualMachine(ex, tvm.cpu())
    xt = tvm.runtime.tensor(x)
    out = vm["main"](xt).numpy()
    start = time.perf_counter()
    for _ in range(3):
        vm["main"](xt)
    run = (time.perf_counter() - start) / 3
    np.testing.assert_array_equal(out, ref.conv2d(x, w, b, **attrs))
    assert build < 60 and run < 1.0, (build, run)

"""qnn.avg_pool2d / qnn.max_pool2d / qnn.mean: Relax ops vs the numpy reference (bit for bit,
every rounding mode), and the reference vs LiteRT's builtin kernels."""

from __future__ import annotations

import numpy as np
import pytest
from tvm import relax

from tvm_qnn_ext import op
from tvm_qnn_ext.op import QnnTypeError
from tvm_qnn_ext.quantization import ROUNDING_MODES, dtype_range
from tvm_qnn_ext.quantization import pool as ref
from tvm_qnn_ext.testing.batch import Case, run_cases
from tvm_qnn_ext.testing.random import random_data, random_scale, random_zero_point

MODES = sorted(ROUNDING_MODES)
DTYPES = ("int8", "uint8", "int16")


def _scale(rng, lo=1e-3, hi=1.0) -> float:
    return random_scale(rng, lo, hi)


_zp, _data = random_zero_point, random_data


def _same_padding(size: int, k: int, s: int) -> tuple[int, int]:
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _pool_kw(rng, h: int, w: int) -> dict:
    k = (int(rng.integers(1, min(h, 4) + 1)), int(rng.integers(1, min(w, 4) + 1)))
    s = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    kind = int(rng.integers(0, 3))
    if kind == 0:
        pad = (0, 0, 0, 0)
    elif kind == 1:  # TFLite SAME
        (t, b), (left, r) = _same_padding(h, k[0], s[0]), _same_padding(w, k[1], s[1])
        pad = (t, left, b, r)
    else:  # arbitrary, below the window size
        pad = tuple(int(rng.integers(0, k[i % 2])) for i in range(4))
    return dict(pool_size=k, strides=s, padding=pad)


def _bounds(rng, dtype: str) -> dict:
    lo, hi = dtype_range(dtype)
    if rng.random() < 0.5:
        return {}
    a, b = sorted(int(v) for v in rng.integers(lo, hi + 1, size=2))
    return dict(
        out_min=a if rng.random() < 0.7 else None, out_max=b if rng.random() < 0.7 else None
    )


def _nhwc(rng) -> tuple[int, int, int, int]:
    return (int(rng.integers(1, 3)), int(rng.integers(1, 10)), int(rng.integers(1, 10)),
            int(rng.integers(1, 6)))  # fmt: skip


@pytest.mark.parametrize("name", ["avg_pool2d", "max_pool2d"])
def test_pool_matches_reference(name):
    rng = np.random.default_rng(0 if name == "avg_pool2d" else 1)
    cases, expected = [], []
    for i in range(200):
        dtype = DTYPES[int(rng.integers(0, 3))]
        layout = "NHWC" if rng.random() < 0.7 else "NCHW"
        n, h, w, c = _nhwc(rng)
        shape = (n, h, w, c) if layout == "NHWC" else (n, c, h, w)
        kw = dict(_pool_kw(rng, h, w), layout=layout, **_bounds(rng, dtype))
        if name == "avg_pool2d":
            kw.update(rounding=MODES[i % len(MODES)], count_include_pad=bool(rng.random() < 0.2))
        x = _data(rng, shape, dtype)
        cases.append(Case([x], lambda a, kw=kw: getattr(op, name)(a, **kw), kw))
        expected.append(getattr(ref, name)(x, **kw))
    for case, want, got in zip(cases, expected, run_cases(cases), strict=True):
        np.testing.assert_array_equal(got, want, err_msg=str(case.meta))


@pytest.mark.parametrize("fill", [-32768, 32767])
def test_avg_pool_window_sum_beyond_int32(fill):
    """An int16 window of 256 x 256 sums to +-2^31 and more with the rounding half: the
    legalization must accumulate in int64 there (it uses int32 for smaller windows)."""
    rng = np.random.default_rng(3)
    x = np.full((1, 256, 256, 2), fill, np.int16)
    x[0, rng.integers(0, 256, 40), rng.integers(0, 256, 40), 1] = -fill - 1
    kw = dict(pool_size=(256, 256), strides=(1, 1), layout="NHWC")
    cases = [Case([x], lambda a: op.avg_pool2d(a, **kw), kw)]
    (got,) = run_cases(cases)
    np.testing.assert_array_equal(got, ref.avg_pool2d(x, **kw))
    assert got[0, 0, 0, 0] == fill


@pytest.mark.parametrize("fill", [-32768, 32767])
def test_mean_sum_beyond_int32(fill):
    """qnn.mean over 257 x 256 int16 values, in a mode that rescales the whole int64 sum (the
    TFLite modes take it modulo 2^32, as LiteRT does)."""
    x = np.full((1, 257, 256, 2), fill, np.int16)
    x[0, :3, :5, 1] = 0
    kw = dict(axis=[1, 2], keepdims=True, input_scale=0.5, input_zero_point=0, output_scale=0.5,
              output_zero_point=0, out_dtype="int16", rounding="upward")  # fmt: skip
    (got,) = run_cases([Case([x], lambda a: op.mean(a, **kw), kw)])
    np.testing.assert_array_equal(got, ref.mean(x, **kw))


def _axes(rng, rank: int) -> list[int]:
    if rank == 4 and rng.random() < 0.4:
        return [1, 2] if rng.random() < 0.7 else [-2, 1]
    k = int(rng.integers(1, rank + 1))
    axes = [int(a) for a in rng.choice(rank, size=k, replace=False)]
    return [a - rank if rng.random() < 0.3 else a for a in axes]


def _mean_kw(rng, dtype: str, out_dtype: str) -> dict:
    s_in, z_in = _scale(rng), _zp(rng, dtype)
    same = rng.random() < 0.3 and dtype == out_dtype
    return dict(
        input_scale=s_in,
        input_zero_point=z_in,
        output_scale=s_in if same else _scale(rng),
        output_zero_point=z_in if same else _zp(rng, out_dtype),
        out_dtype=out_dtype,
    )


def test_mean_matches_reference():
    rng = np.random.default_rng(2)
    cases, expected = [], []
    for i in range(200):
        dtype = DTYPES[int(rng.integers(0, 3))]
        out_dtype = dtype if rng.random() < 0.8 else DTYPES[int(rng.integers(0, 3))]
        rank = 4 if rng.random() < 0.5 else int(rng.integers(1, 6))
        shape = tuple(int(v) for v in rng.integers(1, 7, size=rank))
        if rank == 4 and rng.random() < 0.3:
            shape = shape[:3] + (int(rng.integers(16, 40)),)  # LiteRT's vector lanes and tail
        kw = dict(
            _mean_kw(rng, dtype, out_dtype),
            axis=_axes(rng, rank),
            keepdims=bool(rng.random() < 0.5),
            rounding=MODES[i % len(MODES)],
        )
        x = _data(rng, shape, dtype)
        cases.append(Case([x], lambda a, kw=kw: op.mean(a, **kw), kw))
        expected.append(ref.mean(x, **kw))
    for _ in range(30):  # LiteRT's 4-D kernel: vector lanes, scalar tail, float32 parameters
        dtype = ("int8", "uint8")[int(rng.integers(0, 2))]
        shape = (2, int(rng.integers(1, 7)), int(rng.integers(1, 7)), int(rng.integers(1, 40)))
        kw = dict(_mean_kw(rng, dtype, dtype), axis=[1, 2], keepdims=True, rounding="tflite")
        x = _data(rng, shape, dtype)
        cases.append(Case([x], lambda a, kw=kw: op.mean(a, **kw), kw))
        expected.append(ref.mean(x, **kw))
    for case, want, got in zip(cases, expected, run_cases(cases), strict=True):
        np.testing.assert_array_equal(got, want, err_msg=str(case.meta))
        assert got.shape == want.shape


def test_reference_hand_values():
    """Worked by hand: TFLite rounds averages half away from zero over valid elements."""
    x = np.array([[1, 2], [4, -7]], "int8").reshape(1, 2, 2, 1)
    kw = dict(pool_size=(2, 2), strides=(1, 1), padding=(0, 0, 1, 1))
    # windows: {1,2,4,-7} = 0/4 -> 0; {2,-7} = -2.5 -> -3; {4,-7} = -1.5 -> -2; {-7} -> -7
    got = ref.avg_pool2d(x, **kw)
    np.testing.assert_array_equal(got.reshape(2, 2), [[0, -3], [-2, -7]])
    up = ref.avg_pool2d(x, **kw, rounding="upward")  # half toward +inf: -2, -1
    np.testing.assert_array_equal(up.reshape(2, 2), [[0, -2], [-1, -7]])
    np.testing.assert_array_equal(ref.max_pool2d(x, **kw).reshape(2, 2), [[4, 2], [4, -7]])
    # mean of 1, 2, 4, -7 = 0, same quantization in and out
    m = ref.mean(x, axis=[1, 2], keepdims=False, input_scale=0.5, input_zero_point=-1,
                 output_scale=0.5, output_zero_point=-1)  # fmt: skip
    np.testing.assert_array_equal(m, [[0]])


def _emit(build, ty):
    bb = relax.BlockBuilder()
    x = relax.Var("x", ty)
    with bb.function("main", [x]):
        bb.emit_func_output(bb.emit(build(x)))


POOL = dict(pool_size=(2, 2), strides=(1, 1))


@pytest.mark.parametrize(
    "ty, kw, match",
    [
        (relax.TensorType((1, 4, 4), "int8"), {}, "rank 3"),
        (relax.TensorType((1, 4, 4, 2), "float32"), {}, "dtype float32"),
        (relax.TensorType((1, 4, 4, 2), "int8"), dict(padding=(2, 0, 0, 0)), "smaller than"),
        (relax.TensorType((1, 4, 4, 2), "int8"), dict(pool_size=(5, 1)), "larger than"),
        (relax.TensorType((1, 4, 4, 2), "int8"), dict(layout="HWCN"), "layout"),
        (relax.TensorType((1, 4, 4, 2), "int8"), dict(out_min=5, out_max=1), "empty output"),
        (relax.TensorType((1, 4, 4, 2), "int8"), dict(strides=(0, 1)), "strides"),
    ],
)
def test_pool_type_errors(ty, kw, match):
    with pytest.raises((QnnTypeError, ValueError), match=match):
        _emit(lambda x: op.avg_pool2d(x, **{**POOL, **kw}), ty)
    with pytest.raises((QnnTypeError, ValueError), match=match):
        _emit(lambda x: op.max_pool2d(x, **{**POOL, **kw}), ty)


MEAN = dict(
    axis=[1], keepdims=True, input_scale=0.1, input_zero_point=0, output_scale=0.1,
    output_zero_point=0,
)  # fmt: skip


@pytest.mark.parametrize(
    "ty, kw, match",
    [
        (relax.TensorType((2, 3), "int8"), dict(axis=[2]), "axis 2 out of range"),
        (relax.TensorType((2, 3), "int32"), {}, "dtype int32"),
        (relax.TensorType((2, 3), "int8"), dict(output_zero_point=-1, out_dtype="uint8"), "range"),
        (relax.TensorType((2, 3), "int8"), dict(input_scale=-1.0), "scale"),
    ],
)
def test_mean_type_errors(ty, kw, match):
    with pytest.raises((QnnTypeError, ValueError), match=match):
        _emit(lambda x: op.mean(x, **{**MEAN, **kw}), ty)


# ---------------------------------------------------------------------------------------------
# The reference against LiteRT's builtin kernels


def _act(rng, scale: float, zp: int, dtype: str) -> tuple[str, int | None, int | None]:
    """A fused activation and its CalculateActivationRangeQuantized bounds."""
    lo, hi = dtype_range(dtype)
    act = ["NONE", "RELU", "RELU6"][int(rng.integers(0, 3))]

    def q(f):
        v = np.float32(f) / np.float32(scale)
        return zp + int(np.sign(v) * np.floor(np.abs(v) + 0.5))

    if act == "NONE":
        return act, None, None
    return act, max(lo, q(0.0)), (min(hi, q(6.0)) if act == "RELU6" else None)


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("name", ["avg_pool2d", "max_pool2d"])
def test_pool_reference_matches_litert(name, dtype):
    pytest.importorskip("ai_edge_litert")
    from tvm_qnn_ext.testing.litert import run_litert
    from tvm_qnn_ext.testing.tflite_builder import single_op_model

    rng = np.random.default_rng(300 + (name == "max_pool2d") + 2 * (dtype == "uint8"))
    for _ in range(40):
        n, h, w, c = _nhwc(rng)
        if rng.random() < 0.3:
            c = 20  # channel vector loops in LiteRT
        k = (int(rng.integers(1, min(h, 4) + 1)), int(rng.integers(1, min(w, 4) + 1)))
        s = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        same = rng.random() < 0.5
        if same:
            (t, b), (left, r) = _same_padding(h, k[0], s[0]), _same_padding(w, k[1], s[1])
        else:
            t = b = left = r = 0
        scale, zp = _scale(rng), _zp(rng, dtype)
        act, lo, hi = _act(rng, scale, zp, dtype)
        x = _data(rng, (n, h, w, c), dtype)
        want = getattr(ref, name)(
            x, pool_size=k, strides=s, padding=(t, left, b, r), out_min=lo, out_max=hi
        )
        model = single_op_model(
            "AVERAGE_POOL_2D" if name == "avg_pool2d" else "MAX_POOL_2D",
            [dict(shape=x.shape, dtype=dtype, scale=scale, zero_point=zp)],
            [dict(shape=want.shape, dtype=dtype, scale=scale, zero_point=zp)],
            padding="SAME" if same else "VALID",
            stride_h=s[0],
            stride_w=s[1],
            filter_height=k[0],
            filter_width=k[1],
            fused_activation=act,
        )
        got = run_litert(model, [x])[0]
        np.testing.assert_array_equal(want, got, err_msg=f"{x.shape} {k} {s} {same} {act}")


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_mean_reference_matches_litert(dtype):
    pytest.importorskip("ai_edge_litert")
    from tvm_qnn_ext.testing.litert import run_litert
    from tvm_qnn_ext.testing.tflite_builder import single_op_model

    rng = np.random.default_rng(400 + (dtype == "uint8"))
    kernels = set()
    for _ in range(80):
        rank = 4 if rng.random() < 0.6 else int(rng.integers(1, 6))
        shape = tuple(int(v) for v in rng.integers(1, 9, size=rank))
        if rank == 4 and rng.random() < 0.3:
            shape = shape[:3] + (24,)  # channel vector loops in LiteRT's 4-D kernel
        axes = _axes(rng, rank)
        keep = bool(rng.random() < 0.5)
        kw = dict(_mean_kw(rng, dtype, dtype), axis=axes, keepdims=keep)
        x = _data(rng, shape, dtype)
        want = ref.mean(x, **kw)
        resolved = ref.resolve_axes(axes, rank, "test")
        kernels.add(ref.tflite_mean_uses_4d_kernel(dtype, rank, resolved, keep))
        q_in = dict(scale=kw["input_scale"], zero_point=kw["input_zero_point"])
        q_out = dict(scale=kw["output_scale"], zero_point=kw["output_zero_point"])
        model = single_op_model(
            "MEAN",
            [
                dict(shape=shape, dtype=dtype, **q_in),
                dict(shape=(len(axes),), dtype="int32", data=np.array(axes, dtype=np.int32)),
            ],
            [dict(shape=want.shape, dtype=dtype, **q_out)],
            keep_dims=keep,
        )
        got = run_litert(model, [x])[0]
        np.testing.assert_array_equal(want, got, err_msg=f"{shape} {kw}")
    assert kernels == {True, False}  # both LiteRT code paths were exercised

"""qnn.avg_pool2d, qnn.max_pool2d and qnn.mean.

Pooling keeps the input's quantization (as TFLite requires) and works on the raw integers;
``mean`` rescales between input and output quantization.  The arithmetic of each rounding mode
is documented in :mod:`tvm_qnn_ext.quantization.pool`; ``tflite`` reproduces LiteRT's builtin
AVERAGE_POOL_2D, MAX_POOL_2D and MEAN (both its 4-D H/W kernel and its general kernel).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tvm import relax, te, tirx

from ..quantization import INTEGER_MODES, check_rounding, dtype_range, quantize_multiplier
from ..quantization import pool as ref
from . import fixed_point_te as fp
from .common import attr, expect_dtype, expect_rank, op_name, static_shape, tensor_type
from .elementwise import DTYPES, check_call_rounding, output_bounds, per_tensor_scale, per_tensor_zp
from .registry import QnnTypeError, make_call, register_op


def _pool_attrs(pool_size, strides, padding, layout, out_min, out_max) -> dict:
    return dict(
        pool_size=[int(v) for v in pool_size],
        strides=[int(v) for v in strides],
        padding=list(ref.pool_padding(padding, "qnn pool")),
        layout=str(layout),
        out_min=None if out_min is None else int(out_min),
        out_max=None if out_max is None else int(out_max),
    )


def avg_pool2d(
    data: relax.Expr,
    *,
    pool_size: Sequence[int],
    strides: Sequence[int],
    padding: Sequence[int] = (0, 0, 0, 0),
    layout: str = "NHWC",
    out_dtype: str | None = None,
    out_min: int | None = None,
    out_max: int | None = None,
    rounding: str = "tflite",
    count_include_pad: bool = False,
) -> relax.Call:
    """Average pooling with the input's quantization; ``padding`` is (top, left, bottom,
    right) or (h, w).  Padded elements are excluded from the count unless
    ``count_include_pad``."""
    check_rounding(rounding)
    attrs = _pool_attrs(pool_size, strides, padding, layout, out_min, out_max)
    attrs.update(out_dtype=out_dtype, rounding=rounding, count_include_pad=bool(count_include_pad))
    return make_call("qnn.avg_pool2d", [data], attrs)


def max_pool2d(
    data: relax.Expr,
    *,
    pool_size: Sequence[int],
    strides: Sequence[int],
    padding: Sequence[int] = (0, 0, 0, 0),
    layout: str = "NHWC",
    out_min: int | None = None,
    out_max: int | None = None,
) -> relax.Call:
    """Max pooling over the valid (non-padded) elements of each window."""
    attrs = _pool_attrs(pool_size, strides, padding, layout, out_min, out_max)
    return make_call("qnn.max_pool2d", [data], attrs)


def mean(
    data: relax.Expr,
    *,
    axis: Sequence[int],
    keepdims: bool,
    input_scale: float,
    input_zero_point: int,
    output_scale: float,
    output_zero_point: int,
    out_dtype: str = "int8",
    rounding: str = "tflite",
) -> relax.Call:
    """Quantized mean over ``axis`` (negative axes count from the end)."""
    check_rounding(rounding)
    return make_call(
        "qnn.mean",
        [data],
        dict(
            axis=[int(a) for a in axis],
            keepdims=bool(keepdims),
            input_scale=[float(input_scale)],
            input_zero_point=[int(input_zero_point)],
            output_scale=[float(output_scale)],
            output_zero_point=[int(output_zero_point)],
            out_dtype=out_dtype,
            rounding=rounding,
        ),
    )


def _geometry(call):
    ty = tensor_type(call, 0, "input")
    expect_dtype(call, "input", ty.dtype, DTYPES)
    expect_rank(call, "input", ty, (4,))
    layout = str(attr(call, "layout", "NHWC"))
    if layout not in ref.LAYOUTS:
        raise QnnTypeError(f"{op_name(call)}: layout {layout!r} not in {list(ref.LAYOUTS)}")
    hw_axes = (1, 2) if layout == "NHWC" else (2, 3)
    if ty.shape is None:
        raise QnnTypeError(f"{op_name(call)}: input needs a known shape")
    dims = list(ty.shape.values)
    try:
        hw = tuple(int(dims[a]) for a in hw_axes)
    except TypeError:
        raise QnnTypeError(f"{op_name(call)}: input height and width must be static") from None
    try:
        k, s, p, out = ref.pool_geometry(
            hw, attr(call, "pool_size"), attr(call, "strides"), attr(call, "padding"), op_name(call)
        )
    except ValueError as e:
        raise QnnTypeError(str(e)) from None
    out_dims = list(dims)
    out_dims[hw_axes[0]], out_dims[hw_axes[1]] = out
    return ty, layout, hw, k, s, p, out_dims


def _unclipped(axis, hw, k, s, p, out_hw) -> bool:
    """Whether every window lies inside the input along ``axis`` (0: height, 1: width)."""
    out = int(out_hw[axis])
    return p[axis] == 0 and (out - 1) * s[axis] + k[axis] <= hw[axis]


def _out_hw(layout, out_dims) -> list:
    return out_dims[1:3] if layout == "NHWC" else out_dims[2:4]


def _window(x, layout, hw, k, s, p, out_hw, n, c, oh, ow):
    """Reduce axes, the input element of a window position and whether it is real (bounds
    are only tested along clipped axes: TVM does not prove the others true)."""
    rh = te.reduce_axis((0, k[0]), name="rh")
    rw = te.reduce_axis((0, k[1]), name="rw")
    ih = oh * s[0] - p[0] + rh
    iw = ow * s[1] - p[1] + rw
    tests = [tirx.const(True, "bool")]
    if not _unclipped(0, hw, k, s, p, out_hw):
        tests += [ih >= 0, ih < hw[0]]
    if not _unclipped(1, hw, k, s, p, out_hw):
        tests += [iw >= 0, iw < hw[1]]
    valid = tirx.all(*tests)
    load = x(n, ih, iw, c) if layout == "NHWC" else x(n, c, ih, iw)
    return [rh, rw], load, valid


def _by_layout(layout, fn):
    """Adapt ``fn(n, c, oh, ow)`` to the output index order of ``layout``."""
    if layout == "NHWC":
        return lambda n, oh, ow, c: fn(n, c, oh, ow)
    return lambda n, c, oh, ow: fn(n, c, oh, ow)


def _accumulator(dtype: str, k: Sequence[int]) -> str:
    """int32 when a window's sum plus the rounding half cannot leave it (int8/uint8 windows of
    up to 8M elements, int16 below 64K), else int64: int32 lanes are twice as many per
    instruction (image_example1's 48x48x24 2x2 pool: 5.0 -> 3.3 us)."""
    lo, hi = dtype_range(dtype)
    window = k[0] * k[1]
    return "int32" if max(-lo, hi) * window + window < 2**31 else "int64"


def _count(call, hw, k, s, p, out_hw, acc: str):
    if attr(call, "count_include_pad", False):
        return lambda oh, ow: tirx.const(k[0] * k[1], acc)

    def extent(o, axis):
        # a constant where no window is clipped: the division by it becomes a multiply
        if _unclipped(axis, hw, k, s, p, out_hw):
            return tirx.const(k[axis], acc)
        start = o * s[axis] - p[axis]
        return (tirx.min(start + k[axis], hw[axis]) - tirx.max(start, 0)).astype(acc)

    return lambda oh, ow: extent(oh, 0) * extent(ow, 1)


def _rounded_average(total, count, rounding):
    acc = str(total.ty)
    half = count // tirx.const(2, acc)
    if rounding in ("tflite", "tflite_single", "tonearest"):
        num = tirx.Select(total > tirx.const(0, acc), total + half, total - half)
        return tirx.truncdiv(num, count)
    if rounding == "upward":
        return tirx.floordiv(total + half, count)
    recip = tirx.const(1.0, "float32") / count.astype("float32")
    return fp.round_half_even_f32(total.astype("float32") * recip).astype(acc)


@register_op("qnn.avg_pool2d", 1, "Average pooling on quantized integers")
class AvgPool2d:
    @staticmethod
    def infer(call, bb):
        ty, *_, out_dims = _geometry(call)
        out_dtype = str(attr(call, "out_dtype") or ty.dtype)
        expect_dtype(call, "out_dtype", out_dtype, DTYPES)
        output_bounds(call, out_dtype)
        check_call_rounding(call)
        return relax.TensorType(out_dims, out_dtype)

    @staticmethod
    def legalize(bb, call):
        ty, layout, hw, k, s, p, out_dims = _geometry(call)
        out_dtype = str(attr(call, "out_dtype") or ty.dtype)
        lo, hi = output_bounds(call, out_dtype)
        rounding = check_call_rounding(call)
        out_hw = _out_hw(layout, out_dims)
        acc = _accumulator(str(ty.dtype), k)
        count = _count(call, hw, k, s, p, out_hw, acc)

        def compute(x):
            def window_sum(n, c, oh, ow):
                axes, load, valid = _window(x, layout, hw, k, s, p, out_hw, n, c, oh, ow)
                value = tirx.if_then_else(valid, load.astype(acc), tirx.const(0, acc))
                return te.sum(value, axis=axes)

            shape = x.shape[:1] + out_dims[1:]
            total = te.compute(shape, _by_layout(layout, window_sum), name="pool_sum")

            def average(n, c, oh, ow):
                idx = (n, oh, ow, c) if layout == "NHWC" else (n, c, oh, ow)
                avg = _rounded_average(total(*idx), count(oh, ow), rounding)
                low, high = tirx.const(lo, acc), tirx.const(hi, acc)  # output bounds fit int32
                return tirx.max(tirx.min(avg, high), low).astype(out_dtype)

            return te.compute(shape, _by_layout(layout, average), name="avg_pool2d")

        return bb.call_te(compute, call.args[0], primfunc_name_hint="qnn_avg_pool2d")


@register_op("qnn.max_pool2d", 1, "Max pooling on quantized integers")
class MaxPool2d:
    @staticmethod
    def infer(call, bb):
        ty, *_, out_dims = _geometry(call)
        output_bounds(call, str(ty.dtype))
        return relax.TensorType(out_dims, ty.dtype)

    @staticmethod
    def legalize(bb, call):
        ty, layout, hw, k, s, p, out_dims = _geometry(call)
        out_hw = _out_hw(layout, out_dims)
        dtype = str(ty.dtype)
        lo, hi = output_bounds(call, dtype)

        def compute(x):
            def window_max(n, c, oh, ow):
                axes, load, valid = _window(x, layout, hw, k, s, p, out_hw, n, c, oh, ow)
                return te.max(tirx.if_then_else(valid, load, tirx.min_value(dtype)), axis=axes)

            shape = x.shape[:1] + out_dims[1:]
            top = te.compute(shape, _by_layout(layout, window_max), name="pool_max")
            return te.compute(
                shape, lambda *i: fp.clamp_cast(top(*i), lo, hi, dtype), name="max_pool2d"
            )

        return bb.call_te(compute, call.args[0], primfunc_name_hint="qnn_max_pool2d")


def _mean_params(call):
    ty = tensor_type(call, 0, "input")
    in_dtype = str(ty.dtype)
    expect_dtype(call, "input", in_dtype, DTYPES)
    out_dtype = str(attr(call, "out_dtype"))
    expect_dtype(call, "out_dtype", out_dtype, DTYPES)
    shape = static_shape(call, "input", ty)
    try:
        axes = ref.resolve_axes(attr(call, "axis", []), len(shape), op_name(call))
    except ValueError as e:
        raise QnnTypeError(str(e)) from None
    count = 1
    for a in axes:
        count *= shape[a]
    if count == 0:
        raise QnnTypeError(f"{op_name(call)}: reduces an empty axis of shape {list(shape)}")
    v = dict(
        shape=shape,
        axes=axes,
        keepdims=bool(attr(call, "keepdims")),
        count=count,
        in_dtype=in_dtype,
        out_dtype=out_dtype,
        s_in=per_tensor_scale(call, "input_scale"),
        s_out=per_tensor_scale(call, "output_scale"),
        z_in=per_tensor_zp(call, "input_zero_point", in_dtype),
        z_out=per_tensor_zp(call, "output_zero_point", out_dtype),
        rounding=check_call_rounding(call),
    )
    v["formula"] = _mean_formula(v, op_name(call))
    return v


def _mean_formula(v, where):
    """``f(sum, channel) -> int64`` before saturation, per mode (see quantization.pool.mean);
    ``channel`` is the index on axis 3, which only LiteRT's 4-D kernel depends on."""
    r, count = v["rounding"], v["count"]
    mbqm = fp.multiply_by_quantized_multiplier
    centered_offset = fp._i64(v["z_in"] * count)
    z_out = fp._i64(v["z_out"])
    tflite = r in ("tflite", "tflite_single")
    ndim = len(v["shape"])
    if tflite and ref.tflite_mean_uses_4d_kernel(v["in_dtype"], ndim, v["axes"], v["keepdims"]):
        m, s, bias = ref.tflite_mean_4d_params(
            count, v["s_in"], v["z_in"], v["s_out"], v["z_out"], r
        )
        _check_shift(s, where)
        if r != "tflite":
            return lambda t, c: mbqm(t, m, s, r) + fp._i64(bias)
        vec_channels = 16 * (v["shape"][3] // 16)
        right = fp._i64(max(-s, 0))
        half = fp._i64((1 << max(-s, 0)) >> 1)

        def tflite_4d(t, c):
            # LiteRT's vector loop rounds the last shift half up (vrshl), its tail half away.
            vec = ((mbqm(t, m, max(s, 0), r) + half) >> right) + fp._i64(bias)
            return tirx.Select(c < vec_channels, vec, mbqm(t, m, s, r) + fp._i64(bias))

        return tflite_4d
    if tflite:
        m, s = ref.tflite_mean_general_params(count, v["s_in"], v["s_out"], r)
    elif r in INTEGER_MODES:
        m, s = quantize_multiplier(v["s_in"] / (v["s_out"] * count), r)
        m, s = int(m), int(s)
    else:
        real = tirx.const(float(np.float32(v["s_in"] / (v["s_out"] * count))), "float32")
        big = tirx.const(2.0**40, "float32")

        def flt(t, c):
            y = fp.round_half_even_f32((t - centered_offset).astype("float32") * real)
            return tirx.max(tirx.min(y, big), -big).astype("int64") + z_out

        return flt
    _check_shift(s, where)
    return lambda t, c: mbqm(t - centered_offset, m, s, r) + z_out


def _check_shift(shift: int, where: str) -> None:
    if not -31 <= int(shift) <= 30:
        raise QnnTypeError(f"{where}: scale ratio out of the fixed-point range (shift {shift})")


def _mean_out_shape(v) -> list[int]:
    shape, axes = v["shape"], v["axes"]
    if v["keepdims"]:
        return [1 if a in axes else d for a, d in enumerate(shape)]
    return [d for a, d in enumerate(shape) if a not in axes]


@register_op("qnn.mean", 1, "Quantized mean over axes")
class Mean:
    @staticmethod
    def infer(call, bb):
        v = _mean_params(call)
        return relax.TensorType(_mean_out_shape(v), v["out_dtype"])

    @staticmethod
    def legalize(bb, call):
        v = _mean_params(call)
        shape, axes, keep = v["shape"], v["axes"], v["keepdims"]
        lo, hi = dtype_range(v["out_dtype"])
        out_shape = _mean_out_shape(v)
        f = v["formula"]
        out_axis3 = 3 if keep and len(shape) == 4 else None

        def channel(i):
            return i[out_axis3] if out_axis3 is not None else fp._i64(0)

        def compute(x):
            def full_index(oidx, raxes):
                idx, k = [], 0
                for a in range(len(shape)):
                    if a in axes:
                        idx.append(raxes[axes.index(a)])
                        k += 1 if keep else 0
                    else:
                        idx.append(oidx[k])
                        k += 1
                return idx

            if axes:
                raxes = [te.reduce_axis((0, shape[a]), name=f"r{a}") for a in axes]

                def reduce_sum(*oidx):
                    return te.sum(x(*full_index(oidx, raxes)).astype("int64"), axis=raxes)

                total = te.compute(out_shape, reduce_sum, name="mean_sum")
            else:
                total = te.compute(out_shape, lambda *i: x(*i).astype("int64"), name="mean_sum")
            return te.compute(
                out_shape,
                lambda *i: fp.clamp_cast(f(total(*i), channel(i)), lo, hi, v["out_dtype"]),
                name="mean",
            )

        return bb.call_te(compute, call.args[0], primfunc_name_hint="qnn_mean")

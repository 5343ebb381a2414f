"""qnn.quantize, qnn.dequantize and qnn.requantize."""

from __future__ import annotations

import numpy as np
from tvm import relax, te, tirx

from ..quantization import INTEGER_MODES, check_rounding, dtype_range, quantize_multiplier
from . import fixed_point_te as fp
from .common import (
    at,
    attr,
    check_axis_length,
    expect_dtype,
    per_axis,
    scales,
    tensor_type,
    zero_points,
)
from .registry import make_call, register_op

QUANT_DTYPES = ("int8", "uint8", "int16")
ACC_DTYPES = ("int8", "uint8", "int16", "int32")


def _axis(call, ty) -> int | None:
    axis = attr(call, "axis")
    return None if axis is None else int(axis) % max(ty.ndim, 1)


def _bounds(call, dtype: str) -> tuple[int, int]:
    lo, hi = dtype_range(dtype)
    out_min, out_max = attr(call, "out_min"), attr(call, "out_max")
    return (
        lo if out_min is None else max(lo, int(out_min)),
        hi if out_max is None else min(hi, int(out_max)),
    )


def _fence(x):
    return tirx.call_llvm_pure_intrin(str(x.ty), "llvm.arithmetic.fence", x)


def _cast(v, dtype: str):
    """Cast a TIR value, or a per-tensor parameter that ``at`` returned as a Python number."""
    return tirx.const(v, dtype) if isinstance(v, (int, float)) else v.astype(dtype)


def _channel_index(idx, axis):
    return 0 if axis is None else idx[axis]


def requantize(
    x: relax.Expr,
    in_scale,
    in_zero_point,
    out_scale,
    out_zero_point,
    out_dtype: str = "int8",
    axis: int | None = None,
    rounding: str = "tflite",
    out_min: int | None = None,
    out_max: int | None = None,
    neon_channels: int | None = None,
    neon_flat: int | None = None,
) -> relax.Call:
    """Rescale an integer tensor; per-axis when ``in_scale``/``out_scale`` are sequences.

    ``neon_channels=N`` (with ``rounding="tflite"`` and an axis) rounds channels ``[0, N)`` as
    ``tflite_neon``: LiteRT's per-channel depthwise kernel does exactly that.  ``neon_flat=N``
    does the same for flat (row-major) indices ``[0, N)``: LiteRT's QUANTIZE requantize.
    """
    check_rounding(rounding)
    return make_call(
        "qnn.requantize",
        [x],
        dict(
            in_scale=_floats(in_scale),
            in_zero_point=_ints(in_zero_point),
            out_scale=_floats(out_scale),
            out_zero_point=_ints(out_zero_point),
            out_dtype=out_dtype,
            axis=axis,
            rounding=rounding,
            out_min=out_min,
            out_max=out_max,
            neon_channels=neon_channels or None,
            neon_flat=neon_flat or None,
        ),
    )


def quantize(x, scale, zero_point, out_dtype="int8", axis=None, rounding="tflite") -> relax.Call:
    check_rounding(rounding)
    return make_call(
        "qnn.quantize",
        [x],
        dict(
            scale=_floats(scale),
            zero_point=_ints(zero_point),
            out_dtype=out_dtype,
            axis=axis,
            rounding=rounding,
        ),
    )


def dequantize(x, scale, zero_point, axis=None, rounding="tflite") -> relax.Call:
    """``rounding="tflite_neon"``: LiteRT's optimized kernel (see affine.dequantize)."""
    check_rounding(rounding)
    return make_call(
        "qnn.dequantize",
        [x],
        dict(scale=_floats(scale), zero_point=_ints(zero_point), axis=axis, rounding=rounding),
    )


def _flat_index(idx, shape):
    flat = idx[0].astype("int64")
    for i, d in zip(idx[1:], shape[1:], strict=True):
        flat = flat * tirx.const(int(d), "int64") + i.astype("int64")
    return flat


def _in_neon_blocks(idx, shape):
    """True for elements in LiteRT's 8-wide SIMD blocks (flat order); the rest is the tail."""
    size = int(np.prod([int(d) for d in shape]))
    if not idx:
        return tirx.const(size >= 8, "bool")
    return _flat_index(idx, shape) < tirx.const((size // 8) * 8, "int64")


def _floats(v) -> list[float]:
    return [float(s) for s in np.atleast_1d(np.asarray(v, dtype=np.float64))]


def _ints(v) -> list[int]:
    return [int(z) for z in np.atleast_1d(np.asarray(v, dtype=np.int64))]


def _centered(x, zero_point):
    """``x - zero_point`` in int32 where it cannot overflow, else in int64."""
    if str(x.ty) != "int32":
        return x.astype("int32") - fp._i32(zero_point)
    if isinstance(zero_point, int) and zero_point == 0:
        return x
    return x.astype("int64") - fp._i64(zero_point)


@register_op("qnn.requantize", 1, "Rescale integers between two (scale, zero point) pairs")
class Requantize:
    @staticmethod
    def infer(call, bb):
        ty = tensor_type(call, 0, "input")
        expect_dtype(call, "input", ty.dtype, ACC_DTYPES)
        out_dtype = attr(call, "out_dtype")
        expect_dtype(call, "out_dtype", out_dtype, QUANT_DTYPES + ("int32",))
        axis = _axis(call, ty)
        in_s, out_s = scales(call, "in_scale"), scales(call, "out_scale")
        zero_points(call, "in_zero_point", ty.dtype)
        zero_points(call, "out_zero_point", out_dtype)
        for key, v in (("in_scale", in_s), ("out_scale", out_s)):
            check_axis_length(call, key, v, ty, axis)
        return relax.TensorType(ty.shape, out_dtype)

    @staticmethod
    def legalize(bb, call):
        ty = call.args[0].ty
        axis = _axis(call, ty)
        out_dtype = attr(call, "out_dtype")
        rounding = attr(call, "rounding", "tflite")
        real = scales(call, "in_scale") / scales(call, "out_scale")
        in_zp = zero_points(call, "in_zero_point", ty.dtype)
        out_zp = zero_points(call, "out_zero_point", out_dtype)
        lo, hi = _bounds(call, out_dtype)
        if rounding in INTEGER_MODES:
            m, s = quantize_multiplier(real, rounding)
            shift_bounds = (int(s.min()), int(s.max()))
            params = [
                per_axis(m, "int32"),
                per_axis(s, "int32"),
                per_axis(in_zp, "int32"),
                per_axis(out_zp, "int32"),
            ]

            neon = int(attr(call, "neon_channels", 0) or 0)
            neon_flat = int(attr(call, "neon_flat", 0) or 0)

            def rescale(c, v, m, s, idx):
                ties_up = (c < neon) if neon and axis is not None else None
                if neon_flat:
                    flat = _flat_index(idx, ty.shape.values) if idx else tirx.const(0, "int64")
                    ties_up = flat < tirx.const(neon_flat, "int64")
                if rounding in ("tflite", "tflite_neon"):
                    return fp.multiply_by_quantized_multiplier_i32(
                        v, at(m, c), at(s, c), rounding, ties_up, shift_bounds
                    )
                return fp.multiply_by_quantized_multiplier(v, at(m, c), at(s, c), rounding)
        else:
            params = [
                per_axis(real.astype(np.float32), "float32"),
                0,
                per_axis(in_zp, "int32"),
                per_axis(out_zp, "int32"),
            ]

            def rescale(c, v, m, _s, _idx):
                prod = v.astype("float32") * at(m, c)
                return fp.round_half_even_f32(prod).astype("int64")

        def compute(x, m, s, izp, ozp):
            def elem(*idx):
                c = _channel_index(idx, axis)
                v = _centered(x(*idx), at(izp, c))
                y = rescale(c, v, m, s, idx)
                return fp.add_zero_point_clamp_cast(y, at(ozp, c), lo, hi, out_dtype)

            return te.compute(x.shape, elem, name="requantize")

        return bb.call_te(compute, call.args[0], *params, primfunc_name_hint="qnn_requantize")


@register_op("qnn.quantize", 1, "float32 -> quantized integer, saturating")
class Quantize:
    @staticmethod
    def infer(call, bb):
        ty = tensor_type(call, 0, "input")
        expect_dtype(call, "input", ty.dtype, ("float32",))
        out_dtype = attr(call, "out_dtype")
        zero_points(call, "zero_point", out_dtype)
        check_axis_length(call, "scale", scales(call, "scale"), ty, _axis(call, ty))
        return relax.TensorType(ty.shape, out_dtype)

    @staticmethod
    def legalize(bb, call):
        ty = call.args[0].ty
        axis = _axis(call, ty)
        out_dtype = attr(call, "out_dtype")
        rounding = attr(call, "rounding", "tflite")
        s = scales(call, "scale").astype(np.float32)
        zp = zero_points(call, "zero_point", out_dtype)
        lo, hi = dtype_range(out_dtype)

        def compute(x, s, zp):
            def elem(*idx):
                c = _channel_index(idx, axis)
                v = x(*idx)
                if rounding == "float":
                    # PyTorch: zp added before rounding, in one FMA per tensor, after a
                    # rounded product per channel.  The fences keep TVM's cast narrowing and
                    # LLVM's FMA contraction from merging roundings.
                    inv = (tirx.const(1.0, "float32") / at(s, c)).astype("float64")
                    prod = v.astype("float64") * inv
                    if isinstance(s, te.Tensor):
                        prod = _fence(prod.astype("float32")).astype("float64")
                    zpf = (
                        tirx.Cast("float64", at(zp, c)) if isinstance(zp, te.Tensor) else float(zp)
                    )
                    r = te.round(_fence(prod + zpf).astype("float32"))
                    r = tirx.Select(r != r, tirx.const(2.0**40, "float32"), r)  # NaN -> qmax
                    r = tirx.max(
                        tirx.min(r, tirx.const(2.0**40, "float32")),
                        tirx.const(-(2.0**40), "float32"),
                    )
                    return fp.clamp_cast(r.astype("int64"), lo, hi, out_dtype)
                elif rounding == "tflite_neon":
                    # LiteRT: SIMD blocks multiply by fl32(1/s) and round ties-even; the tail
                    # divides in double and rounds ties away.
                    vec = te.round(_fence(v * (tirx.const(1.0, "float32") / at(s, c))))
                    q = v.astype("float64") / _cast(at(s, c), "float64")
                    tail = tirx.Select(q >= 0, te.floor(q + 0.5), te.ceil(q - 0.5))
                    r = tirx.Select(_in_neon_blocks(idx, x.shape), vec, tail.astype("float32"))
                else:
                    q = v / at(s, c)
                    r = tirx.Select(q >= 0, te.floor(q + 0.5), te.ceil(q - 0.5))  # half away
                r = tirx.max(
                    tirx.min(r, tirx.const(2.0**40, "float32")), tirx.const(-(2.0**40), "float32")
                )
                return fp.clamp_cast(r.astype("int64") + fp._i64(at(zp, c)), lo, hi, out_dtype)

            return te.compute(x.shape, elem, name="quantize")

        return bb.call_te(
            compute,
            call.args[0],
            per_axis(s, "float32"),
            per_axis(zp, "int32"),
            primfunc_name_hint="qnn_quantize",
        )


@register_op("qnn.dequantize", 1, "quantized integer -> float32")
class Dequantize:
    @staticmethod
    def infer(call, bb):
        ty = tensor_type(call, 0, "input")
        expect_dtype(call, "input", ty.dtype, ACC_DTYPES)
        zero_points(call, "zero_point", ty.dtype)
        check_axis_length(call, "scale", scales(call, "scale"), ty, _axis(call, ty))
        return relax.TensorType(ty.shape, "float32")

    @staticmethod
    def legalize(bb, call):
        ty = call.args[0].ty
        axis = _axis(call, ty)
        s = scales(call, "scale").astype(np.float32)
        zp = zero_points(call, "zero_point", ty.dtype)
        neon = attr(call, "rounding", "tflite") == "tflite_neon"

        def compute(x, s, zp):
            def elem(*idx):
                c = _channel_index(idx, axis)
                exact = (x(*idx).astype("int32") - at(zp, c)).astype("float32") * at(s, c)
                if not neon:
                    return exact
                # LiteRT's vmlaq: fl32(-zp * s) + fl32(q * s); fences keep LLVM from fusing.
                zs = _fence(_cast(-at(zp, c), "float32") * at(s, c))
                mla = zs + _fence(x(*idx).astype("float32") * at(s, c))
                return tirx.Select(_in_neon_blocks(idx, x.shape), mla, exact)

            return te.compute(x.shape, elem, name="dequantize")

        return bb.call_te(
            compute,
            call.args[0],
            per_axis(s, "float32"),
            per_axis(zp, "int32"),
            primfunc_name_hint="qnn_dequantize",
        )

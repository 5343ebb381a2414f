"""qnn.concatenate: join quantized tensors along an axis, rescaling inputs to the output's
(scale, zero point) where they differ.

Inputs already in the output's quantization are copied.  The others are rescaled per mode:

* ``tflite``/``tflite_single``: TFLite's uint8 CONCATENATION rescales in **float32**
  (``round_half_away(float32(x * scale) + bias) + zp_out``, see
  :func:`tvm_qnn_ext.quantization.elementwise.tflite_concat_rescale`).  To stay exact and
  integer-only, that function of an 8-bit input is evaluated at compile time for all 256 input
  values and looked up.  (TFLite requires identical quantization for int8; int8 inputs that
  differ use the same table.)  int16 inputs use the fixed-point requantize.
* ``upward``/``tonearest``: Relay's qnn.concatenate, a fixed-point requantize per input.
* ``float``: the float requantize of :func:`tvm_qnn_ext.quantization.requantize`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tvm import relax, te, tirx, topi

from ..quantization import (
    INTEGER_MODES,
    check_rounding,
    dtype_range,
    quantize_multiplier,
)
from ..quantization import elementwise as ref
from . import fixed_point_te as fp
from .common import attr, op_name, scales, zero_points
from .elementwise import DTYPES, check_call_rounding
from .registry import QnnTypeError, make_call, register_op


def concatenate(
    tensors: Sequence[relax.Expr],
    *,
    axis: int,
    input_scales: Sequence[float],
    input_zero_points: Sequence[int],
    output_scale: float,
    output_zero_point: int,
    out_dtype: str = "int8",
    rounding: str = "tflite",
) -> relax.Call:
    """Concatenate ``tensors`` along ``axis`` into ``out_dtype`` at (output_scale, zp)."""
    check_rounding(rounding)
    tensors = list(tensors)
    if not tensors:
        raise ValueError("qnn.concatenate: needs at least one tensor")
    return make_call(
        "qnn.concatenate",
        [relax.Tuple(tensors)],
        dict(
            axis=int(axis),
            input_scales=[float(s) for s in np.atleast_1d(np.asarray(input_scales, float))],
            input_zero_points=[int(z) for z in np.atleast_1d(np.asarray(input_zero_points))],
            output_scale=[float(output_scale)],
            output_zero_point=[int(output_zero_point)],
            out_dtype=out_dtype,
            rounding=rounding,
        ),
    )


def tflite_rescale_table(
    in_dtype: str, in_scale, in_zp, out_scale, out_zp, out_dtype
) -> np.ndarray:
    """TFLite's float32 concat rescale of every value of an 8-bit ``in_dtype``, saturated."""
    lo, hi = dtype_range(in_dtype)
    values = ref.tflite_concat_rescale(np.arange(lo, hi + 1), in_scale, in_zp, out_scale, out_zp)
    olo, ohi = dtype_range(out_dtype)
    return np.clip(values, olo, ohi).astype(np.int32)


def _params(call):
    ty = call.args[0].ty
    if not isinstance(ty, relax.TupleType):
        raise QnnTypeError(f"{op_name(call)}: expects a tuple of tensors, got {ty}")
    fields = list(ty.fields)
    n = len(fields)
    if n == 0:
        raise QnnTypeError(f"{op_name(call)}: needs at least one tensor")
    for i, f in enumerate(fields):
        if not isinstance(f, relax.TensorType) or f.ndim < 0 or f.shape is None:
            raise QnnTypeError(f"{op_name(call)}: input {i} must be a tensor of known shape")
        if str(f.dtype) not in DTYPES:
            raise QnnTypeError(
                f"{op_name(call)}: input {i} has dtype {f.dtype}, expected one of {list(DTYPES)}"
            )
    out_dtype = str(attr(call, "out_dtype"))
    if out_dtype not in DTYPES:
        raise QnnTypeError(f"{op_name(call)}: out_dtype {out_dtype} not in {list(DTYPES)}")
    s_in = scales(call, "input_scales")
    z_in = np.atleast_1d(np.asarray(attr(call, "input_zero_points"), dtype=np.int64))
    if s_in.size != n or z_in.size != n:
        raise QnnTypeError(
            f"{op_name(call)}: {n} tensors but {s_in.size} input_scales and {z_in.size} "
            "input_zero_points"
        )
    for i, f in enumerate(fields):
        lo, hi = dtype_range(str(f.dtype))
        if not lo <= z_in[i] <= hi:
            raise QnnTypeError(
                f"{op_name(call)}: input_zero_points[{i}] = {z_in[i]} outside the {f.dtype} range"
            )
    s_out = scales(call, "output_scale")
    z_out = zero_points(call, "output_zero_point", out_dtype)
    if s_out.size != 1 or z_out.size != 1:
        raise QnnTypeError(f"{op_name(call)}: output scale and zero point must be per-tensor")
    ndim = fields[0].ndim
    axis = int(attr(call, "axis"))
    if not -ndim <= axis < ndim:
        raise QnnTypeError(f"{op_name(call)}: axis {axis} out of range for rank {ndim}")
    return fields, s_in, z_in, float(s_out[0]), int(z_out[0]), out_dtype, axis % ndim


def _out_shape(call, fields, axis) -> list:
    ndim = fields[0].ndim
    dims = list(fields[0].shape.values)
    for i, f in enumerate(fields[1:], 1):
        if f.ndim != ndim:
            raise QnnTypeError(f"{op_name(call)}: input {i} has rank {f.ndim}, input 0 has {ndim}")
        for d, (a, b) in enumerate(zip(dims, f.shape.values, strict=True)):
            if d == axis:
                dims[d] = a + b
            elif isinstance(a, tirx.IntImm) and isinstance(b, tirx.IntImm) and int(a) != int(b):
                raise QnnTypeError(
                    f"{op_name(call)}: input {i} has shape {list(f.shape.values)}, which differs "
                    f"from input 0 outside axis {axis}"
                )
    return [tirx.IntImm("int64", int(d)) if isinstance(d, tirx.IntImm) else d for d in dims]


@register_op("qnn.concatenate", 1, "Concatenate quantized tensors, rescaling to the output")
class Concatenate:
    @staticmethod
    def infer(call, bb):
        fields, _, _, _, _, out_dtype, axis = _params(call)
        check_call_rounding(call)
        shape = _out_shape(call, fields, axis)
        return relax.TensorType(relax.ShapeExpr(shape), out_dtype)

    @staticmethod
    def legalize(bb, call):
        fields, s_in, z_in, s_out, z_out, out_dtype, axis = _params(call)
        rounding = check_call_rounding(call)
        lo, hi = dtype_range(out_dtype)
        plans, extra = [], []
        for i, f in enumerate(fields):
            dt = str(f.dtype)
            if np.float32(s_in[i]) == np.float32(s_out) and z_in[i] == z_out:
                plans.append(("copy",))
            elif rounding in ("tflite", "tflite_single") and dt != "int16":
                table = tflite_rescale_table(dt, s_in[i], z_in[i], s_out, z_out, out_dtype)
                plans.append(("table", len(extra), dtype_range(dt)[0]))
                extra.append(relax.const(table, "int32"))
            elif rounding in INTEGER_MODES:
                m, s = quantize_multiplier(float(s_in[i]) / s_out, rounding)
                if not -31 <= int(s) <= 30:
                    raise QnnTypeError(f"{op_name(call)}: input {i} scale ratio out of range")
                plans.append(("fixed", int(m), int(s), int(z_in[i])))
            else:
                real = np.float32(float(s_in[i]) / s_out)
                plans.append(("float", float(real), int(z_in[i])))
        n = len(fields)

        def rescale(x, plan, tables):
            kind = plan[0]

            def elem(*idx):
                v = x(*idx)
                if kind == "copy":
                    return fp.clamp_cast(v, lo, hi, out_dtype)
                if kind == "table":
                    return tables[plan[1]](v.astype("int64") - fp._i64(plan[2])).astype(out_dtype)
                centered = v.astype("int64") - fp._i64(plan[-1])
                if kind == "fixed":
                    y = fp.multiply_by_quantized_multiplier(centered, plan[1], plan[2], rounding)
                else:
                    prod = centered.astype("float32") * tirx.const(plan[1], "float32")
                    big = tirx.const(2.0**40, "float32")
                    r = fp.round_half_even_f32(prod)
                    y = tirx.max(tirx.min(r, big), -big).astype("int64")
                return fp.clamp_cast(y + fp._i64(z_out), lo, hi, out_dtype)

            return te.compute(x.shape, elem, name=f"rescale_{kind}")

        def compute(*args):
            xs, tables = args[:n], args[n:]
            parts = [rescale(x, p, tables) for x, p in zip(xs, plans, strict=True)]
            return topi.concatenate(parts, axis)

        inputs = [bb.normalize(relax.TupleGetItem(call.args[0], i)) for i in range(n)]
        return bb.call_te(compute, *inputs, *extra, primfunc_name_hint="qnn_concatenate")

"""AVERAGE_POOL_2D, MAX_POOL_2D and MEAN."""

from __future__ import annotations

from ... import op as qnn
from .common import activation_range, check_fused, same_or_valid_padding
from .importer import Context, converter, quantized_io
from .reader import Operator


def _check_pool(ctx: Context, op: Operator) -> str | None:
    reason = quantized_io(ctx, op) or check_fused(op)
    if reason:
        return reason
    qi, qo = ctx.tensor(op.inputs[0]).quant, ctx.tensor(op.outputs[0]).quant
    if (qi.scale[0], qi.zero_point[0]) != (qo.scale[0], qo.zero_point[0]):
        return "input and output quantization differ"
    return None


@converter("AVERAGE_POOL_2D", "MAX_POOL_2D", check=_check_pool)
def convert_pool2d(ctx: Context, op: Operator):
    o = op.options
    _, h, w, _ = ctx.tensor(op.inputs[0]).shape
    pool = (o["filter_height"], o["filter_width"])
    strides = (o["stride_h"], o["stride_w"])
    padding = same_or_valid_padding(o["padding"], (h, w), pool, strides)
    out = ctx.tensor(op.outputs[0])
    lo, hi = activation_range(o.get("fused_activation_function", 0), out.quant, out.dtype)
    x = ctx.expr(op.inputs[0])
    if op.name == "AVERAGE_POOL_2D":
        call = qnn.avg_pool2d(
            x,
            pool_size=pool,
            strides=strides,
            padding=padding,
            layout="NHWC",
            out_dtype=out.dtype,
            out_min=lo,
            out_max=hi,
            rounding="tflite",
        )
    else:
        call = qnn.max_pool2d(
            x,
            pool_size=pool,
            strides=strides,
            padding=padding,
            layout="NHWC",
            out_min=lo,
            out_max=hi,
        )
    return [ctx.emit(call)]


def _check_mean(ctx: Context, op: Operator) -> str | None:
    reason = quantized_io(ctx, op)
    if reason:
        return reason
    if ctx.tensor(op.inputs[1]).data is None:
        return "non-constant reduction axes"
    return None


@converter("MEAN", check=_check_mean)
def convert_mean(ctx: Context, op: Operator):
    rank = len(ctx.tensor(op.inputs[0]).shape)
    axes = sorted({int(a) % rank for a in ctx.const(op.inputs[1]).reshape(-1)})
    qi, qo = ctx.quant(op.inputs[0]), ctx.quant(op.outputs[0])
    out = ctx.tensor(op.outputs[0])
    call = qnn.mean(
        ctx.expr(op.inputs[0]),
        axis=axes,
        keepdims=bool(op.options.get("keep_dims", False)),
        input_scale=qi.scale[0],
        input_zero_point=int(qi.zero_point[0]),
        output_scale=qo.scale[0],
        output_zero_point=int(qo.zero_point[0]),
        out_dtype=out.dtype,
        rounding="tflite",
    )
    return [ctx.emit(call)]

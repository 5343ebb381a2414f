"""ADD, SUB, MUL and PRELU with TFLite's integer rescaling."""

from __future__ import annotations

from ... import op as qnn
from ...op.elementwise import prelu
from ...quantization.elementwise import LITERT_ADD_LANES
from .common import activation_range, check_fused
from .importer import Context, converter, quantized_io
from .reader import Operator

_OPS = {"ADD": "add", "SUB": "subtract", "MUL": "multiply"}


def _check_binary(ctx: Context, op: Operator) -> str | None:
    reason = quantized_io(ctx, op) or check_fused(op)
    if reason:
        return reason
    a, b = ctx.tensor(op.inputs[0]), ctx.tensor(op.inputs[1])
    if a.dtype != b.dtype:
        return f"mixed input dtypes {a.dtype} and {b.dtype}"
    if b.quant is None:
        return "second input has no quantization parameters"
    return None


@converter("ADD", "SUB", "MUL", check=_check_binary)
def convert_binary(ctx: Context, op: Operator):
    qa, qb, qo = (ctx.quant(i) for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    out = ctx.tensor(op.outputs[0])
    lo, hi = activation_range(op.options.get("fused_activation_function", 0), qo, out.dtype)
    make = getattr(qnn, _OPS[op.name])
    # LiteRT's ADD rescales its inputs differently inside its SIMD loops (litert_add_loop).
    extra = {"litert_simd": True} if op.name == "ADD" and out.dtype in LITERT_ADD_LANES else {}
    call = make(
        ctx.expr(op.inputs[0]),
        ctx.expr(op.inputs[1]),
        lhs_scale=qa.scale[0],
        lhs_zero_point=int(qa.zero_point[0]),
        rhs_scale=qb.scale[0],
        rhs_zero_point=int(qb.zero_point[0]),
        output_scale=qo.scale[0],
        output_zero_point=int(qo.zero_point[0]),
        out_dtype=out.dtype,
        rounding="tflite",
        out_min=lo,
        out_max=hi,
        **extra,
    )
    return [ctx.emit(call)]


def _check_prelu(ctx: Context, op: Operator) -> str | None:
    reason = quantized_io(ctx, op)
    if reason:
        return reason
    x, alpha, out = (ctx.tensor(i) for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    if alpha.dtype != x.dtype or out.dtype != x.dtype:
        return f"input {x.dtype}, alpha {alpha.dtype} and output {out.dtype} must match"
    if alpha.quant is None or alpha.quant.per_axis:
        return "alpha needs per-tensor quantization parameters"
    if x.quant.per_axis or out.quant.per_axis:
        return "per-axis input or output quantization"
    return None


@converter("PRELU", check=_check_prelu)
def convert_prelu(ctx: Context, op: Operator):
    qx, qa, qo = (ctx.quant(i) for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    call = prelu(
        ctx.expr(op.inputs[0]),
        ctx.expr(op.inputs[1]),
        lhs_scale=qx.scale[0],
        lhs_zero_point=int(qx.zero_point[0]),
        rhs_scale=qa.scale[0],
        rhs_zero_point=int(qa.zero_point[0]),
        output_scale=qo.scale[0],
        output_zero_point=int(qo.zero_point[0]),
        out_dtype=ctx.tensor(op.outputs[0]).dtype,
        rounding="tflite",
    )
    return [ctx.emit(call)]

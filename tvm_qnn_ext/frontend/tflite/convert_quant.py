"""QUANTIZE and DEQUANTIZE: the float edges of a model, and int-to-int requantize."""

from __future__ import annotations

import numpy as np

from ... import op as qnn
from .importer import QUANT_DTYPES, Context, converter
from .reader import Operator


def _check_quantize(ctx: Context, op: Operator) -> str | None:
    src, dst = ctx.tensor(op.inputs[0]), ctx.tensor(op.outputs[0])
    if dst.dtype not in QUANT_DTYPES:
        return f"{src.dtype} -> {dst.dtype} (only int8/uint8 outputs are supported)"
    if src.dtype not in ("float32",) + QUANT_DTYPES:
        return f"{src.dtype} input"
    if dst.quant is None or (src.dtype != "float32" and src.quant is None):
        return "missing quantization parameters"
    if dst.quant.per_axis:
        return "per-axis QUANTIZE output"
    return None


@converter("QUANTIZE", check=_check_quantize)
def convert_quantize(ctx: Context, op: Operator):
    src, dst = ctx.tensor(op.inputs[0]), ctx.tensor(op.outputs[0])
    x = ctx.expr(op.inputs[0])
    qo = dst.quant
    if src.dtype == "float32":
        call = qnn.quantize(
            x, qo.scale[0], int(qo.zero_point[0]), dst.dtype, rounding="tflite_neon"
        )
    else:
        qi = src.quant
        call = qnn.requantize(
            x,
            qi.scale[0],
            int(qi.zero_point[0]),
            qo.scale[0],
            int(qo.zero_point[0]),
            dst.dtype,
            rounding="tflite",
            # LiteRT rounds its 16-wide SIMD blocks ties-up, the scalar tail ties-away.
            neon_flat=16 * (int(np.prod(src.shape, dtype=np.int64)) // 16),
        )
    return [ctx.emit(call)]


def _check_dequantize(ctx: Context, op: Operator) -> str | None:
    src, dst = ctx.tensor(op.inputs[0]), ctx.tensor(op.outputs[0])
    if src.dtype not in QUANT_DTYPES or dst.dtype != "float32":
        return f"{src.dtype} -> {dst.dtype} (only int8/uint8 -> float32 is supported)"
    if src.quant is None:
        return "missing quantization parameters"
    return None


@converter("DEQUANTIZE", check=_check_dequantize)
def convert_dequantize(ctx: Context, op: Operator):
    q = ctx.quant(op.inputs[0])
    axis = q.axis if q.per_axis else None
    scale = q.scale if q.per_axis else q.scale[0]
    zp = q.zero_point if q.per_axis else int(q.zero_point[0])
    # LiteRT's optimized kernel rounds per-tensor dequantize in SIMD blocks (affine.dequantize).
    rounding = "tflite" if q.per_axis else "tflite_neon"
    call = qnn.dequantize(ctx.expr(op.inputs[0]), scale, zp, axis=axis, rounding=rounding)
    return [ctx.emit(call)]

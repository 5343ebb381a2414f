"""SOFTMAX, LOGISTIC, TANH, HARD_SWISH, LEAKY_RELU and the RELU family."""

from __future__ import annotations

from ... import op as qnn
from .common import FUSED_RELU, FUSED_RELU6, FUSED_RELU_N1_TO_1, activation_range
from .importer import Context, converter, quantized_io
from .reader import Operator

_RELU_KIND = {"RELU": FUSED_RELU, "RELU6": FUSED_RELU6, "RELU_N1_TO_1": FUSED_RELU_N1_TO_1}


def _qparams(ctx: Context, op: Operator) -> dict:
    qi, qo = ctx.quant(op.inputs[0]), ctx.quant(op.outputs[0])
    return dict(
        input_scale=qi.scale[0],
        input_zero_point=int(qi.zero_point[0]),
        output_scale=qo.scale[0],
        output_zero_point=int(qo.zero_point[0]),
        out_dtype=ctx.tensor(op.outputs[0]).dtype,
    )


@converter("RELU", "RELU6", "RELU_N1_TO_1", check=quantized_io)
def convert_relu(ctx: Context, op: Operator):
    qi, qo = ctx.quant(op.inputs[0]), ctx.quant(op.outputs[0])
    out = ctx.tensor(op.outputs[0])
    lo, hi = activation_range(_RELU_KIND[op.name], qo, out.dtype)
    call = qnn.requantize(
        ctx.expr(op.inputs[0]),
        qi.scale[0],
        int(qi.zero_point[0]),
        qo.scale[0],
        int(qo.zero_point[0]),
        out.dtype,
        rounding="tflite",
        out_min=lo,
        out_max=hi,
    )
    return [ctx.emit(call)]


@converter("SOFTMAX", check=quantized_io)
def convert_softmax(ctx: Context, op: Operator):
    beta = float(op.options.get("beta", 1.0))
    return [ctx.emit(qnn.softmax(ctx.expr(op.inputs[0]), axis=-1, beta=beta, **_qparams(ctx, op)))]


@converter("LOGISTIC", "TANH", "HARD_SWISH", check=quantized_io)
def convert_unary_table(ctx: Context, op: Operator):
    make = {"LOGISTIC": qnn.logistic, "TANH": qnn.tanh, "HARD_SWISH": qnn.hard_swish}[op.name]
    return [ctx.emit(make(ctx.expr(op.inputs[0]), **_qparams(ctx, op)))]


@converter("LEAKY_RELU", check=quantized_io)
def convert_leaky_relu(ctx: Context, op: Operator):
    alpha = float(op.options.get("alpha", 0.2))
    return [ctx.emit(qnn.leaky_relu(ctx.expr(op.inputs[0]), alpha=alpha, **_qparams(ctx, op)))]

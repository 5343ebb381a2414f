"""CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED: int32 accumulation + requantize."""

from __future__ import annotations

import numpy as np
from tvm import relax

from ... import op as qnn
from ...quantization.conv import litert_rounding
from .common import activation_range, check_fused, same_or_valid_padding
from .importer import Context, converter, quantized_io
from .reader import Operator


def _litert_rounding(ctx: Context, op: Operator) -> dict:
    if op.name == "DEPTHWISE_CONV_2D":
        kernel = "depthwise"
    elif op.name == "CONV_2D":
        kernel = "grouped_conv" if _is_grouped(ctx, op) else "conv"
    else:
        kernel = "fully_connected"
    channels = ctx.tensor(op.outputs[0]).shape[-1]
    return litert_rounding(kernel, ctx.tensor(op.inputs[0]).dtype, channels)


def _float32_scale_product(ctx: Context, op: Operator) -> bool:
    """Whether LiteRT multiplies s_in * s_w in float32 rather than in double.

    Per-channel code (PopulateConvolutionQuantizationParams) forms the product in double; uint8
    kernels and FULLY_CONNECTED with one weight scale take the legacy
    GetQuantizedConvolutionMultipler, whose product is float32.  Measured: an accumulator at a
    rounding tie moves by one step (tests/test_tflite_fc_rounding.py).
    """
    if ctx.tensor(op.inputs[0]).dtype == "uint8":
        return True
    return op.name == "FULLY_CONNECTED" and len(ctx.quant(op.inputs[1]).scale) == 1


def _is_grouped(ctx: Context, op: Operator) -> bool:
    return ctx.tensor(op.inputs[1]).shape[3] != ctx.tensor(op.inputs[0]).shape[3]


def _check_weighted(ctx: Context, op: Operator) -> str | None:
    x, w = ctx.tensor(op.inputs[0]), ctx.tensor(op.inputs[1])
    if x.dtype == "float32" and w.dtype in ("int8", "uint8"):
        return f"float32 input with {w.dtype} weights (dynamic-range quantization is not supported)"
    reason = quantized_io(ctx, op) or check_fused(op)
    if reason:
        return reason
    w = ctx.tensor(op.inputs[1])
    if w.data is None:
        return "non-constant weights"
    if w.dtype not in ("int8", "uint8") or w.quant is None:
        return f"{w.dtype} weights (dynamic-range or float models are not supported)"
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        b = ctx.tensor(op.inputs[2])
        if b.dtype != "int32" or b.data is None:
            return f"{b.dtype} bias (expected constant int32)"
    if op.options.get("weights_format", 0) != 0:
        return "shuffled FULLY_CONNECTED weights"
    return None


def _bias(ctx: Context, op: Operator) -> relax.Expr | None:
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        return relax.const(ctx.const(op.inputs[2]).reshape(-1), "int32")
    return None


def _requantize(ctx: Context, op: Operator, acc: relax.Expr, axis: int) -> relax.Expr:
    qi, qw, qo = ctx.quant(op.inputs[0]), ctx.quant(op.inputs[1]), ctx.quant(op.outputs[0])
    out = ctx.tensor(op.outputs[0])
    lo, hi = activation_range(op.options.get("fused_activation_function", 0), qo, out.dtype)
    if _float32_scale_product(ctx, op):
        acc_scale = (np.float32(qi.scale[0]) * qw.scale.astype(np.float32)).astype(np.float64)
    else:
        acc_scale = qi.scale[0] * qw.scale
    return qnn.requantize(
        acc,
        acc_scale,
        0,
        qo.scale[0],
        int(qo.zero_point[0]),
        out.dtype,
        axis=axis,
        out_min=lo,
        out_max=hi,
        **_litert_rounding(ctx, op),
    )


@converter("CONV_2D", "DEPTHWISE_CONV_2D", check=_check_weighted)
def convert_conv2d(ctx: Context, op: Operator):
    x = ctx.expr(op.inputs[0])
    w = ctx.const(op.inputs[1])
    qi, qw = ctx.quant(op.inputs[0]), ctx.quant(op.inputs[1])
    o = op.options
    _, h, wd, cin = ctx.tensor(op.inputs[0]).shape
    strides = (o["stride_h"], o["stride_w"])
    dilation = (o.get("dilation_h_factor", 1), o.get("dilation_w_factor", 1))
    depthwise = op.name == "DEPTHWISE_CONV_2D"
    kh, kw = w.shape[1], w.shape[2]
    if depthwise:
        layout, groups = "IHWO", cin
    else:
        # A filter with fewer input channels than the input means a grouped conv.
        layout, groups = "OHWI", cin // w.shape[3]
    padding = same_or_valid_padding(o["padding"], (h, wd), (kh, kw), strides, dilation)
    acc = ctx.emit(
        qnn.conv2d(
            x,
            relax.const(w, str(w.dtype)),
            _bias(ctx, op),
            strides=strides,
            padding=padding,
            dilation=dilation,
            groups=groups,
            data_layout="NHWC",
            kernel_layout=layout,
            input_zero_point=int(qi.zero_point[0]),
            kernel_zero_point=_kernel_zp(qw),
            out_dtype="int32",
        )
    )
    return [ctx.emit(_requantize(ctx, op, acc, axis=3))]


def _kernel_zp(qw) -> int | list[int]:
    zp = np.asarray(qw.zero_point)
    return int(zp[0]) if np.all(zp == zp[0]) else [int(z) for z in zp]


@converter("FULLY_CONNECTED", check=_check_weighted)
def convert_fully_connected(ctx: Context, op: Operator):
    w = ctx.const(op.inputs[1])
    units, k = w.shape
    xt = ctx.tensor(op.inputs[0])
    x = ctx.expr(op.inputs[0])
    batch = int(np.prod(xt.shape)) // k
    if tuple(xt.shape) != (batch, k):
        x = ctx.emit(relax.op.reshape(x, (batch, k)))
    qi, qw = ctx.quant(op.inputs[0]), ctx.quant(op.inputs[1])
    acc = ctx.emit(
        qnn.dense(
            x,
            relax.const(w, str(w.dtype)),
            _bias(ctx, op),
            input_zero_point=int(qi.zero_point[0]),
            kernel_zero_point=_kernel_zp(qw),
            weight_layout="NK",
            out_dtype="int32",
        )
    )
    y = ctx.emit(_requantize(ctx, op, acc, axis=1))
    out_shape = ctx.tensor(op.outputs[0]).shape
    if out_shape and tuple(out_shape) != (batch, units):
        y = ctx.emit(relax.op.reshape(y, out_shape))
    return [y]

"""QDQToQNN rules for TVM's TFLite frontend output, with LiteRT builtin kernels' exact arithmetic.

Each choice mirrors our own TFLite importer (frontend/tflite/convert_*.py), which is bit-exact
with LiteRT: ruy's ties-up rounding for CONV_2D/FULLY_CONNECTED, the 8-channel SIMD blocks of
int8 DEPTHWISE_CONV_2D, float32 multipliers for uint8 kernels, ADD's SIMD input rescale.
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from .. import op as qnn
from ..quantization import dtype_range, round_half_away
from ..quantization.conv import litert_rounding
from ..quantization.elementwise import LITERT_ADD_LANES
from .qdq_to_qnn import (
    NotRewritable,
    QParams,
    Region,
    RewriteContext,
    dtype_of,
    fold_shape_op,
    op_name,
    qdq_rule,
)

TFLITE = "tflite"
_ACCUMULATING = ("relax.nn.conv2d", "relax.matmul")


def act_bounds(region: Region) -> tuple[int | None, int | None]:
    """A peeled float relu/clip as saturation bounds, as CalculateActivationRangeQuantized."""
    q = region.out
    lo_q, hi_q = dtype_range(q.dtype)

    def quantized(f: float) -> int:
        return q.zp + int(round_half_away(np.float32(f) / np.float32(q.s)))

    lo, hi = region.act
    out_min = None if lo is None else max(lo_q, quantized(lo))
    out_max = None if hi is None else min(hi_q, quantized(hi))
    return out_min, out_max


# -- conv2d / dense -----------------------------------------------------------------------------


def _weight(ctx: RewriteContext, expr: relax.Expr) -> tuple[np.ndarray, QParams, bool]:
    """Constant weights, their parameters (axis in the final layout), and whether TVM reshaped
    them (its DEPTHWISE_CONV_2D marker)."""
    call = ctx.call(expr, "relax.reshape", "relax.permute_dims")
    if call is None:
        w, q = ctx.const_input(expr, "weight")
        return w, q, False
    w, q = ctx.const_input(call.args[0], "weight")
    new = fold_shape_op(call, w)
    axis = q.axis
    if axis is not None:
        if op_name(call) == "relax.permute_dims":
            axis = [int(a) for a in call.attrs.axes].index(axis)
        else:
            axis = _reshaped_axis(w.shape, new.shape, axis)
    return new, QParams(q.scale, q.zero_point, axis, q.dtype), op_name(call) == "relax.reshape"


def _reshaped_axis(old: tuple, new: tuple, axis: int) -> int:
    before = int(np.prod(old[:axis]))
    for k, size in enumerate(new):
        if size == old[axis] and int(np.prod(new[:k])) == before:
            return k
    raise NotRewritable(f"per-channel axis {axis} of {old} does not survive reshape to {new}")


def _bias(ctx: RewriteContext, expr, acc_scale: np.ndarray, channels: int) -> relax.Expr:
    b, qb = ctx.const_input(expr, "bias")
    if b.dtype != np.int32 or np.any(qb.zero_point != 0):
        raise NotRewritable(f"bias is {b.dtype} with zero point {qb.zero_point.tolist()[:2]}")
    b = b.reshape(-1)
    if b.size != channels:
        raise NotRewritable(f"bias has {b.size} values for {channels} output channels")
    scale = np.broadcast_to(qb.scale, (channels,))
    if not np.allclose(scale, np.broadcast_to(acc_scale, (channels,)), rtol=1e-5, atol=0):
        raise NotRewritable("bias scale is not input scale * weight scale")
    return relax.const(b, "int32")


def _acc_scale(qi: QParams, qw: QParams) -> np.ndarray:
    # uint8 kernels form s_in * s_w in float32 (LiteRT's legacy GetQuantizedConvolutionMultipler).
    if qi.dtype == "uint8":
        return (np.float32(qi.s) * qw.scale.astype(np.float32)).astype(np.float64)
    return qi.s * qw.scale


def _kernel_zp(qw: QParams) -> int | list[int]:
    zp = qw.zero_point
    return int(zp[0]) if np.all(zp == zp[0]) else [int(z) for z in zp]


def _requantize(region: Region, acc, acc_scale, axis: int, **rounding) -> relax.Expr:
    lo, hi = act_bounds(region)
    out = region.out
    return qnn.requantize(
        acc, acc_scale, 0, out.s, out.zp, out.dtype, axis=axis, out_min=lo, out_max=hi, **rounding
    )


def _conv(region: Region, conv: relax.Call, bias_expr) -> relax.Expr:
    ctx, a = region.ctx, conv.attrs
    x, qi = ctx.input(conv.args[0])
    w, qw, reshaped = _weight(ctx, conv.args[1])
    dl, kl = str(a.data_layout), str(a.kernel_layout)
    if str(a.out_layout) != dl:
        raise NotRewritable(f"out_layout {a.out_layout} differs from data_layout {dl}")
    o_axis = kl.index("O")
    channels = w.shape[o_axis]
    if qw.per_axis and qw.axis != o_axis:
        raise NotRewritable(f"weight quantized along axis {qw.axis}, not output channels")
    in_channels = ctx.shape(conv.args[0])[dl.index("C")]
    groups = int(a.groups)
    depthwise = reshaped or (groups == in_channels and groups > 1 and w.shape[kl.index("I")] == 1)
    acc_scale = _acc_scale(qi, qw)
    bias = None if bias_expr is None else _bias(ctx, bias_expr, acc_scale, channels)
    acc = ctx.emit(
        qnn.conv2d(
            x,
            relax.const(w, str(w.dtype)),
            bias,
            strides=[int(s) for s in a.strides],
            padding=[int(p) for p in a.padding],
            dilation=[int(d) for d in a.dilation],
            groups=groups,
            data_layout=dl,
            kernel_layout=kl,
            input_zero_point=qi.zp,
            kernel_zero_point=_kernel_zp(qw),
            out_dtype="int32",
        )
    )
    kernel = "depthwise" if depthwise else ("grouped_conv" if groups > 1 else "conv")
    rounding = litert_rounding(kernel, qi.dtype, channels)
    return _requantize(region, acc, acc_scale, dl.index("C"), **rounding)


def _dense(region: Region, matmul: relax.Call, bias_expr) -> relax.Expr:
    ctx = region.ctx
    x, qi = ctx.input(matmul.args[0])
    w, qw, _ = _weight(ctx, matmul.args[1])
    if w.ndim != 2:
        raise NotRewritable(f"matmul weight of rank {w.ndim}")
    if qw.per_axis and qw.axis != 1:
        raise NotRewritable(f"matmul weight quantized along axis {qw.axis}, not output units")
    units = w.shape[1]
    acc_scale = _acc_scale(qi, qw)
    bias = None if bias_expr is None else _bias(ctx, bias_expr, acc_scale, units)
    acc = ctx.emit(
        qnn.dense(
            x,
            relax.const(np.ascontiguousarray(w.T), str(w.dtype)),
            bias,
            input_zero_point=qi.zp,
            kernel_zero_point=_kernel_zp(qw),
            weight_layout="NK",
            out_dtype="int32",
        )
    )
    axis = len(ctx.shape(matmul)) - 1
    rounding = litert_rounding("fully_connected", qi.dtype, units)
    return _requantize(region, acc, acc_scale, axis, **rounding)


_ACCUMULATE = {"relax.nn.conv2d": _conv, "relax.matmul": _dense}


@qdq_rule("relax.nn.conv2d", "relax.matmul", framework=TFLITE)
def accumulate(region: Region) -> relax.Expr:
    return _ACCUMULATE[op_name(region.anchor)](region, region.anchor, None)


# -- elementwise ---------------------------------------------------------------------------------


def _biased(region: Region) -> tuple[relax.Call, relax.Expr] | None:
    """``conv/matmul + dequantized constant bias`` -> (accumulating call, bias expr)."""
    ctx = region.ctx
    lhs, rhs = region.anchor.args
    for acc_expr, bias_expr in ((lhs, rhs), (rhs, lhs)):
        acc = ctx.call(acc_expr, *_ACCUMULATING)
        found = ctx.dequantized(bias_expr)
        if acc is not None and found is not None and ctx.constant(found[0]) is not None:
            if dtype_of(found[0]) == "int32" and ctx.single_use(acc_expr):
                return acc, bias_expr
    return None


def _binary(region: Region, make, **extra) -> relax.Expr:
    ctx = region.ctx
    a, qa = ctx.input(region.anchor.args[0], "lhs")
    b, qb = ctx.input(region.anchor.args[1], "rhs")
    if qa.dtype != qb.dtype:
        raise NotRewritable(f"mixed input dtypes {qa.dtype} and {qb.dtype}")
    lo, hi = act_bounds(region)
    out = region.out
    return make(
        a,
        b,
        lhs_scale=qa.s,
        lhs_zero_point=qa.zp,
        rhs_scale=qb.s,
        rhs_zero_point=qb.zp,
        output_scale=out.s,
        output_zero_point=out.zp,
        out_dtype=out.dtype,
        rounding="tflite",
        out_min=lo,
        out_max=hi,
        **extra,
    )


@qdq_rule("relax.add", framework=TFLITE)
def add(region: Region) -> relax.Expr:
    biased = _biased(region)
    if biased is not None:
        acc, bias = biased
        return _ACCUMULATE[op_name(acc)](region, acc, bias)
    # LiteRT's ADD rescales its inputs differently inside its SIMD loops (litert_add_loop).
    simd = region.out.dtype in LITERT_ADD_LANES
    return _binary(region, qnn.add, **({"litert_simd": True} if simd else {}))


@qdq_rule("relax.subtract", framework=TFLITE)
def subtract(region: Region) -> relax.Expr:
    return _binary(region, qnn.subtract)


@qdq_rule("relax.multiply", framework=TFLITE)
def multiply(region: Region) -> relax.Expr:
    return _binary(region, qnn.multiply)

"""QDQToQNN rules for TVM's ONNX frontend output, following onnxruntime's CPU arithmetic.

onnxruntime fuses QDQ groups into integer kernels (QLinearConv, QGemm, QLinearAdd) and runs
the rest in float; both round half to even in float32:

* Conv / Gemm: ``acc = sum((x - zx) * (w - zw)) + bias_int32`` (the stored int32 bias, as is),
  then ``acc * fl32(fl32(sx * sw[c]) / sy)`` in float32.  A float32 multiplier is exact in Q31,
  so one integer rounding (``tonearest``) of the exact product equals onnxruntime's result
  unless that product lies within a float32 ulp of a .5 tie.
* Add: ``a' * fl32(sa / sy) + b' * fl32(sb / sy)``; we sum both inputs in int32 at a common
  scale ``2^-20 * max(sa, sb)`` and requantize once.
* ``DQ -> Relu/Clip -> Q`` and plain ``DQ -> Q``: a requantize whose saturation bounds are the
  clip (exact when the scales are equal, the usual case).
* ReduceMean: ``qnn.mean``, one rounding of the centred sum.

Conv1d is ``qnn.conv2d`` on an H=1 view (NCW -> NC1W).  The model's input quantize stays TVM's
``R.quantize``, which is exactly ONNX QuantizeLinear (``x / s``, ties to even, saturate).
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from .. import op as qnn
from ..quantization import dtype_range
from .qdq_to_qnn import (
    NotRewritable,
    QParams,
    Region,
    RewriteContext,
    dtype_of,
    op_name,
    qdq_binding_rule,
    qdq_rule,
)

ONNX = "onnx"
ROUNDING = "tonearest"
#: The Add rule's common scale lies this many bits below the larger input scale.
ADD_FRACTION_BITS = 20
_ACCUMULATING = ("relax.nn.conv1d", "relax.nn.conv2d", "relax.matmul")


def act_bounds(region: Region) -> tuple[int | None, int | None]:
    """A peeled float relu/clip as saturation bounds (quantized half to even, as ONNX)."""
    q = region.out
    lo_q, hi_q = dtype_range(q.dtype)
    lo, hi = region.act

    def quantized(f: float) -> int:
        return q.zp + int(np.rint(np.float32(f) / np.float32(q.s)))

    return (
        None if lo is None else min(hi_q, max(lo_q, quantized(lo))),
        None if hi is None else max(lo_q, min(hi_q, quantized(hi))),
    )


def _requantize(region: Region, x, in_scale, in_zp: int, axis=None, out_scale=None):
    """``x`` at ``in_scale`` to the region's output; ``out_scale=1.0`` makes ``in_scale`` the
    exact multiplier."""
    lo, hi = act_bounds(region)
    out = region.out
    return qnn.requantize(
        x, in_scale, in_zp, out.s if out_scale is None else out_scale, out.zp, out.dtype,
        axis=axis, rounding=ROUNDING, out_min=lo, out_max=hi,
    )  # fmt: skip


def _multiplier(qi: QParams, qw: QParams, qo: QParams, channels: int) -> np.ndarray:
    """onnxruntime's per-channel output scale: ``fl32(fl32(sx * sw) / sy)``."""
    sw = np.broadcast_to(qw.scale.astype(np.float32), (channels,))
    return (np.float32(qi.s) * sw) / np.float32(qo.s)


def _weight(ctx: RewriteContext, expr) -> tuple[np.ndarray, QParams, bool]:
    """Constant weights, their parameters, and whether a ``permute_dims([1, 0])`` (Gemm's
    transB) was looked through."""
    perm = ctx.call(expr, "relax.permute_dims")
    transposed = perm is not None
    if transposed:
        axes = perm.attrs.axes
        if axes is not None and [int(a) for a in axes] != [1, 0]:
            raise NotRewritable(f"weight permuted by {list(axes)}")
        expr = perm.args[0]
    w, qw = ctx.const_input(expr, "weight")
    if qw.dtype not in ("int8", "uint8"):
        raise NotRewritable(f"weight is {qw.dtype}")
    return w, qw, transposed


def _bias(ctx: RewriteContext, expr, qi: QParams, qw: QParams, channels: int) -> relax.Expr:
    """The stored int32 bias (onnxruntime adds it to the accumulator unchanged)."""
    reshape = ctx.call(expr, "relax.reshape")
    if reshape is not None:
        expr = reshape.args[0]
    b, qb = ctx.const_input(expr, "bias")
    if b.dtype != np.int32 or np.any(qb.zero_point != 0):
        raise NotRewritable(f"bias is {b.dtype} with zero point {qb.zero_point.tolist()[:2]}")
    b = b.reshape(-1)
    if b.size != channels:
        raise NotRewritable(f"bias has {b.size} values for {channels} output channels")
    want = np.float32(qi.s) * np.broadcast_to(qw.scale.astype(np.float32), (channels,))
    if not np.allclose(np.broadcast_to(qb.scale, (channels,)), want, rtol=1e-5, atol=0):
        raise NotRewritable("bias scale is not input scale * weight scale")
    return relax.const(b, "int32")


def _kernel_zp(qw: QParams, channels: int) -> list[int]:
    return [int(z) for z in np.broadcast_to(qw.zero_point, (channels,))]


def _conv(region: Region, conv: relax.Call, bias_expr) -> relax.Expr:
    ctx, a = region.ctx, conv.attrs
    one_d = op_name(conv) == "relax.nn.conv1d"
    want = ("NCW", "OIW") if one_d else ("NCHW", "OIHW")
    got = (str(a.data_layout), str(a.kernel_layout))
    if got != want or str(a.out_layout) != want[0]:
        raise NotRewritable(f"conv layouts {got}, expected ONNX's {want}")
    x, qi = ctx.input(conv.args[0])
    w, qw, _ = _weight(ctx, conv.args[1])
    channels = w.shape[0]
    if qw.per_axis and qw.axis % w.ndim != 0:
        raise NotRewritable(f"weight quantized along axis {qw.axis}, not output channels")
    bias = None if bias_expr is None else _bias(ctx, bias_expr, qi, qw, channels)
    strides, dilation = [int(s) for s in a.strides], [int(d) for d in a.dilation]
    padding = [int(p) for p in a.padding]
    if one_d:
        x = ctx.emit(relax.op.expand_dims(x, axis=2))
        w = w[:, :, None, :]
        strides, dilation = [1, *strides], [1, *dilation]
        padding = [0, padding[0], 0, padding[1]]
    acc = ctx.emit(
        qnn.conv2d(
            x,
            relax.const(np.ascontiguousarray(w), str(w.dtype)),
            bias,
            strides=strides,
            padding=padding,
            dilation=dilation,
            groups=int(a.groups),
            data_layout="NCHW",
            kernel_layout="OIHW",
            input_zero_point=qi.zp,
            kernel_zero_point=_kernel_zp(qw, channels),
        )
    )
    y = _requantize(region, acc, _multiplier(qi, qw, region.out, channels), 0, 1, 1.0)
    return relax.op.squeeze(ctx.emit(y), axis=[2]) if one_d else y


def _dense(region: Region, matmul: relax.Call, bias_expr) -> relax.Expr:
    ctx = region.ctx
    x, qi = ctx.input(matmul.args[0])
    w, qw, transposed = _weight(ctx, matmul.args[1])
    if w.ndim != 2:
        raise NotRewritable(f"matmul weight of rank {w.ndim}")
    out_axis = 0 if transposed else 1
    if qw.per_axis and qw.axis % 2 != out_axis:
        raise NotRewritable(f"weight quantized along axis {qw.axis}, not output units")
    units = w.shape[out_axis]
    bias = None if bias_expr is None else _bias(ctx, bias_expr, qi, qw, units)
    acc = ctx.emit(
        qnn.dense(
            x,
            relax.const(w, str(w.dtype)),
            bias,
            input_zero_point=qi.zp,
            kernel_zero_point=_kernel_zp(qw, units),
            weight_layout="NK" if transposed else "KN",
        )
    )
    axis = len(ctx.shape(matmul)) - 1
    return _requantize(region, acc, _multiplier(qi, qw, region.out, units), 0, axis, 1.0)


def _accumulate(region: Region, call: relax.Call, bias_expr) -> relax.Expr:
    if op_name(call) == "relax.matmul":
        return _dense(region, call, bias_expr)
    return _conv(region, call, bias_expr)


@qdq_rule(*_ACCUMULATING, framework=ONNX)
def accumulate(region: Region) -> relax.Expr:
    """Conv (1-D, 2-D, grouped) and MatMul/Gemm without bias."""
    return _accumulate(region, region.anchor, None)


@qdq_rule("relax.add", framework=ONNX)
def add(region: Region) -> relax.Expr:
    """Conv/Gemm + int32 bias, or the quantized sum of two activations."""
    ctx = region.ctx
    lhs, rhs = region.anchor.args
    for acc_expr, bias_expr in ((lhs, rhs), (rhs, lhs)):
        acc = ctx.call(acc_expr, *_ACCUMULATING)
        if acc is not None and ctx.single_use(acc_expr) and _is_constant_bias(ctx, bias_expr):
            return _accumulate(region, acc, bias_expr)
    return _activation_sum(region)


def _is_constant_bias(ctx: RewriteContext, expr) -> bool:
    reshape = ctx.call(expr, "relax.reshape")
    found = ctx.dequantized(expr if reshape is None else reshape.args[0])
    return found is not None and ctx.constant(found[0]) is not None


def _activation_sum(region: Region) -> relax.Expr:
    ctx = region.ctx
    a, qa = ctx.input(region.anchor.args[0], "lhs")
    b, qb = ctx.input(region.anchor.args[1], "rhs")
    common = max(qa.s, qb.s) / 2.0**ADD_FRACTION_BITS

    def term(v, q: QParams):
        centred = relax.op.astype(v, "int32")
        if q.zp:
            centred = relax.op.subtract(centred, relax.const(q.zp, "int32"))
        return ctx.emit(relax.op.multiply(centred, relax.const(round(q.s / common), "int32")))

    total = ctx.emit(relax.op.add(term(a, qa), term(b, qb)))
    return _requantize(region, total, common, 0)


@qdq_rule("relax.dequantize", framework=ONNX)
def rescale(region: Region) -> relax.Expr:
    """``DQ -> [Relu/Clip] -> Q``: a requantize (the clip becomes its bounds)."""
    x, qi = region.ctx.input(region.anchor)
    if region.act == (None, None) and qi.same_as(region.out):
        return x
    return _requantize(region, x, qi.s, qi.zp)


@qdq_rule("relax.mean", framework=ONNX)
def mean(region: Region) -> relax.Expr:
    """ReduceMean of a dequantized tensor."""
    ctx, call = region.ctx, region.anchor
    if region.act != (None, None):
        raise NotRewritable("an activation after ReduceMean")
    x, qi = ctx.input(call.args[0])
    ndim = len(ctx.shape(call.args[0]))
    axes = list(range(ndim)) if call.attrs.axis is None else [int(a) for a in call.attrs.axis]
    out = region.out
    return qnn.mean(
        x,
        axis=axes,
        keepdims=bool(call.attrs.keepdims),
        input_scale=qi.s,
        input_zero_point=qi.zp,
        output_scale=out.s,
        output_zero_point=out.zp,
        out_dtype=out.dtype,
        rounding=ROUNDING,
    )


@qdq_binding_rule("relax.dequantize", framework=ONNX)
def dequantize_activation(ctx: RewriteContext, binding: relax.VarBinding) -> relax.Expr | None:
    """DequantizeLinear of an activation becomes ``qnn.dequantize`` (the same ``(q - zp) * s``
    in float32).  Those feeding a rewritten region are dropped afterwards; what remains are the
    model's float outputs, which may sit in a tuple of several outputs."""
    call = binding.value
    if ctx.constant(call.args[0]) is not None or dtype_of(call.args[0]) not in ("int8", "uint8"):
        return None
    q = ctx.qparams(call, dtype_of(call.args[0]))
    return qnn.dequantize(ctx.use(call.args[0]), q.scale, q.zero_point, axis=q.axis)

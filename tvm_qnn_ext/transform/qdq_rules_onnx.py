"""QDQToQNN rules for TVM's ONNX frontend output, following onnxruntime's CPU arithmetic.

onnxruntime fuses QDQ groups into integer kernels (QLinearConv, QGemm, QLinearAdd, ...) and
runs the rest in float; both round half to even:

* Conv / Gemm: ``acc = sum((x - zx) * (w - zw)) + bias_int32`` (the stored int32 bias, as is),
  then ``acc * fl32(fl32(sx * sw[c]) / sy)`` in float32.  A float32 multiplier is exact in Q31,
  so one integer rounding of the exact product equals onnxruntime's result unless that product
  lies within a float32 ulp of a .5 tie.
* Add: ``a' * fl32(sa / sy) + b' * fl32(sb / sy)``; we sum both inputs in int32 at a common
  scale ``2^-20 * max(sa, sb)`` and requantize once.
* ``DQ -> Relu/Clip -> Q`` and plain ``DQ -> Q``: a requantize whose saturation bounds are the
  clip (exact when the scales are equal, the usual case).
* ReduceMean / GlobalAveragePool: the centred sum, requantized once.  AveragePool: the window
  sum (a depthwise ``qnn.conv2d`` with weights 1), requantized once.  Concat: per input.
* Elementwise functions of one tensor: lookup tables (:mod:`.qdq_rules_onnx_unary`).

Every requantize rounds ties to even: ``qnn.requantize``'s ``tonearest`` (ties away) where no
input in range can be a tie, else explicit integer Relax (:mod:`.requantize_half_even`).
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
    concat_region,
    dtype_of,
    op_name,
    qdq_binding_rule,
    qdq_rule,
)
from .requantize_half_even import half_even_requantize, ties_possible

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


def deviation(q: QParams) -> int:
    """The largest ``|x - zero_point|`` of a tensor quantized with ``q``."""
    lo, hi = dtype_range(q.dtype)
    return max(q.zp - lo, hi - q.zp)


def requantize_output(
    region: Region, x, in_scale, in_zp: int, *, bound: int, axis=None, out_scale=None,
    zero_point_first: bool = False,
):  # fmt: skip
    """``x`` at ``in_scale`` to the region's output, rounding half to even as onnxruntime;
    ``bound`` limits ``|x - in_zp|``.  ``out_scale=1.0`` makes ``in_scale`` the multiplier;
    ``zero_point_first``: ties go to the even value after adding the output zero point."""
    lo, hi = act_bounds(region)
    out = region.out
    out_scale = out.s if out_scale is None else out_scale
    real = np.asarray(in_scale, np.float64) / np.float64(out_scale)
    if not ties_possible(real, bound):  # then ``tonearest`` rounds exactly as ties-to-even
        return qnn.requantize(
            x, in_scale, in_zp, out_scale, out.zp, out.dtype, axis=axis, rounding=ROUNDING,
            out_min=lo, out_max=hi,
        )  # fmt: skip
    qlo, qhi = dtype_range(out.dtype)
    return half_even_requantize(
        region.ctx.emit, x, real, in_zero_point=in_zp, out_zero_point=out.zp, axis=axis,
        ndim=x.ty.ndim, out_min=qlo if lo is None else lo, out_max=qhi if hi is None else hi,
        out_dtype=out.dtype, bound=bound, zero_point_first=zero_point_first,
    )  # fmt: skip


def _acc_bound(w: np.ndarray, zw: list[int], qi: QParams, bias: relax.Expr | None) -> int:
    """A bound on ``|acc|`` for weights ``w`` with output channels on axis 0."""
    centred = np.abs(w.reshape(w.shape[0], -1).astype(np.int64) - np.asarray(zw)[:, None])
    b = 0 if bias is None else int(np.abs(bias.value.numpy().astype(np.int64)).max())
    return int(centred.sum(axis=1).max()) * deviation(qi) + b


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
    mult = _multiplier(qi, qw, region.out, channels)
    bound = _acc_bound(w, _kernel_zp(qw, channels), qi, bias)
    y = requantize_output(region, acc, mult, 0, bound=bound, axis=1, out_scale=1.0)
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
    mult = _multiplier(qi, qw, region.out, units)
    bound = _acc_bound(w if transposed else w.T, _kernel_zp(qw, units), qi, bias)
    return requantize_output(region, acc, mult, 0, bound=bound, axis=axis, out_scale=1.0)


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
    try:
        return _activation_sum(region)
    except NotRewritable as e:
        from .qdq_rules_onnx_unary import tabulate  # e.g. ``x + c``: one quantized input

        try:
            return tabulate(region)
        except NotRewritable as e2:
            raise NotRewritable(f"{e}; as a lookup table: {e2}") from None


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
    bound = round(qa.s / common) * deviation(qa) + round(qb.s / common) * deviation(qb)
    return requantize_output(region, total, common, 0, bound=bound)


@qdq_rule("relax.dequantize", framework=ONNX)
def rescale(region: Region) -> relax.Expr:
    """``DQ -> [Relu/Clip] -> Q``: a requantize (the clip becomes its bounds)."""
    x, qi = region.ctx.input(region.anchor)
    if region.act == (None, None) and qi.same_as(region.out):
        return x
    return requantize_output(region, x, qi.s, qi.zp, bound=deviation(qi))


@qdq_rule("relax.mean", framework=ONNX)
def mean(region: Region) -> relax.Expr:
    """ReduceMean of a dequantized tensor."""
    ctx, call = region.ctx, region.anchor
    if region.act != (None, None):
        raise NotRewritable("an activation after ReduceMean")
    x, qi = ctx.input(call.args[0])
    shape = ctx.shape(call.args[0])
    axes = range(len(shape)) if call.attrs.axis is None else call.attrs.axis
    axes = sorted({int(a) % len(shape) for a in axes})
    count = int(np.prod([shape[a] for a in axes]))
    out = region.out
    keepdims = bool(call.attrs.keepdims)
    if ties_possible(qi.s / (count * out.s), count * deviation(qi)):
        # qnn.mean breaks ties away from zero; onnxruntime rounds the float mean to even.
        total = ctx.emit(relax.op.sum(relax.op.astype(x, "int32"), axes, keepdims))
        return requantize_output(
            region, total, qi.s / count, qi.zp * count, bound=count * deviation(qi)
        )
    return qnn.mean(
        x,
        axis=axes,
        keepdims=keepdims,
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


@qdq_rule("relax.concat", framework=ONNX)
def concat(region: Region) -> relax.Expr:
    """Concat (onnxruntime's QLinearConcat requantizes each input whose parameters differ
    from the output's, rounding half to even in float)."""
    if region.act != (None, None):
        raise NotRewritable("an activation after Concat")
    return concat_region(region, ROUNDING)


@qdq_rule("relax.nn.avg_pool2d", framework=ONNX)
def avg_pool2d(region: Region) -> relax.Expr:
    """AveragePool.  onnxruntime (QLinearAveragePool) averages the dequantized floats and
    rounds ``mean / s_out + zp_out`` half to even; with a constant window count (no padding, or
    padding counted) we do the same in integers: the window sum is a depthwise ``qnn.conv2d``
    with weights 1, requantized by ``s_in / (count * s_out)``.  Otherwise: the integer
    average, then a requantize (two roundings)."""
    ctx, a = region.ctx, region.anchor.attrs
    if bool(a.ceil_mode) or any(int(d) != 1 for d in a.dilation) or a.out_layout != a.layout:
        raise NotRewritable("AveragePool with ceil_mode or dilation")
    x, qi = ctx.input(region.anchor.args[0])
    pool = [int(k) for k in a.pool_size]
    strides, padding = [int(s) for s in a.strides], [int(p) for p in a.padding]
    if str(a.layout) == "NCHW" and (bool(a.count_include_pad) or not any(padding)):
        channels = ctx.shape(region.anchor.args[0])[1]
        ones = relax.const(np.ones((channels, 1, *pool), np.int8), "int8")
        window_sum = qnn.conv2d(
            x, ones, None, strides=strides, padding=padding, groups=channels,
            data_layout="NCHW", kernel_layout="OIHW", input_zero_point=qi.zp,
        )  # fmt: skip
        count = pool[0] * pool[1]
        bound = count * deviation(qi)
        return requantize_output(
            region, ctx.emit(window_sum), qi.s / count, 0, bound=bound, zero_point_first=True
        )
    pooled = qnn.avg_pool2d(
        x, pool_size=pool, strides=strides, padding=padding, layout=str(a.layout),
        out_dtype=qi.dtype, rounding=ROUNDING, count_include_pad=bool(a.count_include_pad),
    )  # fmt: skip
    if region.act == (None, None) and qi.same_as(region.out):
        return pooled
    return requantize_output(region, ctx.emit(pooled), qi.s, qi.zp, bound=deviation(qi))

"""QDQToQNN rules for TVM's TFLite output: one-input ops, data movement, the model's edges and
the integer patterns TVM emits itself (avg_pool2d in int32, fused activations as int8 clip)."""

from __future__ import annotations

import numpy as np
from tvm import relax

from .. import op as qnn
from ..quantization import dtype_range, round_half_away
from .qdq_rules_tflite import TFLITE, act_bounds
from .qdq_to_qnn import (
    NotRewritable,
    Region,
    RewriteContext,
    concat_region,
    dtype_of,
    op_name,
    qdq_binding_rule,
    qdq_rule,
    quantize_model_input,
)


def _single_input(region: Region) -> tuple[relax.Expr, dict]:
    x, qi = region.ctx.input(region.anchor.args[0])
    out = region.out
    if qi.dtype != out.dtype:
        raise NotRewritable(f"input {qi.dtype} and output {out.dtype} differ")
    params = dict(
        input_scale=qi.s,
        input_zero_point=qi.zp,
        output_scale=out.s,
        output_zero_point=out.zp,
        out_dtype=out.dtype,
    )
    return x, params


def _no_activation(region: Region) -> None:
    if region.act != (None, None):
        raise NotRewritable("a relu/clip after this op is not supported")


@qdq_rule("relax.nn.softmax", framework=TFLITE)
def softmax(region: Region) -> relax.Expr:
    _no_activation(region)
    x, params = _single_input(region)
    axis = int(region.anchor.attrs.axis)
    if axis not in (-1, len(region.out_shape) - 1):
        raise NotRewritable(f"softmax over axis {axis} (LiteRT's is the last axis)")
    return qnn.softmax(x, axis=-1, beta=1.0, **params)


_TABLES = {"relax.sigmoid": qnn.logistic, "relax.tanh": qnn.tanh}


@qdq_rule("relax.sigmoid", "relax.tanh", framework=TFLITE)
def unary_table(region: Region) -> relax.Expr:
    _no_activation(region)
    x, params = _single_input(region)
    return _TABLES[op_name(region.anchor)](x, **params)


@qdq_rule("relax.nn.leakyrelu", framework=TFLITE)
def leaky_relu(region: Region) -> relax.Expr:
    _no_activation(region)
    x, params = _single_input(region)
    return qnn.leaky_relu(x, alpha=float(region.anchor.attrs.alpha), **params)


def _is_scalar(ctx: RewriteContext, expr: relax.Expr, value: float) -> bool:
    c = ctx.constant(expr)
    return c is not None and c.size == 1 and float(c.reshape(-1)[0]) == value


@qdq_rule("relax.divide", framework=TFLITE)
def hard_swish(region: Region) -> relax.Expr:
    """TVM's HARD_SWISH: ``x * clip(x + 3, 0, 6) / 6`` on the dequantized input."""
    ctx = region.ctx
    num, six = region.anchor.args
    mul = ctx.call(num, "relax.multiply")
    clip = None if mul is None else ctx.call(mul.args[1], "relax.clip")
    plus = None if clip is None else ctx.call(clip.args[0], "relax.add")
    if plus is None or not (_is_scalar(ctx, six, 6.0) and _is_scalar(ctx, plus.args[1], 3.0)):
        raise NotRewritable("divide is not TVM's hard_swish pattern x * relu6(x + 3) / 6")
    if not (_is_scalar(ctx, clip.args[1], 0.0) and _is_scalar(ctx, clip.args[2], 6.0)):
        raise NotRewritable("divide is not TVM's hard_swish pattern (clip bounds)")
    if not (ctx.value(mul.args[0]).same_as(ctx.value(plus.args[0]))):
        raise NotRewritable("hard_swish pattern multiplies two different tensors")
    _no_activation(region)
    x, params = _single_input(Region(mul, region.out, ctx))
    return qnn.hard_swish(x, **params)


@qdq_rule("relax.mean", framework=TFLITE)
def mean(region: Region) -> relax.Expr:
    _no_activation(region)
    x, params = _single_input(region)
    rank = len(region.ctx.shape(region.anchor.args[0]))
    axis = region.anchor.attrs.axis
    axes = list(range(rank)) if axis is None else sorted({int(a) % rank for a in axis})
    keepdims = bool(region.anchor.attrs.keepdims)
    return qnn.mean(x, axis=axes, keepdims=keepdims, rounding="tflite", **params)


@qdq_rule("relax.dequantize", framework=TFLITE)
def requantize(region: Region) -> relax.Expr:
    """``dequantize -> [relu/clip] -> quantize``: TFLite's RELU family or int-to-int QUANTIZE."""
    x, qi = region.ctx.input(region.anchor)
    out = region.out
    lo, hi = act_bounds(region)
    extra = {}
    if region.act == (None, None):
        if qi.same_as(out):
            return x
        # LiteRT's QUANTIZE rounds its 16-wide SIMD blocks ties-up, the scalar tail ties-away.
        extra["neon_flat"] = 16 * (int(np.prod(region.out_shape, dtype=np.int64)) // 16)
    return qnn.requantize(
        x, qi.s, qi.zp, out.s, out.zp, out.dtype, rounding="tflite", out_min=lo, out_max=hi, **extra
    )


_DATA_MOVEMENT = (
    "relax.reshape",
    "relax.permute_dims",
    "relax.squeeze",
    "relax.expand_dims",
    "relax.take",
    "relax.strided_slice",
    "relax.nn.max_pool2d",
)


@qdq_rule(*_DATA_MOVEMENT)
def data_movement(region: Region) -> relax.Expr:
    """Ops that only move values apply to the integers when quantization is unchanged."""
    _no_activation(region)
    ctx, anchor = region.ctx, region.anchor
    x, qi = ctx.input(anchor.args[0])
    if not qi.same_as(region.out):
        raise NotRewritable("input and output quantization differ")
    return relax.Call(anchor.op, [x] + [ctx.use(a) for a in anchor.args[1:]], anchor.attrs)


@qdq_rule("relax.maximum", "relax.minimum")
def max_min(region: Region) -> relax.Expr:
    """MAXIMUM/MINIMUM compare integers when all three tensors share their quantization."""
    _no_activation(region)
    ctx, anchor = region.ctx, region.anchor
    (a, qa), (b, qb) = (ctx.input(x, f"operand {i}") for i, x in enumerate(anchor.args))
    if not (qa.same_as(region.out) and qb.same_as(region.out)):
        raise NotRewritable("operands and output quantization differ")
    return relax.Call(anchor.op, [a, b], anchor.attrs)


@qdq_rule("relax.concat", framework=TFLITE)
def concat(region: Region) -> relax.Expr:
    _no_activation(region)
    return concat_region(region, "tflite")


# -- binding rules: model edges and TVM's own integer patterns -----------------------------------


@qdq_binding_rule("relax.quantize", framework=TFLITE)
def input_quantize(ctx: RewriteContext, binding: relax.VarBinding) -> relax.Expr | None:
    """QUANTIZE of a float model input: LiteRT's kernel, not TVM's round-half-even."""
    return quantize_model_input(ctx, binding, "tflite_neon")


@qdq_binding_rule("relax.dequantize", framework=TFLITE)
def output_dequantize(ctx: RewriteContext, binding: relax.VarBinding) -> relax.Expr | None:
    """DEQUANTIZE to a float model output (a non-dataflow var)."""
    call = binding.value
    if isinstance(binding.var, relax.DataflowVar) or ctx.constant(call.args[0]) is not None:
        return None
    q = ctx.qparams(call, dtype_of(call.args[0]))
    if q.per_axis:
        return qnn.dequantize(ctx.use(call.args[0]), q.scale, q.zero_point, q.axis, "tflite")
    return qnn.dequantize(ctx.use(call.args[0]), q.s, q.zp, rounding="tflite_neon")


@qdq_binding_rule("relax.astype", framework=TFLITE)
def integer_avg_pool(ctx: RewriteContext, binding: relax.VarBinding) -> relax.Expr | None:
    """TVM's quantized AVERAGE_POOL_2D: ``astype(int8)(avg_pool2d(astype(int32)(x)))``, whose
    integer division does not round as LiteRT does."""
    narrow = binding.value
    pool = ctx.call(narrow.args[0], "relax.nn.avg_pool2d")
    widen = None if pool is None else ctx.call(pool.args[0], "relax.astype")
    if widen is None or dtype_of(pool) != "int32" or not ctx.single_use(narrow.args[0]):
        return None
    x = widen.args[0]
    if dtype_of(x) != dtype_of(narrow) or dtype_of(x) not in ("int8", "uint8"):
        return None
    a = pool.attrs
    if bool(a.ceil_mode) or any(int(d) != 1 for d in a.dilation) or a.out_layout != a.layout:
        return None
    return qnn.avg_pool2d(
        ctx.use(x),
        pool_size=[int(k) for k in a.pool_size],
        strides=[int(s) for s in a.strides],
        padding=[int(p) for p in a.padding],
        layout=str(a.layout),
        out_dtype=dtype_of(x),
        rounding="tflite",
        count_include_pad=bool(a.count_include_pad),
    )


# qnn ops whose attributes carry saturation bounds a following int8 clip can fold into.
_BOUNDED = (
    "qnn.requantize",
    "qnn.add",
    "qnn.subtract",
    "qnn.multiply",
    "qnn.avg_pool2d",
    "qnn.max_pool2d",
)
# TVM's fused activations quantize these reals with Python's round (half to even, in float64);
# LiteRT's CalculateActivationRangeQuantized rounds half away from zero in float32.
_LOWER_REALS = (0.0, -1.0)  # RELU/RELU6, RELU_N1_TO_1
_UPPER_REALS = (6.0, 1.0)  # RELU6, RELU_N1_TO_1


def _litert_bound(bound: int, q, reals, pick) -> int:
    lo, hi = dtype_range(q.dtype)
    for real in reals:
        if bound == pick(lo, hi, round(real / q.s) + q.zp):
            return pick(lo, hi, q.zp + int(round_half_away(np.float32(real) / np.float32(q.s))))
    return bound


# Integer ops that keep their input's quantization: a clip after them is bounded in it.
_SAME_QUANT = ("relax.nn.max_pool2d", "relax.reshape", "relax.clip")


def _quantization_of(ctx: RewriteContext, expr: relax.Expr):
    """The parameters of the ``R.quantize`` that ``expr`` comes from, through ops that keep
    the quantization (None when unknown)."""
    call = ctx.call(expr)
    while op_name(call) in _SAME_QUANT:
        call = ctx.call(call.args[0])
    if op_name(call) != "relax.quantize":
        return None
    return ctx.qparams(call, dtype_of(call))


@qdq_binding_rule("relax.clip", framework=TFLITE)
def fold_clip(ctx: RewriteContext, binding: relax.VarBinding) -> relax.Expr | None:
    """TVM's fused activation, an int8 clip after a quantize (or max_pool2d), becomes the bounds
    of the QNN op that produces its input."""
    clip = binding.value
    src = clip.args[0]
    producer = ctx.rewritten(src)
    if op_name(producer) not in _BOUNDED or not ctx.single_use(src):
        return None
    if not (op_name(ctx.call(src)) or "").startswith("relax."):
        return None  # the QNN op was there before this pass: not TVM's fused activation
    if dtype_of(clip) not in ("int8", "uint8"):
        return None
    lo_c, hi_c = (float(ctx.scalar(a, "clip bound")[0]) for a in clip.args[1:3])
    if lo_c != int(lo_c) or hi_c != int(hi_c):
        return None
    lo, hi = int(lo_c), int(hi_c)
    q = _quantization_of(ctx, src)
    if q is not None and not q.per_axis:
        lo = _litert_bound(lo, q, _LOWER_REALS, lambda lo, hi, v: max(lo, v))
        hi = _litert_bound(hi, q, _UPPER_REALS, lambda lo, hi, v: min(hi, v))
    attrs = dict(producer.attrs.items())
    if attrs.get("out_min") is not None:
        lo = max(lo, int(attrs["out_min"]))
    if attrs.get("out_max") is not None:
        hi = min(hi, int(attrs["out_max"]))
    attrs.update(out_min=lo, out_max=hi)
    return relax.Call(producer.op, producer.args, attrs=attrs)


@qdq_binding_rule("relax.nn.max_pool2d")
def integer_max_pool(ctx: RewriteContext, binding: relax.VarBinding) -> relax.Expr | None:
    """TVM applies MAX_POOL_2D to the integers directly; as ``qnn.max_pool2d`` it lowers like the
    rest of the dialect (and a following clip can fold into its bounds)."""
    call = binding.value
    a = call.attrs
    if dtype_of(call) not in ("int8", "uint8") or dtype_of(call.args[0]) != dtype_of(call):
        return None
    if bool(a.ceil_mode) or any(int(d) != 1 for d in a.dilation) or a.out_layout != a.layout:
        return None
    return qnn.max_pool2d(
        ctx.use(call.args[0]),
        pool_size=[int(k) for k in a.pool_size],
        strides=[int(s) for s in a.strides],
        padding=[int(p) for p in a.padding],
        layout=str(a.layout),
    )

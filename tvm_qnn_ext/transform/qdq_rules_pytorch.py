"""QDQToQNN rules for PT2E programs imported by TVM's torch frontend (``framework="pytorch"``).

PT2E's reference runs ``dequantize -> float ops -> quantize`` in float32, and the X86 quantizer
leaves chains such as ``conv + bias + residual -> relu -> avg pool -> flatten`` unquantized
between two quantizes.  So a region is not one op: :func:`fixed_point` follows the float chain
back to its dequantized inputs and builds integers whose real value is ``scale * value``
(per output channel after a conv/linear):

* dequantize: ``q - zp`` at ``s``;  conv2d / matmul of dequantized inputs and constant weights:
  the ``qnn.conv2d`` / ``qnn.dense`` accumulator at ``s_x * s_w[c]``, a float bias added as
  ``rint(b / (s_x * s_w[c]))``;
* add of two such values: each rescaled (ties to even) to a common scale up to 2^-20 of the
  smaller of their scales;
* relu / clip: integer bounds;  adaptive avg pool to 1x1 / mean: the integer sum at
  ``scale / count``;  reshape / flatten keeping the channel axis and max pool: the same
  integers;  cat: per-channel scales side by side (channel axis), else a common scale.

The quantize then rounds ``value * scale / s_out`` half to even (PyTorch's ``rint``) and
saturates, with a peeled relu/hardtanh as its bounds (:func:`.qdq_rules_onnx.requantize_output`).
Against PT2E's float arithmetic this is within one step (float sums round differently near
ties).  A float model output computed by such a chain (e.g. the last linear) becomes
``qnn.dequantize`` of the integers.  The model's input quantize is ``qnn.quantize`` with
PyTorch's ``x * fl32(1/s)`` rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import relax

from .. import op as qnn
from . import qdq_rules_onnx as onnx_rules
from .qdq_rules_onnx import deviation, requantize_output
from .qdq_rules_tflite_unary import data_movement
from .qdq_to_qnn import (
    NotRewritable,
    Region,
    RewriteContext,
    dtype_of,
    op_name,
    qdq_binding_rule,
    qdq_rule,
    quantize_model_input,
)
from .requantize_half_even import half_even_requantize

PYTORCH = "pytorch"
INT32_MAX = 2**31 - 1
#: An add's common scale lies up to this many bits below the smaller input scale.
ADD_FRACTION_BITS = 20
#: A sum's bound stays below this, leaving room for later sums (pooling) in int32.
SUM_BUDGET = 2**24
_ACCUMULATING = ("relax.nn.conv2d", "relax.matmul")
_CHAIN_OPS = (
    "relax.nn.conv2d",
    "relax.matmul",
    "relax.add",
    "relax.nn.relu",
    "relax.clip",
    "relax.nn.adaptive_avg_pool2d",
    "relax.mean",
    "relax.reshape",
    "relax.nn.max_pool2d",
    "relax.concat",
    "relax.nn.pad",
    "relax.permute_dims",
    "relax.dequantize",
)
# Anchors first tried as plain integer data movement (same quantization in and out).
_SIMPLE = {
    "relax.reshape": data_movement,
    "relax.permute_dims": data_movement,
    "relax.nn.max_pool2d": data_movement,
}


@dataclass(frozen=True)
class Fixed:
    """int32 integers ``expr`` with real value ``scale * expr``, ``|expr| <= bound``."""

    expr: relax.Expr
    scale: np.ndarray  # float64, one entry, or one per index of ``axis``
    axis: int | None
    bound: int

    def channel_scale(self, channels: int) -> np.ndarray:
        return np.broadcast_to(self.scale, (channels,))


def fixed_point(ctx: RewriteContext, expr: relax.Expr) -> Fixed:
    """The float ``expr`` of the original graph as :class:`Fixed` integers (or NotRewritable)."""
    if ctx.dequantized(expr) is not None:
        x, q = ctx.input(expr)
        centred = relax.op.astype(x, "int32")
        if q.zp:
            centred = relax.op.subtract(centred, relax.const(q.zp, "int32"))
        return Fixed(ctx.emit(centred), np.array([q.s]), None, deviation(q))
    item = ctx.value(expr)
    if isinstance(item, relax.TupleGetItem) and item.index == 0:
        bn = ctx.call(item.tuple_value, "relax.nn.batch_norm")
        if bn is not None:
            return _batch_norm(ctx, bn)
    call = ctx.call(expr)
    name = op_name(call) if call is not None else None
    if name in _ACCUMULATING:
        return _accumulate(ctx, call, None)
    if name == "relax.add":
        return _add(ctx, call)
    if name in ("relax.nn.relu", "relax.clip"):
        return _bounded(ctx, call)
    if name in ("relax.nn.adaptive_avg_pool2d", "relax.mean"):
        return _mean(ctx, call)
    if name == "relax.reshape":
        return _reshape(ctx, call)
    if name == "relax.nn.max_pool2d":
        return _max_pool(ctx, call)
    if name == "relax.concat":
        return _concat(ctx, call)
    if name == "relax.nn.pad":
        return _pad(ctx, call)
    if name == "relax.permute_dims":
        return _permute(ctx, call)
    raise NotRewritable(f"{name or 'a non-call value'} in a float chain has no integer form")


def _accumulate(ctx: RewriteContext, call: relax.Call, bias_expr) -> Fixed:
    x, qi = ctx.input(call.args[0])
    if op_name(call) == "relax.matmul":
        w, qw, transposed = onnx_rules._weight(ctx, call.args[1])
        if w.ndim != 2:
            raise NotRewritable(f"matmul weight of rank {w.ndim}")
        w_oc = w if transposed else w.T
        axis = len(ctx.shape(call)) - 1
    else:
        a = call.attrs
        if (str(a.data_layout), str(a.kernel_layout), str(a.out_layout)) != (
            "NCHW",
            "OIHW",
            "NCHW",
        ):
            raise NotRewritable("conv2d layouts other than NCHW/OIHW")
        w, qw = ctx.const_input(call.args[1], "weight")
        w_oc, axis = w, 1
    channels = w_oc.shape[0]
    if qw.per_axis and qw.axis % w.ndim != (0 if w_oc is w else 1):
        raise NotRewritable(f"weight quantized along axis {qw.axis}, not output channels")
    zw = [int(z) for z in np.broadcast_to(qw.zero_point, (channels,))]
    scale = qi.s * np.broadcast_to(qw.scale, (channels,)).astype(np.float64)
    bias = None if bias_expr is None else _int_bias(ctx, bias_expr, scale)
    if op_name(call) == "relax.matmul":
        acc = qnn.dense(
            x, relax.const(w, str(w.dtype)), bias, input_zero_point=qi.zp,
            kernel_zero_point=zw, weight_layout="NK" if transposed else "KN",
        )  # fmt: skip
    else:
        acc = qnn.conv2d(
            x, relax.const(np.ascontiguousarray(w), str(w.dtype)), bias,
            strides=[int(s) for s in call.attrs.strides],
            padding=[int(p) for p in call.attrs.padding],
            dilation=[int(d) for d in call.attrs.dilation],
            groups=int(call.attrs.groups), data_layout="NCHW", kernel_layout="OIHW",
            input_zero_point=qi.zp, kernel_zero_point=zw,
        )  # fmt: skip
    centred = np.abs(w_oc.reshape(channels, -1).astype(np.int64) - np.asarray(zw)[:, None])
    bound = int(centred.sum(axis=1).max()) * deviation(qi)
    bound += 0 if bias is None else int(np.abs(bias.value.numpy()).max())
    if bound > INT32_MAX:
        raise NotRewritable(f"accumulator bound {bound} exceeds int32")
    return Fixed(ctx.emit(acc), scale, axis, bound)


def _int_bias(ctx: RewriteContext, expr, scale: np.ndarray) -> relax.Expr:
    """A float bias (per output channel) as int32 at the accumulator's scale."""
    b = ctx.constant(expr)
    if b is None or b.dtype.kind != "f":
        raise NotRewritable("bias is not a float constant")
    b = b.astype(np.float64).reshape(-1)
    if b.size != scale.size:
        raise NotRewritable(f"bias has {b.size} values for {scale.size} output channels")
    q = np.rint(b / scale)
    if np.abs(q).max(initial=0) > 2**30:
        raise NotRewritable("bias does not fit int32 at the accumulator scale")
    return relax.const(q.astype(np.int32), "int32")


def _is_float_constant(ctx: RewriteContext, expr) -> bool:
    c = ctx.constant(expr)
    return c is not None and c.dtype.kind == "f"


def _add(ctx: RewriteContext, call: relax.Call) -> Fixed:
    lhs, rhs = call.args
    for acc_expr, bias_expr in ((lhs, rhs), (rhs, lhs)):
        acc = ctx.call(acc_expr, *_ACCUMULATING)
        if acc is not None and ctx.single_use(acc_expr) and _is_float_constant(ctx, bias_expr):
            return _accumulate(ctx, acc, bias_expr)
    if _is_float_constant(ctx, lhs) or _is_float_constant(ctx, rhs):
        raise NotRewritable("add of a constant to something other than a conv/linear")
    a, b = fixed_point(ctx, lhs), fixed_point(ctx, rhs)
    common = _common_scale(a, b)
    terms = [_rescale(ctx, f, common) for f in (a, b)]
    total = ctx.emit(relax.op.add(*(t.expr for t in terms)))
    return Fixed(total, np.array([common]), None, terms[0].bound + terms[1].bound)


def _common_scale(*parts: Fixed, total: bool = True) -> float:
    """The finest scale ``min_scale / 2^k`` (k <= ADD_FRACTION_BITS) at which the sum (or,
    with ``total=False``, each part) stays within ``SUM_BUDGET``: rescaling rounds by at most
    half of it, far below an output step."""
    smallest = float(min(f.scale.min() for f in parts))
    for k in range(ADD_FRACTION_BITS, -1, -1):
        common = smallest / 2.0**k
        bounds = [f.bound * float((f.scale / common).max()) + 1 for f in parts]
        if (sum(bounds) if total else max(bounds)) <= SUM_BUDGET:
            return common
    raise NotRewritable("values do not fit int32 at a common scale")


def _rescale(ctx: RewriteContext, f: Fixed, scale: float) -> Fixed:
    """``f`` at ``scale``, rounding half to even."""
    ratio = f.scale / scale
    if np.all(ratio == 1.0):
        return f
    bound = int(np.ceil(f.bound * ratio.max())) + 1
    ndim = len(ctx.shape(f.expr)) if f.axis is not None else f.expr.ty.ndim
    y = half_even_requantize(
        ctx.emit, f.expr, ratio if ratio.size > 1 else float(ratio[0]), in_zero_point=0,
        out_zero_point=0, axis=f.axis, ndim=ndim, out_min=-INT32_MAX, out_max=INT32_MAX,
        out_dtype="int32", bound=f.bound,
    )  # fmt: skip
    return Fixed(ctx.emit(y), np.array([scale]), None, min(bound, INT32_MAX))


def _bounded(ctx: RewriteContext, call: relax.Call) -> Fixed:
    f = fixed_point(ctx, call.args[0])
    if op_name(call) == "relax.nn.relu":
        lo, hi = 0.0, None
    else:
        lo, hi = (float(ctx.scalar(a, "clip bound")[0]) for a in call.args[1:3])
    ndim = f.expr.ty.ndim
    shape = [1] * ndim
    if f.scale.size > 1:
        shape[f.axis % ndim] = f.scale.size

    def bound_const(v: float, rnd) -> relax.Expr:
        q = np.clip(rnd(v / f.scale), -f.bound - 1, f.bound + 1).astype(str(f.expr.ty.dtype))
        return relax.const(q.reshape(shape) if q.size > 1 else q.reshape(()))

    y = f.expr
    if lo is not None and np.isfinite(lo):
        y = relax.op.maximum(y, bound_const(lo, np.ceil))
    if hi is not None and np.isfinite(hi):
        y = relax.op.minimum(y, bound_const(hi, np.floor))
    return Fixed(ctx.emit(y), f.scale, f.axis, f.bound)


def _mean(ctx: RewriteContext, call: relax.Call) -> Fixed:
    shape = ctx.shape(call.args[0])
    if op_name(call) == "relax.nn.adaptive_avg_pool2d":
        a = call.attrs
        if str(a.layout) != "NCHW" or [int(s) for s in (a.output_size or [])] not in ([1, 1], [1]):
            raise NotRewritable("adaptive_avg_pool2d to a size other than 1x1")
        axes, keepdims = [2, 3], True
    else:
        axes = range(len(shape)) if call.attrs.axis is None else call.attrs.axis
        axes, keepdims = sorted({int(x) % len(shape) for x in axes}), bool(call.attrs.keepdims)
    f = fixed_point(ctx, call.args[0])
    if f.axis is not None and f.axis % len(shape) in axes:
        raise NotRewritable("mean over the per-channel axis")
    count = int(np.prod([shape[x] for x in axes]))
    if f.bound * count > INT32_MAX:  # coarsen first (still far below an output step)
        coarse = float(f.scale.max()) * 2.0 ** np.ceil(np.log2(f.bound * count / 2**30))
        f = _rescale(ctx, f, coarse)
    bound = f.bound * count
    total = relax.op.sum(f.expr, axes, keepdims)
    axis = f.axis
    if axis is not None and not keepdims:
        axis = axis - sum(1 for x in axes if x < axis)
    return Fixed(ctx.emit(total), f.scale / count, axis, bound)


def _reshape(ctx: RewriteContext, call: relax.Call) -> Fixed:
    f = fixed_point(ctx, call.args[0])
    before, after = ctx.shape(call.args[0]), ctx.shape(call)
    if f.axis is not None:
        ax = f.axis % len(before)
        if tuple(after[: ax + 1]) != tuple(before[: ax + 1]):  # the channel axis moves
            try:
                common = _common_scale(f, total=False)
            except NotRewritable:
                common = float(f.scale.max())  # coarser: every value shrinks
            f = _rescale(ctx, f, common)
    return Fixed(ctx.emit(relax.op.reshape(f.expr, after)), f.scale, f.axis, f.bound)


def _max_pool(ctx: RewriteContext, call: relax.Call) -> Fixed:
    """Scales are positive, so the max of the integers is the max of the reals."""
    a = call.attrs
    if str(a.layout) != "NCHW" or str(a.out_layout) != "NCHW" or bool(a.ceil_mode):
        raise NotRewritable("max_pool2d with ceil_mode or a layout other than NCHW")
    f = fixed_point(ctx, call.args[0])
    y = relax.op.nn.max_pool2d(
        f.expr, pool_size=[int(k) for k in a.pool_size], strides=[int(s) for s in a.strides],
        padding=[int(p) for p in a.padding], dilation=[int(d) for d in a.dilation],
        layout="NCHW",
    )  # fmt: skip
    return Fixed(ctx.emit(y), f.scale, f.axis, f.bound)


def _concat(ctx: RewriteContext, call: relax.Call) -> Fixed:
    """Along the channel axis the per-channel scales concatenate; otherwise every input is
    rescaled to a common scale (as for add)."""
    fields = ctx.value(call.args[0])
    if not isinstance(fields, relax.Tuple):
        raise NotRewritable("concat of a non-literal tuple")
    parts = [fixed_point(ctx, f) for f in fields.fields]
    ndim = len(ctx.shape(call))
    axis = int(call.attrs.axis) % ndim
    if all(p.axis is None or p.axis % ndim == axis for p in parts):
        scales = [p.channel_scale(ctx.shape(p.expr)[axis]) for p in parts]
        bound = max(p.bound for p in parts)
        y = relax.op.concat([relax.op.astype(p.expr, "int32") for p in parts], axis)
        return Fixed(ctx.emit(y), np.concatenate(scales), axis, bound)
    common = _common_scale(*parts, total=False)
    rescaled = [_rescale(ctx, p, common) for p in parts]
    y = relax.op.concat([r.expr for r in rescaled], axis)
    return Fixed(ctx.emit(y), np.array([common]), None, max(r.bound for r in rescaled))


def _batch_norm(ctx: RewriteContext, call: relax.Call) -> Fixed:
    """Inference batch norm ``x * alpha + beta`` per channel (ATen's float32 ``alpha``):
    the scale becomes ``scale * alpha``, ``beta`` an integer offset at that scale."""
    if int(call.attrs.axis) != 1 or bool(call.attrs.training):
        raise NotRewritable("batch_norm in training mode or not on axis 1")
    gamma, beta, mean, var = (ctx.constant(a) for a in call.args[1:5])
    if any(v is None for v in (gamma, beta, mean, var)):
        raise NotRewritable("batch_norm with non-constant statistics")
    f = fixed_point(ctx, call.args[0])
    eps = np.float32(float(call.attrs.epsilon))
    alpha = gamma.astype(np.float32) / np.sqrt(var.astype(np.float32) + eps)
    shift = beta.astype(np.float32) - mean.astype(np.float32) * alpha
    if np.any(alpha <= 0):
        raise NotRewritable("batch_norm with a non-positive scale (it would reorder max pool)")
    if f.axis is not None and f.axis != 1:
        raise NotRewritable("batch_norm after a per-channel scale on another axis")
    alpha, shift = alpha.astype(np.float64), shift.astype(np.float64)
    common = _batch_norm_scale(f, alpha, shift)
    if common is not None:
        f = _rescale(ctx, f, common)
    scale = f.channel_scale(alpha.size) * alpha
    offset = np.rint(shift / scale)
    bound = f.bound + int(np.abs(offset).max(initial=0))
    if bound > INT32_MAX:
        raise NotRewritable("batch_norm offset does not fit int32")
    c = relax.const(offset.astype(np.int32).reshape(1, -1, *[1] * (f.expr.ty.ndim - 2)))
    return Fixed(ctx.emit(relax.op.add(f.expr, c)), scale, 1, bound)


def _batch_norm_scale(f: Fixed, alpha: np.ndarray, shift: np.ndarray) -> float | None:
    """A common input scale for batch norm: fine enough that its offset ``shift`` rounds far
    below an output step (a dequantized input's own scale is too coarse), coarse enough that
    the values and offsets stay within ``SUM_BUDGET``; None keeps ``f`` as it is."""
    smallest = float(f.scale.min())
    for k in range(ADD_FRACTION_BITS, -1, -1):
        t = smallest / 2.0**k
        bound = f.bound * float(f.scale.max()) / t + float(np.abs(shift / (t * alpha)).max())
        if bound <= SUM_BUDGET:
            return t
    offsets = np.abs(shift / (f.channel_scale(alpha.size) * alpha))
    if f.bound + float(offsets.max()) <= SUM_BUDGET * 64:
        return None  # already fine (an accumulator): keep its per-channel scale
    return max(float(np.abs(shift / alpha).max()) / 2.0**22, float(f.scale.max()))


def _pad(ctx: RewriteContext, call: relax.Call) -> Fixed:
    if str(call.attrs.pad_mode) != "constant" or float(call.attrs.pad_value) != 0.0:
        raise NotRewritable("pad other than constant zeros")
    f = fixed_point(ctx, call.args[0])
    y = relax.op.nn.pad(f.expr, [int(p) for p in call.attrs.pad_width], "constant", 0.0)
    return Fixed(ctx.emit(y), f.scale, f.axis, f.bound)


def _permute(ctx: RewriteContext, call: relax.Call) -> Fixed:
    f = fixed_point(ctx, call.args[0])
    ndim = f.expr.ty.ndim
    axes = list(range(ndim))[::-1] if call.attrs.axes is None else [int(a) for a in call.attrs.axes]
    axis = None if f.axis is None else axes.index(f.axis % ndim)
    return Fixed(ctx.emit(relax.op.permute_dims(f.expr, axes)), f.scale, axis, f.bound)


def _requantized(region: Region, f: Fixed) -> relax.Expr:
    """``f`` rounded half to even into the region's output (relu/hardtanh as its bounds)."""
    return requantize_output(
        region, f.expr, f.scale, 0, bound=f.bound, axis=f.axis, out_scale=region.out.s
    )


@qdq_rule(*_CHAIN_OPS, framework=PYTORCH)
def float_chain(region: Region) -> relax.Expr:
    """Any float chain of the ops above between dequantizes and a quantize."""
    padded = _padded_input(region)
    if padded is not None:
        return padded
    simple = _SIMPLE.get(op_name(region.anchor))
    if simple is not None:
        try:
            return simple(region)
        except NotRewritable:
            pass
    return _requantized(region, fixed_point(region.ctx, region.anchor))


def _padded_input(region: Region) -> relax.Expr | None:
    """``quantize(pad(x))`` of a float model input: quantize (PyTorch's rounding), then pad
    with the zero point (zeros quantize to it exactly)."""
    ctx, pad = region.ctx, region.anchor
    x = pad.args[0]
    if op_name(pad) != "relax.nn.pad" or ctx.call(x) is not None or dtype_of(x) != "float32":
        return None
    if str(pad.attrs.pad_mode) != "constant" or float(pad.attrs.pad_value) != 0.0:
        raise NotRewritable("pad of the model input other than constant zeros")
    _no_activation_or_raise(region)
    out = region.out
    q = ctx.emit(qnn.quantize(ctx.use(x), out.s, out.zp, out.dtype, rounding="float"))
    return relax.op.nn.pad(q, [int(p) for p in pad.attrs.pad_width], "constant", float(out.zp))


def _no_activation_or_raise(region: Region) -> None:
    if region.act != (None, None):
        raise NotRewritable(f"an activation after {op_name(region.anchor)}")


@qdq_binding_rule("relax.quantize", framework=PYTORCH)
def input_quantize(ctx: RewriteContext, binding: relax.VarBinding) -> relax.Expr | None:
    """quantize_per_tensor of a float model input: PyTorch's ``x * fl32(1/s)``, then rint."""
    return quantize_model_input(ctx, binding, "float")


@qdq_binding_rule("relax.add", "relax.matmul", "relax.nn.conv2d", framework=PYTORCH)
def float_result(ctx: RewriteContext, binding: relax.VarBinding) -> relax.Expr | None:
    """A float conv/linear/add result as ``qnn.dequantize`` of its integers: what stays of it
    is a float model output (e.g. the classifier's linear + bias).  Inside a region the
    quantize's rule rebuilds the chain from the original graph, so this copy is dead code."""
    if dtype_of(binding.value) != "float32":
        return None
    f = fixed_point(ctx, binding.var)
    return qnn.dequantize(f.expr, f.scale, 0, axis=f.axis if f.scale.size > 1 else None)


@qdq_binding_rule("relax.dequantize", framework=PYTORCH)
def dequantize_activation(ctx: RewriteContext, binding: relax.VarBinding) -> relax.Expr | None:
    """dequantize_per_tensor of an activation: ``(q - zp) * s`` in float32 as PyTorch (dead
    code unless it is a model output)."""
    return onnx_rules.dequantize_activation(ctx, binding)

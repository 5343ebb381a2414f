"""qnn.conv2d / qnn.dense legalized for an int8 dot-product instruction (target/dot_product.py).

Used when legalizing under a target (``with target:``) and the weight is a constant:

* the weight is packed at compile time into ``lanes x reduction`` tiles (output channels padded
  to ``lanes``, input channels to ``reduction``, both with zeros);
* operands are moved to the instruction's u8 x s8 ranges by shifting them *and* their zero
  point by 128 (int8 data +128, uint8 weights -128), so ``x - zx`` and ``w - zw`` are unchanged
  and the zero-point algebra of :mod:`.conv` absorbs the shift into the folded constant;
* the input is padded (spatially with the shifted zero point, channels with 0) in one stage;
* the ``dot`` stage carries ``qnn.schedule`` (conv2d / dense) and ``qnn.dot`` (the instruction)
  for the schedule rules in ``target/schedules``; ``accumulate`` drops the padded channels.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te, tirx

from ..target import dot_product
from ..target.packing import pack_weights, round_up
from ..target.schedule import ANNOTATION
from .conv import Geometry, OffsetParts, constant_value, offset_parts

DOT_ANNOTATION = "qnn.dot"


def instruction_for(call: relax.Call, shape_ok: bool) -> dot_product.DotInstruction | None:
    """The instruction to legalize ``call`` for, or None to keep the portable legalization."""
    target = tvm.target.Target.current(allow_none=True)
    if not shape_ok or target is None or str(target.kind.name) != "llvm":
        return None
    if constant_value(call.args[1]) is None:
        return None
    return dot_product.select(target)


def _shifts(call: relax.Call, ins: dot_product.DotInstruction) -> tuple[int, int]:
    """(activation shift, weight shift) that bring the operands to the instruction's dtypes."""

    def shift(have: str, want: str) -> int:
        if have == want:
            return 0
        return 128 if want == "uint8" else -128

    return (
        shift(str(call.args[0].ty.dtype), ins.a_dtype),
        shift(str(call.args[1].ty.dtype), ins.b_dtype),
    )


def _shifted_weight(w: np.ndarray, shift: int, dtype: str) -> np.ndarray:
    return (w.astype(np.int16) + shift).astype(dtype)


def _to_operand(v: tirx.PrimExpr, shift: int, dtype: str) -> tirx.PrimExpr:
    if shift == 0:
        return v
    return (v.astype("int32") + shift).astype(dtype)


def _accumulate(dot, out_shape, parts: OffsetParts, offset, zw, bias, window_sum):
    def elem(*idx):
        ws = None if window_sum is None else window_sum(*idx[:-1])
        return parts.apply(dot(*idx), idx[-1], offset, zw, bias, ws, None)

    return te.compute(out_shape, elem, name="accumulate")


# ---- conv2d (NHWC, groups == 1) -----------------------------------------------------------------


def legalize_conv2d(bb, call: relax.Call, g: Geometry, ins: dot_product.DotInstruction):
    w = constant_value(call.args[1]).transpose([g.kernel_layout.index(a) for a in "OHWI"])
    x_shift, w_shift = _shifts(call, ins)
    w = _shifted_weight(w, w_shift, ins.b_dtype)
    parts = offset_parts(call, g.o, w.reshape(g.o, -1), g.c * g.kh * g.kw, x_shift, w_shift)
    flat_rows = use_flat_rows(g, ins.reduction)
    packed = relax.const(
        pack_weights(w.reshape(g.o, g.kh, -1) if flat_rows else w, ins.lanes, ins.reduction)
    )
    make = _conv2d_flat_rows_te if flat_rows else _conv2d_te
    return bb.call_te(
        lambda x, wp, **kw: make(x, wp, g=g, parts=parts, ins=ins, x_shift=x_shift, **kw),
        call.args[0],
        packed,
        **parts.te_args(call),
        primfunc_name_hint="qnn_conv2d",
    )


# Output columns per register tile the schedule can choose from (dot_tiling.MAX_ROWS)
TILE_ROWS = range(8, 17)


def padded_width(ow: int) -> int:
    """The output columns the dot computes: ``ow``, or ``ow`` rounded up to whole tiles of 8-16
    columns when no such tile divides it (rock_paper_scissors' 82 = 2 x 41 columns: 84, in
    14-column tiles, instead of 2-column tiles that wait on the instruction's latency).  The
    extra columns read zero-point padding and are never stored."""
    if ow <= TILE_ROWS[-1] or any(ow % r == 0 for r in TILE_ROWS):
        return ow
    return min((round_up(ow, r) for r in reversed(TILE_ROWS)), key=lambda w: w - ow)


def _pad_input(
    x, g: Geometry, zx: int, x_shift: int, dtype: str, channels: int, extra: int = 0
) -> te.Tensor:
    pt, pl, pb, pr = g.padding

    def elem(n, h, w, c):
        v = _to_operand(x(n, h - pt, w - pl, c), x_shift, dtype)
        inside = tirx.all(h >= pt, h < pt + g.h, w >= pl, w < pl + g.w)
        v = tirx.if_then_else(inside, v, tirx.const(zx, dtype))
        if channels == g.c:
            return v
        return tirx.if_then_else(c < g.c, v, tirx.const(0, dtype))

    shape = (g.n, g.h + pt + pb, g.w + pl + pr + extra, channels)
    return te.compute(shape, elem, name="pad")


def use_flat_rows(g: Geometry, reduction: int) -> bool:
    """Whether to reduce over each kernel row's ``kw * c`` values as one flat axis.

    Per tap, the input channels are padded to the instruction's reduction width: on one
    input channel a 3x3 conv does 9 dot instructions per accumulator where the flattened rows
    (3 values each, padded to 4) need 3, and a 10x8 kernel 80 where they need 20.  In NHWC a
    kernel row's window is contiguous in memory, so the padded input is only viewed as
    ``[n, h, w * c]``; with dilation along the width it is not, hence the ``dw == 1`` rule.
    """
    flat, per_tap = round_up(g.kw * g.c, reduction), g.kw * round_up(g.c, reduction)
    return g.dilation[1] == 1 and g.kw > 1 and flat < per_tap


def _pad_rows(x, g: Geometry, zx: int, x_shift: int, dtype: str, tail: int) -> te.Tensor:
    """The zero-point padded input as ``[n, h, w * c + tail]`` (the tail, read only against
    zero weights, keeps the last window's padded reads in bounds)."""
    pt, pl, pb, pr = g.padding
    width = (g.w + pl + pr) * g.c

    def elem(n, h, f):
        w, c = f // g.c, f % g.c
        wi = tirx.min(w - pl, g.w - 1)
        v = _to_operand(x(n, h - pt, wi, c), x_shift, dtype)
        inside = tirx.all(h >= pt, h < pt + g.h, w >= pl, w < pl + g.w)
        return tirx.if_then_else(inside, v, tirx.const(zx, dtype))

    return te.compute((g.n, g.h + pt + pb, width + tail), elem, name="pad")


def _conv2d_flat_rows_te(x, wp, offset, zw, bias, g, parts, ins, x_shift):
    lanes, red = ins.lanes, ins.reduction
    row, op = g.kw * g.c, round_up(g.o, lanes)
    rowp, owp = round_up(row, red), padded_width(g.ow)
    extra = (owp - g.ow) * g.strides[1] * g.c
    xp = _pad_rows(x, g, parts.zx, x_shift, ins.a_dtype, rowp - row + extra)
    (sh, sw), (dh, _) = g.strides, g.dilation
    rh = te.reduce_axis((0, g.kh), name="rh")
    rj = te.reduce_axis((0, rowp), name="rj")

    def dot(n, oh, ow, o):
        a = xp(n, oh * sh + rh * dh, ow * sw * g.c + rj).astype("int32")
        b = wp(o // lanes, rh, rj // red, o % lanes, rj % red).astype("int32")
        return te.sum(a * b, axis=[rh, rj])

    attrs = {ANNOTATION: "conv2d", DOT_ANNOTATION: ins.name}
    acc = te.compute((g.n, g.oh, owp, op), dot, name="dot", attrs=attrs)
    window_sum = None
    if parts.needs_window_sum:
        rh2 = te.reduce_axis((0, g.kh), name="rh")
        rj2 = te.reduce_axis((0, row), name="rj")
        window_sum = te.compute(
            (g.n, g.oh, g.ow),
            lambda n, oh, ow: te.sum(
                xp(n, oh * sh + rh2 * dh, ow * sw * g.c + rj2).astype("int32"), axis=[rh2, rj2]
            ),
            name="window_sum",
        )
    return _accumulate(acc, (g.n, g.oh, g.ow, g.o), parts, offset, zw, bias, window_sum)


def _conv2d_te(x, wp, offset, zw, bias, g, parts, ins, x_shift):
    lanes, red = ins.lanes, ins.reduction
    cp, op, owp = round_up(g.c, red), round_up(g.o, lanes), padded_width(g.ow)
    extra = (owp - g.ow) * g.strides[1]
    needs_pad = any(g.padding) or x_shift or cp != g.c or extra
    xp = _pad_input(x, g, parts.zx, x_shift, ins.a_dtype, cp, extra) if needs_pad else x
    (sh, sw), (dh, dw) = g.strides, g.dilation
    rh = te.reduce_axis((0, g.kh), name="rh")
    rw = te.reduce_axis((0, g.kw), name="rw")
    rc = te.reduce_axis((0, cp), name="rc")

    def dot(n, oh, ow, o):
        a = xp(n, oh * sh + rh * dh, ow * sw + rw * dw, rc).astype("int32")
        b = wp(o // lanes, rh, rw, rc // red, o % lanes, rc % red).astype("int32")
        return te.sum(a * b, axis=[rh, rw, rc])

    attrs = {ANNOTATION: "conv2d", DOT_ANNOTATION: ins.name}
    acc = te.compute((g.n, g.oh, owp, op), dot, name="dot", attrs=attrs)
    window_sum = None
    if parts.needs_window_sum:
        rh2 = te.reduce_axis((0, g.kh), name="rh")
        rw2 = te.reduce_axis((0, g.kw), name="rw")
        rc2 = te.reduce_axis((0, g.c), name="rc")
        window_sum = te.compute(
            (g.n, g.oh, g.ow),
            lambda n, oh, ow: te.sum(
                xp(n, oh * sh + rh2 * dh, ow * sw + rw2 * dw, rc2).astype("int32"),
                axis=[rh2, rw2, rc2],
            ),
            name="window_sum",
        )
    return _accumulate(acc, (g.n, g.oh, g.ow, g.o), parts, offset, zw, bias, window_sum)


# ---- dense ------------------------------------------------------------------------------------


def legalize_dense(bb, call, k: int, units: int, layout: str, ins: dot_product.DotInstruction):
    w = constant_value(call.args[1])
    w = w if layout == "NK" else w.T
    x_shift, w_shift = _shifts(call, ins)
    w = _shifted_weight(w, w_shift, ins.b_dtype)
    parts = offset_parts(call, units, w, k, x_shift, w_shift)
    packed = relax.const(pack_weights(w, ins.lanes, ins.reduction))
    return bb.call_te(
        lambda x, wp, **kw: _dense_te(
            x, wp, k=k, units=units, parts=parts, ins=ins, x_shift=x_shift, **kw
        ),
        call.args[0],
        packed,
        **parts.te_args(call),
        primfunc_name_hint="qnn_dense",
    )


def _dense_te(x, wp, offset, zw, bias, k, units, parts, ins, x_shift):
    lanes, red = ins.lanes, ins.reduction
    kp, np_ = round_up(k, red), round_up(units, lanes)
    lead = tuple(x.shape[:-1])
    xp = x
    if x_shift or kp != k:

        def elem(*i):
            v = _to_operand(x(*i[:-1], tirx.min(i[-1], k - 1)), x_shift, ins.a_dtype)
            return v if kp == k else tirx.if_then_else(i[-1] < k, v, tirx.const(0, ins.a_dtype))

        xp = te.compute((*lead, kp), elem, name="pad")
    rk = te.reduce_axis((0, kp), name="rk")

    def dot(*i):
        a = xp(*i[:-1], rk).astype("int32")
        n = i[-1]
        return te.sum(a * wp(n // lanes, rk // red, n % lanes, rk % red).astype("int32"), axis=rk)

    attrs = {ANNOTATION: "dense", DOT_ANNOTATION: ins.name}
    acc = te.compute((*lead, np_), dot, name="dot", attrs=attrs)
    row_sum = None
    if parts.needs_window_sum:
        rr = te.reduce_axis((0, k), name="rk")
        row_sum = te.compute(
            lead, lambda *i: te.sum(xp(*i, rr).astype("int32"), axis=rr), name="row_sum"
        )
    return _accumulate(acc, (*lead, units), parts, offset, zw, bias, row_sum)

"""``qnn_high_mul``: the int32 rounding multiply-shift ``(x * m + 2^(t-1)) >> t``, 31 <= t <= 62
(t = 31 is gemmlowp's SaturatingRoundingDoublingHighMul for m >= 0), as one TIR intrinsic, so
that vectorized code can be written lane-pair-wise; and ``qnn_high_mul_rdbpot``, the same high
multiply followed by TFLite's RoundingDivideByPOT, fused into one int64 rounding.

Written as int64 arithmetic on int32 lanes, LLVM sign-extends each vector into two int64
vectors and narrows the products back: on x86 that is 5 lane-crossing shuffles per 16 lanes
(``vpmovsxdq`` x2, ``vpmovqd`` x2, ``vinserti64x4``) in every requantize epilogue and every
LiteRT-exact ADD.  The intrinsic is vectorizable, and after
vectorization it is lowered on the int32 vector reinterpreted as int64 lane pairs: the even
lanes are multiplied in place, the odd ones after a 32-bit shift (both ``vpmuldq``), and the
two rounded high halves are merged with a mask; no shuffle is left.  A scalar or odd-width
call is lowered to the plain int64 expression.
"""

from __future__ import annotations

import tvm
from tvm import tirx
from tvm.ir.expr import Expr as PrimExpr

OP_NAME = "tirx.qnn_high_mul"
RDBPOT_OP_NAME = "tirx.qnn_high_mul_rdbpot"
_PURE = 1  # CallEffectKind.Pure, as the plain int the attribute map stores


def _dtype(expr: PrimExpr) -> tvm.DataType:
    return tvm.DataType(str(expr.ty))


def _plain(x: PrimExpr, m: PrimExpr, shift: int, dtype: tvm.DataType) -> PrimExpr:
    wide = "int64" if dtype.lanes == 1 else f"int64x{dtype.lanes}"
    prod = tirx.Cast(wide, x) * tirx.Cast(wide, m)
    rounded = prod + tirx.const(1 << (shift - 1), wide)
    return tirx.Cast(str(dtype), rounded >> tirx.const(shift, wide))


def _lane_pairs(x: PrimExpr, m: PrimExpr, shift: int, dtype: tvm.DataType) -> PrimExpr:
    wide = f"int64x{dtype.lanes // 2}"

    def c(v: int) -> PrimExpr:
        return tirx.const(v, wide)

    xs = tirx.call_intrin(wide, "tirx.reinterpret", x)
    ms = tirx.call_intrin(wide, "tirx.reinterpret", m)
    low_lane = (xs << c(32)) >> c(32)  # sign-extended in place: LLVM multiplies with vpmuldq
    even = low_lane * ((ms << c(32)) >> c(32)) + c(1 << (shift - 1))
    odd = (xs >> c(32)) * (ms >> c(32)) + c(1 << (shift - 1))
    # bits shift..shift+31 of each product are the result: the even one shifted down into the
    # low half, the odd one into the high half (for shift 31 one left shift does it)
    high = (odd << c(1)) if shift == 31 else ((odd >> c(shift)) << c(32))
    merged = ((even >> c(shift)) & c(0xFFFFFFFF)) | (high & c(-(1 << 32)))
    return tirx.call_intrin(str(dtype), "tirx.reinterpret", merged)


def _shift_value(expr: PrimExpr) -> int:
    if isinstance(expr, tirx.Broadcast):  # the vectorizer may widen the constant
        expr = expr.value
    return int(expr.value)


def _lower(call: PrimExpr) -> PrimExpr:
    x, m, shift = call.args
    shift, dtype = _shift_value(shift), _dtype(call)
    if dtype.lanes > 1 and dtype.lanes % 2 == 0:
        return _lane_pairs(x, m, shift, dtype)
    return _plain(x, m, shift, dtype)


def _rounded_shift(p: PrimExpr, e: PrimExpr, away: PrimExpr, wide: str) -> PrimExpr:
    """RoundingDivideByPOT(SRDHM) of an int64 product ``p`` by ``2^e`` (0 <= e <= 31), both
    roundings in one: SRDHM's ``h = (p + 2^30) >> 31`` is negative exactly when
    ``p < -2^30``; ``RDBPOT(h, e) = (h + 2^(e-1) - [h < 0]) >> e`` for ``e >= 1`` (ties away
    from zero, ``away`` = 1; LiteRT's NEON-style ties up drop the ``[h < 0]``, ``away`` = 0),
    so the result is ``(p + 2^30 + 2^31 (2^(e-1) - away [e >= 1][p < -2^30])) >> (31 + e)``;
    no term can leave int64."""

    def c(v: int) -> PrimExpr:
        return tirx.const(v, wide)

    half = (c(1) << e) >> c(1)  # 2^(e-1), or 0 when e = 0
    bump = (tirx.min(half, c(1)) & away) << c(31)
    correction = tirx.Select(p < c(-(1 << 30)), bump, c(0))
    return (p + c(1 << 30) + (half << c(31)) - correction) >> (e + c(31))


def _plain_rdbpot(x, m, e, away, dtype: tvm.DataType) -> PrimExpr:
    wide = "int64" if dtype.lanes == 1 else f"int64x{dtype.lanes}"
    p = tirx.Cast(wide, x) * tirx.Cast(wide, m)
    rounded = _rounded_shift(p, tirx.Cast(wide, e), tirx.Cast(wide, away), wide)
    return tirx.Cast(str(dtype), rounded)


def _lane_pairs_rdbpot(x, m, e, away, dtype: tvm.DataType) -> PrimExpr:
    wide = f"int64x{dtype.lanes // 2}"

    def c(v: int) -> PrimExpr:
        return tirx.const(v, wide)

    xs, ms, es, aw = (tirx.call_intrin(wide, "tirx.reinterpret", v) for v in (x, m, e, away))
    even_p = ((xs << c(32)) >> c(32)) * ((ms << c(32)) >> c(32))  # vpmuldq in place
    odd_p = (xs >> c(32)) * (ms >> c(32))
    low = c(0xFFFFFFFF)
    even = _rounded_shift(even_p, es & low, aw & low, wide)
    odd = _rounded_shift(odd_p, es >> c(32), aw >> c(32), wide)
    merged = (even & low) | (odd << c(32))
    return tirx.call_intrin(str(dtype), "tirx.reinterpret", merged)


def _lower_rdbpot(call: PrimExpr) -> PrimExpr:
    x, m, e, away = call.args
    dtype = _dtype(call)
    if dtype.lanes > 1 and dtype.lanes % 2 == 0:
        return _lane_pairs_rdbpot(x, m, e, away, dtype)
    return _plain_rdbpot(x, m, e, away, dtype)


def _register_op(name: str, doc: str, printer: str, lower, inputs: int) -> None:
    if name in tvm.ir._ffi_api.ListOpNames():
        return
    tvm.ir._ffi_api.RegisterOp(name, doc)
    tvm.ir.Op.get(name).set_num_inputs(inputs)
    tvm.ir.register_op_attr(name, "TCallEffectKind", _PURE)
    tvm.ir.register_op_attr(name, "TVectorizable", True)
    tvm.ir.register_op_attr(name, "TScriptPrinterName", printer)
    for target in ("llvm", "default"):
        tirx.op.register_intrin_lowering(name, target, f=lower, level=99)


def _register() -> None:
    _register_op(
        OP_NAME,
        "int32 (x * m + 2^(t-1)) >> t for m >= 0, 31 <= t <= 62",
        "qnn_high_mul",
        _lower,
        3,
    )
    _register_op(
        RDBPOT_OP_NAME,
        "int32 RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x, m), e), m >= 0",
        "qnn_high_mul_rdbpot",
        _lower_rdbpot,
        4,
    )


def high_mul_call(x: PrimExpr, multiplier: PrimExpr, shift: int = 31) -> PrimExpr:
    """The intrinsic call on two int32 expressions; the result always fits int32."""
    if not 31 <= shift <= 62:
        raise ValueError(f"qnn_high_mul: shift {shift} is outside [31, 62]")
    return tirx.call_intrin("int32", OP_NAME, x, multiplier, tirx.const(shift, "int32"))


def high_mul_rdbpot_call(
    x: PrimExpr, multiplier: PrimExpr, exponent: PrimExpr, ties_up: PrimExpr | bool | None = None
) -> PrimExpr:
    """TFLite's ``RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x, m), e)`` on int32
    expressions, ``m >= 0`` and ``0 <= e <= 31`` (a per-channel exponent may be a vector):
    both roundings in one int64 step per lane pair instead of an int32 rounding shift after
    the high multiply.  ``ties_up`` (True, or a bool PrimExpr) rounds the division's ties
    toward +inf where true, as LiteRT's NEON-style vector loops do."""
    if ties_up is None or ties_up is False:
        away = tirx.const(1, "int32")
    elif ties_up is True:
        away = tirx.const(0, "int32")
    else:
        away = tirx.Select(ties_up, tirx.const(0, "int32"), tirx.const(1, "int32"))
    return tirx.call_intrin("int32", RDBPOT_OP_NAME, x, multiplier, exponent, away)


_register()

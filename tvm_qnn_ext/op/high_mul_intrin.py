"""``qnn_high_mul``: the int32 rounding multiply-shift ``(x * m + 2^(t-1)) >> t``, 31 <= t <= 62
(t = 31 is gemmlowp's SaturatingRoundingDoublingHighMul for m >= 0), as one TIR intrinsic, so
that vectorized code can be written lane-pair-wise.

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


def _register() -> None:
    if OP_NAME in tvm.ir._ffi_api.ListOpNames():
        return
    tvm.ir._ffi_api.RegisterOp(OP_NAME, "int32 (x * m + 2^(t-1)) >> t for m >= 0, 31 <= t <= 62")
    tvm.ir.Op.get(OP_NAME).set_num_inputs(3)
    tvm.ir.register_op_attr(OP_NAME, "TCallEffectKind", _PURE)
    tvm.ir.register_op_attr(OP_NAME, "TVectorizable", True)
    tvm.ir.register_op_attr(OP_NAME, "TScriptPrinterName", "qnn_high_mul")
    for target in ("llvm", "default"):
        tirx.op.register_intrin_lowering(OP_NAME, target, f=_lower, level=99)


def high_mul_call(x: PrimExpr, multiplier: PrimExpr, shift: int = 31) -> PrimExpr:
    """The intrinsic call on two int32 expressions; the result always fits int32."""
    if not 31 <= shift <= 62:
        raise ValueError(f"qnn_high_mul: shift {shift} is outside [31, 62]")
    return tirx.call_intrin("int32", OP_NAME, x, multiplier, tirx.const(shift, "int32"))


_register()

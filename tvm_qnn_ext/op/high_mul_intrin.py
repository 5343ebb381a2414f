"""``qnn_high_mul``: the int32 rounding high multiply ``(x * m + 2^30) >> 31`` as one TIR
intrinsic, so that vectorized code can be written lane-pair-wise.

Written as int64 arithmetic on int32 lanes, LLVM sign-extends each vector into two int64
vectors and narrows the products back: on x86 that is 5 lane-crossing shuffles per 16 lanes
(``vpmovsxdq`` x2, ``vpmovqd`` x2, ``vinserti64x4``), and they, not the multiplies, bound the
requantize epilogue of every convolution.  The intrinsic is vectorizable, and after
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
_ROUND = 1 << 30


def _dtype(expr: PrimExpr) -> tvm.DataType:
    return tvm.DataType(str(expr.ty))


def _plain(x: PrimExpr, m: PrimExpr, dtype: tvm.DataType) -> PrimExpr:
    wide = "int64" if dtype.lanes == 1 else f"int64x{dtype.lanes}"
    prod = tirx.Cast(wide, x) * tirx.Cast(wide, m)
    return tirx.Cast(str(dtype), (prod + tirx.const(_ROUND, wide)) >> tirx.const(31, wide))


def _lane_pairs(x: PrimExpr, m: PrimExpr, dtype: tvm.DataType) -> PrimExpr:
    wide = f"int64x{dtype.lanes // 2}"

    def c(v: int) -> PrimExpr:
        return tirx.const(v, wide)

    xs = tirx.call_intrin(wide, "tirx.reinterpret", x)
    ms = tirx.call_intrin(wide, "tirx.reinterpret", m)
    low_lane = (xs << c(32)) >> c(32)  # sign-extended in place: LLVM multiplies with vpmuldq
    even = low_lane * ((ms << c(32)) >> c(32)) + c(_ROUND)
    odd = (xs >> c(32)) * (ms >> c(32)) + c(_ROUND)
    # bits 31..62 of each product are the result: the even one shifted down into the low
    # half, the odd one shifted up into the high half
    merged = ((even >> c(31)) & c(0xFFFFFFFF)) | ((odd << c(1)) & c(-(1 << 32)))
    return tirx.call_intrin(str(dtype), "tirx.reinterpret", merged)


def _lower(call: PrimExpr) -> PrimExpr:
    x, m = call.args
    dtype = _dtype(call)
    if dtype.lanes > 1 and dtype.lanes % 2 == 0:
        return _lane_pairs(x, m, dtype)
    return _plain(x, m, dtype)


def _register() -> None:
    if OP_NAME in tvm.ir._ffi_api.ListOpNames():
        return
    tvm.ir._ffi_api.RegisterOp(OP_NAME, "int32 (x * m + 2^30) >> 31 for m >= 0")
    tvm.ir.Op.get(OP_NAME).set_num_inputs(2)
    tvm.ir.register_op_attr(OP_NAME, "TCallEffectKind", _PURE)
    tvm.ir.register_op_attr(OP_NAME, "TVectorizable", True)
    tvm.ir.register_op_attr(OP_NAME, "TScriptPrinterName", "qnn_high_mul")
    for target in ("llvm", "default"):
        tirx.op.register_intrin_lowering(OP_NAME, target, f=_lower, level=99)


def high_mul_call(x: PrimExpr, multiplier: PrimExpr) -> PrimExpr:
    """The intrinsic call on two int32 expressions."""
    return tirx.call_intrin("int32", OP_NAME, x, multiplier)


_register()

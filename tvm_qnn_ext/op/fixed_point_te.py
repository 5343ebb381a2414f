"""Fixed-point multiply as integer-only TIR expressions, mirroring
:func:`tvm_qnn_ext.quantization.multiply_by_quantized_multiplier` term for term."""

from __future__ import annotations

from tvm import te, tirx
from tvm.ir.expr import Expr as PrimExpr

I64 = "int64"


def _i64(v) -> PrimExpr:
    if isinstance(v, PrimExpr):
        return v if str(v.ty) == I64 else v.astype(I64)
    return tirx.const(int(v), I64)


def _max0(v):
    if isinstance(v, PrimExpr):
        return tirx.max(v, tirx.const(0, str(v.ty)))
    return max(int(v), 0)


def multiply_by_quantized_multiplier(x, multiplier, shift, rounding: str) -> PrimExpr:
    """``x * multiplier * 2**(shift - 31)`` rounded per ``rounding``; returns an int64 value
    that already lies in the int32 range.  ``multiplier``/``shift`` are ints or PrimExprs."""
    x = _i64(x)
    m = _i64(multiplier)
    if rounding == "tflite":
        left = _i64(_max0(shift))
        right = _i64(_max0(-shift if not isinstance(shift, PrimExpr) else -_i64(shift)))
        # TFLite shifts in int32, so the left shift wraps like C on two's complement.
        xl = (x.astype("int32") << left.astype("int32")).astype(I64)
        ab = xl * m
        nudge = tirx.Select(ab >= 0, _i64(1 << 30), _i64(1 - (1 << 30)))
        s = ab + nudge
        high = tirx.Select(s >= 0, s >> _i64(31), -((-s) >> _i64(31)))
        mask = (_i64(1) << right) - _i64(1)
        threshold = (mask >> _i64(1)) + tirx.Select(high < 0, _i64(1), _i64(0))
        return (high >> right) + tirx.Select((high & mask) > threshold, _i64(1), _i64(0))
    total = _i64(31) - _i64(shift)
    prod = x * m
    half = _i64(1) << (total - _i64(1))
    if rounding in ("tflite_single", "upward"):
        rnd = half
    elif rounding == "tonearest":
        rnd = tirx.Select(prod < 0, half - _i64(1), half)
    else:
        raise ValueError(f"no fixed-point lowering for rounding mode {rounding!r}")
    out = (prod + rnd) >> total
    return tirx.max(tirx.min(out, _i64(2**31 - 1)), _i64(-(2**31)))


def clamp_cast(v: PrimExpr, lo: int, hi: int, dtype: str) -> PrimExpr:
    v = _i64(v)
    return tirx.max(tirx.min(v, _i64(hi)), _i64(lo)).astype(dtype)


def round_half_even_f32(v: PrimExpr) -> PrimExpr:
    """Round half to even (nearbyint) on float32, as PyTorch's requantize does."""
    return te.round(v)

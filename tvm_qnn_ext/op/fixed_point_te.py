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


def _sign_fix(x: PrimExpr, half: PrimExpr) -> PrimExpr:
    """1 when ``x < 0`` and ``half > 0``, else 0: turns round-half-up into half-away."""
    return tirx.Select(x < _i64(0), tirx.min(half, _i64(1)), _i64(0))


def multiply_by_quantized_multiplier(
    x, multiplier, shift, rounding: str, ties_up: PrimExpr | None = None
) -> PrimExpr:
    """``x * multiplier * 2**(shift - 31)`` rounded per ``rounding``; returns an int64 value
    that lies in the int32 range.  ``multiplier``/``shift`` are ints or PrimExprs.

    The multiplier must be non-negative (scales are positive).  That lets each rounding step be
    written with its operand used at most twice, which keeps fused TIR small: for
    ``b >= 0``, SaturatingRoundingDoublingHighMul(a, b) == (a*b + 2^30) >> 31 exactly, and
    RoundingDivideByPOT(x, e) == (x + 2^(e-1) - [x < 0 and e > 0]) >> e.
    With ``rounding="tflite"``, a boolean ``ties_up`` switches to ``tflite_neon`` where true.
    """
    x = _i64(x)
    m = _i64(multiplier)
    if rounding in ("tflite", "tflite_neon"):
        left = _i64(_max0(shift))
        right = _i64(_max0(-shift if not isinstance(shift, PrimExpr) else -_i64(shift)))
        # TFLite shifts in int32, so the left shift wraps like C on two's complement.
        xl = (x.astype("int32") << left.astype("int32")).astype(I64)
        high = (xl * m + _i64(1 << 30)) >> _i64(31)
        half = (_i64(1) << right) >> _i64(1)
        if rounding == "tflite_neon":
            return (high + half) >> right
        fix = _sign_fix(high, half)
        if ties_up is not None:
            fix = tirx.Select(ties_up, _i64(0), fix)
        return (high + half - fix) >> right
    if rounding not in ("tflite_single", "upward", "tonearest"):
        raise ValueError(f"no fixed-point lowering for rounding mode {rounding!r}")
    total = _i64(31) - _i64(shift)
    half = _i64(1) << (total - _i64(1))
    prod = x * m
    rnd = half - _sign_fix(prod, half) if rounding == "tonearest" else half
    out = (prod + rnd) >> total
    return tirx.max(tirx.min(out, _i64(2**31 - 1)), _i64(-(2**31)))


def clamp_cast(v: PrimExpr, lo: int, hi: int, dtype: str) -> PrimExpr:
    v = _i64(v)
    return tirx.max(tirx.min(v, _i64(hi)), _i64(lo)).astype(dtype)


def round_half_even_f32(v: PrimExpr) -> PrimExpr:
    """Round half to even (nearbyint) on float32, as PyTorch's requantize does."""
    return te.round(v)

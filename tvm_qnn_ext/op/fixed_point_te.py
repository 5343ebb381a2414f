"""Fixed-point multiply as integer-only TIR expressions, mirroring
:func:`tvm_qnn_ext.quantization.multiply_by_quantized_multiplier` term for term.

The TFLite modes are written on int32 lanes wherever the arithmetic allows it: only the
32x32->64 high multiply needs 64 bits (one intrinsic, lowered on lane pairs after
vectorization: ``high_mul_intrin.py``).  On AVX-512 the rounding right shift after it joins the
same int64 step (a second intrinsic); elsewhere it is TFLite's own overflow-free int32 form.
On a 512-bit register that is 16 lanes per instruction instead of 8, which matters in
epilogues of small-K layers where the requantize costs more than the dot product.
"""

from __future__ import annotations

import tvm
from tvm import te, tirx
from tvm.ir.expr import Expr as PrimExpr

from .high_mul_intrin import high_mul_call, high_mul_rdbpot_call

I32 = "int32"
I64 = "int64"


def _as(v, dtype: str) -> PrimExpr:
    if isinstance(v, PrimExpr):
        return v if str(v.ty) == dtype else v.astype(dtype)
    return tirx.const(int(v), dtype)


def _i64(v) -> PrimExpr:
    return _as(v, I64)


def _i32(v) -> PrimExpr:
    return _as(v, I32)


def _shift_range(shift, shift_bounds: tuple[int, int] | None) -> tuple[int, int]:
    if not isinstance(shift, PrimExpr):
        return int(shift), int(shift)
    return shift_bounds if shift_bounds is not None else (-31, 30)


def high_mul(x: PrimExpr, multiplier) -> PrimExpr:
    """SaturatingRoundingDoublingHighMul(x, m) for int32 ``x`` and ``m >= 0``, as int32.

    With ``m >= 0`` the saturating case (both INT32_MIN) cannot occur and gemmlowp's
    sign-dependent nudge followed by truncation equals ``(x*m + 2^30) >> 31`` (floor).
    """
    return high_mul_call(_i32(x), _i32(multiplier))


def mul_shift_round(x: PrimExpr, multiplier, shift: int) -> PrimExpr:
    """``(x * m + 2^(shift-1)) >> shift`` (floor) for int32 ``x``, ``m >= 0`` and a constant
    ``31 <= shift <= 62``, as int32: TFLite's single rounding without a left shift, which then
    never saturates."""
    return high_mul_call(_i32(x), _i32(multiplier), shift)


def rounding_shift_right(x: PrimExpr, exponent, ties_up=None) -> PrimExpr:
    """TFLite's RoundingDivideByPOT on int32 (ties away from zero), never overflowing.

    ``ties_up`` (a bool PrimExpr or ``True``) switches to ties toward +inf where true, as
    LiteRT's NEON-style rounding shift does.  Written with sign shifts instead of comparisons:
    Relax's int64 index normalization widens every comparison to int64, which would halve the
    SIMD lanes.
    """
    e = _i32(exponent)
    sign = tirx.const(31, I32)
    mask = tirx.bitwise_not(tirx.const(-1, I32) << e)
    threshold = mask >> tirx.const(1, I32)
    if ties_up is not True:
        minus_negative = x >> sign  # -1 where x < 0, else 0
        if ties_up is not None:
            minus_negative = tirx.Select(ties_up, tirx.const(0, I32), minus_negative)
        threshold = threshold - minus_negative
    # remainder > threshold, as -1/0: both lie in [0, 2^31), so the difference cannot overflow
    minus_bump = (threshold - tirx.bitwise_and(x, mask)) >> sign
    return (x >> e) - minus_bump


def _fused_rounding() -> bool:
    """Whether the target has AVX-512's 64-bit variable arithmetic shifts and compares into
    masks, on which the one-step rounding (qnn_high_mul_rdbpot) is cheaper; elsewhere LLVM
    would emulate them."""
    target = tvm.target.Target.current(allow_none=True)
    if target is None or str(target.kind.name) != "llvm":
        return False
    return bool(tvm.target.codegen.target_has_features("avx512f", target))


def multiply_by_quantized_multiplier_i32(
    x,
    multiplier,
    shift,
    rounding: str,
    ties_up: PrimExpr | None = None,
    shift_bounds: tuple[int, int] | None = None,
) -> PrimExpr:
    """The TFLite double-rounding modes on int32 lanes; returns an int32 value.

    ``x`` is taken modulo 2^32 as TFLite takes it (an int32).  ``shift_bounds`` are the least
    and greatest shift when ``shift`` is a per-channel PrimExpr: they let the left shift or the
    rounding shift drop out when no channel needs it.
    """
    if rounding not in ("tflite", "tflite_neon"):
        raise ValueError(f"no int32 fixed-point lowering for rounding mode {rounding!r}")
    lo, hi = _shift_range(shift, shift_bounds)
    v = _i32(x)
    if hi > 0:
        left = _i32(shift) if lo >= 0 else tirx.max(_i32(shift), tirx.const(0, I32))
        v = v << left  # TFLite shifts in int32: it wraps like C on two's complement
    if lo >= 0:
        return high_mul(v, multiplier)
    right = tirx.max(-_i32(shift), tirx.const(0, I32)) if hi > 0 else -_i32(shift)
    tie = True if rounding == "tflite_neon" else ties_up
    if _fused_rounding():
        # RPS' 82x82x16 stem, whose requantize is most of its time: 25 -> 18 us
        return high_mul_rdbpot_call(v, _i32(multiplier), right, tie)
    return rounding_shift_right(high_mul(v, multiplier), right, tie)


def multiply_by_quantized_multiplier(
    x,
    multiplier,
    shift,
    rounding: str,
    ties_up: PrimExpr | None = None,
    shift_bounds: tuple[int, int] | None = None,
) -> PrimExpr:
    """``x * multiplier * 2**(shift - 31)`` rounded per ``rounding``; returns an int64 value
    that lies in the int32 range.  ``multiplier``/``shift`` are ints or PrimExprs.

    The multiplier must be non-negative (scales are positive).  With ``rounding="tflite"``, a
    boolean ``ties_up`` switches to ``tflite_neon`` where true.
    """
    if rounding in ("tflite", "tflite_neon"):
        return multiply_by_quantized_multiplier_i32(
            x, multiplier, shift, rounding, ties_up, shift_bounds
        ).astype(I64)
    if rounding not in ("tflite_single", "upward", "tonearest"):
        raise ValueError(f"no fixed-point lowering for rounding mode {rounding!r}")
    x = _i64(x)
    total = _i64(31) - _i64(shift)
    half = _i64(1) << (total - _i64(1))
    prod = x * _i64(multiplier)
    if rounding == "tonearest":
        rnd = half - tirx.Select(prod < _i64(0), _i64(1), _i64(0))
    else:
        rnd = half
    out = (prod + rnd) >> total
    return tirx.max(tirx.min(out, _i64(2**31 - 1)), _i64(-(2**31)))


def add_zero_point_clamp_cast(v: PrimExpr, zero_point, lo: int, hi: int, dtype: str) -> PrimExpr:
    """``clamp(v + zero_point, lo, hi)`` cast to ``dtype``, for an int32 ``v``.

    Clamping to ``[lo - zp, hi - zp]`` before adding keeps every step in int32 (the sum itself
    could overflow) and gives the same result.
    """
    if str(v.ty) != I32 or str(dtype) in (I32, "uint32"):
        return clamp_cast(_i64(v) + _i64(zero_point), lo, hi, dtype)
    zp = _i32(zero_point)
    low, high = tirx.const(lo, I32) - zp, tirx.const(hi, I32) - zp
    return (tirx.max(tirx.min(v, high), low) + zp).astype(dtype)


def clamp_cast(v: PrimExpr, lo: int, hi: int, dtype: str) -> PrimExpr:
    v = _i64(v)
    return tirx.max(tirx.min(v, _i64(hi)), _i64(lo)).astype(dtype)


def round_half_even_f32(v: PrimExpr) -> PrimExpr:
    """Round half to even (nearbyint) on float32, as PyTorch's requantize does."""
    return te.round(v)

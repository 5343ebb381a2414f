"""Fixed-point multiplication: the integer core of every requantize.

A real multiplier ``r`` is encoded as an int32 ``multiplier`` (a Q31 significand) and a
power-of-two ``shift`` so that ``r ~= multiplier * 2**(shift - 31)``.  Each rounding mode
reproduces one framework's arithmetic exactly; see ``ROUNDING_MODES``.

All functions accept numpy arrays and broadcast, so per-channel multipliers work the same way
as per-tensor ones.
"""

from __future__ import annotations

import numpy as np

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1

#: rounding mode -> what it reproduces
ROUNDING_MODES: dict[str, str] = {
    "tflite": "TFLite default: SaturatingRoundingDoublingHighMul then RoundingDivideByPOT",
    "tflite_neon": "LiteRT's optimized kernels: SaturatingRoundingDoublingHighMul then a "
    "rounding right shift with ties up (NEON vqrdmulh + vrshl, emulated with SSE on x86)",
    "tflite_single": "TFLite built with TFLITE_SINGLE_ROUNDING: one rounding, half up",
    "upward": "Relay QNN UPWARD: (x*M + 2^(t-1)) >> t, ties toward +inf",
    "tonearest": "Relay QNN TONEAREST: ties away from zero in one rounding",
    "float": "PyTorch fbgemm/x86: float32 multiply, round half to even",
}
INTEGER_MODES = ("tflite", "tflite_neon", "tflite_single", "upward", "tonearest")


def check_rounding(rounding: str) -> str:
    if rounding not in ROUNDING_MODES:
        raise ValueError(
            f"unknown rounding mode {rounding!r}; expected one of {sorted(ROUNDING_MODES)}"
        )
    return rounding


def quantize_multiplier(
    real: float | np.ndarray, rounding: str = "tflite"
) -> tuple[np.ndarray, np.ndarray]:
    """TFLite's QuantizeMultiplier, vectorised.

    Returns ``(multiplier, shift)`` as int32/int64 arrays of ``real``'s shape, where
    ``real ~= multiplier * 2**(shift - 31)``.  Shifts below -31 flush to (0, 0).  With
    ``rounding="tflite_single"`` shifts above 30 saturate to (2^31 - 1, 30) as TFLite's
    single-rounding build does.
    """
    real = np.asarray(real, dtype=np.float64)
    if not np.all(np.isfinite(real)):
        raise ValueError(f"quantize_multiplier: multiplier must be finite, got {real}")
    q, shift = np.frexp(real)
    shift = shift.astype(np.int64)
    # TfLiteRound is round-half-away-from-zero; np.round is half-to-even.
    q_fixed = (np.sign(q) * np.floor(np.abs(q) * 2.0**31 + 0.5)).astype(np.int64)
    full = np.abs(q_fixed) == 2**31
    q_fixed = np.where(full, q_fixed // 2, q_fixed)
    shift = np.where(full, shift + 1, shift)
    tiny = shift < -31
    q_fixed = np.where(tiny, 0, q_fixed)
    shift = np.where(tiny, 0, shift)
    if rounding == "tflite_single":
        big = shift > 30
        q_fixed = np.where(big, INT32_MAX, q_fixed)
        shift = np.where(big, 30, shift)
    zero = real == 0
    q_fixed = np.where(zero, 0, q_fixed)
    shift = np.where(zero, 0, shift)
    return q_fixed.astype(np.int32), shift.astype(np.int64)


def _srdhm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul on int32 values held in int64."""
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    s = ab + nudge
    # C integer division truncates toward zero.
    high = np.where(s >= 0, s >> 31, -((-s) >> 31))
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    return np.where(overflow, INT32_MAX, high)


def _rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def _wrap_int32(x: np.ndarray) -> np.ndarray:
    return ((x + 2**31) % 2**32) - 2**31


def multiply_by_quantized_multiplier(
    x: np.ndarray, multiplier: np.ndarray | int, shift: np.ndarray | int, rounding: str = "tflite"
) -> np.ndarray:
    """``x * multiplier * 2**(shift - 31)`` rounded as ``rounding`` prescribes; returns int32.

    ``"tflite"`` follows TFLite exactly, including the int32 wrap of ``x << shift`` for
    multipliers above 1.  The one-rounding modes compute in exact int64 and saturate to int32.
    """
    check_rounding(rounding)
    if rounding == "float":
        raise ValueError("rounding='float' has no fixed-point form; use requantize()")
    x = np.asarray(x).astype(np.int64)
    m = np.asarray(multiplier).astype(np.int64)
    s = np.asarray(shift).astype(np.int64)
    if np.any((s < -31) | (s > 30)):
        raise ValueError(f"shift must lie in [-31, 30], got {s.min()}..{s.max()}")
    if rounding in ("tflite", "tflite_neon"):
        left = np.maximum(s, 0)
        right = np.maximum(-s, 0)
        hm = _srdhm(_wrap_int32(x << left), m)
        if rounding == "tflite":
            return _rounding_divide_by_pot(hm, right).astype(np.int32)
        return ((hm + ((np.int64(1) << right) >> 1)) >> right).astype(np.int32)
    total = 31 - s  # in [1, 62]
    prod = x * m
    half = np.int64(1) << (total - 1)
    if rounding in ("tflite_single", "upward"):
        rnd = half
    else:  # tonearest: ties away from zero
        rnd = np.where(prod < 0, half - 1, half)
    out = (prod + rnd) >> total
    return np.clip(out, INT32_MIN, INT32_MAX).astype(np.int32)

"""Affine (scale, zero point) quantization: quantize, dequantize and requantize in numpy."""

from __future__ import annotations

import numpy as np

from .fixed_point import INTEGER_MODES, check_rounding, multiply_by_quantized_multiplier
from .fixed_point import quantize_multiplier as _quantize_multiplier
from .params import broadcast_param, check_scale, check_zero_point, dtype_range


def round_half_away(x: np.ndarray) -> np.ndarray:
    """C's round()/TfLiteRound: ties away from zero."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def saturate(x: np.ndarray, dtype: str, lo: int | None = None, hi: int | None = None) -> np.ndarray:
    qmin, qmax = dtype_range(dtype)
    lo = qmin if lo is None else max(lo, qmin)
    hi = qmax if hi is None else min(hi, qmax)
    return np.clip(x, lo, hi).astype(dtype)


def quantize(
    x: np.ndarray,
    scale,
    zero_point,
    dtype: str = "int8",
    axis: int | None = None,
    rounding: str = "tflite",
) -> np.ndarray:
    """float32 -> integer.  TFLite: round_half_away(x / s) + zp; float: rint(x * (1/s)) + zp."""
    check_rounding(rounding)
    x = np.asarray(x, dtype=np.float32)
    s = broadcast_param(check_scale(scale, "quantize"), x.ndim, axis, np.float32)
    zp = broadcast_param(check_zero_point(zero_point, dtype, "quantize"), x.ndim, axis, np.int64)
    if rounding == "float":
        q = np.rint(x * (np.float32(1.0) / s))
    else:
        q = round_half_away(x / s)
    # Values far outside int range (inf, huge) must saturate, not wrap.
    q = np.clip(q, -(2.0**40), 2.0**40).astype(np.int64) + zp
    return saturate(q, dtype)


def dequantize(q: np.ndarray, scale, zero_point, axis: int | None = None) -> np.ndarray:
    """integer -> float32: float32(q - zp) * s."""
    q = np.asarray(q)
    s = broadcast_param(check_scale(scale, "dequantize"), q.ndim, axis, np.float32)
    zp = broadcast_param(np.asarray(zero_point, dtype=np.int64), q.ndim, axis, np.int64)
    return (q.astype(np.int64) - zp).astype(np.float32) * s


def requantize(
    x: np.ndarray,
    in_scale,
    in_zp,
    out_scale,
    out_zp,
    out_dtype: str = "int8",
    rounding: str = "tflite",
    axis: int | None = None,
    out_min: int | None = None,
    out_max: int | None = None,
) -> np.ndarray:
    """Rescale integers from (in_scale, in_zp) to (out_scale, out_zp) and saturate.

    The multiplier ``in_scale / out_scale`` is formed in double precision as TFLite does, then
    encoded with ``quantize_multiplier``.  ``rounding="float"`` follows PyTorch's fbgemm:
    ``rint(float32(x - in_zp) * float32(in_scale / out_scale)) + out_zp``.
    ``out_min``/``out_max`` narrow the saturation range (fused activations).
    """
    check_rounding(rounding)
    x = np.asarray(x).astype(np.int64)
    in_s = check_scale(in_scale, "requantize")
    out_s = check_scale(out_scale, "requantize")
    real = broadcast_param(in_s.astype(np.float64) / out_s.astype(np.float64), x.ndim, axis)
    izp = broadcast_param(np.asarray(in_zp, dtype=np.int64), x.ndim, axis, np.int64)
    ozp = broadcast_param(check_zero_point(out_zp, out_dtype, "requantize"), x.ndim, axis, np.int64)
    centered = x - izp
    if rounding in INTEGER_MODES:
        m, s = _quantize_multiplier(real, rounding)
        y = multiply_by_quantized_multiplier(centered, m, s, rounding).astype(np.int64)
    else:
        y = np.rint(centered.astype(np.float32) * real.astype(np.float32))
        y = np.clip(y, -(2.0**40), 2.0**40).astype(np.int64)
    return saturate(y + ozp, out_dtype, out_min, out_max)

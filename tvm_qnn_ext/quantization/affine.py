"""Affine (scale, zero point) quantization: quantize, dequantize and requantize in numpy."""

from __future__ import annotations

import numpy as np

from .fixed_point import INTEGER_MODES, check_rounding, multiply_by_quantized_multiplier
from .fixed_point import quantize_multiplier as _quantize_multiplier
from .params import (
    broadcast_param,
    check_scale,
    check_zero_point,
    dtype_range,
    is_quantized_dtype,
)


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
    """float32 -> integer.  TFLite: round_half_away(x / s) + zp.

    ``rounding="float"`` is PyTorch's: ``rint(fl32(x * fl32(1/s) + zp))`` with the multiply-add
    fused per tensor and ``rint(fl32(fl32(x * fl32(1/s)) + zp))`` per channel; NaN gives qmax.
    """
    check_rounding(rounding)
    x = np.asarray(x, dtype=np.float32)
    s = broadcast_param(
        check_scale(scale, "quantize"), x.ndim, axis, np.float32, shape=x.shape, what="scale"
    )
    zp = check_zero_point(zero_point, dtype, "quantize")
    zp = broadcast_param(zp, x.ndim, axis, np.int64, shape=x.shape, what="zero point")
    if rounding == "float":
        # PyTorch adds zp before rounding: per tensor fused (FMA), per channel not.
        prod = x.astype(np.float64) * (np.float32(1.0) / s)
        if np.size(s) > 1:
            prod = prod.astype(np.float32).astype(np.float64)
        q = np.rint((prod + zp).astype(np.float32))
        q = np.clip(np.where(np.isnan(q), np.inf, q), -(2.0**40), 2.0**40).astype(np.int64)
        return saturate(q, dtype)
    if rounding == "tflite_neon":
        q = _litert_quantize(x, s)
    else:
        q = round_half_away(x / s)
    # Values far outside int range (inf, huge) must saturate, not wrap.
    q = np.clip(q, -(2.0**40), 2.0**40).astype(np.int64) + zp
    return saturate(q, dtype)


def _litert_quantize(x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """LiteRT's optimized AffineQuantize: blocks of 8 (flat order) multiply by fl32(1/s) and
    round ties-to-even (vcvtnq); the tail divides in double and rounds ties away."""
    s = np.broadcast_to(s, x.shape)
    flat, sf = x.reshape(-1), s.reshape(-1)
    n = (flat.size // 8) * 8
    vec = np.rint((flat * (np.float32(1.0) / sf)).astype(np.float32))
    tail = round_half_away(flat.astype(np.float64) / sf.astype(np.float64))
    return np.concatenate([vec[:n], tail[n:]]).reshape(x.shape)


def dequantize(
    q: np.ndarray, scale, zero_point, axis: int | None = None, rounding: str = "tflite"
) -> np.ndarray:
    """integer -> float32: float32(q - zp) * s.

    ``rounding="tflite_neon"`` is LiteRT's optimized per-tensor kernel: blocks of 8 (flat
    order) compute ``fl32(-zp * s) + fl32(q * s)`` (vmlaq, two roundings), the tail is exact.
    """
    q = np.asarray(q)
    s = broadcast_param(
        check_scale(scale, "dequantize"), q.ndim, axis, np.float32, shape=q.shape, what="scale"
    )
    zp = _input_zero_point(zero_point, q.dtype, "dequantize")
    zp = broadcast_param(zp, q.ndim, axis, np.int64, shape=q.shape, what="zero point")
    exact = (q.astype(np.int64) - zp).astype(np.float32) * s
    if check_rounding(rounding) != "tflite_neon":
        return exact
    s, zp = np.broadcast_to(s, q.shape), np.broadcast_to(zp, q.shape)
    mla = (-zp * s).astype(np.float32) + (q.astype(np.float32) * s).astype(np.float32)
    n = (q.size // 8) * 8
    flat = np.concatenate([mla.reshape(-1)[:n], exact.reshape(-1)[n:]])
    return flat.astype(np.float32).reshape(q.shape)


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
    neon_channels: int = 0,
    neon_flat: int = 0,
) -> np.ndarray:
    """Rescale integers from (in_scale, in_zp) to (out_scale, out_zp) and saturate.

    The multiplier ``in_scale / out_scale`` is formed in double precision as TFLite does, then
    encoded with ``quantize_multiplier``.  ``rounding="float"`` follows PyTorch's fbgemm:
    ``rint(float32(x - in_zp) * float32(in_scale / out_scale)) + out_zp``.
    ``out_min``/``out_max`` narrow the saturation range (fused activations).
    ``neon_channels=N`` rounds channels ``[0, N)`` along ``axis`` as ``tflite_neon`` (LiteRT's
    per-channel depthwise kernel does this for its SIMD blocks; the tail stays ``tflite``).
    ``neon_flat=N`` does so for flat (row-major) indices ``[0, N)`` (LiteRT's QUANTIZE
    requantize: blocks of 16, then a scalar tail).
    """
    check_rounding(rounding)
    x = np.asarray(x)
    izp = _input_zero_point(in_zp, x.dtype, "requantize")
    x = x.astype(np.int64)
    kw = dict(ndim=x.ndim, axis=axis, shape=x.shape)
    in_s = broadcast_param(check_scale(in_scale, "requantize"), **kw, what="input scale")
    out_s = broadcast_param(check_scale(out_scale, "requantize"), **kw, what="output scale")
    real = in_s / out_s
    izp = broadcast_param(izp, **kw, dtype=np.int64, what="input zero point")
    ozp = check_zero_point(out_zp, out_dtype, "requantize")
    ozp = broadcast_param(ozp, **kw, dtype=np.int64, what="output zero point")
    centered = x - izp
    if rounding in INTEGER_MODES:
        m, s = _quantize_multiplier(real, rounding)
        y = multiply_by_quantized_multiplier(centered, m, s, rounding).astype(np.int64)
        if neon_channels and axis is not None:
            ties_up = multiply_by_quantized_multiplier(centered, m, s, "tflite_neon")
            channel = np.arange(x.shape[axis]).reshape(
                [-1 if d == axis % x.ndim else 1 for d in range(x.ndim)]
            )
            y = np.where(channel < neon_channels, ties_up, y)
        if neon_flat:
            ties_up = multiply_by_quantized_multiplier(centered, m, s, "tflite_neon")
            flat = np.arange(x.size).reshape(x.shape)
            y = np.where(flat < neon_flat, ties_up, y)
    else:
        y = np.rint(centered.astype(np.float32) * real.astype(np.float32))
        y = np.clip(y, -(2.0**40), 2.0**40).astype(np.int64)
    return saturate(y + ozp, out_dtype, out_min, out_max)


def _input_zero_point(zero_point, dtype, where: str) -> np.ndarray:
    """An input's zero point must lie in its dtype's range (when that is a quantized dtype)."""
    if is_quantized_dtype(dtype):
        return check_zero_point(zero_point, str(dtype), where)
    return np.asarray(zero_point, dtype=np.int64)

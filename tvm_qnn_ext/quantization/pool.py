"""Reference kernels for quantized average/max pooling and mean.

Pooling keeps the input's quantization (TFLite requires it), so it works on the raw integers:

* ``avg_pool2d``: the sum over the window's valid (non-padded) elements divided by their count
  (or by the full window with ``count_include_pad``), rounded per mode: ``tflite``,
  ``tflite_single`` and ``tonearest`` round half away from zero as TFLite's
  ``(sum +- count/2) / count`` does; ``upward`` rounds half toward +inf; ``float`` is
  ``rint(float32(sum) * float32(1 / count))``.
* ``max_pool2d``: the maximum over valid elements.

``mean`` follows LiteRT's builtin MEAN for ``tflite``: the 4-D ``keepdims`` reduction over axes
{1, 2} of an int8/uint8 tensor takes the optimized kernel (float32 bias and multiplier,
raw sum; channels in its 16-wide vector loop round the last shift half up, the scalar tail
half away from zero); every other case takes the general kernel (``s_in / s_out`` multiplier
with ``1 / count`` folded in by an integer division, centered sum).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .affine import saturate
from .elementwise import _scalar_scale, _scalar_zp, activation_bounds, op_rounding
from .fixed_point import (
    INTEGER_MODES,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
)

POOL_DTYPES = ("int8", "uint8", "int16")
LAYOUTS = ("NHWC", "NCHW")


def pool_padding(padding: Sequence[int], where: str) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) from a 2- or 4-sequence."""
    p = tuple(int(v) for v in padding)
    if len(p) == 2:
        p = (p[0], p[1], p[0], p[1])
    if len(p) != 4 or min(p) < 0:
        raise ValueError(f"{where}: padding must be 2 or 4 non-negative ints, got {padding}")
    return p


def pool_geometry(
    in_hw: tuple[int, int], pool_size, strides, padding, where: str
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int, int, int], tuple[int, int]]:
    """Validated (pool, strides, padding, output HW).  Padding below the window size keeps
    every window on at least one real element."""
    k = tuple(int(v) for v in pool_size)
    s = tuple(int(v) for v in strides)
    if len(k) != 2 or min(k) < 1:
        raise ValueError(f"{where}: pool_size must be two positive ints, got {pool_size}")
    if len(s) != 2 or min(s) < 1:
        raise ValueError(f"{where}: strides must be two positive ints, got {strides}")
    p = pool_padding(padding, where)
    if p[0] >= k[0] or p[2] >= k[0] or p[1] >= k[1] or p[3] >= k[1]:
        raise ValueError(f"{where}: padding {p} must be smaller than pool_size {k}")
    out = tuple((in_hw[i] + p[i] + p[i + 2] - k[i]) // s[i] + 1 for i in range(2))
    if min(out) < 1:
        raise ValueError(
            f"{where}: pool_size {k} with padding {p} is larger than the input {in_hw}"
        )
    return k, s, p, out


def _windows(data: np.ndarray, layout: str, pool_size, strides, padding, where: str):
    """Windows of the NHWC view as [N, OH, OW, C, KH, KW], plus a validity mask."""
    if layout not in LAYOUTS:
        raise ValueError(f"{where}: layout {layout!r} not in {list(LAYOUTS)}")
    if data.ndim != 4:
        raise ValueError(f"{where}: expected a 4-D {layout} tensor, got shape {data.shape}")
    if str(data.dtype) not in POOL_DTYPES:
        raise ValueError(f"{where}: dtype {data.dtype} not in {list(POOL_DTYPES)}")
    x = data if layout == "NHWC" else data.transpose(0, 2, 3, 1)
    k, s, p, _ = pool_geometry(x.shape[1:3], pool_size, strides, padding, where)
    pads = ((0, 0), (p[0], p[2]), (p[1], p[3]), (0, 0))
    xp = np.pad(x.astype(np.int64), pads)
    valid = np.pad(np.ones(x.shape[1:3], dtype=bool), pads[1:3])
    win = np.lib.stride_tricks.sliding_window_view(xp, k, axis=(1, 2))[:, :: s[0], :: s[1]]
    vwin = np.lib.stride_tricks.sliding_window_view(valid, k)[:: s[0], :: s[1]]
    return win, vwin


def _to_layout(y: np.ndarray, layout: str) -> np.ndarray:
    return y if layout == "NHWC" else y.transpose(0, 3, 1, 2)


def rounded_average(total: np.ndarray, count: np.ndarray, rounding: str) -> np.ndarray:
    """``total / count`` for a positive integer ``count``, rounded per mode."""
    total = np.asarray(total, dtype=np.int64)
    count = np.asarray(count, dtype=np.int64)
    half = count // 2
    if rounding in ("tflite", "tflite_single", "tonearest"):
        num = np.where(total > 0, total + half, total - half)
        q = np.abs(num) // count  # C division truncates toward zero
        return np.where(num < 0, -q, q)
    if rounding == "upward":
        return (total + half) // count
    recip = np.float32(1.0) / count.astype(np.float32)
    return np.rint(total.astype(np.float32) * recip).astype(np.int64)


def avg_pool2d(
    data: np.ndarray,
    *,
    pool_size: Sequence[int],
    strides: Sequence[int],
    padding: Sequence[int] = (0, 0, 0, 0),
    layout: str = "NHWC",
    out_dtype: str | None = None,
    out_min: int | None = None,
    out_max: int | None = None,
    rounding: str = "tflite",
    count_include_pad: bool = False,
) -> np.ndarray:
    """Average pooling on quantized integers (same quantization in and out)."""
    where = "qnn.avg_pool2d"
    rounding = op_rounding(rounding)
    data = np.asarray(data)
    out_dtype = out_dtype or str(data.dtype)
    lo, hi = activation_bounds(out_dtype, out_min, out_max, where)
    win, vwin = _windows(data, layout, pool_size, strides, padding, where)
    total = win.sum(axis=(-2, -1))
    if count_include_pad:
        count = np.full(vwin.shape[:2], vwin.shape[2] * vwin.shape[3])
    else:
        count = vwin.sum(axis=(-2, -1))
    avg = rounded_average(total, count[None, :, :, None], rounding)
    return _to_layout(saturate(avg, out_dtype, lo, hi), layout)


def max_pool2d(
    data: np.ndarray,
    *,
    pool_size: Sequence[int],
    strides: Sequence[int],
    padding: Sequence[int] = (0, 0, 0, 0),
    layout: str = "NHWC",
    out_min: int | None = None,
    out_max: int | None = None,
) -> np.ndarray:
    """Max pooling over the valid elements of each window, then the activation clamp."""
    where = "qnn.max_pool2d"
    data = np.asarray(data)
    dtype = str(data.dtype)
    lo, hi = activation_bounds(dtype, out_min, out_max, where)
    win, vwin = _windows(data, layout, pool_size, strides, padding, where)
    masked = np.where(vwin[None, :, :, None], win, np.iinfo(np.int64).min)
    return _to_layout(saturate(masked.max(axis=(-2, -1)), dtype, lo, hi), layout)


def resolve_axes(axis: Sequence[int], ndim: int, where: str) -> tuple[int, ...]:
    """Normalised, de-duplicated, sorted reduction axes."""
    out = set()
    for a in axis:
        a = int(a)
        if not -ndim <= a < ndim:
            raise ValueError(f"{where}: axis {a} out of range for rank {ndim}")
        out.add(a % ndim)
    return tuple(sorted(out))


def tflite_mean_uses_4d_kernel(
    in_dtype: str, ndim: int, axes: tuple[int, ...], keepdims: bool
) -> bool:
    """Whether LiteRT's MEAN takes its optimized 4-D (H, W) kernel."""
    return in_dtype in ("int8", "uint8") and keepdims and ndim == 4 and axes == (1, 2)


def tflite_mean_vector_lanes(channels: int) -> np.ndarray:
    """Channels that LiteRT's 4-D mean kernel handles in its 16-wide vector loop (the rest go
    through the scalar tail), as it runs single-threaded."""
    return np.arange(channels) < 16 * (channels // 16)


def tflite_vector_mbqm(x: np.ndarray, multiplier: int, shift: int) -> np.ndarray:
    """MultiplyByQuantizedMultiplier4Rows: like the scalar form, but the final right shift is a
    rounding shift (``vrshl``) that rounds ties toward +inf instead of away from zero."""
    high = multiply_by_quantized_multiplier(x, multiplier, max(shift, 0), "tflite")
    right = max(-shift, 0)
    return (high.astype(np.int64) + ((1 << right) >> 1)) >> right


def tflite_mean_4d_params(
    count: int, input_scale, input_zero_point, output_scale, output_zero_point, rounding="tflite"
) -> tuple[int, int, int]:
    """(multiplier, shift, bias) of LiteRT's 4-D mean kernel, computed in float32 as it does."""
    s_in, s_out = np.float32(input_scale), np.float32(output_scale)
    temp = np.float32(np.float32(input_zero_point) * s_in) / s_out
    temp = temp + np.float32(0.5) if temp > 0 else temp - np.float32(0.5)
    bias = int(output_zero_point) - int(np.trunc(temp))
    real = s_in / np.float32(np.float32(count) * s_out)
    m, s = quantize_multiplier(float(real), rounding)
    return int(m), int(s), bias


def tflite_mean_general_params(count: int, input_scale, output_scale, rounding: str):
    """(multiplier, shift) of LiteRT's general quantized mean: ``s_in / s_out`` with the
    ``1 / count`` folded into the multiplier by an integer division."""
    real = float(np.float32(input_scale)) / float(np.float32(output_scale))
    m, s = quantize_multiplier(real, rounding)
    m, s = int(m), int(s)
    shift = min(int(count).bit_length() - 1, 32, 31 + s)
    return int((m << shift) // int(count)), s - shift


def mean(
    data: np.ndarray,
    *,
    axis: Sequence[int],
    keepdims: bool,
    input_scale,
    input_zero_point,
    output_scale,
    output_zero_point,
    out_dtype: str = "int8",
    rounding: str = "tflite",
) -> np.ndarray:
    """Quantized mean over ``axis``.  ``upward``/``tonearest`` requantize the centered sum by
    ``s_in / (count * s_out)`` in one fixed-point step; ``float`` does that multiply in float32
    and rounds half to even."""
    where = "qnn.mean"
    rounding = op_rounding(rounding)
    data = np.asarray(data)
    in_dtype = str(data.dtype)
    if in_dtype not in POOL_DTYPES:
        raise ValueError(f"{where}: dtype {in_dtype} not in {list(POOL_DTYPES)}")
    axes = resolve_axes(axis, data.ndim, where)
    s_in = _scalar_scale(input_scale, f"{where} input_scale")
    s_out = _scalar_scale(output_scale, f"{where} output_scale")
    z_in = _scalar_zp(input_zero_point, in_dtype, f"{where} input_zero_point")
    z_out = _scalar_zp(output_zero_point, out_dtype, f"{where} output_zero_point")
    count = int(np.prod([data.shape[a] for a in axes], dtype=np.int64))
    if count == 0:
        raise ValueError(f"{where}: reducing an empty axis of shape {data.shape}")
    total = data.astype(np.int64).sum(axis=axes, keepdims=keepdims)
    mbqm = multiply_by_quantized_multiplier
    tflite = rounding in ("tflite", "tflite_single")
    if tflite and tflite_mean_uses_4d_kernel(in_dtype, data.ndim, axes, keepdims):
        m, s, bias = tflite_mean_4d_params(count, s_in, z_in, s_out, z_out, rounding)
        _check_shift(s, where)
        y = mbqm(total, m, s, rounding).astype(np.int64) + bias
        if rounding == "tflite":
            vec = tflite_vector_mbqm(total, m, s) + bias
            y = np.where(tflite_mean_vector_lanes(data.shape[3]), vec, y)
    elif tflite:
        m, s = tflite_mean_general_params(count, s_in, s_out, rounding)
        _check_shift(s, where)
        y = mbqm(total - z_in * count, m, s, rounding).astype(np.int64) + z_out
    elif rounding in INTEGER_MODES:
        m, s = quantize_multiplier(s_in / (s_out * count), rounding)
        _check_shift(int(s), where)
        y = mbqm(total - z_in * count, m, s, rounding).astype(np.int64) + z_out
    else:
        real = np.float32(s_in / (s_out * count))
        y = np.rint((total - z_in * count).astype(np.float32) * real)
        y = np.clip(y, -(2.0**40), 2.0**40).astype(np.int64) + z_out
    return saturate(y, out_dtype)


def _check_shift(shift: int, where: str) -> None:
    if not -31 <= int(shift) <= 30:
        raise ValueError(f"{where}: scale ratio out of the fixed-point range (shift {shift})")

"""Reference for LiteRT's 8-bit RESIZE_BILINEAR.

int8 (``reference_ops::ResizeBilinearInteger``, :func:`resize_bilinear`) is integer arithmetic:

source coordinates are 22.10 fixed point: ``scale_10 = round(in << 10 / out)`` (integer
division, half up; ``(in - 1) / (out - 1)`` with ``align_corners``), ``src = dst * scale_10``
(``+ scale_10 / 2 - 512`` with ``half_pixel_centers``).  The two taps of each axis are
``lo = max(trunc(src / 1024), 0)`` and ``hi = min(trunc((src + 1023) / 1024), in - 1)`` with
weights ``1024 - f`` and ``f``, ``f = src - 1024 * lo`` (negative near a half-pixel border,
where both taps are the same pixel).  Each output is ``sum(x * wy * wx)`` rounded half away
from zero by ``2^20``.

uint8 (``ResizeBilinearGenericSmallChannel``, :func:`resize_bilinear_uint8_float32`) is float32
arithmetic, without FMA contraction in the x86 wheel; the importer rejects it because an
integer-only form needs a signed soft-float add (weights are negative at half-pixel borders).
Its 8x half-pixel upscale of a multiple-of-8 depth takes yet another (NEON 8.8 fixed-point)
kernel, not modelled.
"""

from __future__ import annotations

import numpy as np

ONE = 1 << 10


def _trunc_div(a: int, b: int) -> int:
    q = abs(a) // b
    return q if a >= 0 else -q


def bilinear_taps(
    in_size: int, out_size: int, align_corners: bool, half_pixel_centers: bool
) -> np.ndarray:
    """``(out_size, 4)`` int64 rows ``(lo, hi, weight_lo, weight_hi)``; weights sum to 1024."""
    if in_size < 1 or out_size < 1:
        raise ValueError(f"resize sizes must be positive, got {in_size} -> {out_size}")
    if align_corners and out_size > 1:
        scale = (ONE * (in_size - 1) + (out_size - 1) // 2) // (out_size - 1)
    else:
        scale = (ONE * in_size + out_size // 2) // out_size
    rows = []
    for d in range(out_size):
        src = d * scale + (scale // 2 - ONE // 2 if half_pixel_centers else 0)
        lo = max(_trunc_div(src, ONE), 0)
        hi = min(_trunc_div(src + ONE - 1, ONE), in_size - 1)
        f = src - ONE * lo
        rows.append((lo, hi, ONE - f, f))
    return np.asarray(rows, np.int64)


def round_shift_20(acc: np.ndarray) -> np.ndarray:
    """``acc / 2^20`` rounded half away from zero (TFLite without single rounding)."""
    return np.sign(acc) * ((np.abs(acc) + (1 << 19)) >> 20)


def resize_bilinear(
    x: np.ndarray, size: tuple[int, int], align_corners: bool, half_pixel_centers: bool
) -> np.ndarray:
    """NHWC int8 (or any integer) bilinear resize exactly as ``ResizeBilinearInteger``."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"resize_bilinear: NHWC input expected, got shape {x.shape}")
    if align_corners and half_pixel_centers:
        raise ValueError("resize_bilinear: align_corners and half_pixel_centers exclude each other")
    _, h, w, _ = x.shape
    ty = bilinear_taps(h, size[0], align_corners, half_pixel_centers)
    tx = bilinear_taps(w, size[1], align_corners, half_pixel_centers)
    xi = x.astype(np.int64)
    acc = np.zeros((x.shape[0], size[0], size[1], x.shape[3]), np.int64)
    for yi in (0, 1):
        rows = xi[:, ty[:, yi]]
        for xj in (0, 1):
            weight = np.outer(ty[:, 2 + yi], tx[:, 2 + xj])[None, :, :, None]
            acc += rows[:, :, tx[:, xj]] * weight
    return round_shift_20(acc).astype(x.dtype)


def _float_source(d: int, scale: np.float32, half_pixel_centers: bool, size: int):
    """``ComputeInterpolationValues`` in float32: (source coordinate, lower tap, upper tap)."""
    f32 = np.float32
    src = (f32(d) + f32(0.5)) * scale - f32(0.5) if half_pixel_centers else f32(d) * scale
    return src, max(int(np.floor(src)), 0), min(int(np.ceil(src)), size - 1)


def resize_bilinear_uint8_float32(
    x: np.ndarray, size: tuple[int, int], align_corners: bool, half_pixel_centers: bool
) -> np.ndarray:
    """LiteRT's uint8 bilinear resize, float32 operation by operation (numpy float32 scalars
    round like IEEE single precision): ``uint8(x00*w0 + x01*w1 + x10*w2 + x11*w3 + 0.5)``."""
    f32 = np.float32
    x = np.asarray(x)
    n, h, w, c = x.shape
    oh, ow = size
    if half_pixel_centers and not align_corners and c % 8 == 0 and oh == 8 * h and ow == 8 * w:
        raise ValueError("resize_bilinear_uint8_float32: LiteRT's 8x NEON kernel is not modelled")
    hs = f32(h - 1) / f32(oh - 1) if align_corners and oh > 1 else f32(h) / f32(oh)
    ws = f32(w - 1) / f32(ow - 1) if align_corners and ow > 1 else f32(w) / f32(ow)
    xf = x.astype(f32)
    out = np.zeros((n, oh, ow, c), np.uint8)
    one = f32(1)
    for y in range(oh):
        iy, y0, y1 = _float_source(y, hs, half_pixel_centers, h)
        dy = f32(iy - f32(y0))
        for xo in range(ow):
            ix, x0, x1 = _float_source(xo, ws, half_pixel_centers, w)
            dx = f32(ix - f32(x0))
            wts = [(one - dy) * (one - dx), (one - dy) * dx, dy * (one - dx), dy * dx]
            acc = xf[:, y0, x0] * wts[0]
            acc = acc + xf[:, y0, x1] * wts[1]
            acc = acc + xf[:, y1, x0] * wts[2]
            acc = acc + xf[:, y1, x1] * wts[3]
            out[:, y, xo] = (acc + f32(0.5)).astype(np.uint8)  # truncation, as static_cast
    return out

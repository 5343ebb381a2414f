"""RESIZE_NEAREST_NEIGHBOR (int8/uint8) and RESIZE_BILINEAR (int8) on NHWC tensors.

Shapes are static, so the source row/column of every output pixel is computed here in numpy,
reproducing LiteRT's 8-bit kernel (``optimized_ops::ResizeNearestNeighbor``) exactly, and the
resize becomes two gathers (``take`` along H, then W) with int32 index constants: no float
reaches the graph.

* No option set: the optimized kernel uses 16.16 fixed point,
  ``scale = (in << 16) / out + 1`` and ``src = min((dst * scale) >> 16, in - 1)``.
* ``align_corners`` or ``half_pixel_centers``: it falls back to the reference kernel's float32
  ``GetNearestNeighbor`` (``reference/resize_nearest_neighbor.h``), reproduced with numpy
  float32 scalars (same IEEE single-precision operations, ``round`` = half away from zero).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from tvm import relax

from ...quantization.resize import bilinear_taps
from .importer import QUANT_DTYPES, Context, converter
from .reader import Operator

F32 = np.float32


def _check_resize(ctx: Context, op: Operator) -> str | None:
    x, out = ctx.tensor(op.inputs[0]), ctx.tensor(op.outputs[0])
    if x.dtype not in QUANT_DTYPES:
        return f"{x.dtype} input (only int8/uint8 quantized tensors are supported)"
    if out.dtype != x.dtype:
        return f"input dtype {x.dtype} differs from output dtype {out.dtype}"
    if x.quant is None or out.quant is None:
        return "missing quantization parameters"
    if (
        len(x.quant.scale) != 1
        or len(out.quant.scale) != 1
        or F32(x.quant.scale[0]) != F32(out.quant.scale[0])
        or int(x.quant.zero_point[0]) != int(out.quant.zero_point[0])
    ):
        return "input and output quantization differ"
    if len(x.shape) != 4:
        return f"rank-{len(x.shape)} input (only 4-D NHWC is supported)"
    if len(op.inputs) < 2 or op.inputs[1] < 0 or not ctx.is_const(op.inputs[1]):
        return "size must be a constant tensor"
    size = ctx.const(op.inputs[1]).reshape(-1)
    if size.size != 2 or int(size.min()) < 1:
        return f"size {size.tolist()} must be two positive integers"
    return None


def nearest_indices(
    in_size: int, out_size: int, align_corners: bool, half_pixel_centers: bool
) -> np.ndarray:
    """Source index of each output index along one axis, as LiteRT's 8-bit kernel picks it."""
    if not align_corners and not half_pixel_centers:
        scale = (in_size << 16) // out_size + 1
        idx = [min((d * scale) >> 16, in_size - 1) for d in range(out_size)]
        return np.asarray(idx, np.int32)
    if align_corners and out_size > 1:
        scale = F32(in_size - 1) / F32(out_size - 1)
    else:
        scale = F32(in_size) / F32(out_size)
    offset = F32(0.5) if half_pixel_centers else F32(0.0)
    idx = []
    for d in range(out_size):
        v = (F32(d) + offset) * scale  # float32 throughout, as in the kernel
        if align_corners:
            s = int(np.floor(abs(float(v)) + 0.5)) * (1 if v >= 0 else -1)  # std::round
        else:
            s = int(np.floor(v))
        s = min(s, in_size - 1)
        if half_pixel_centers:
            s = max(0, s)
        idx.append(s)
    return np.asarray(idx, np.int32)


@converter("RESIZE_NEAREST_NEIGHBOR", check=_check_resize)
def convert_resize_nearest(ctx: Context, op: Operator):
    n, h, w, c = ctx.tensor(op.inputs[0]).shape
    oh, ow = (int(d) for d in ctx.const(op.inputs[1]).reshape(-1))
    ac = bool(op.options.get("align_corners", False))
    hp = bool(op.options.get("half_pixel_centers", False))
    hi = nearest_indices(h, oh, ac, hp)
    wi = nearest_indices(w, ow, ac, hp)
    v = ctx.value(op.inputs[0])
    if isinstance(v, np.ndarray):
        return [v[:, hi][:, :, wi]]
    if not np.array_equal(hi, np.arange(h)):
        v = ctx.emit(relax.op.take(v, relax.const(hi, "int32"), axis=1))
    if not np.array_equal(wi, np.arange(w)):
        v = ctx.emit(relax.op.take(v, relax.const(wi, "int32"), axis=2))
    return [v]


def _check_bilinear(ctx: Context, op: Operator) -> str | None:
    reason = _check_resize(ctx, op)
    if reason:
        return reason
    if ctx.tensor(op.inputs[0]).dtype == "uint8":
        # LiteRT's uint8 kernel (ResizeBilinearGenericSmallChannel) interpolates in float32.
        return "uint8 input (LiteRT interpolates uint8 in float32; only int8 is supported)"
    if op.options.get("align_corners", False) and op.options.get("half_pixel_centers", False):
        return "align_corners and half_pixel_centers are both set"
    return None


def _round_shift_20(acc: relax.Expr) -> relax.Expr:
    """``acc / 2^20`` rounded half away from zero, in int64."""
    half = relax.const(1 << 19, "int64")
    mag = relax.op.right_shift(relax.op.add(relax.op.abs(acc), half), relax.const(20, "int64"))
    return relax.op.multiply(relax.op.sign(acc), mag)


def emit_resize_bilinear_integer(
    emit: Callable[[relax.Expr], relax.Var],
    x: relax.Expr,
    in_hw: tuple[int, int],
    out_hw: tuple[int, int],
    align_corners: bool,
    half_pixel_centers: bool,
    dtype: str,
) -> relax.Expr:
    """LiteRT's ``ResizeBilinearInteger`` on NHWC ``x``: four gathers weighted by import-time
    10-bit fixed-point weights (see :mod:`tvm_qnn_ext.quantization.resize`), summed and
    rounded in int64, cast to ``dtype``.  ``emit`` binds each intermediate (our importer's and
    QDQToQNN's contexts both have one)."""
    (h, w), (oh, ow) = in_hw, out_hw
    ty = bilinear_taps(h, oh, align_corners, half_pixel_centers)
    tx = bilinear_taps(w, ow, align_corners, half_pixel_centers)
    acc = None
    for yi in (0, 1):
        rows = emit(relax.op.take(x, relax.const(ty[:, yi].astype(np.int32)), axis=1))
        for xj in (0, 1):
            v = emit(relax.op.take(rows, relax.const(tx[:, xj].astype(np.int32)), axis=2))
            weight = np.outer(ty[:, 2 + yi], tx[:, 2 + xj])[None, :, :, None]
            term = relax.op.multiply(relax.op.astype(v, "int64"), relax.const(weight, "int64"))
            acc = emit(term if acc is None else relax.op.add(acc, term))
    return relax.op.astype(_round_shift_20(acc), dtype)


@converter("RESIZE_BILINEAR", check=_check_bilinear)
def convert_resize_bilinear(ctx: Context, op: Operator):
    _, h, w, _ = ctx.tensor(op.inputs[0]).shape
    oh, ow = (int(d) for d in ctx.const(op.inputs[1]).reshape(-1))
    resized = emit_resize_bilinear_integer(
        ctx.emit,
        ctx.expr(op.inputs[0]),
        (h, w),
        (oh, ow),
        bool(op.options.get("align_corners", False)),
        bool(op.options.get("half_pixel_centers", False)),
        ctx.tensor(op.inputs[0]).dtype,
    )
    return [ctx.emit(resized)]

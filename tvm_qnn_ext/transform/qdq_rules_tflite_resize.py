"""QDQToQNN rule for TVM's quantized RESIZE_BILINEAR: ``dequantize -> image.resize2d(linear)
-> quantize``, as LiteRT's int8 ``ResizeBilinearInteger`` computes it.

The 10-bit taps come from :func:`tvm_qnn_ext.quantization.resize.bilinear_taps`, shared with our
TFLite importer (frontend/tflite/convert_resize.py), whose gather-weight-round emission this
mirrors: four gathers weighted in int64, summed, rounded half away from zero at bit 20.
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from ..quantization.resize import bilinear_taps
from .qdq_rules_tflite import TFLITE
from .qdq_to_qnn import NotRewritable, Region, qdq_rule

# TVM's TFLite frontend: align_corners -> "align_corners", half_pixel_centers -> "half_pixel".
_COORDINATES = {
    "asymmetric": (False, False),
    "align_corners": (True, False),
    "half_pixel": (False, True),
}


def _round_shift_20(acc: relax.Expr) -> relax.Expr:
    half = relax.const(1 << 19, "int64")
    mag = relax.op.right_shift(relax.op.add(relax.op.abs(acc), half), relax.const(20, "int64"))
    return relax.op.multiply(relax.op.sign(acc), mag)


@qdq_rule("relax.image.resize2d", framework=TFLITE)
def resize_bilinear(region: Region) -> relax.Expr:
    ctx, call = region.ctx, region.anchor
    a = call.attrs
    if str(a.method) != "linear" or str(a.layout) != "NHWC":
        raise NotRewritable(f"resize2d method {a.method} layout {a.layout} (int8 bilinear NHWC)")
    if str(a.coordinate_transformation_mode) not in _COORDINATES:
        raise NotRewritable(f"coordinate mode {a.coordinate_transformation_mode}")
    if region.act != (None, None):
        raise NotRewritable("a relu/clip after resize2d")
    x, qi = ctx.input(call.args[0])
    if qi.dtype != "int8":
        raise NotRewritable(f"{qi.dtype} input (LiteRT interpolates uint8 in float32)")
    if not qi.same_as(region.out):
        raise NotRewritable("input and output quantization differ")
    _, h, w, _ = ctx.shape(call.args[0])
    _, oh, ow, _ = region.out_shape
    align, half = _COORDINATES[str(a.coordinate_transformation_mode)]
    ty, tx = bilinear_taps(h, oh, align, half), bilinear_taps(w, ow, align, half)
    acc = None
    for yi in (0, 1):
        rows = ctx.emit(relax.op.take(x, relax.const(ty[:, yi].astype(np.int32)), axis=1))
        for xj in (0, 1):
            v = ctx.emit(relax.op.take(rows, relax.const(tx[:, xj].astype(np.int32)), axis=2))
            weight = np.outer(ty[:, 2 + yi], tx[:, 2 + xj])[None, :, :, None]
            term = relax.op.multiply(relax.op.astype(v, "int64"), relax.const(weight, "int64"))
            acc = ctx.emit(term if acc is None else relax.op.add(acc, term))
    return relax.op.astype(_round_shift_20(acc), "int8")

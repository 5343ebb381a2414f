"""QDQToQNN rule for TVM's quantized RESIZE_BILINEAR: ``dequantize -> image.resize2d(linear)
-> quantize``, as LiteRT's int8 ``ResizeBilinearInteger`` computes it.

The emission is our TFLite importer's (frontend/tflite/convert_resize.py): four gathers
weighted in int64 by 10-bit taps, summed, rounded half away from zero at bit 20.
"""

from __future__ import annotations

from tvm import relax

from ..frontend.tflite.convert_resize import emit_resize_bilinear_integer
from .qdq_rules_tflite import TFLITE
from .qdq_to_qnn import NotRewritable, Region, qdq_rule

# TVM's TFLite frontend: align_corners -> "align_corners", half_pixel_centers -> "half_pixel".
_COORDINATES = {
    "asymmetric": (False, False),
    "align_corners": (True, False),
    "half_pixel": (False, True),
}


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
    return emit_resize_bilinear_integer(ctx.emit, x, (h, w), (oh, ow), align, half, "int8")

"""Depthwise qnn.conv2d legalized for packed taps: ``vpdpbusd`` (AVX512-VNNI / AVX-VNNI) or,
without VNNI on AVX512BW, two ``vpmaddwd``; NHWC.

A depthwise output is ``sum over taps of x[tap][c] * w[tap][c]`` with no reduction over
channels, so a dot-product instruction has nothing to reduce across lanes.  Instead each int32
lane packs **four input rows of one channel**: per output row (or pair of rows) the input is
packed into ``taps[pr, g, wp, c]``, a uint32 whose byte ``k`` is the (shifted, zero-point padded)
input at one kernel row, column ``wp``, channel ``c``.  One ``vpdpbusd`` of ``taps`` against the
weight packed the same way (``[rows, g, kw, c, 4]``, zeros where a byte is no tap of that output
row) adds four taps of 16 channels: a 3x3 kernel costs 3 instructions per 16 outputs instead of
9 widening multiplies.  Kernels taller than four rows (keyword spotting's 9x1) pack every input
row once instead, from a padded uint8 copy of the input, and output row ``oh`` reads words
``oh * stride + 4 g``: one word per input row rather than three per output row.

* int8 activations move to uint8 by +128, their zero point with them;
* the weight zero point is folded into the constant weight (``w - zw`` must fit int8), so no
  window sums are needed; ``bias - zx * sum(w)`` is one folded constant;
* padding is applied while packing (the shifted zero point), so the multiply-add loop has no
  bounds checks.

Used only when the target has one of :data:`VARIANTS`, the weight is a constant, the channel
multiplier is 1 and the channels fill whole registers (or, as 120 channels do, fill them once
padded by at most 1/8: the padded lanes compute zeros that nothing stores); otherwise
:mod:`.conv` keeps its portable form.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax, te, tirx

from ..target import dot_product
from ..target.packing import round_up
from ..target.schedule import ANNOTATION
from .conv import Geometry, OffsetParts, _compact, _wrap_int32, constant_value, kernel_zero_point
from .packed_dot import DOT_ANNOTATION

TAPS_PER_LANE = 4
# rows_per_pack's value for taps packed once per input row and shared by all output rows
PER_INPUT_ROW = 0


@dataclass(frozen=True)
class Variant:
    """One instruction sequence that adds four u8 x s8 products per int32 lane."""

    kind: str  # "vpdpbusd", or "pmaddwd" (two vpmaddwd on 16-bit halves: exact, no VNNI)
    lanes: int
    features: tuple[str, ...]  # LLVM features that must all be present
    llvm_intrinsic: str

    @property
    def name(self) -> str:
        return f"{self.kind}_x{self.lanes}"


# best first; the first whose features the target has and whose lanes divide the channels
VARIANTS = (
    Variant("vpdpbusd", 16, ("avx512vnni",), "llvm.x86.avx512.vpdpbusd.512"),
    Variant("vpdpbusd", 8, ("avx512vnni", "avx512vl"), "llvm.x86.avx512.vpdpbusd.256"),
    Variant("vpdpbusd", 8, ("avxvnni",), "llvm.x86.avx512.vpdpbusd.256"),
    # AVX512BW without VNNI: 1.64 -> 1.33 ms over MobileNetV2's depthwise layers (skylake-avx512
    # code on this Zen 4).  AVX2 alone gained ~5%, within noise: it keeps the portable form.
    Variant("pmaddwd", 16, ("avx512bw",), "llvm.x86.avx512.pmaddw.d.512"),
    Variant("pmaddwd", 8, ("avx512bw", "avx512vl"), "llvm.x86.avx2.pmadd.wd"),
)
BY_NAME = {v.name: v for v in VARIANTS}


# Channels that a variant's lanes do not divide may be padded to whole registers (the padded
# lanes compute zeros that nothing stores) when they are a multiple of this and the padding
# wastes at most 1/8 of the lanes: 120 channels run as 8 x 16 lanes, not 15 x 8.
PAD_GRANULE = 8
MAX_PAD_FRACTION = 1 / 8


def select_variant(channels: int) -> tuple[Variant, int] | None:
    """The variant for the current target and ``channels``, with the channel count its packed
    loops run over (``channels`` or more), or None (portable form)."""
    target = tvm.target.Target.current(allow_none=True)
    if target is None or str(target.kind.name) != "llvm":
        return None
    if dot_product.target_arch(target) != "x86_64":
        return None
    feats = {f for v in VARIANTS for f in v.features}
    have = {f for f in feats if tvm.target.codegen.target_has_features(f, target)}
    for v in VARIANTS:
        if not all(f in have for f in v.features):
            continue
        if channels % v.lanes == 0:
            return v, channels
        padded = round_up(channels, v.lanes)
        if channels % PAD_GRANULE == 0 and padded - channels <= MAX_PAD_FRACTION * padded:
            return v, padded
    return None


def _folded_weight(call: relax.Call, g: Geometry) -> np.ndarray | None:
    """``w - zw`` as int8 [kh, kw, C], or None when it does not fit int8."""
    w = constant_value(call.args[1])
    if w is None:
        return None
    w = w.transpose([g.kernel_layout.index(a) for a in "OIHW"])[:, 0]  # [C, kh, kw]
    zw = kernel_zero_point(call, str(call.args[1].ty.dtype), g.o)
    folded = w.astype(np.int64) - zw[:, None, None]
    if folded.min() < -128 or folded.max() > 127:
        return None
    return folded.transpose(1, 2, 0).astype(np.int8)


def rows_per_pack(g: Geometry) -> int:
    """Output rows one packed word serves, or :data:`PER_INPUT_ROW`.

    2 when stride 1 and a kernel whose rows for output rows ``oh`` and ``oh + 1`` span at most
    four input rows (a 3x3 kernel: rows ``oh .. oh + 3``); then the packing is shared and no
    byte is wasted.  Otherwise taps are packed per output row (1), unless the kernel is taller
    than four rows and packing every input row once is fewer words: a 9x1 kernel at stride 1
    packs each input row into three words per output row, against one word per input row.
    """
    span = (g.kh - 1) * g.dilation[0] + 2
    if g.strides[0] == 1 and span <= TAPS_PER_LANE and g.oh % 2 == 0:
        return 2
    groups = -(-g.kh // TAPS_PER_LANE)
    return PER_INPUT_ROW if packed_input_rows(g) < g.oh * groups else 1


def packed_input_rows(g: Geometry) -> int:
    """Words per column when every input row is packed once: output row ``oh``'s group ``grp``
    is word ``oh * stride + 4 * grp * dilation``."""
    groups = -(-g.kh // TAPS_PER_LANE)
    return (g.oh - 1) * g.strides[0] + TAPS_PER_LANE * (groups - 1) * g.dilation[0] + 1


def pack_weight(w: np.ndarray, g: Geometry, rows: int) -> np.ndarray:
    """[rows, groups, kw, C, 4] int8: the weight byte matching each packed input byte.

    One row per pack (or per input row): byte ``k`` of group ``grp`` is kernel row
    ``4 grp + k``.  Two rows per pack: byte ``k`` is input row ``2 pr + k`` and output row
    ``2 pr + p`` reads it through kernel row ``r`` where ``k = p + r * dilation``.
    """
    kh, kw, c = w.shape
    if rows in (1, PER_INPUT_ROW):
        groups = -(-kh // TAPS_PER_LANE)
        out = np.zeros((groups * TAPS_PER_LANE, kw, c), np.int8)
        out[:kh] = w
        out = out.reshape(1, groups, TAPS_PER_LANE, kw, c)
    else:
        out = np.zeros((rows, 1, TAPS_PER_LANE, kw, c), np.int8)
        for p in range(rows):
            for r in range(kh):
                out[p, 0, p + r * g.dilation[0]] = w[r]
    return np.ascontiguousarray(out.transpose(0, 1, 3, 4, 2))


def try_legalize(bb: relax.BlockBuilder, call: relax.Call, g: Geometry) -> relax.Expr | None:
    """The packed legalization, or None when it does not apply."""
    if not (g.depthwise and g.data_layout == "NHWC" and g.o == g.c):
        return None
    selected = select_variant(g.c)
    if selected is None:
        return None
    variant, channels = selected
    w = _folded_weight(call, g)
    if w is None:
        return None
    rows = rows_per_pack(g)
    signed = str(call.args[0].ty.dtype) == "int8"
    zx = int(call.attrs["input_zero_point"]) + (128 if signed else 0)
    bias = call.args[2] if len(call.args) > 2 else None
    bias_np = None if bias is None else constant_value(bias)
    offset = -zx * w.astype(np.int64).sum(axis=(0, 1))
    if bias_np is not None:
        offset = offset + bias_np.astype(np.int64)
    parts = OffsetParts(
        zx=zx,
        zw=np.zeros(1, np.int32),
        offset=_compact(_wrap_int32(offset)),
        runtime_bias=bias is not None and bias_np is None,
        needs_kernel_sum=False,
        needs_window_sum=False,
    )
    return bb.call_te(
        lambda x, wq, **kw: _packed_te(
            x, wq, g=g, parts=parts, variant=variant, signed=signed, rows=rows, **kw
        ),
        call.args[0],
        relax.const(pack_weight(np.pad(w, [(0, 0), (0, 0), (0, channels - g.c)]), g, rows)),
        **parts.te_args(call),
        primfunc_name_hint="qnn_depthwise_conv2d",
    )


def _pack_taps(
    x: te.Tensor, g: Geometry, zx: int, signed: bool, rows: int, groups: int, channels: int
):
    """taps[n, pr, grp, wp, c]: four input rows of column ``wp`` in one uint32, as uint8.
    ``channels`` may exceed the input's: those words are 0 (their weights are zero too).

    The bytes are packed as stored (int8 bits) and int8 is moved to uint8 with one XOR of the
    word (``x + 128`` is ``x ^ 0x80`` on a byte); padding is the zero point's stored bits.
    """
    (sh, _), (dh, _) = g.strides, g.dilation
    pt, pl, _, _ = g.padding
    width = (g.ow - 1) * g.strides[1] + (g.kw - 1) * g.dilation[1] + 1
    pad = tirx.const((zx - 128 if signed else zx) & 255, "uint32")
    span = (g.kh - 1) * dh + rows

    def word_of(n, first_row, wp, c, byte_rows):
        """The word of channel ``c`` at column ``wp`` whose byte ``k`` is padded input row
        ``first_row + byte_rows[k]`` (None: a byte no tap reads, 0)."""
        iw = wp - pl
        col_inside = tirx.all(iw >= 0, iw < g.w)
        word = tirx.const(0, "uint32")
        for k, (offset, used) in enumerate(byte_rows):
            if used is False:
                continue
            ih = first_row + offset - pt
            inside = tirx.all(col_inside, ih >= 0, ih < g.h)
            v = x(n, ih, iw, c).astype("uint8").astype("uint32")
            byte = tirx.if_then_else(inside, v, pad)
            if used is not True:
                byte = tirx.if_then_else(used, byte, tirx.const(0, "uint32"))
            word = word | (byte << tirx.const(8 * k, "uint32"))
        if signed:
            word = word ^ tirx.const(0x80808080, "uint32")
        if channels == g.c:
            return word
        return tirx.if_then_else(c < g.c, word, tirx.const(0, "uint32"))

    def quad(n, pr, grp, wp, c):
        if rows == 1:
            byte_rows = [
                ((grp * TAPS_PER_LANE + k) * dh, grp * TAPS_PER_LANE + k < g.kh)
                for k in range(TAPS_PER_LANE)
            ]
            return word_of(n, pr * sh, wp, c, byte_rows)
        return word_of(n, pr * rows, wp, c, [(k, k < span) for k in range(TAPS_PER_LANE)])

    shape = (g.n, g.oh // rows, groups, width, channels)
    return te.compute(shape, quad, name="pack_taps")


def _pack_input_rows(x: te.Tensor, g: Geometry, zx: int, signed: bool, channels: int):
    """taps[n, row, wp, c]: rows ``row + k * dilation`` (k < 4) of the padded input in one
    uint32, each input row packed once.

    The input is first padded into a uint8 copy (int8 moved by ``x ^ 0x80``) so that packing
    has no bounds tests: its only test is the channel padding, which the schedule splits off.
    Bytes past the kernel's last row read padding; their weights are zero.
    """
    dh = g.dilation[0]
    pt, pl, _, _ = g.padding
    rows = packed_input_rows(g)
    width = (g.ow - 1) * g.strides[1] + (g.kw - 1) * g.dilation[1] + 1
    pad = tirx.const(zx, "uint8")  # the zero point, already moved to uint8

    def padded(n, r, wp, c):
        ih, iw = r - pt, wp - pl
        v = x(n, ih, iw, c).astype("uint8")
        if signed:
            v = v ^ tirx.const(0x80, "uint8")
        return tirx.if_then_else(tirx.all(ih >= 0, ih < g.h, iw >= 0, iw < g.w), v, pad)

    xp = te.compute((g.n, rows + 3 * dh, width, g.c), padded, name="pad_rows")

    def word(n, row, wp, c):
        w = tirx.const(0, "uint32")
        for k in range(TAPS_PER_LANE):
            byte = xp(n, row + k * dh, wp, c).astype("uint32")
            w = w | (byte << tirx.const(8 * k, "uint32"))
        if channels == g.c:
            return w
        return tirx.if_then_else(c < g.c, w, tirx.const(0, "uint32"))

    return te.compute((g.n, rows, width, channels), word, name="pack_taps")


def _packed_te(
    x,
    wq,
    offset,
    zw,
    bias,
    g: Geometry,
    parts: OffsetParts,
    variant: Variant,
    signed: bool,
    rows: int,
):
    groups, channels = int(wq.shape[1]), int(wq.shape[3])
    if rows == PER_INPUT_ROW:
        taps = _pack_input_rows(x, g, parts.zx, signed, channels)
    else:
        taps = _pack_taps(x, g, parts.zx, signed, rows, groups, channels)
    sw, dw = g.strides[1], g.dilation[1]
    rg = te.reduce_axis((0, groups), name="rg")
    rw = te.reduce_axis((0, g.kw), name="rw")
    rk = te.reduce_axis((0, TAPS_PER_LANE), name="rk")

    def dot(n, oh, ow, c):
        wp = ow * sw + rw * dw
        if rows == PER_INPUT_ROW:
            word, p = taps(n, oh * g.strides[0] + rg * TAPS_PER_LANE * g.dilation[0], wp, c), 0
        else:
            pr, p = (oh, 0) if rows == 1 else (oh // rows, oh % rows)
            word = taps(n, pr, rg, wp, c)
        weight = wq(p, rg, rw, c, rk).astype("int32")
        return te.sum(tap_byte(word, rk) * weight, axis=[rg, rw, rk])

    attrs = {ANNOTATION: "depthwise_conv2d", DOT_ANNOTATION: f"{variant.name}_r{rows}"}
    acc = te.compute((g.n, g.oh, g.ow, channels), dot, name="dot", attrs=attrs)
    if not parts.any_terms:
        if channels == g.c:
            return acc
        return te.compute(acc.shape[:3] + [g.c], lambda *i: acc(*i), name="unpad_channels")

    # The folded constant cannot start the accumulator instead: TVM 0.27's create_prim_func
    # drops ``te.sum(..., init=...)`` (the block's init is 0), so it is added here.
    def accumulate(n, oh, ow, c):
        return parts.apply(acc(n, oh, ow, c), c, offset, zw, bias, None, None)

    return te.compute((g.n, g.oh, g.ow, g.c), accumulate, name="accumulate")


def tap_byte(word: tirx.PrimExpr, k: tirx.PrimExpr) -> tirx.PrimExpr:
    """Byte ``k`` of a packed uint32 as int32 (the schedule's tensor intrinsic matches this)."""
    shift = (k * 8).astype("uint32")
    return ((word >> shift) & tirx.const(255, "uint32")).astype("int32")

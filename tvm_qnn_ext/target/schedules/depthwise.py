"""Depthwise conv2d (``groups == channels``): SIMD across channels, rows across threads.

Each output pixel is ``kh * kw`` multiply-adds per channel with no reduction over channels, so
the channel axis (innermost in NHWC) becomes SIMD lanes.  Two forms:

* **packed taps** (op/packed_depthwise.py, targets with ``vpdpbusd``): per output row (or pair of
  rows, or once per input row for tall kernels) the input is packed so that each int32 lane
  holds four kernel rows of its channel; one ``vpdpbusd`` per kernel column then adds four taps
  of 16 channels (tensorized with target/depthwise_intrin.py).  A block of output columns keeps
  its accumulators in registers and the fused epilogue (requantize, clip) runs on it before it
  is stored; with padded channels the epilogue runs per column block over the real channels.
* **portable** (every other target, runtime weights, channel multipliers): per (output row,
  output column block, channel block) the accumulator lives in registers, the zero-point padding
  is computed per output row into a small buffer, widening multiplies per tap.

Output rows are split across TVM's thread pool.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.error import InternalError
from tvm.s_tir.schedule import SBlockRV, ScheduleError

from ...op.packed_depthwise import PER_INPUT_ROW
from ...op.packed_dot import DOT_ANNOTATION
from .. import depthwise_intrin
from ..schedule import RuleContext, schedule_rule
from .dot_tiling import PARALLEL_MIN_MACS, vectorize_channels

# int32 lanes per channel block: one 512-bit register (LLVM splits it on narrower targets).
CHANNEL_BLOCK = 16
# output columns computed together (measured on MobileNetV2's layers: 4 beats 1, 2 and 8)
COLUMN_BLOCK = 4
PACKED_COLUMN_BLOCK = 4
# int32 lanes per epilogue vector in the packed form: its int64 products then fill one zmm
# (interleaved A/B over MobileNetV2's depthwise shapes on this Zen 4: 2-4% faster than 16 lanes;
# 4 lanes 1.4x slower)
EPILOGUE_LANES = 8


class Unschedulable(Exception):
    """The kernel does not have the shape this rule expects; it is left as it was."""


@schedule_rule("depthwise_conv2d")
def depthwise_conv2d(sch: s_tir.Schedule, block: SBlockRV, ctx: RuleContext) -> str:
    # Try on a copy first: a failed primitive must not leave the kernel half-scheduled.
    try:
        _schedule(sch.copy(), block)
    except (Unschedulable, ScheduleError, InternalError) as e:  # tensorize raises InternalError
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return f"left unscheduled: {reason[:160]}"
    return _schedule(sch, block)


def _schedule(sch: s_tir.Schedule, dot: SBlockRV) -> str:
    if DOT_ANNOTATION in sch.get(dot).annotations:
        return _packed(sch, dot)
    spatial, reduce = _iter_kinds(sch, dot)
    loops = sch.get_loops(dot)
    if len(spatial) != 4 or len(reduce) != 2 or len(loops) != 6:
        raise Unschedulable(f"expected 4 spatial and 2 reduction loops, got {len(loops)} loops")
    channel = _channel_axis(sch, dot, spatial)
    if channel not in (1, 3):
        raise Unschedulable(f"channel axis {channel} is neither NCHW's 1 nor NHWC's 3")
    pads = [p for p in sch.get_producers(dot) if sch.get(p).name_hint.startswith("pad")]
    epilogue, helpers = _inline_epilogue(sch, dot)
    if channel == 3:
        return _nhwc(sch, dot, epilogue, loops, pads, helpers)
    for pad in pads:
        sch.compute_inline(pad)
    return _nchw(sch, dot, epilogue, loops, helpers)


def _nhwc(
    sch: s_tir.Schedule, dot: SBlockRV, epilogue: SBlockRV | None, loops, pads, helpers: bool
) -> str:
    n, oh, ow, c, rh, rw = loops
    channels, width = _extent(sch, c), _extent(sch, ow)
    lanes = _lanes(channels)
    # a few output columns per step share each weight vector and overlap their input loads
    cols = next(t for t in (COLUMN_BLOCK, 2, 1) if width % t == 0)
    rows = sch.fuse(n, oh)
    owo, owi = sch.split(ow, [None, cols])
    co, ci = sch.split(c, [None, lanes])
    sch.reorder(rows, owo, co, rh, rw, owi, ci)
    sch.parallel(rows)
    for pad in pads:
        if helpers:  # the window sum reads the padded input too
            sch.compute_inline(pad)
            continue
        # the input rows one output row needs, padded, in a small buffer: no bounds checks
        # in the multiply-add loop
        sch.compute_at(pad, rows)
        pad_c = sch.get_loops(pad)[-1]
        vector = next((w for w in (64, 32, 16, 8) if _extent(sch, pad_c) % w == 0), None)
        if vector is not None:
            sch.vectorize(sch.split(pad_c, [None, vector])[1])
    if epilogue is not None and not helpers:
        sch.reverse_compute_at(epilogue, co)
        sch.vectorize(sch.get_loops(epilogue)[-1])
    elif epilogue is not None:
        # a window sum also feeds the epilogue and cannot move into this loop nest with it:
        # the epilogue keeps its own loops over the int32 accumulators
        e_n, e_h, _, e_c = sch.get_loops(epilogue)
        sch.parallel(sch.fuse(e_n, e_h))
        sch.vectorize(sch.split(e_c, [None, lanes])[1])
    sch.vectorize(ci)  # before decompose_reduction, which leaves a block these checks reject
    init = sch.decompose_reduction(dot, rh)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.unroll(rw)
    sch.unroll(owi)
    return (
        f"NHWC, {channels} channels in blocks of {lanes} x {cols} columns, padded rows "
        "per output row, rows in parallel"
    )


def _packed(sch: s_tir.Schedule, dot: SBlockRV) -> str:
    """The ``vpdpbusd`` form of op/packed_depthwise.py: taps packed per output row (or once per
    input row, before the rows), then one instruction per (kernel column, group of four kernel
    rows) and block of channels."""
    loops = sch.get_loops(dot)
    if len(loops) != 7:
        raise Unschedulable(f"expected 7 loops in the packed depthwise kernel, got {len(loops)}")
    n, oh, ow, c, rg, rw, rk = loops
    # "<variant>_x<lanes>_r<output rows per packed row>"
    variant, per_pack = str(sch.get(dot).annotations[DOT_ANNOTATION]).rsplit("_", 1)
    lanes, per_pack = int(variant.rsplit("x", 1)[1]), int(per_pack[1:])
    width = _extent(sch, ow)
    cols = _packed_columns(width)
    (pack,) = [p for p in sch.get_producers(dot) if sch.get(p).name_hint == "pack_taps"]
    epilogue = _packed_epilogue(sch, dot)
    channels, real_channels = _extent(sch, c), _extent(sch, sch.get_loops(epilogue[-1])[-1])
    padded = channels != real_channels
    # as dot_tiling's kernels, small ones stay on the calling thread: keyword spotting's 49-row
    # 9x1 layers on 120 channels (75k padded taps) took longer on two threads than on one
    # (pacman_v3 at 2 threads: 0.11 -> 0.09 ms); MobileNetV2's smallest has 564k
    taps = _extent(sch, rg) * _extent(sch, rw) * _extent(sch, rk)
    threaded = _extent(sch, n) * _extent(sch, oh) * width * channels * taps >= PARALLEL_MIN_MACS
    oho, ohi = sch.split(oh, [None, max(per_pack, 1)])
    rows = sch.fuse(n, oho)
    co, ci = sch.split(c, [None, lanes])
    owo, owi = sch.split(ow, [None, cols])
    if padded:
        # the epilogue runs over the real channels of a column block, in whole vectors plus
        # a remainder, after the dot products of all (padded) channel blocks
        sch.reorder(rows, ohi, owo, co, rg, rw, owi, ci, rk)
    else:
        sch.reorder(rows, ohi, co, owo, rg, rw, owi, ci, rk)
    if threaded:
        sch.parallel(rows)
    if per_pack == PER_INPUT_ROW:
        # every output row reads words of several input rows: pad and pack them all first, on
        # one thread (two more thread-pool launches cost more than this little work: KWS at
        # 2 threads 0.099 -> 0.128 ms with them)
        (pad,) = sch.get_producers(pack)
        pad_c = sch.get_loops(pad)[-1]
        vector = next(w for w in (64, 32, 16, 8, 4, 2, 1) if _extent(sch, pad_c) % w == 0)
        sch.vectorize(sch.split(pad_c, [None, vector])[1])
    else:
        sch.compute_at(pack, rows)
    names = [sch.get(b).name_hint for b in epilogue]
    for block in epilogue:
        sch.reverse_compute_at(block, owo)
        if not padded:
            e_c = sch.get_loops(block)[-1]
            if lanes > EPILOGUE_LANES:
                e_c = sch.split(e_c, [None, EPILOGUE_LANES])[1]
            sch.vectorize(e_c)
    init = sch.decompose_reduction(dot, rg)
    sch.vectorize(sch.get_loops(init)[-1])
    index_dtype = str(sch.get(ci).loop_var.ty)
    sch.tensorize(ci, depthwise_intrin.register(variant, index_dtype))
    sch.unroll(rw)
    sch.unroll(owi)
    _vectorize_padded(sch, pack, lanes, real_channels)
    if padded:
        for name in names:  # last: the remainder's loop partition renews the block handles
            vectorize_channels(sch, sch.get_sblock(name), lanes)
    packing = "input row" if per_pack == PER_INPUT_ROW else f"{per_pack} output row(s)"
    padding = f", channels padded to {channels}" if padded else ""
    threads = "rows in parallel" if threaded else "one thread"
    return (
        f"NHWC packed taps, {variant.replace('_x', ' x')} lanes x {cols} columns{padding}, taps "
        f"packed per {packing}, {threads}"
    )


def _vectorize_padded(sch: s_tir.Schedule, block: SBlockRV, lanes: int, real: int) -> None:
    """Vectorize a block's channel loop: ``lanes`` steps over the ``real`` channels' whole
    vectors, then one step each over the remaining real channels and over the padding (both
    under ``lanes``, a multiple of PAD_GRANULE), so that the block's ``c < real`` test is
    decided per step."""
    loop = sch.get_loops(block)[-1]
    extent = _extent(sch, loop)
    body = real // lanes * lanes
    parts = [n for n in (body, real - body, extent - real) if n]
    loops = sch.loop_partition(loop, parts[:-1] + [None]) if len(parts) > 1 else [loop]
    for i, part in enumerate(loops):
        sch.vectorize(sch.split(part, [None, lanes])[1] if i == 0 and body else part)


def _packed_columns(width: int) -> int:
    """Output columns per register block: 4, else the largest divisor up to 8 (14 -> 7, 7 -> 7:
    measured on MobileNetV2's 14x14 and 7x7 layers, 7 columns beat 2 and 1 by 5-12%)."""
    if width % PACKED_COLUMN_BLOCK == 0:
        return PACKED_COLUMN_BLOCK
    return next(t for t in range(8, 0, -1) if width % t == 0)


def _nchw(
    sch: s_tir.Schedule, dot: SBlockRV, epilogue: SBlockRV | None, loops, helpers: bool
) -> str:
    n, c, oh, ow, rh, rw = loops
    planes = sch.fuse(n, c)
    sch.reorder(planes, oh, rh, rw, ow)
    sch.parallel(planes)
    if epilogue is not None and not helpers:
        sch.reverse_compute_at(epilogue, oh)
    elif epilogue is not None:
        e_n, e_c, _, _ = sch.get_loops(epilogue)
        sch.parallel(sch.fuse(e_n, e_c))
    sch.decompose_reduction(dot, rh)
    return "NCHW, channel planes in parallel"


def _lanes(channels: int) -> int:
    for lanes in (CHANNEL_BLOCK, 8, 4):
        if channels % lanes == 0:
            return lanes
    return channels if channels < CHANNEL_BLOCK else 1


def _extent(sch: s_tir.Schedule, loop) -> int:
    extent = sch.get(loop).extent
    if not isinstance(extent, tirx.IntImm):
        raise Unschedulable("dynamic loop extent")
    return int(extent)


def _iter_kinds(sch: s_tir.Schedule, block: SBlockRV) -> tuple[list, list]:
    ivs = sch.get(block).iter_vars
    spatial = [iv.var for iv in ivs if iv.iter_type == tirx.IterVar.DataPar]
    reduce = [iv.var for iv in ivs if iv.iter_type == tirx.IterVar.CommReduce]
    return spatial, reduce


def _channel_axis(sch: s_tir.Schedule, dot: SBlockRV, spatial: list) -> int:
    """Which spatial axis indexes the weight: the channel (the weight has no pixel axes)."""
    used = []
    for region in sch.get(dot).reads[1:]:
        for r in region.region:
            used.extend(tirx.analysis.undefined_vars(r.min))
    hits = [i for i, v in enumerate(spatial) if any(u.same_as(v) for u in used)]
    if len(hits) != 1:
        raise Unschedulable(f"cannot tell the channel axis (weight indexed by axes {hits})")
    return hits[0]


def _packed_epilogue(sch: s_tir.Schedule, dot: SBlockRV) -> list[SBlockRV]:
    """The elementwise blocks after a packed ``dot``, to compute per register block.

    ``accumulate`` (the folded constant) stays a block of its own: inlined into a requantize,
    LLVM adds it after widening to int64 (two zmm adds instead of one); measured 3% faster
    over MobileNetV2's depthwise layers.  The rest of the chain is inlined into its last block.
    """
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    names = [sch.get(b).name_hint for b in blocks]
    chain = blocks[names.index(sch.get(dot).name_hint) + 1 :]
    first = sch.get(chain[0]).name_hint if chain else None
    kept = chain[:1] if len(chain) > 1 and first == "accumulate" else []
    rest = chain[len(kept) :]
    for b in rest[:-1]:
        sch.compute_inline(b)
    return kept + rest[-1:]


def _inline_epilogue(sch: s_tir.Schedule, dot: SBlockRV) -> tuple[SBlockRV | None, bool]:
    """Inline the elementwise chain after ``dot`` into its last block (returned), and say
    whether zero-point helper reductions (window or kernel sums) also feed it."""
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    names = [sch.get(b).name_hint for b in blocks]
    after = blocks[names.index(sch.get(dot).name_hint) + 1 :]
    chain = [b for b in after if not _iter_kinds(sch, b)[1]]
    for b in chain[:-1]:
        sch.compute_inline(b)
    return (chain[-1] if chain else None), len(chain) < len(after)

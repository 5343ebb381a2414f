"""Register-tiled, tensorized schedule of an int8 dot-product block, shared by conv2d and dense.

The block's loops must be ``[spatial..., channel, reduction...]`` where ``channel`` (padded output
channels) is a multiple of the instruction's ``lanes`` and the last reduction loop (padded input
channels) a multiple of its ``reduction``; the weights are packed so one ``lanes x reduction``
tile is contiguous.  The output tile is ``rows`` positions of the last spatial axis (of the
height when the width is 1) by ``blocks * lanes`` channels, kept in registers while the whole
reduction runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir
from tvm.s_tir.schedule import LoopRV, SBlockRV

from ..dot_product import DotInstruction, register

MAX_ROWS = 16
# Below these sizes a kernel runs on the calling thread: waking TVM's pool costs more than
# the work (tiny models ran slower on 2 threads than on 1).
PARALLEL_MIN_MACS = 1 << 17
PARALLEL_MIN_ELEMENTS = 1 << 14


@dataclass(frozen=True)
class Tile:
    rows: int  # positions of the last spatial axis per tile
    blocks: int  # lanes-wide channel blocks per tile

    def __str__(self) -> str:
        return f"{self.rows}x{self.blocks}"


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def choose_tile(
    width: int, channel_blocks: int, ins: DotInstruction, channels: int | None = None
) -> Tile:
    """The largest register tile (rows x blocks accumulators) within the instruction's budget.

    Both factors divide their extents so no tile needs a predicate (tensorize needs full tiles,
    and the epilogue's region must be a rectangle).  With ``channels`` (the real ones, fewer
    than the padded blocks hold) a tile spans either all blocks or a multiple of them that
    divides ``channels`` where one can: otherwise the epilogue of the last channel tile, over
    fewer channels than the others, gets a predicate and is not vectorized.
    """
    real = channels if channels is not None else channel_blocks * ins.lanes
    fits = [
        Tile(r, b)
        for r in _divisors(width)
        for b in _divisors(channel_blocks)
        if r <= MAX_ROWS and r * b <= ins.max_accumulators
    ]
    # (when no tile spans the channels evenly, e.g. 1000 classes, the predicate stays)
    candidates = [
        t for t in fits if t.blocks == channel_blocks or real % (t.blocks * ins.lanes) == 0
    ] or fits
    # most accumulators, then the squarest tile (fewest loads per instruction)
    return max(candidates, key=lambda t: (t.rows * t.blocks, min(t.rows, t.blocks), t.blocks))


def _extent(sch: s_tir.Schedule, loop: LoopRV) -> int:
    return int(sch.get(loop).extent)


def tile_dot(
    sch: s_tir.Schedule,
    block: SBlockRV,
    ins: DotInstruction,
    n_spatial: int,
    epilogue: SBlockRV | None = None,
) -> Tile:
    """Tile, tensorize and parallelize ``block``.

    ``epilogue`` (the block consuming the accumulators) is computed per tile, inside the fused
    parallel tile loop, so no full int32 intermediate is kept.
    """
    loops = sch.get_loops(block)
    work = loop_volume(sch, loops)
    spatial, channel, reduction = loops[:n_spatial], loops[n_spatial], loops[n_spatial + 1 :]
    if len(spatial) >= 2 and _extent(sch, spatial[-1]) == 1:
        # one position per row (keyword spotting's H x 1 maps): tile along the height instead,
        # so that a tile's rows share weight loads and per-channel epilogue constants
        # (alexa, on_off_v3, pacman_v3 1.06x)
        spatial = spatial[:-2] + [sch.fuse(spatial[-2], spatial[-1])]
    real = _extent(sch, sch.get_loops(epilogue)[-1]) if epilogue is not None else None
    tile = choose_tile(_extent(sch, spatial[-1]), _extent(sch, channel) // ins.lanes, ins, real)
    s_out, s_in = sch.split(spatial[-1], [None, tile.rows])
    c_out, c_blk, c_lane = sch.split(channel, [None, tile.blocks, ins.lanes])
    k_out, k_in = sch.split(reduction[-1], [None, ins.reduction])
    sch.reorder(*spatial[:-1], s_out, c_out, *reduction[:-1], k_out, s_in, c_blk, c_lane, k_in)
    tile_loop = sch.fuse(*spatial[:-1], s_out, c_out)
    if epilogue is not None:
        sch.reverse_compute_at(epilogue, tile_loop)
        # Unrolled over the tile's rows, the epilogue reads the accumulator tile at constant
        # offsets, so LLVM keeps it in registers instead of storing and reloading it (and
        # spilling accumulators to make room): image_example1's 3x3 stem 19-23 -> 14-15 us.
        for loop in sch.get_loops(epilogue)[1:-1]:
            sch.unroll(loop)
        vectorize_channels(sch, epilogue, ins.lanes)
    if work >= PARALLEL_MIN_MACS:
        sch.parallel(tile_loop)
    init = sch.decompose_reduction(block, reduction[0] if len(reduction) > 1 else k_out)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(c_lane, register(ins))
    sch.unroll(s_in)
    sch.unroll(c_blk)
    return tile


def vectorize_channels(sch: s_tir.Schedule, block: SBlockRV, lanes: int) -> None:
    """Vectorize the innermost (channel) loop of an epilogue block: ``lanes``-wide steps, and
    when ``lanes`` does not divide it (e.g. 120 channels) a body of whole steps plus a
    vectorized remainder."""
    loop = sch.get_loops(block)[-1]
    extent = _extent(sch, loop)
    if extent <= lanes:
        sch.vectorize(loop)
        return
    body = extent // lanes * lanes
    if body != extent:
        loop, rest = sch.loop_partition(loop, [body, None])
        sch.vectorize(rest)
    sch.vectorize(sch.split(loop, [None, lanes])[1])


def is_reduction(sch: s_tir.Schedule, block: SBlockRV) -> bool:
    return any(int(iv.iter_type) != 0 for iv in sch.get(block).iter_vars)


def schedule_dot_kernel(
    sch: s_tir.Schedule, anchor: SBlockRV, ins: DotInstruction, n_spatial: int
) -> str:
    """Schedule a fused kernel ``[pad] -> dot -> [sums] -> accumulate -> epilogue...``.

    The elementwise epilogue (accumulate, requantize, activation) is inlined into one block
    computed per register tile; the input pad runs as its own parallel loop before it.  With
    window/row sums (a weight zero point that the 128-shift did not cancel) the epilogue also
    reads them, and TVM cannot place a block under a loop that its root-level producers are
    not under, so then the epilogue runs after the whole dot product instead (as it does when
    it writes a differently shaped tensor, e.g. a fused PAD).
    """
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    names = [sch.get(b).name_hint for b in blocks]
    at = names.index(sch.get(anchor).name_hint)
    sums = [b for b in blocks[at + 1 :] if is_reduction(sch, b)]
    epilogue = [b for b in blocks[at + 1 :] if not is_reduction(sch, b)]
    for b in epilogue[:-1]:
        sch.compute_inline(b)
    for b in blocks[:at] + sums + (epilogue[-1:] if sums else []):
        _parallel(sch, b)
    fused = epilogue[-1] if epilogue and not sums else None
    if fused is not None and not _same_domain(sch, fused, anchor):
        _parallel(sch, fused)
        fused = None
    tile = tile_dot(sch, anchor, ins, n_spatial, fused)
    where = "per tile" if fused is not None else "after the dot product"
    return f"{ins.name} tile {tile} ({tile.rows * tile.blocks} accumulators), epilogue {where}"


def _same_domain(sch: s_tir.Schedule, epilogue: SBlockRV, anchor: SBlockRV) -> bool:
    """Whether the epilogue iterates over the dot's outputs (minus padded channels and
    columns).

    A fused PAD, for one, writes a larger tensor: computed per tile, its border would be
    skipped, so such an epilogue must run on its own.
    """
    dot = [int(iv.dom.extent) for iv in sch.get(anchor).iter_vars if int(iv.iter_type) == 0]
    out = [int(iv.dom.extent) for iv in sch.get(epilogue).iter_vars]
    return len(out) == len(dot) and all(o <= d for o, d in zip(out, dot, strict=True))


def _parallel(sch: s_tir.Schedule, block: SBlockRV) -> None:
    """Outer loops in parallel; elementwise blocks also vectorize the innermost loop."""
    loops = sch.get_loops(block)
    if len(loops) < 2:
        return
    small = loop_volume(sch, loops) < PARALLEL_MIN_ELEMENTS
    if not is_reduction(sch, block):
        if len(loops) > 2 and _extent(sch, loops[-1]) < 16:
            # a few channels (an RGB input padded to 4): vectorized, the padded channel's
            # test is per lane and LLVM builds each vector byte by byte; unrolled, every
            # channel's test is a constant, and the width stays a loop (no division by it).
            # visual_wake_words' 96x96x3 stem 26 -> 10 us, MobileNetV2's 243 -> 130 us
            if not small:
                sch.parallel(sch.fuse(*loops[:-2]))
            sch.unroll(loops[-1])
            return
        if not small:
            sch.parallel(sch.fuse(*loops[:-1]))
        vectorize_channels(sch, block, 16)  # last: it may split the block in two
    else:
        n_spatial = sum(int(iv.iter_type) == 0 for iv in sch.get(block).iter_vars)
        if n_spatial and not small:
            sch.parallel(sch.fuse(*loops[:n_spatial]))


def loop_volume(sch: s_tir.Schedule, loops: list[LoopRV]) -> int:
    volume = 1
    for loop in loops:
        volume *= _extent(sch, loop)
    return volume

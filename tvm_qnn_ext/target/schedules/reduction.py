"""Kernels without an annotated anchor that reduce over outer axes (average pools, spatial
means, max pools): the channel axis moves inside the reduction loops and is vectorized.

Unscheduled, a pool's sum runs one channel at a time over its window, a scalar loop striding
through NHWC memory; with the reduction loops outside the channel loop, each step is one
contiguous vector of channels.  The per-output blocks after the sums (the divisions and the
requantize) vectorize over channels too.  Reductions over the innermost axis (softmax) have no
such channel loop and are left alone.
"""

from __future__ import annotations

from tvm import s_tir
from tvm.s_tir.schedule import SBlockRV, ScheduleError

from .dot_tiling import PARALLEL_MIN_ELEMENTS, is_reduction, loop_volume, vectorize_channels

MAX_VECTOR = 64


def schedule_reduction(sch: s_tir.Schedule) -> str | None:
    """Schedule every top-level block of a kernel with outer-axis reductions; a summary, or
    None when the kernel is not of that form (nothing is changed then)."""
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    reductions = [b for b in blocks if is_reduction(sch, b)]
    if not reductions or not all(_reads_one_tensor(sch, b) for b in reductions):
        return None  # e.g. a portable (unannotated) conv: its dot product reads two
    if _has_bool_buffer(sch):
        return None  # TVM's LLVM codegen mixes i1 and i8 lanes in vectorized bool logic
    trial = sch.copy()
    try:
        done = _schedule_blocks(trial, [trial.get_sblock(sch.get(b).name_hint) for b in blocks])
    except (ScheduleError, TypeError, ValueError):  # TypeError: a symbolic extent
        return None
    if done is None:
        return None
    return _schedule_blocks(sch, blocks)


def _schedule_blocks(sch: s_tir.Schedule, blocks: list[SBlockRV]) -> str | None:
    """A lone ``sum -> per-output`` pair (a pool) runs per output position, so the sums
    never leave registers; anything else block by block.  Vectorizing may split a block in
    two (a 16-lane body and a remainder), so it comes last, each block fetched by name."""
    names = [sch.get(b).name_hint for b in blocks]
    pair = len(blocks) == 2 and is_reduction(sch, blocks[0]) and not is_reduction(sch, blocks[1])
    if pair:
        spatial = [int(iv.dom.extent) for iv in sch.get(blocks[0]).iter_vars if iv.iter_type == 0]
        pair = [int(iv.dom.extent) for iv in sch.get(blocks[1]).iter_vars] == spatial
    summaries, vectorize = [], []
    for i, block in enumerate(blocks):
        if pair and i == 1:
            sch.reverse_compute_at(block, sch.get_loops(blocks[0])[0])
            summaries.append(f"{names[1]} per position")
            vectorize.append(names[1])
            continue
        done = _schedule_block(sch, block)
        if done is None:
            return None
        summary, to_vectorize = done
        summaries.append(summary)
        vectorize += to_vectorize
    for name in vectorize:
        vectorize_channels(sch, sch.get_sblock(name), 16)
    return ", ".join(summaries)


def _reads_one_tensor(sch: s_tir.Schedule, block: SBlockRV) -> bool:
    """A window reduction (sum, max) reads one input besides its own accumulator."""
    stmt = sch.get(block)
    written = {w.source.name for w in stmt.writes}
    return len({r.source.name for r in stmt.reads} - written) == 1


def _has_bool_buffer(sch: s_tir.Schedule) -> bool:
    func = sch.mod["main"]
    buffers = list(func.params) + list(sch.get(sch.get_sblock("root")).alloc_buffers)
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        buffers += [w.source for w in sch.get(block).writes]
    return any(str(b.dtype) == "bool" for b in buffers if hasattr(b, "dtype"))


def _iter_types(sch: s_tir.Schedule, block: SBlockRV) -> list[int]:
    return [int(iv.iter_type) for iv in sch.get(block).iter_vars]


def _schedule_block(sch: s_tir.Schedule, block: SBlockRV) -> tuple[str, list[str]] | None:
    """Loop order, parallelism and unrolling of one block: its summary and the names of the
    blocks left to vectorize, or None when it is not of the supported form."""
    name = sch.get(block).name_hint
    types = _iter_types(sch, block)
    loops = sch.get_loops(block)
    # only the unscheduled TE form: one loop per block iterator, spatial ones first
    if len(loops) != len(types) or sorted(types) != types:
        return None
    n_spatial = types.count(0)
    if n_spatial < 2:
        return None
    spatial, reduction = loops[:n_spatial], loops[n_spatial:]
    channel = spatial[-1]
    channels = int(sch.get(channel).extent)
    if channels < 2:
        return None
    volume = loop_volume(sch, loops)
    outer = sch.fuse(*spatial[:-1]) if n_spatial > 2 else spatial[0]
    if volume >= PARALLEL_MIN_ELEMENTS:
        sch.parallel(outer)
    if not reduction:
        return f"{name}: {channels} channels", [name]
    sch.reorder(*reduction, channel)
    init = sch.decompose_reduction(block, reduction[0])
    # TVM does not vectorize a loop inside a block's reduction loops; unrolled, LLVM's SLP
    # vectorizer packs the contiguous channel updates
    lanes = sch.get_loops(block)[-1]
    if channels <= MAX_VECTOR:
        sch.unroll(lanes)
    else:
        sch.unroll(sch.split(lanes, [None, 16])[1])
    return f"{name}: {channels} channels inside the window", [sch.get(init).name_hint]

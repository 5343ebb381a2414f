"""Kernels without an annotated anchor and without reductions (quantize, requantize, add,
lookup tables, concat...): each block runs as one flat loop, vectorized, in parallel when it
is large.

Unscheduled, such a block is a scalar loop nest whose innermost loop is often the channel
axis of extent 1 to 8, which LLVM does not vectorize.
"""

from __future__ import annotations

from tvm import s_tir
from tvm.s_tir.schedule import SBlockRV, ScheduleError

from .dot_tiling import PARALLEL_MIN_ELEMENTS, loop_volume

VECTOR_WIDTHS = (64, 32, 16)
LANES = 16


def schedule_elementwise(sch: s_tir.Schedule) -> str | None:
    """Schedule a kernel whose top-level blocks are all spatial; a summary, or None when
    nothing applied.  Kernels with a reduction (pools, mean, softmax) are left alone: their
    spatial blocks index by output position (e.g. an average pool's window count), which a
    flattened vector loop would turn into per-lane divisions."""
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    if not all(_is_spatial(sch, b) for b in blocks):
        return None
    done = []
    for block in blocks:
        trial = sch.copy()
        try:
            summary = _flat_vector_loop(trial, _same_block(trial, sch, block))
        except (ScheduleError, TypeError, ValueError):  # TypeError: a symbolic extent
            continue
        _flat_vector_loop(sch, block)
        done.append(summary)
    return ", ".join(done) if done else None


def _same_block(trial: s_tir.Schedule, sch: s_tir.Schedule, block: SBlockRV) -> SBlockRV:
    return trial.get_sblock(sch.get(block).name_hint)


def _is_spatial(sch: s_tir.Schedule, block: SBlockRV) -> bool:
    iters = sch.get(block).iter_vars
    return bool(iters) and all(int(iv.iter_type) == 0 for iv in iters)


def _inner_group(sch: s_tir.Schedule, loops: list) -> int:
    """How many trailing loops to flatten: those holding the last two dimensions above 1.

    TVM's simplifier folds ``(f // c) * c + f % c`` back into ``f`` for one such split, not
    for two nested ones: a [56, 56, 24] add flattened whole got per-lane index arithmetic
    and byte gathers (1.6 ns per element), flattened as 56 x [1344] it is contiguous.
    """
    seen = 0
    for k, loop in enumerate(reversed(loops)):
        if int(sch.get(loop).extent) > 1:
            seen += 1
            if seen > 2:
                return k
    return len(loops)


def _flat_vector_loop(sch: s_tir.Schedule, block: SBlockRV) -> str:
    loops = sch.get_loops(block)
    if not loops:
        return ""
    volume = loop_volume(sch, loops)
    k = _inner_group(sch, loops)
    outer, inner = loops[:-k], loops[-k:]
    total = loop_volume(sch, inner)
    flat = sch.fuse(*inner) if len(inner) > 1 else inner[0]
    rows = ""
    if outer:
        rows = f"{volume // total} rows of "
        rows_loop = sch.fuse(*outer) if len(outer) > 1 else outer[0]
        if volume >= PARALLEL_MIN_ELEMENTS:
            sch.parallel(rows_loop)
    name = sch.get(block).name_hint
    if total <= LANES:
        return f"{name}: {rows}{total} scalar"
    width = next((v for v in VECTOR_WIDTHS if total % v == 0 and total > v), None)
    tail = ""
    if width is None:
        # A 16-lane body and a scalar tail (e.g. 49 x 40 = 1960 = 122 x 16 + 8); the body's
        # bound also settles LiteRT's SIMD-part predicate of ADD, which splits at the same place.
        flat, _ = sch.loop_partition(flat, [total // LANES * LANES, None])
        width, tail = LANES, f" + {total % LANES} scalar"
    steps, lanes = sch.split(flat, [None, width])
    sch.vectorize(lanes)
    if not outer and volume >= PARALLEL_MIN_ELEMENTS:
        sch.parallel(steps)
    return f"{name}: {rows}{total // width}x{width} lanes{tail}"

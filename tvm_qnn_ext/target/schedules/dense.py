"""qnn.dense (packed constant weights): tensorized, epilogue fused per tile."""

from __future__ import annotations

from tvm import s_tir
from tvm.s_tir.schedule import SBlockRV

from ..schedule import RuleContext, schedule_rule
from .conv2d import instruction_of
from .dot_tiling import schedule_dot_kernel


@schedule_rule("dense")
def schedule_dense(sch: s_tir.Schedule, anchor: SBlockRV, ctx: RuleContext) -> str:
    ins = instruction_of(sch, anchor)
    if ins is None:
        return "unpacked weights: left unscheduled"
    n_spatial = len(sch.get_loops(anchor)) - 2
    return schedule_dot_kernel(sch, anchor, ins, n_spatial=n_spatial)

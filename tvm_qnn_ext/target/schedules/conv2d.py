"""qnn.conv2d (NHWC, groups == 1, packed constant weights): tensorized, epilogue fused per tile."""

from __future__ import annotations

from tvm import s_tir
from tvm.s_tir.schedule import SBlockRV

from ..dot_product import BY_NAME
from ..schedule import RuleContext, schedule_rule
from .dot_tiling import schedule_dot_kernel

DOT_ANNOTATION = "qnn.dot"


def instruction_of(sch: s_tir.Schedule, block: SBlockRV):
    """The dot-product instruction the block's weights were packed for (set at legalization)."""
    name = sch.get(block).annotations.get(DOT_ANNOTATION)
    return None if name is None else BY_NAME[str(name)]


@schedule_rule("conv2d")
def schedule_conv2d(sch: s_tir.Schedule, anchor: SBlockRV, ctx: RuleContext) -> str:
    ins = instruction_of(sch, anchor)
    if ins is None:
        return "unpacked weights: left unscheduled"
    return schedule_dot_kernel(sch, anchor, ins, n_spatial=3)

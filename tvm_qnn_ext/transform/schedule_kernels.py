"""Apply the target's kernel schedule rule to every PrimFunc that has an annotated anchor block."""

from __future__ import annotations

import tvm
from tvm import s_tir, tirx

from ..target import (
    schedules,  # noqa: F401  (registers the rules)
    stack_buffers,
)
from ..target.schedule import RuleContext, anchor_blocks, rules
from ..target.schedules.elementwise import schedule_elementwise
from ..target.schedules.reduction import schedule_reduction
from .pipeline import pipeline_stage
from .report import report

STAGE = "schedule"


def schedule_kernels(mod: tvm.IRModule, ctx: RuleContext) -> tvm.IRModule:
    available = rules()
    scheduled: dict[tvm.ir.GlobalVar, tirx.PrimFunc] = {}
    for gv, func in list(mod.functions.items()):
        if not isinstance(func, tirx.PrimFunc) or not _has_root_block(func):
            continue
        sch = s_tir.Schedule(tvm.IRModule({"main": func}))
        anchors = anchor_blocks(sch)
        if not anchors:
            kind, summary = "elementwise", schedule_elementwise(sch)
            if summary is None:
                kind, summary = "reduction", schedule_reduction(sch)
            if summary:
                report(STAGE, f"{gv.name_hint}: {kind}: {summary}")
                scheduled[gv] = sch.mod["main"].with_attr(stack_buffers.ATTR, True)
            continue
        if len(anchors) > 1:
            report(STAGE, f"{gv.name_hint}: {len(anchors)} anchors, left unscheduled")
            continue
        block, name = anchors[0]
        rule = available.get(name)
        if rule is None:
            continue
        summary = rule(sch, block, ctx)
        report(STAGE, f"{gv.name_hint}: {name}: {summary}")
        # small scratch tiles (accumulators) stay on the stack: target/stack_buffers.py
        scheduled[gv] = sch.mod["main"].with_attr(stack_buffers.ATTR, True)
    if not scheduled:
        return mod
    # A new module: the input stays as it was (explain shows before and after).
    out = tvm.IRModule(
        {gv: scheduled.get(gv, f) for gv, f in mod.functions.items()}, attrs=mod.attrs
    )
    return out


def _has_root_block(func: tirx.PrimFunc) -> bool:
    """Hand-built PrimFuncs (e.g. softmax) have no blocks, hence nothing to schedule."""
    body = func.body
    return isinstance(body, s_tir.SBlockRealize) and body.block.name_hint == "root"


@pipeline_stage(STAGE, order=60)
def _schedule(target: tvm.target.Target, options: dict) -> tvm.transform.Pass:
    """Tensorized int8 schedules for the target's dot-product instructions (target/)."""
    ctx = RuleContext(target, options)

    @tvm.transform.module_pass(opt_level=0, name="QnnScheduleKernels")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        return schedule_kernels(mod, ctx)

    return _pass

"""Kernel schedule rules, found by the ``qnn.schedule`` annotation on a PrimFunc's anchor block.

An op's legalization tags its main compute (``te.compute(..., attrs={ANNOTATION: "conv2d"})``);
the tag survives FuseOps/FuseTIR, so the rule sees the whole fused kernel (anchor plus epilogue).
Rules live in their own modules and register with :func:`schedule_rule`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import tvm
from tvm import s_tir
from tvm.s_tir.schedule import SBlockRV

ANNOTATION = "qnn.schedule"


@dataclass(frozen=True)
class RuleContext:
    target: tvm.target.Target
    options: dict


# rule(sch, anchor_block, ctx) schedules the PrimFunc in place; returns a one-line summary.
ScheduleRule = Callable[[s_tir.Schedule, SBlockRV, RuleContext], str]

_RULES: dict[str, ScheduleRule] = {}


def schedule_rule(name: str) -> Callable[[ScheduleRule], ScheduleRule]:
    def deco(fn: ScheduleRule) -> ScheduleRule:
        _RULES[name] = fn
        return fn

    return deco


def rules() -> dict[str, ScheduleRule]:
    return dict(_RULES)


def anchor_blocks(sch: s_tir.Schedule) -> list[tuple[SBlockRV, str]]:
    """(block, rule name) for every annotated top-level block of the schedule's function."""
    found = []
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        annotations = sch.get(block).annotations
        if ANNOTATION in annotations:
            found.append((block, str(annotations[ANNOTATION])))
    return found

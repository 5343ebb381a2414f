"""What each stage of the ``"qnn"`` pipeline did to a module: op counts, changed lines, reports.

``explain(mod, target)`` prints the imported Relax IR, then per stage: the change in op counts
(Relax calls by op, and PrimFuncs), a unified diff of the Relax functions (bounded to
``max_lines``; PrimFuncs are summarised by name), and the stage's rewrite reports.  With
``full=True`` each stage's whole resulting module is printed instead of the diff.
"""

from __future__ import annotations

import difflib
from collections import Counter

import tvm
import tvm_ffi
from tvm import relax, tirx

from .pipeline import StageResult, run_stages

PRIM_FUNCS = "PrimFunc"


def op_counts(mod: tvm.IRModule) -> Counter:
    """Calls per op name in the Relax functions (``call_tir`` by callee kind), plus PrimFuncs."""
    counts: Counter = Counter()

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            counts[expr.op.name] += 1

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
        elif isinstance(func, tirx.PrimFunc):
            counts[PRIM_FUNCS] += 1
    return counts


def relax_text(mod: tvm.IRModule) -> str:
    """The Relax functions only (PrimFuncs are long and summarised elsewhere)."""
    funcs = {gv: f for gv, f in mod.functions.items() if isinstance(f, relax.Function)}
    text = tvm.IRModule(funcs).script(show_meta=False) if funcs else ""
    return "\n".join(ln for ln in text.splitlines() if not ln.startswith("#"))


def _count_changes(before: Counter, after: Counter) -> str:
    keys = sorted(set(before) | set(after))
    changed = [f"{k} {before[k]}->{after[k]}" for k in keys if before[k] != after[k]]
    return ", ".join(changed) if changed else "no change"


def _prim_changes(before: tvm.IRModule, after: tvm.IRModule) -> str:
    old = {gv.name_hint: f for gv, f in before.functions.items() if isinstance(f, tirx.PrimFunc)}
    new = {gv.name_hint: f for gv, f in after.functions.items() if isinstance(f, tirx.PrimFunc)}
    added, removed = sorted(set(new) - set(old)), sorted(set(old) - set(new))
    modified = sorted(
        n for n in set(old) & set(new) if not tvm_ffi.structural_equal(old[n], new[n])
    )
    parts = []
    for label, names in (("added", added), ("removed", removed), ("rewritten", modified)):
        if names:
            shown = ", ".join(names[:6]) + (f", ... ({len(names)})" if len(names) > 6 else "")
            parts.append(f"{label}: {shown}")
    return "; ".join(parts)


def _diff(before: str, after: str, max_lines: int) -> list[str]:
    lines = list(difflib.unified_diff(before.splitlines(), after.splitlines(), n=0, lineterm=""))
    lines = [ln for ln in lines[2:] if not ln.startswith("@@")]  # drop file headers, hunks
    if len(lines) > max_lines:
        lines = lines[:max_lines] + [f"... {len(lines) - max_lines} more changed lines (--full)"]
    return lines


def describe_stage(result: StageResult, full: bool = False, max_lines: int = 40) -> list[str]:
    before, after = result.before, result.after
    head = f"== stage {result.stage.order} {result.stage.name}: {result.stage.doc.splitlines()[0]}"
    out = [head, f"   ops: {_count_changes(op_counts(before), op_counts(after))}"]
    prims = _prim_changes(before, after)
    if prims:
        out.append(f"   PrimFuncs {prims}")
    out += [f"   report: {e.message}" for e in result.reports]
    if full:
        out.append(after.script(show_meta=False))
    else:
        out += ["   " + ln for ln in _diff(relax_text(before), relax_text(after), max_lines)]
    return out


def explain(
    mod: tvm.IRModule,
    target: tvm.target.Target,
    full: bool = False,
    max_lines: int = 40,
    **options,
) -> str:
    """The imported module and what every pipeline stage changed in it, as text."""
    _, results = run_stages(mod, target, trace=True, **options)
    out = ["== imported", relax_text(mod)]
    for r in results:
        out += describe_stage(r, full, max_lines)
    return "\n".join(out)

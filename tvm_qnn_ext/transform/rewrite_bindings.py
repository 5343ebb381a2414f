"""Shared plumbing for the binding-level rewrites (cast-multiply-round, folding).

A rewrite looks at one dataflow block at a time, decides which bindings get a new value, and
:func:`replace_values` rebuilds the function; bindings left without users are then dropped.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tvm
from tvm import relax
from tvm.ir import GenericConst

BlockRewrite = Callable[[relax.DataflowBlock, relax.Expr], dict[relax.Var, relax.Expr]]


def users(block: relax.DataflowBlock, body: relax.Expr) -> dict[relax.Var, int]:
    """How many times each variable is used in ``block`` (and in the function's result)."""
    counts: dict[relax.Var, int] = {}

    def count(expr):
        if isinstance(expr, relax.Var):
            counts[expr] = counts.get(expr, 0) + 1

    for b in block.bindings:
        relax.analysis.post_order_visit(b.value, count)
    relax.analysis.post_order_visit(body, count)
    return counts


def producers(block: relax.DataflowBlock) -> dict[relax.Var, relax.Expr]:
    return {b.var: b.value for b in block.bindings if isinstance(b, relax.VarBinding)}


def constant(expr: relax.Expr) -> np.ndarray | None:
    return expr.value.numpy() if isinstance(expr, GenericConst) else None


def call_name(expr: relax.Expr) -> str | None:
    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
        return expr.op.name
    return None


def replace_values(func: relax.Function, new: dict[relax.Var, relax.Expr]) -> relax.Function:
    """``func`` with the bindings of the vars in ``new`` given new values; dead bindings go.

    A new value may nest calls: their intermediate results become bindings before it.  It may
    also be a function of the BlockBuilder that emits its own bindings and returns the value.
    """
    if not new:
        return func
    bb = relax.BlockBuilder()
    blocks = []
    for block in func.body.blocks:
        dataflow = isinstance(block, relax.DataflowBlock)
        bb._begin_dataflow_block() if dataflow else bb._begin_binding_block()
        for b in block.bindings:
            if isinstance(b, relax.VarBinding) and b.var in new:
                value = new[b.var]
                value = value if isinstance(value, relax.Expr) else value(bb)
                b = relax.VarBinding(b.var, bb.normalize(value))
            bb.emit_normalized(b)
        blocks.append(bb._end_block())
    body = relax.SeqExpr(blocks, func.body.body)
    out = relax.Function(func.params, body, func.ret_ty, func.is_pure, func.attrs)
    return relax.analysis.remove_all_unused(out)


def block_pass(name: str, rewrite: BlockRewrite) -> tvm.transform.Pass:
    """A module pass applying ``rewrite(block, function_result)`` to every dataflow block."""

    @tvm.transform.module_pass(opt_level=0, name=name)
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        mod = mod.clone()  # the caller's module stays as it was
        for gv, func in list(mod.functions.items()):
            if not isinstance(func, relax.Function) or not isinstance(func.body, relax.SeqExpr):
                continue
            new: dict[relax.Var, relax.Expr] = {}
            for block in func.body.blocks:
                if isinstance(block, relax.DataflowBlock):
                    new.update(rewrite(block, func.body.body))
            if new:
                mod[gv] = replace_values(func, new)
        return mod

    return _pass

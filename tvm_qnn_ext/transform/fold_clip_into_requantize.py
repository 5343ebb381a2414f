"""FoldClipIntoRequantize: clip / relu / maximum / minimum after a qnn.requantize become its
``out_min`` / ``out_max``.

``clamp(clamp(v, lo, hi), a, b) == clamp(v, max(lo, a), min(hi, b))`` whenever the two ranges
meet; when they do not (or a bound lies outside the integer dtype, where the clip itself would
wrap its constant) the clip stays and the report says why.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from ..op.registry import make_call
from ..quantization import dtype_range
from .pipeline import pipeline_stage
from .report import report
from .rewrite_bindings import block_pass, call_name, constant, producers, users

STAGE = "fold_clip"


def _clip_bounds(value: relax.Expr) -> tuple[relax.Var, float, float] | None:
    """(input, lo, hi) of a clamp-like call on a var, else None."""
    name = call_name(value)
    inf = float("inf")
    if name == "relax.nn.relu":
        return value.args[0], 0.0, inf
    if name == "relax.clip":
        return value.args[0], float(value.args[1].value), float(value.args[2].value)
    if name in ("relax.maximum", "relax.minimum"):
        args = list(value.args)
        if constant(args[0]) is not None:
            args.reverse()
        c = constant(args[1])
        if c is None or c.size != 1:
            return None
        c = float(c.reshape(()))
        return (args[0], c, inf) if name == "relax.maximum" else (args[0], -inf, c)
    return None


def requantize_bounds(call: relax.Call) -> tuple[int, int]:
    lo, hi = dtype_range(str(call.attrs["out_dtype"]))
    keys = call.attrs.keys()
    if "out_min" in keys:
        lo = max(lo, int(call.attrs["out_min"]))
    if "out_max" in keys:
        hi = min(hi, int(call.attrs["out_max"]))
    return lo, hi


def with_attrs(call: relax.Call, args: list | None = None, **changes) -> relax.Call:
    """``call`` with some attributes (and optionally its arguments) replaced."""
    attrs = {k: call.attrs[k] for k in call.attrs.keys()}
    attrs.update(changes)
    return make_call(call.op.name, list(call.args) if args is None else args, attrs)


def _rewrite(block: relax.DataflowBlock, result: relax.Expr) -> dict[relax.Var, relax.Expr]:
    defs, uses = producers(block), users(block, result)
    new: dict[relax.Var, relax.Expr] = {}
    for b in block.bindings:
        clip = _clip_bounds(b.value)
        if clip is None:
            continue
        x, a, b_hi = clip
        rq = new.get(x, defs.get(x))
        if call_name(rq) != "qnn.requantize" or uses.get(x) != 1:
            continue
        if not isinstance(x, relax.DataflowVar):
            continue
        lo, hi = requantize_bounds(rq)
        dlo, dhi = dtype_range(str(rq.attrs["out_dtype"]))
        finite = [v for v in (a, b_hi) if np.isfinite(v)]
        if any(v != np.round(v) or not dlo <= v <= dhi for v in finite):
            report(STAGE, f"{b.var.name}: clip bounds {finite} are not integers of the dtype; kept")
            continue
        new_lo = lo if a == -np.inf else max(lo, int(a))
        new_hi = hi if b_hi == np.inf else min(hi, int(b_hi))
        if new_lo > new_hi:
            report(STAGE, f"{b.var.name}: clip [{a}, {b_hi}] misses [{lo}, {hi}]; kept")
            continue
        new[b.var] = with_attrs(rq, out_min=new_lo, out_max=new_hi)
        report(
            STAGE,
            f"{b.var.name}: {call_name(b.value).split('.')[-1]} folded into {x.name}'s "
            f"qnn.requantize: [{lo}, {hi}] -> [{new_lo}, {new_hi}]",
        )
    return new


def FoldClipIntoRequantize() -> tvm.transform.Pass:  # noqa: N802  (named like a TVM pass)
    return block_pass("FoldClipIntoRequantize", _rewrite)


@pipeline_stage(STAGE, order=22)
def _stage(target: tvm.target.Target, options: dict) -> tvm.transform.Pass:
    """clip / relu / maximum / minimum after qnn.requantize -> its out_min / out_max."""
    return FoldClipIntoRequantize()

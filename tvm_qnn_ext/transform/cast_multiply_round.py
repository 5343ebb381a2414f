"""CastMultiplyRoundToRequantize: float requantize chains on integer tensors -> qnn.requantize.

A chain is a run of single-use elementwise bindings from an integer tensor ``x`` to an integer
tensor, each with one constant operand: ``astype``, ``multiply``/``divide`` by a positive
constant, ``add``/``subtract``, ``round``, ``floor`` (``floor(v + 0.5)``), ``clip``, ``relu``,
``maximum``/``minimum`` and ``right_shift`` (``add(x, 2^(k-1)) -> right_shift(k)``).  Constants
may be scalars or vary along one axis (per channel).

Each chain is rewritten only when proven bit-exact over its input range (the dtype's, or
narrower when the producer bounds it, see ``int_range``): every step is monotone, so the chain
is described by its thresholds, and the fixed-point multiplier is solved for exactly and checked
there (``requantize_proof``).  When the longest chain fails, shorter ones starting at later
integer tensors are tried.  When no multiplier fits (float32 rounds some products onto .5,
which round() sends to even), the chain is left alone and the report gives the nearest
multiplier's exact difference and a witness input; ``emulate_float32=True`` instead emits int64
ops that follow float32 exactly (``float32_emulation``), ``allow_inexact=True`` the nearest
multiplier with its bound.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from ..op.rescale import requantize
from . import float32_emulation as fe
from .int_range import value_range
from .pipeline import pipeline_stage
from .report import report
from .requantize_proof import (
    EMULATED,
    OUT_DTYPES,
    Chain,
    Proof,
    Refused,
    build_steps,
    dtype_of,
    is_int_dtype,
    prove,
)
from .rewrite_bindings import block_pass, call_name, constant, producers, users

STAGE = "cast_multiply_round"


# ---- matching ----------------------------------------------------------------------------------

_COMMUTATIVE = {"relax.multiply": "mul", "relax.add": "add", "relax.maximum": "max"}
_COMMUTATIVE["relax.minimum"] = "min"


def _match(value: relax.Expr):
    """(input var, [(kind, const)]) for a chain op, else None.  Consts keep their own shape."""
    name = call_name(value)
    if name is None or not value.args:
        return None
    args = list(value.args)
    if name in _COMMUTATIVE and len(args) == 2 and constant(args[0]) is not None:
        args.reverse()
    if not isinstance(args[0], relax.Var):
        return None
    if name == "relax.multiply" and is_int_dtype(dtype_of(value)):
        return None  # an integer multiply is a second rescale, not part of this one
    x, rest = args[0], args[1:]
    if name == "relax.astype":
        return x, [("cast", None)]
    if name in ("relax.round", "relax.floor") and not rest:
        return x, [(name.split(".")[1], None)]
    if name == "relax.nn.relu":
        return x, [("max", np.zeros(()))]
    if name == "relax.clip":
        lo, hi = (float(v.value) for v in rest)
        return x, [("max", np.asarray(lo)), ("min", np.asarray(hi))]
    c = constant(rest[0]) if len(rest) == 1 else None
    if c is None:
        return None
    if name in _COMMUTATIVE:
        return x, [(_COMMUTATIVE[name], c)]
    kinds = {"relax.subtract": "add", "relax.divide": "div", "relax.right_shift": "shr"}
    if name not in kinds:
        return None
    return x, [(kinds[name], -c if name == "relax.subtract" else c)]


def find_chains(block: relax.DataflowBlock, result: relax.Expr) -> list[list[Chain]]:
    """Per chain end, the chains ending there: the longest first, then each shorter one that
    starts at a later integer tensor (tried when the longer cannot be proven)."""
    defs, uses = producers(block), users(block, result)
    matched = {b.var: _match(b.value) for b in block.bindings}
    inner = set()
    for m in matched.values():
        x = m[0] if m is not None else None
        if x is not None and uses.get(x) == 1 and isinstance(x, relax.DataflowVar):
            inner.add(x)  # feeds exactly one chain op: not an end
    found = []
    for b in block.bindings:
        if matched.get(b.var) is None or b.var in inner or dtype_of(b.var) not in OUT_DTYPES:
            continue
        records, var = [], b.var
        while True:
            x, steps = matched[var]
            records.insert(0, (x, var, steps))
            if matched.get(x) is None or x not in inner or x not in defs:
                break
            var = x
        candidates = []
        for start, (source, _, _) in enumerate(records):
            if dtype_of(source) not in OUT_DTYPES:
                continue
            tail = records[start:]
            raw = [(k, c, dtype_of(v)) for _, v, steps in tail for k, c in steps]
            if not any(k in ("mul", "div", "shr") for k, _, _ in raw):
                break
            names = [call_name(defs[v]).split(".")[-1] for _, v, _ in tail]
            candidates.append(Chain(source, b.var, raw, names, value_range(source, defs)))
        if candidates:
            found.append(candidates)
    return found


# ---- the pass ----------------------------------------------------------------------------------


def _describe(chain: Chain) -> str:
    return f"{chain.end.name}: {dtype_of(chain.source)} {' -> '.join(chain.names)}"


def _source_range(chain: Chain, options: dict) -> tuple[int, int]:
    lo, hi = (int(v) for v in chain.known_range)
    given = options.get("input_range", {}).get(chain.source.name)
    if given is not None:
        lo, hi = max(lo, int(given[0])), min(hi, int(given[1]))
    return lo, hi


def _prove_chain(chain: Chain, options: dict, allow_inexact: bool, emulate: bool):
    out_dtype = dtype_of(chain.end)
    if out_dtype not in OUT_DTYPES or dtype_of(chain.source) not in OUT_DTYPES:
        raise Refused(f"qnn.requantize maps {OUT_DTYPES} to {OUT_DTYPES}")
    try:
        tuple(int(d) for d in chain.source.ty.shape.values)
    except (AttributeError, TypeError):
        raise Refused("the input shape is not static") from None
    steps, axis, channels = build_steps(chain)
    src_range = _source_range(chain, options)
    proof = prove(chain, steps, channels, src_range, out_dtype, allow_inexact, emulate)
    return proof, axis, channels, src_range


def _emit(chain: Chain, proof: Proof, axis, channels, src_range) -> relax.Expr:
    fit = proof.fit
    where = f"x in [{src_range[0]}, {src_range[1]}]"
    if proof.exact:
        how = f"proven bit-exact for {where} ({proof.checked} thresholds)"
    else:
        how = (
            f"NOT exact (allow_inexact): differs by at most {proof.max_steps} step(s) on "
            f"{proof.differing} input value(s) of {where}"
        )
    per = "per tensor" if axis is None else f"per channel (axis {axis}, {channels} channels)"
    if fit.rounding == EMULATED:
        report(STAGE, f"{_describe(chain)} => float32 emulated in int64 ops ({per}): {how}")
        ndim = len(chain.source.ty.shape.values)
        return lambda bb: fe.requantize_relax(
            bb,
            chain.source,
            fit.scale,
            fit.out_zp,
            fit.out_min,
            fit.out_max,
            dtype_of(chain.end),
            axis,
            ndim,
        )
    report(STAGE, f"{_describe(chain)} => qnn.requantize(rounding={fit.rounding}, {per}): {how}")
    one = (lambda v: v) if axis is not None else (lambda v: v[0])
    return requantize(
        chain.source,
        one(fit.real),
        one(fit.in_zp),
        1.0,
        one(fit.out_zp),
        dtype_of(chain.end),
        axis=axis,
        rounding=fit.rounding,
        out_min=fit.out_min,
        out_max=fit.out_max,
    )


def rewrite_chain(candidates: list[Chain], options: dict):
    """The first candidate proven exact with one multiplier; else the first that the integer
    float32 emulation reproduces (``emulate_float32``); else, with ``allow_inexact``, the
    longest with its bound; else None, and the longest one's refusal is reported."""
    refusal = None
    tries = [False, True] if options.get("emulate_float32", False) else [False]
    for emulate in tries:
        for chain in candidates:
            try:
                return _emit(chain, *_prove_chain(chain, options, False, emulate))
            except Refused as why:
                refusal = why if emulate or refusal is None else refusal
    if options.get("allow_inexact", False):
        try:
            return _emit(candidates[0], *_prove_chain(candidates[0], options, True, False))
        except Refused as why:
            refusal = why
    report(STAGE, f"{_describe(candidates[0])}: left in float: {refusal}")
    return None


def CastMultiplyRoundToRequantize(  # noqa: N802  (named like a TVM pass)
    allow_inexact: bool = False, input_range: dict | None = None, emulate_float32: bool = False
) -> tvm.transform.Pass:
    """Rewrite provably exact float requantize chains; ``input_range`` maps an input var's name
    to a narrower (lo, hi) than its dtype's.  ``emulate_float32=True`` rewrites the chains one
    multiplier cannot reproduce into int64 ops that follow float32 exactly (integer-only and
    proven, but ~80 ops each; fused into one kernel they currently cost ~7 s of compile time
    per chain, hence opt-in)."""
    options = {
        "allow_inexact": allow_inexact,
        "input_range": input_range or {},
        "emulate_float32": emulate_float32,
    }

    def rewrite(block, result):
        new = {}
        for candidates in find_chains(block, result):
            expr = rewrite_chain(candidates, options)
            if expr is not None:
                new[candidates[0].end] = expr
        return new

    return block_pass("CastMultiplyRoundToRequantize", rewrite)


@pipeline_stage(STAGE, order=20)
def _stage(target: tvm.target.Target, options: dict) -> tvm.transform.Pass:
    """Float requantize chains (cast -> multiply -> round -> clip -> cast) -> qnn.requantize."""
    return CastMultiplyRoundToRequantize(
        options.get("allow_inexact", False),
        options.get("input_range"),
        options.get("emulate_float32", False),
    )

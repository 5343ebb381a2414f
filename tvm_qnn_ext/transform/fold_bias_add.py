"""FoldBiasAdd: ``add(qnn.conv2d(...), c)`` / ``add(qnn.dense(...), c)`` with an int32
constant ``c`` that is per tensor or per output channel becomes the op's bias.

Both the accumulator and the add are int32 arithmetic modulo 2^32, so
``(acc + bias) + c == acc + (bias + c)`` bit for bit with the new bias wrapped to int32.
The TFLite importer already passes its bias to the op; this catches graphs that add it after
(QDQ imports, hand-written Relax).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from .pipeline import pipeline_stage
from .report import report
from .rewrite_bindings import block_pass, call_name, constant, producers, users

STAGE = "fold_bias_add"
ACCUMULATORS = ("qnn.conv2d", "qnn.dense")


def _channel_axis(call: relax.Call, ndim: int) -> int:
    if call_name(call) == "qnn.conv2d":
        return str(call.attrs["data_layout"]).index("C")
    return ndim - 1


def _per_channel(c: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray | None:
    """``c`` as a length-``shape[axis]`` vector if it only varies along ``axis``."""
    if c.ndim > len(shape):
        return None
    aligned = (1,) * (len(shape) - c.ndim) + c.shape
    for d, n in enumerate(aligned):
        if n != 1 and (d != axis or n != shape[d]):
            return None
    return np.broadcast_to(c.reshape(-1), (shape[axis],)).astype(np.int64)


def _rewrite(block: relax.DataflowBlock, result: relax.Expr) -> dict[relax.Var, relax.Expr]:
    defs, uses = producers(block), users(block, result)
    new: dict[relax.Var, relax.Expr] = {}
    for b in block.bindings:
        if call_name(b.value) != "relax.add":
            continue
        args = list(b.value.args)
        if constant(args[0]) is not None:
            args.reverse()
        acc, c = args[0], constant(args[1])
        op = defs.get(acc)
        if c is None or call_name(op) not in ACCUMULATORS or uses.get(acc) != 1:
            continue
        if not isinstance(acc, relax.DataflowVar) or c.dtype != np.int32:
            continue
        shape = tuple(int(d) for d in acc.ty.shape.values)
        axis = _channel_axis(op, len(shape))
        vec = _per_channel(c, shape, axis)
        if vec is None:
            report(STAGE, f"{b.var.name}: added constant of shape {c.shape} is not per channel")
            continue
        old = constant(op.args[2]) if len(op.args) > 2 else np.zeros(shape[axis], np.int64)
        if old is None:
            report(STAGE, f"{b.var.name}: {acc.name} has a non-constant bias; add kept")
            continue
        bias = ((old.astype(np.int64) + vec + 2**31) % 2**32 - 2**31).astype(np.int32)
        args = [op.args[0], op.args[1], relax.const(bias)]
        new[b.var] = relax.Call(op.op, args, op.attrs)
        report(STAGE, f"{b.var.name}: int32 add folded into {call_name(op)} {acc.name}'s bias")
    return new


def FoldBiasAdd() -> tvm.transform.Pass:  # noqa: N802  (named like a TVM pass)
    return block_pass("FoldBiasAdd", _rewrite)


@pipeline_stage(STAGE, order=15)
def _stage(target: tvm.target.Target, options: dict) -> tvm.transform.Pass:
    """add(qnn.conv2d / qnn.dense, int32 constant) -> the op's bias."""
    return FoldBiasAdd()

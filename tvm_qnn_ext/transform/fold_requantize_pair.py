"""FoldRequantizePair: ``qnn.requantize`` of a ``qnn.requantize`` becomes one, where exact.

Two roundings do not compose into one in general, so only these exact cases fold (the
intermediate dtype must be int8/uint8/int16, so the identity rescale below is exact in every
rounding mode):

* the second rescale has multiplier exactly 1: it only moves the zero point and clamps, so
  ``clamp(clamp(u, lo1, hi1) + d, lo2, hi2) == clamp(u + d, max(lo1 + d, lo2), min(hi1 + d, hi2))``
  with ``d = zp3 - zp2``, when those ranges meet;
* the first has multiplier exactly 1: it only shifts and clamps, and the second's rounding
  ``R`` is monotone, so ``R(clamp(v, lo1, hi1) - zp2) == clamp(R(v - zp2), R(lo1 - zp2),
  R(hi1 - zp2))``; the fold uses the second's scales with input zero point ``zp_in1 - zp1 +
  zp2`` and those clamp bounds (computed with the numpy reference).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from ..quantization import affine, dtype_range
from .fold_clip_into_requantize import requantize_bounds, with_attrs
from .pipeline import pipeline_stage
from .report import report
from .rewrite_bindings import block_pass, call_name, producers, users

STAGE = "fold_requantize_pair"
NARROW = ("int8", "uint8", "int16")


def _floats(call, key) -> np.ndarray:
    return np.asarray([float(v) for v in call.attrs[key]])


def _ints(call, key) -> np.ndarray:
    return np.asarray([int(v) for v in call.attrs[key]], dtype=np.int64)


def _unit(call) -> bool:
    return bool(np.all(_floats(call, "in_scale") / _floats(call, "out_scale") == 1.0))


def _fits(values, dtype: str) -> bool:
    lo, hi = dtype_range(dtype)
    return bool(np.all((values >= lo) & (values <= hi)))


def _second_is_unit(first, second):
    zp2, zp3 = _ints(second, "in_zero_point"), _ints(second, "out_zero_point")
    if zp2.size != 1 or zp3.size != 1:
        return None, "per-channel zero points on the identity rescale"
    d = int(zp3[0] - zp2[0])
    lo1, hi1 = requantize_bounds(first)
    lo2, hi2 = requantize_bounds(second)
    lo, hi = max(lo1 + d, lo2), min(hi1 + d, hi2)
    out_dtype = str(second.attrs["out_dtype"])
    zp = _ints(first, "out_zero_point") + d
    if lo > hi or not _fits(zp, out_dtype):
        return None, "the clamp ranges do not meet or the zero point leaves the dtype"
    return with_attrs(
        first, out_zero_point=[int(z) for z in zp], out_dtype=out_dtype, out_min=lo, out_max=hi
    ), "second rescale is the identity"


def _first_is_unit(first, second, x_dtype: str):
    izp1, zp1 = _ints(first, "in_zero_point"), _ints(first, "out_zero_point")
    if izp1.size != 1 or zp1.size != 1 or x_dtype not in NARROW:
        return None, "needs a per-tensor identity rescale of an int8/uint8/int16 input"
    zp2 = _ints(second, "in_zero_point")
    if zp2.size != 1 or {"neon_channels", "neon_flat"} & set(second.attrs.keys()):
        return None, "per-channel input zero point or mixed rounding on the second rescale"
    lo1, hi1 = requantize_bounds(first)
    mid = str(first.attrs["out_dtype"])
    ends = _apply(second, np.asarray([lo1, hi1]), mid)
    lo2, hi2 = requantize_bounds(second)
    lo, hi = max(int(ends[0].min()), lo2), min(int(ends[1].max()), hi2)
    if np.unique(ends[0]).size > 1 or np.unique(ends[1]).size > 1 or lo > hi:
        return None, "the clamp bounds differ per channel or do not meet"
    izp = int(izp1[0] - zp1[0] + zp2[0])
    if not _fits(np.asarray([izp]), x_dtype):
        return None, "the folded input zero point leaves the input dtype"
    args = [first.args[0]]
    return with_attrs(second, args, in_zero_point=[izp], out_min=lo, out_max=hi), (
        "first rescale is the identity"
    )


def _apply(call, values: np.ndarray, dtype: str) -> np.ndarray:
    """The second requantize on the first one's clamp bounds, per channel: shape (2, C)."""
    scales = _floats(call, "in_scale") / _floats(call, "out_scale")
    channels = scales.size
    keys = call.attrs.keys()
    return affine.requantize(
        np.repeat(values[:, None], channels, 1).astype(dtype),
        _floats(call, "in_scale"),
        _ints(call, "in_zero_point"),
        _floats(call, "out_scale"),
        _ints(call, "out_zero_point"),
        str(call.attrs["out_dtype"]),
        str(call.attrs["rounding"]) if "rounding" in keys else "tflite",
        axis=1 if channels > 1 else None,
    ).astype(np.int64)


def _rewrite(block: relax.DataflowBlock, result: relax.Expr) -> dict[relax.Var, relax.Expr]:
    defs, uses = producers(block), users(block, result)
    new: dict[relax.Var, relax.Expr] = {}
    for b in block.bindings:
        if call_name(b.value) != "qnn.requantize":
            continue
        u = b.value.args[0]
        first = new.get(u, defs.get(u))
        if call_name(first) != "qnn.requantize" or uses.get(u) != 1:
            continue
        if not isinstance(u, relax.DataflowVar):
            continue
        mid = str(first.attrs["out_dtype"])
        if mid not in NARROW:
            report(STAGE, f"{b.var.name}: intermediate {mid} is not narrow; kept")
            continue
        x_dtype = str(first.args[0].ty.dtype)
        if _unit(b.value):
            folded, why = _second_is_unit(first, b.value)
        elif _unit(first):
            folded, why = _first_is_unit(first, b.value, x_dtype)
        else:
            folded, why = None, "both rescales round; two roundings do not compose"
        if folded is None:
            report(STAGE, f"{b.var.name}: requantize of requantize kept: {why}")
            continue
        new[b.var] = folded
        report(STAGE, f"{b.var.name}: requantize of {u.name} folded into one ({why})")
    return new


def FoldRequantizePair() -> tvm.transform.Pass:  # noqa: N802  (named like a TVM pass)
    return block_pass("FoldRequantizePair", _rewrite)


@pipeline_stage(STAGE, order=24)
def _stage(target: tvm.target.Target, options: dict) -> tvm.transform.Pass:
    """qnn.requantize -> qnn.requantize folded into one where one of them is the identity."""
    return FoldRequantizePair()

"""Bounds on the values an integer tensor can hold, from the bindings that produce it.

Used to narrow the input range a rewrite must be exact over: e.g. an int32 accumulator that
is ``clip(-127, 127)`` times a constant in [1, 39] lies in [-4953, 4953], so an ``add`` after
it cannot wrap.  Anything not understood falls back to the dtype's full range.
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from ..quantization import dtype_range
from .rewrite_bindings import call_name, constant

Range = tuple[float, float]
_MAX_DEPTH = 32


def value_range(expr: relax.Expr, defs: dict, depth: int = 0) -> Range:
    """(lo, hi) bounding every element of ``expr``; floats for float tensors."""
    ty = expr.ty
    dtype = str(ty.dtype) if isinstance(ty, relax.TensorType) else ""
    full = _full_range(dtype)
    value = defs.get(expr) if isinstance(expr, relax.Var) else expr
    c = constant(value) if value is not None else None
    if c is not None and c.size:
        return float(c.min()), float(c.max())
    if value is None or depth > _MAX_DEPTH:
        return full
    got = _from_producer(value, defs, depth + 1)
    if got is None:
        return full
    lo, hi = got
    if dtype.startswith(("int", "uint")) and (lo < full[0] or hi > full[1]):
        return full  # the op may wrap: nothing better is known
    return lo, hi


def _full_range(dtype: str) -> Range:
    if dtype in ("int8", "uint8", "int16", "uint16", "int32"):
        return dtype_range(dtype)
    if dtype.startswith(("int", "uint")):
        bits = int(dtype.lstrip("uint") or 64)
        return (
            (0, 2.0**bits - 1)
            if dtype.startswith("u")
            else (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1)
        )
    return -np.inf, np.inf


def _from_producer(value: relax.Expr, defs: dict, depth: int) -> Range | None:
    name = call_name(value)
    if name is None:
        return None
    args = value.args

    def arg(i):
        return value_range(args[i], defs, depth)

    if name == "qnn.requantize":
        lo, hi = dtype_range(str(value.attrs["out_dtype"]))
        keys = value.attrs.keys()
        lo = max(lo, int(value.attrs["out_min"])) if "out_min" in keys else lo
        hi = min(hi, int(value.attrs["out_max"])) if "out_max" in keys else hi
        return lo, hi
    if name in ("qnn.conv2d", "qnn.dense"):
        return _accumulator(value, defs, depth)
    if name == "relax.astype":
        lo, hi = arg(0)
        to = str(value.attrs.dtype)
        return (
            (float(np.trunc(lo)), float(np.trunc(hi)))
            if to.startswith(("int", "uint"))
            else (lo, hi)
        )
    if name == "relax.clip":
        lo, hi = arg(0)
        a, b = float(args[1].value), float(args[2].value)
        return min(max(lo, a), b), max(min(hi, b), a)
    if name == "relax.nn.relu":
        lo, hi = arg(0)
        return max(lo, 0.0), max(hi, 0.0)
    if name in ("relax.add", "relax.subtract", "relax.multiply", "relax.maximum", "relax.minimum"):
        (a0, a1), (b0, b1) = arg(0), arg(1)
        if name == "relax.subtract":
            b0, b1 = -b1, -b0
        if name == "relax.add" or name == "relax.subtract":
            return a0 + b0, a1 + b1
        if name == "relax.multiply":
            corners = [a0 * b0, a0 * b1, a1 * b0, a1 * b1]
            return None if any(np.isnan(corners)) else (min(corners), max(corners))
        pick = max if name == "relax.maximum" else min
        return pick(a0, b0), pick(a1, b1)
    if name == "relax.right_shift":
        (a0, a1), (b0, b1) = arg(0), arg(1)
        if b0 < 0 or b1 > 31:
            return None
        lows = [int(a0) >> int(b) for b in (b0, b1)]
        highs = [int(a1) >> int(b) for b in (b0, b1)]
        return float(min(lows)), float(max(highs))
    return None


def _accumulator(call: relax.Call, defs: dict, depth: int) -> Range | None:
    """|acc| <= sum |w - zp_w| * max |x - zp_x| + |bias| per output channel (constant weights)."""
    w = constant(call.args[1])
    bias = constant(call.args[2]) if len(call.args) > 2 else np.zeros(1)
    if w is None or bias is None:
        return None
    if call_name(call) == "qnn.conv2d":
        out_axis = str(call.attrs["kernel_layout"]).index("O")
    else:
        out_axis = 0 if str(call.attrs["weight_layout"]) == "NK" else 1
    zp_w = np.asarray([int(v) for v in call.attrs["kernel_zero_point"]], dtype=np.int64)
    w = np.moveaxis(w.astype(np.int64), out_axis, 0).reshape(w.shape[out_axis], -1)
    zp_x = int(call.attrs["input_zero_point"])
    lo, hi = value_range(call.args[0], defs, depth)
    x_max = max(abs(lo - zp_x), abs(hi - zp_x))
    bound = np.abs(w - zp_w.reshape(-1, 1)).sum(axis=1) * x_max + np.abs(bias.astype(np.int64))
    return -float(bound.max()), float(bound.max())

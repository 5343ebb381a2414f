"""``rint(fl32(fl32(x) * S))`` with integers only: the float requantize chain, bit for bit.

When no single fixed-point multiplier reproduces a float chain (float32 keeps 24 bits of each
product, so some products land on .5 and are rounded to even), the chain can still be computed
without floats by following IEEE arithmetic step by step on int64 values:

1. ``fl32(x)``: ``|x|`` rounded to 24 significant bits, nearest even (exact below 2^24);
2. the product of two 24-bit significands is exact in int64 (< 2^49); ``fl32`` of it rounds
   again to 24 bits, nearest even, keeping the power-of-two exponent aside;
3. ``rint`` of ``m * 2^E`` is a rounding right shift by ``-E`` (nearest even), or a left shift;
4. the sign is put back (every step is symmetric in the sign).

``S = ms * 2^es`` with a 24-bit ``ms``; per-channel scales give per-channel ``ms``/``es``.
Normal floats only: the caller keeps ``S`` in [2^-100, 2^100].  The algorithm is written once
against an ``ops`` object, so that :class:`NumpyOps` (the reference, also used to check each
rewrite) and :class:`RelaxOps` (the emitted bindings) are the same arithmetic.
"""

from __future__ import annotations

import numpy as np
from tvm import relax

SIGNIFICAND_BITS = 24
MAX_LEFT_SHIFT = 37  # |result| <= 2^25 * 2^37 < 2^63: far beyond any clip bound


def split_scale(scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 ``scale`` -> (ms, es) with ``scale == ms * 2^es`` and 2^23 <= ms < 2^24."""
    frac, exp = np.frexp(np.asarray(scale, dtype=np.float32).astype(np.float64))
    return (frac * 2.0**SIGNIFICAND_BITS).astype(np.int64), exp.astype(np.int64) - SIGNIFICAND_BITS


class NumpyOps:
    """int64 numpy arithmetic."""

    def const(self, v):
        return np.asarray(v, dtype=np.int64)

    add, sub, mul = np.add, np.subtract, np.multiply
    shl, shr, band = np.left_shift, np.right_shift, np.bitwise_and
    gt, ge, eq, lt = np.greater, np.greater_equal, np.equal, np.less
    minimum, maximum, abs, neg = np.minimum, np.maximum, np.abs, np.negative

    def where(self, cond, a, b):
        return np.where(cond, a, b).astype(np.int64)


class RelaxOps:
    """The same arithmetic as int64 Relax bindings emitted with ``bb``."""

    def __init__(self, bb: relax.BlockBuilder):
        self.bb = bb

    def const(self, v):
        return relax.const(np.asarray(v, dtype=np.int64), "int64")

    def _emit(self, op, *args):
        args = [a if isinstance(a, relax.Expr) else self.const(a) for a in args]
        return self.bb.emit(op(*args))

    def __getattr__(self, name):
        ops = {
            "add": relax.op.add,
            "sub": relax.op.subtract,
            "mul": relax.op.multiply,
            "shl": relax.op.left_shift,
            "shr": relax.op.right_shift,
            "band": relax.op.bitwise_and,
            "gt": relax.op.greater,
            "ge": relax.op.greater_equal,
            "eq": relax.op.equal,
            "lt": relax.op.less,
            "minimum": relax.op.minimum,
            "maximum": relax.op.maximum,
            "abs": relax.op.abs,
            "neg": relax.op.negative,
        }
        if name not in ops:
            raise AttributeError(name)
        return lambda *args: self._emit(ops[name], *args)

    def where(self, cond, a, b):
        return self._emit(relax.op.where, cond, a, b)


def _bit_length(o, v):
    """Number of significant bits of ``v`` in [0, 2^63)."""
    n = o.const(0)
    for k in (32, 16, 8, 4, 2, 1):
        shifted = o.shr(v, k)
        above = o.gt(shifted, 0)
        v = o.where(above, shifted, v)
        n = o.add(n, o.where(above, k, 0))
    return o.add(n, o.where(o.gt(v, 0), 1, 0))


def _round_shift(o, v, d):
    """``v / 2^d`` rounded to nearest, ties to even; ``v >= 0``, ``0 <= d <= 62``."""
    q = o.shr(v, d)
    one = o.shl(1, d)
    r = o.band(v, o.sub(one, 1))
    half = o.shr(one, 1)
    odd = o.band(q, o.where(o.gt(d, 0), 1, 0))  # a tie only exists when bits are dropped
    up = o.where(o.gt(r, half), 1, o.where(o.eq(r, half), odd, 0))
    return o.add(q, up)


def _to_float32(o, v):
    """``v >= 0`` as ``(m, d)``: ``fl32(v) == m * 2^d``, ``m <= 2^24``."""
    d = o.maximum(o.sub(_bit_length(o, v), SIGNIFICAND_BITS), 0)
    return _round_shift(o, v, d), d


def multiply_round(o, x, ms, es):
    """``rint(fl32(fl32(x) * ms * 2^es))`` for int64 ``x`` in the int32 range (|x| < 2^33)."""
    negative = o.lt(x, 0)
    m1, d1 = _to_float32(o, o.abs(x))
    m2, d2 = _to_float32(o, o.mul(m1, ms))
    e = o.add(o.add(d1, d2), es)
    left = o.shl(m2, o.minimum(o.maximum(e, 0), MAX_LEFT_SHIFT))
    right = _round_shift(o, m2, o.minimum(o.maximum(o.neg(e), 0), 62))
    magnitude = o.where(o.ge(e, 0), left, right)
    return o.where(negative, o.neg(magnitude), magnitude)


# ---- as a rewrite of a float requantize chain ------------------------------------------------

_TAIL_KINDS = ("add", "max", "min", "cast")  # what may follow round(): zero point, clamps, casts


def chain_scale(steps) -> np.ndarray | None:
    """The per-channel float32 scale (channels, 1) of ``cast -> multiply -> round -> [add zp,
    clamps, casts]``, the form emulated here; None for any other chain."""
    kinds = [st.kind for st in steps]
    if kinds[:3] != ["cast", "mul", "round"] or steps[0].dtype != "float32":
        return None
    if any(
        k not in _TAIL_KINDS or (k == "cast" and st.dtype == "float32")
        for k, st in zip(kinds[3:], steps[3:], strict=True)
    ):
        return None
    scale = steps[1].const.astype(np.float32)
    if np.any(scale < 2.0**-100) or np.any(scale > 2.0**100):
        return None
    return scale


def requantize_numpy(x, scale, out_zp, out_min: int, out_max: int) -> np.ndarray:
    """``clamp(rint(fl32(fl32(x) * scale)) + out_zp)`` per channel: x (channels, n)."""
    ms, es = split_scale(scale)
    y = multiply_round(NumpyOps(), np.asarray(x, np.int64), ms, es) + out_zp
    return np.clip(y, out_min, out_max)


def requantize_relax(bb, x, scale, out_zp, out_min, out_max, out_dtype, axis, ndim):
    """The same as int64 Relax bindings on ``x``; per-channel parameters along ``axis``."""
    ms, es = split_scale(scale)
    shape = [1] * ndim
    if axis is not None:
        shape[axis] = -1

    def param(v):
        v = np.asarray(v, np.int64).reshape(-1)
        return relax.const(v[0] if axis is None else v.reshape(shape), "int64")

    o = RelaxOps(bb)
    x64 = bb.emit(relax.op.astype(x, "int64"))
    y = o.add(multiply_round(o, x64, param(ms), param(es)), param(out_zp))
    y = o.minimum(o.maximum(y, int(out_min)), int(out_max))
    return relax.op.astype(y, out_dtype)

"""Requantize with ties to even, in integers: onnxruntime's ``rint(acc * multiplier)``.

``qnn.requantize`` rounds one exact product in its ``tonearest`` mode, breaking ties away from
zero; onnxruntime rounds half to even.  With ``multiplier = m * 2^-t`` (``m`` the Q31 integer
of :func:`quantize_multiplier`), ``x * multiplier`` is a tie exactly when
``x * m = 2^(t-1) (mod 2^t)``, which needs the 2-adic valuation ``v2(x) = t - 1 - v2(m)`` and so
``|x| >= 2^(t - 1 - v2(m))``.  :func:`ties_possible` decides that from a bound on ``|x|``: when
no tie can occur the two roundings agree on every input and ``qnn.requantize`` is used; when
one can (a mean of 4 at an unchanged scale, say) :func:`half_even_requantize` emits the
rounding as explicit int64 Relax arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from tvm import relax

from ..quantization import quantize_multiplier


def _multiplier(real) -> tuple[np.ndarray, np.ndarray]:
    """``(m, t)``: ``real ~= m * 2^-t``, as ``tonearest`` encodes it."""
    m, shift = quantize_multiplier(np.atleast_1d(np.asarray(real, np.float64)), "tonearest")
    return m.astype(np.int64), (31 - shift).astype(np.int64)


def ties_possible(real, bound: int) -> bool:
    """Can ``x * real`` (``|x| <= bound``) fall exactly halfway between two integers?"""
    for m, t in zip(*_multiplier(real), strict=True):
        m = abs(int(m))
        if m == 0:
            continue
        need = int(t) - 1 - ((m & -m).bit_length() - 1)  # t - 1 - v2(m)
        if need >= 0 and (1 << need) <= bound:
            return True
    return False


def half_even_requantize(
    emit: Callable[[relax.Expr], relax.Expr],
    x: relax.Expr,
    real,
    *,
    in_zero_point: int,
    out_zero_point: int,
    axis: int | None,
    ndim: int,
    out_min: int,
    out_max: int,
    out_dtype: str,
    bound: int,
    zero_point_first: bool = False,
) -> relax.Expr:
    """``clip(rint((x - in_zp) * real) + out_zp)`` with ties to even, in integer Relax ops
    (int32 when ``|x - in_zp| <= bound`` allows, else int64); ``real`` is one multiplier or one
    per index of ``axis``.  ``zero_point_first`` breaks ties to the even value of
    ``x * real + out_zp`` (onnxruntime's QLinearAveragePool) instead of ``x * real``."""
    m, t = _multiplier(real)
    # Drop common powers of two (exactly the same multiplier) so the product usually fits int32.
    v = np.array([(abs(int(x)) & -abs(int(x))).bit_length() - 1 if x else 0 for x in m])
    v = np.minimum(v, t - 1)
    m, t = m >> v, t - v
    dtype = "int32" if int(np.abs(m).max()) * (bound + 1) < 2**31 else "int64"
    shape = [1] * ndim
    if m.size > 1:
        shape[axis % ndim] = m.size

    def const(v) -> relax.Expr:
        v = np.asarray(v, dtype)
        return relax.const(v.reshape(shape) if v.size > 1 else v.reshape(()), dtype)

    op = relax.op
    centred = op.astype(x, dtype)
    if in_zero_point:
        centred = op.subtract(centred, const(in_zero_point))
    prod = emit(op.multiply(centred, const(m)))
    floor = emit(op.right_shift(prod, const(t)))
    rem = emit(op.subtract(prod, op.left_shift(floor, const(t))))
    half = const(np.left_shift(1, t - 1))
    parity = op.add(floor, const(out_zero_point)) if zero_point_first else floor
    odd = op.equal(op.bitwise_and(parity, const(1)), const(1))
    up = op.logical_or(op.greater(rem, half), op.logical_and(op.equal(rem, half), odd))
    y = op.add(op.add(floor, op.astype(up, dtype)), const(out_zero_point))
    y = op.minimum(op.maximum(y, const(out_min)), const(out_max))
    return op.astype(emit(y), out_dtype)

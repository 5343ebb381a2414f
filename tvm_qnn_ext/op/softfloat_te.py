"""IEEE float32 arithmetic (round to nearest even) on non-negative values, in integer-only TIR.

TFLite's int8/uint8 SOFTMAX is float32 arithmetic; these helpers reproduce each float32 rounding
exactly so that ``qnn.softmax`` stays integer-only and bit-exact.  A float travels as its IEEE
bit pattern (an int64 holding the int32 bits) or, inside a computation, as a pair ``(m, e)``
meaning ``m * 2**e``.  Only finite non-negative values occur.

Intermediate values are bound (``Let``, or scratch-register stores under :func:`bind_statements`)
and handed to continuations, so that an expression used several times is not copied into the
tree (nesting would otherwise grow exponentially).  Every bound value is safe to evaluate
unconditionally: shift amounts stay in range and divisors are non-zero.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

from tvm import tirx
from tvm.ir.expr import Expr as PrimExpr

I64 = "int64"
Cont = Callable[..., PrimExpr]


def c(v: int) -> PrimExpr:
    return tirx.const(int(v), I64)


def sel(cond, a, b) -> PrimExpr:
    a = a if isinstance(a, PrimExpr) else c(a)
    b = b if isinstance(b, PrimExpr) else c(b)
    return tirx.Select(cond, a, b)


REGISTERS = 64
_state: dict | None = None


@contextmanager
def bind_statements(registers):
    """Inside this context :func:`let` stores each value into ``registers[k]`` (a 1-D int64
    scratch buffer of :data:`REGISTERS` entries) and hands on the load; the stores are yielded
    as statements in dependency order.  TIR's simplifier substitutes Let/Bind values into their
    uses, which blows up exponentially on these chains; a buffer load is opaque to it."""
    global _state
    saved, _state = _state, {"regs": registers, "stmts": []}
    try:
        yield _state["stmts"]
    finally:
        _state = saved


def let(value: PrimExpr, body: Cont, name: str = "v") -> PrimExpr:
    if _state is not None:
        slot = len(_state["stmts"])
        if slot >= REGISTERS:
            raise RuntimeError("softfloat_te: out of scratch registers")
        _state["stmts"].append(tirx.BufferStore(_state["regs"], value.astype(I64), [c(slot)]))
        return body(tirx.BufferLoad(_state["regs"], [c(slot)]))
    var = tirx.Var(name, str(value.ty))
    return tirx.Let(var, value, body(var))


def lets(values: list[PrimExpr], body: Cont) -> PrimExpr:
    if not values:
        return body()
    return let(values[0], lambda v: lets(values[1:], lambda *rest: body(v, *rest)))


def decode(bits: PrimExpr, k: Cont) -> PrimExpr:
    """Bits of a non-negative float32 -> ``k(m, e)``; subnormals keep ``m < 2**23``."""

    def body(b):
        field = b >> c(23)
        frac = b & c(0x7FFFFF)
        sub = field == c(0)
        return lets([sel(sub, frac, frac | c(1 << 23)), sel(sub, c(1), field) - c(150)], k)

    return let(bits.astype(I64), body, "bits")


def encode(m: PrimExpr, e: PrimExpr) -> PrimExpr:
    """``(m, e)`` of a normal float32 (``m`` in ``[2**23, 2**24]``) -> its bits as int64."""
    return ((e + c(149)) << c(23)) + m


def _round_up(rem, half, sticky, q) -> PrimExpr:
    """1 when round-to-nearest-even must increment ``q``."""
    tie = tirx.And(rem == half, tirx.Or(sticky, (q & c(1)) == c(1)))
    return sel(tirx.Or(rem > half, tie), 1, 0)


def add(a_bits: PrimExpr, b_bits: PrimExpr) -> PrimExpr:
    """Bits of ``a + b`` for non-negative float32 bit patterns, subnormals included."""
    a, b = a_bits.astype(I64), b_bits.astype(I64)

    def body(mb, eb, ms, es):
        def aligned(d, full):
            sticky = (full & ((c(1) << d) - c(1))) != c(0)
            return let((mb << c(32)) + (full >> d), lambda s: carry(s, sticky))

        def carry(s, sticky):
            over = s >= c(1 << 56)
            sh = sel(over, 33, 32)
            # The biased exponent is eb + 150 (+1 on carry); the encoding wants biased - 1.
            exp_field = (eb + c(149) + sel(over, 1, 0)) << c(23)
            return lets(
                [s >> sh, s & ((c(1) << sh) - c(1)), c(1) << (sh - c(1))],
                lambda q, rem, half: exp_field + q + _round_up(rem, half, sticky, q),
            )

        return lets([tirx.min(eb - es, c(60)), ms << c(32)], aligned)

    return decode(
        tirx.max(a, b), lambda mb, eb: decode(tirx.min(a, b), lambda ms, es: body(mb, eb, ms, es))
    )


def normalize(sig: PrimExpr, e: PrimExpr, sticky, k: Cont) -> PrimExpr:
    """Round ``sig * 2**e`` (``0 <= sig < 2**62``; ``sticky``: the true value is a little
    larger) to 24 significant bits and call ``k(m, e)`` with ``m`` in ``[2**23, 2**24)`` (or
    ``m == 0``, ``e == 0``).  Float32's subnormal range is not modelled; callers never need it."""
    sticky = tirx.const(False, "bool") if sticky is None else sticky

    def body(sig, sh):
        def rounded(right, q):
            rem = sig & ((c(1) << right) - c(1))
            half = sel(right > c(0), c(1) << tirx.max(right - c(1), c(0)), 1 << 62)
            m = (q + _round_up(rem, half, sticky, q)) << tirx.max(-sh, c(0))
            return let(m, lambda m: finish(m))

        def finish(m):
            carry = m == c(1 << 24)
            return lets(
                [sel(carry, 1 << 23, m), sel(sig == c(0), c(0), e + sh + sel(carry, 1, 0))], k
            )

        right = tirx.max(sh, c(0))
        return lets([right, sig >> right], rounded)

    return lets(
        [sig.astype(I64)],
        lambda s: let(c(40) - tirx.clz(s).astype(I64), lambda sh: body(s, sh)),
    )


def mul(a_bits: PrimExpr, b_bits: PrimExpr, k: Cont) -> PrimExpr:
    """float32 product of two bit patterns, handed to ``k(m, e)`` (normal result assumed)."""
    return decode(
        a_bits,
        lambda ma, ea: decode(b_bits, lambda mb, eb: normalize(ma * mb, ea + eb, None, k)),
    )


def reciprocal_bits(m: PrimExpr, e: PrimExpr) -> PrimExpr:
    """Bits of float32 ``1 / (m * 2**e)`` for normalised ``m`` (normal result assumed)."""
    num = c(1 << 48)
    return normalize(tirx.floordiv(num, m), c(-48) - e, tirx.floormod(num, m) != c(0), encode)

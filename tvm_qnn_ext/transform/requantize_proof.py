"""The arithmetic behind CastMultiplyRoundToRequantize: a float requantize chain as exact
numpy arithmetic, its thresholds, and the fixed-point multiplier that reproduces it (or the
exact bound on how far the nearest one is off).

A chain ``F`` of monotone steps is a non-decreasing integer step function of its input, fully
described by its thresholds ``t_k = min{x : F(x) >= k}`` (found by bisection).  qnn.requantize
with a one-rounding mode is ``floor(((x - zp_in) * M + h) / 2^T) + zp_out``: every threshold
is a linear inequality on the integer ``M``, solved exactly; the result is then checked
against ``F`` with the numpy reference at ``t_k - 1``, ``t_k`` and both ends of the range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import relax

from ..quantization import affine, dtype_range
from . import float32_emulation as fe

OUT_DTYPES = ("int8", "uint8", "int16", "int32")
MODES = ("upward", "tonearest")
MAX_POINTS = 1 << 22  # channels x output levels bisected at once
EMULATED = "float32_emulated"


class Refused(Exception):
    """The chain is left in float; the message says why."""


@dataclass(frozen=True)
class Step:
    kind: str  # cast, mul, div, add, round, floor, max, min, shr
    const: np.ndarray | None  # shape (channels, 1) or (1, 1)
    dtype: str  # dtype of the step's result


def dtype_of(expr) -> str | None:
    ty = expr.ty
    return str(ty.dtype) if isinstance(ty, relax.TensorType) else None


def is_int_dtype(dtype: str | None) -> bool:
    return dtype is not None and dtype.startswith(("int", "uint"))


@dataclass
class Chain:
    source: relax.Var
    end: relax.Var
    raw: list[tuple[str, np.ndarray | None, str]]  # (kind, const, result dtype)
    names: list[str]  # the Relax ops, for reports
    known_range: tuple[float, float]  # bounds on the source's values


# ---- the chain as numpy arithmetic -------------------------------------------------------------


def _channel_axis(chain: Chain, shape: tuple[int, ...]) -> int | None:
    axis = None
    for kind, c, _ in chain.raw:
        if c is None or c.size == 1:
            continue
        if c.ndim > len(shape):
            raise Refused(f"{kind} constant of shape {c.shape} broadcasts the tensor")
        aligned = (1,) * (len(shape) - c.ndim) + c.shape
        varying = [d for d, n in enumerate(aligned) if n != 1]
        if len(varying) != 1 or aligned[varying[0]] != shape[varying[0]]:
            raise Refused(f"{kind} constant of shape {c.shape} varies along more than one axis")
        if axis not in (None, varying[0]):
            raise Refused(f"constants vary along two axes ({axis} and {varying[0]})")
        axis = varying[0]
    return axis


def build_steps(chain: Chain) -> tuple[list[Step], int | None, int]:
    shape = tuple(int(d) for d in chain.source.ty.shape.values)
    axis = _channel_axis(chain, shape)
    channels = 1 if axis is None else shape[axis]
    steps = []
    for kind, c, dtype in chain.raw:
        if kind == "cast" and not (is_int_dtype(dtype) or dtype == "float32"):
            raise Refused(f"a cast to {dtype}")
        if c is not None:
            c = np.asarray(c, dtype=np.float64 if c.dtype.kind == "f" else np.int64)
            c = np.broadcast_to(c.reshape(-1), (channels,)).reshape(channels, 1)
            if kind in ("mul", "div") and not np.all(c > 0):
                raise Refused(f"{kind} by a non-positive constant ({c.min()})")
            if kind == "shr" and not np.all((c >= 0) & (c < 32)):
                raise Refused("right_shift amount outside [0, 31]")
        steps.append(Step(kind, c, dtype))
    return steps, axis, channels


def evaluate(steps: list[Step], x: np.ndarray, check: bool = False) -> np.ndarray:
    """The chain on int64 inputs ``x`` (channels, n), exactly as the float32 graph computes it.

    With ``check``, ``x`` holds the ends of the input range: integer steps must not wrap and
    float-to-int casts must stay in range there (monotone steps make the ends the extremes).
    """
    v = x.astype(np.int64)
    for st in steps:
        is_float = v.dtype.kind == "f"
        if st.kind == "cast":
            if st.dtype == "float32":
                v = v.astype(np.float32)
                continue
            if is_float:
                if check and not np.all(np.isfinite(v)):
                    raise Refused("the float value reaching the int cast is not finite")
                v = np.clip(np.trunc(v), -(2.0**62), 2.0**62).astype(np.int64)
        elif st.kind in ("mul", "div", "add", "max", "min"):
            c = st.const.astype(np.float32) if is_float else st.const
            if not is_float and c.dtype.kind == "f":
                if st.kind in ("mul", "div", "add") or np.any(c != np.round(c)):
                    raise Refused(f"{st.kind} of an integer tensor by a fractional constant")
                c = c.astype(np.int64)
            if st.kind == "mul":
                v = v * c
            elif st.kind == "div":
                if not is_float:
                    raise Refused("integer division")
                v = v / c
            elif st.kind == "add":
                v = v + c
            else:
                v = (np.maximum if st.kind == "max" else np.minimum)(v, c)
        elif st.kind == "round":
            v = np.rint(v)
        elif st.kind == "floor":
            v = np.floor(v)
        elif st.kind == "shr":
            v = v >> st.const
        if check and is_int_dtype(st.dtype):
            lo, hi = dtype_range(st.dtype)
            if np.any(v < lo) or np.any(v > hi):
                raise Refused(f"{st.kind} leaves the {st.dtype} range at the ends of the input")
        if v.dtype.kind == "f" and v.dtype != np.float32:
            raise Refused(f"{st.kind} computes in {v.dtype}")
    return v.astype(np.int64)


def thresholds(f, lo: np.ndarray, hi: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """``min{x in [lo, hi] : f(x) >= level}`` per (channel, level); ``hi + 1`` if none.

    ``f`` is non-decreasing; ``lo``/``hi`` are (channels, 1), ``levels`` (channels, n).
    """
    below = np.broadcast_to(lo - 1, levels.shape).copy()
    above = np.broadcast_to(hi + 1, levels.shape).copy()
    while np.any(above - below > 1):
        move = above - below > 1
        mid = np.where(move, (below + above) // 2, np.minimum(above, hi))
        ok = f(mid) >= levels
        above = np.where(move & ok, mid, above)
        below = np.where(move & ~ok, mid, below)
    return above


# ---- solving for the fixed-point multiplier ----------------------------------------------------


@dataclass
class Fit:
    rounding: str
    real: np.ndarray  # per channel, exactly M * 2^-T
    in_zp: np.ndarray
    out_zp: np.ndarray
    out_min: int
    out_max: int
    scale: np.ndarray | None = None  # float32 per channel, for rounding="float32_emulated"


def _zero_points(steps: list[Step], channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Adds before the first scaling step are ``-zp_in``; after it, ``zp_out``.  An add of
    2^(k-1) before right_shift(k), or of 0.5 before floor, is the rounding, not a zero point."""
    zin, zout = np.zeros(channels), np.zeros(channels)
    scaled = False
    for i, st in enumerate(steps):
        if st.kind in ("mul", "div", "shr"):
            scaled = True
        if st.kind != "add":
            continue
        nxt = steps[i + 1] if i + 1 < len(steps) else None
        c = st.const.reshape(-1).astype(np.float64)
        if nxt is not None and nxt.kind == "shr" and np.all(c == 2.0 ** (nxt.const - 1)):
            continue
        if nxt is not None and nxt.kind == "floor" and np.all(c == 0.5):
            continue
        if scaled:
            zout = zout + c
        else:
            zin = zin - c
    if np.any(zin != np.round(zin)) or np.any(zout != np.round(zout)):
        raise Refused("the chain adds a fractional offset (not a zero point)")
    return zin.astype(np.int64), zout.astype(np.int64)


def _scale(steps: list[Step], channels: int) -> np.ndarray:
    s = np.ones(channels)
    for st in steps:
        c = st.const.reshape(-1).astype(np.float64) if st.const is not None else None
        if st.kind == "mul":
            s = s * c.astype(np.float32)
        elif st.kind == "div":
            s = s / c.astype(np.float32)
        elif st.kind == "shr":
            s = s * 2.0**-c
    return s


def _solve_channel(t, levels, xmin, scale, zin, zout, rounding):
    """The multiplier closest to ``scale`` meeting every threshold, as (M, T), or None."""
    t = [int(v) for v in t]
    ks = [int(k) - int(zout) for k in levels]
    _, e = np.frexp(scale)
    for total in (31 - int(e), 30 - int(e)):
        if not 1 <= total <= 62:
            continue
        half = 1 << (total - 1)
        lo, hi = 1 << 30, (1 << 31) - 1

        def h(xc, half=half):
            return half - 1 if rounding == "tonearest" and xc < 0 else half

        for tk, k in zip(t, ks, strict=True):
            a = tk - int(zin)  # G(t_k) >= k  <=>  a*M >= k*2^T - h(a)
            b = (k << total) - h(a)
            lo, hi = _bound(a, b, lo, hi, at_least=True)
            if tk > xmin:  # G(t_k - 1) <= k - 1  <=>  a'*M <= k*2^T - h(a') - 1
                a1 = a - 1
                lo, hi = _bound(a1, (k << total) - h(a1) - 1, lo, hi, at_least=False)
            if lo > hi:
                break
        if lo <= hi:
            target = int(round(scale * 2.0**total))
            return min(max(target, lo), hi), total
    return None


def _bound(a: int, b: int, lo: int, hi: int, at_least: bool) -> tuple[int, int]:
    """Intersect [lo, hi] with {M : a*M >= b} (``at_least``) or {M : a*M <= b}."""
    if a == 0:
        ok = (0 >= b) if at_least else (0 <= b)
        return (lo, hi) if ok else (1, 0)
    if (a > 0) == at_least:
        return max(lo, -((-b) // a)), hi  # M >= ceil(b / a)
    return lo, min(hi, b // a)  # M <= floor(b / a)


@dataclass
class Proof:
    fit: Fit
    exact: bool
    checked: int  # thresholds verified
    max_steps: int = 0
    differing: int = 0
    witness: int | None = None  # an input where the rewrite differs


def prove(
    chain: Chain, steps, channels, src_range, out_dtype, allow_inexact, emulate=True
) -> Proof:
    xmin, xmax = src_range
    lo_x = np.full((channels, 1), xmin, dtype=np.int64)
    hi_x = np.full((channels, 1), xmax, dtype=np.int64)
    ends = evaluate(steps, np.concatenate([lo_x, hi_x], axis=1), check=True)
    f_lo, f_hi = ends[:, :1], ends[:, 1:]
    span = int((f_hi - f_lo).max())
    if channels * max(span, 1) > MAX_POINTS:
        raise Refused(f"output spans {span} levels over {channels} channels: too many to prove")
    levels = f_lo + 1 + np.arange(span)[None, :]
    t = thresholds(lambda x: evaluate(steps, x), lo_x, hi_x, levels)
    zin, zout = _zero_points(steps, channels)
    scale = _scale(steps, channels)
    out_min, out_max = int(f_lo.min()), int(f_hi.max())
    reasons = []
    for rounding in MODES:
        mult = []
        for c in range(channels):
            valid = levels[c] <= f_hi[c, 0]
            got = _solve_channel(
                t[c][valid], levels[c][valid], xmin, scale[c], zin[c], zout[c], rounding
            )
            if got is None:
                reasons.append(f"{rounding}: no multiplier fits channel {c}")
                break
            mult.append(got)
        if len(mult) < channels:
            continue
        real = np.array([m * 2.0**-total for m, total in mult])
        fit = Fit(rounding, real, zin, zout, out_min, out_max)
        pts = np.concatenate([lo_x, hi_x, np.maximum(t - 1, xmin), np.minimum(t, xmax)], axis=1)
        if np.array_equal(_apply(fit, pts, chain, out_dtype), evaluate(steps, pts)):
            return Proof(fit, True, int(t.size))
        reasons.append(f"{rounding}: the reference requantize disagrees at a threshold")
    if emulate:
        fit = _emulation(steps, t, src_range, zout, (out_min, out_max))
        if fit is not None:
            return Proof(fit, True, int(t.size))
        reasons.append("float32 emulation: the chain is not cast -> multiply -> round -> ...")
    near = _inexact(chain, steps, scale, zin, zout, (out_min, out_max), src_range, out_dtype)
    if not allow_inexact:
        raise Refused(
            f"no {'/'.join(MODES)} multiplier reproduces it exactly ({'; '.join(reasons)}); the "
            f"nearest differs by up to {near.max_steps} step(s) on {near.differing} input "
            f"value(s), e.g. x={near.witness} (float round() sends .5 ties to even)"
        )
    return near


def _emulation(steps, t, src_range, zout, bounds) -> Fit | None:
    """The integer float32 emulation, checked against the chain at every threshold, both ends
    and 4096 random inputs per channel; None when the chain has another form."""
    scale = fe.chain_scale(steps)
    if scale is None:
        return None
    xmin, xmax = src_range
    channels = t.shape[0]
    rng = np.random.default_rng(0)
    pts = np.concatenate(
        [
            np.full((channels, 1), xmin),
            np.full((channels, 1), xmax),
            np.maximum(t - 1, xmin),
            np.minimum(t, xmax),
            rng.integers(xmin, xmax, (channels, 4096), endpoint=True),
        ],
        axis=1,
    ).astype(np.int64)
    zp = zout.reshape(-1, 1)
    got = fe.requantize_numpy(pts, scale, zp, *bounds)
    if not np.array_equal(got, evaluate(steps, pts)):
        return None
    zero = np.zeros(channels, np.int64)
    return Fit(EMULATED, scale.reshape(-1), zero, zout, *bounds, scale=scale.reshape(-1))


def _apply(fit: Fit, x: np.ndarray, chain: Chain, out_dtype: str) -> np.ndarray:
    src = dtype_of(chain.source)
    return affine.requantize(
        x.astype(src),
        fit.real,
        fit.in_zp,
        np.ones(1),
        fit.out_zp,
        out_dtype,
        fit.rounding,
        axis=0,
        out_min=fit.out_min,
        out_max=fit.out_max,
    ).astype(np.int64)


def _inexact(chain, steps, scale, zin, zout, bounds, src_range, out_dtype) -> Proof:
    """Nearest multiplier, upward rounding; the exact worst difference from the thresholds."""
    xmin, xmax = src_range
    channels = scale.size
    _, e = np.frexp(scale)
    total = np.clip(31 - e, 1, 62)
    real = np.round(scale * 2.0**total) * 2.0**-total
    fit = Fit("upward", real, zin, zout, *bounds)
    lo_x = np.full((channels, 1), xmin, dtype=np.int64)
    hi_x = np.full((channels, 1), xmax, dtype=np.int64)
    levels = bounds[0] + 1 + np.arange(bounds[1] - bounds[0])[None, :].repeat(channels, 0)
    t_f = thresholds(lambda x: evaluate(steps, x), lo_x, hi_x, levels)
    t_g = thresholds(lambda x: _apply(fit, x, chain, out_dtype), lo_x, hi_x, levels)
    worst, differing, witness = 0, 0, None
    for c in range(channels):
        f_sorted, g_sorted = np.sort(t_f[c]), np.sort(t_g[c])
        cuts = np.unique(np.concatenate([[xmin], t_f[c], t_g[c]]))
        cuts = cuts[cuts <= xmax]
        diff = np.searchsorted(g_sorted, cuts, "right") - np.searchsorted(f_sorted, cuts, "right")
        widths = np.diff(np.append(cuts, xmax + 1))
        worst = max(worst, int(np.abs(diff).max()))
        differing += int(widths[diff != 0].sum())
        if witness is None and np.any(diff != 0):
            witness = int(cuts[diff != 0][0])
    return Proof(fit, False, int(t_f.size), worst, differing, witness)

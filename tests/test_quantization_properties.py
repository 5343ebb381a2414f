"""Property tests of the reference arithmetic against independent pure-Python integer code.

The oracles below are written from the specs (TFLite's common.h / quantization_util.cc as
summarised in tflite-integer-semantics.md, and Relay's qnn/utils.cc FixedPointMultiply for
UPWARD/TONEAREST) with Python ints and exact fractions: no numpy, no shared helpers.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tvm_qnn_ext.quantization import (
    QuantizationParamError,
    dequantize,
    multiply_by_quantized_multiplier,
    quantize,
    quantize_multiplier,
    requantize,
)

I32_MIN, I32_MAX = -(2**31), 2**31 - 1
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------ independent oracles


def c_div(a: int, b: int) -> int:
    """C integer division: truncates toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def wrap32(v: int) -> int:
    return (v + 2**31) % 2**32 - 2**31


def round_half_away(f: Fraction) -> int:
    """std::round on an exact value."""
    n = math.floor(abs(f) + Fraction(1, 2))
    return n if f >= 0 else -n


def ref_quantize_multiplier(real: float, single_rounding: bool = False) -> tuple[int, int]:
    """TFLite QuantizeMultiplier (quantization_util.cc)."""
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    m = round_half_away(Fraction(q) * 2**31)
    assert abs(m) <= 2**31
    if abs(m) == 2**31:
        m //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if single_rounding and shift > 30:
        return I32_MAX, 30
    return m, shift


def srdhm(a: int, b: int) -> int:
    """gemmlowp SaturatingRoundingDoublingHighMul."""
    if a == b == I32_MIN:
        return I32_MAX
    ab = a * b
    nudge = 2**30 if ab >= 0 else 1 - 2**30
    return c_div(ab + nudge, 2**31)


def rounding_divide_by_pot(x: int, e: int) -> int:
    mask = (1 << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if remainder > threshold else 0)


def ref_mbqm(x: int, m: int, shift: int, rounding: str) -> int:
    """MultiplyByQuantizedMultiplier in each rounding mode, returning an exact Python int."""
    if rounding == "tflite":
        left, right = max(shift, 0), max(-shift, 0)
        # x * (1 << left) is done in int32: two's complement wrap on overflow.
        return rounding_divide_by_pot(srdhm(wrap32(x * (1 << left)), m), right)
    if rounding == "tflite_neon":
        # LiteRT's optimized kernels: vqrdmulh (== SRDHM), then vrshl by -right: a rounding
        # shift whose ties go toward +inf.
        left, right = max(shift, 0), max(-shift, 0)
        high = srdhm(wrap32(x * (1 << left)), m)
        return high if right == 0 else math.floor(Fraction(high, 2**right) + Fraction(1, 2))
    # One rounding of the exact value x * m / 2^(31 - shift).
    value = Fraction(x * m, 2 ** (31 - shift))
    if rounding in ("tflite_single", "upward"):
        # TFLite single rounding: (x*M + 2^(30-shift)) >> (31-shift).
        # Relay UPWARD: (x<<left)*M + 2^(total-1) >> total.  Both: half toward +inf.
        return math.floor(value + Fraction(1, 2))
    if rounding == "tonearest":
        # Relay TONEAREST: rounder 2^(t-1) for >= 0, 2^(t-1) - 1 for < 0: ties away from zero.
        return round_half_away(value)
    raise AssertionError(rounding)


def relay_fixed_point_multiply(x: int, m: int, shift: int, rounding: str) -> int:
    """Relay qnn/utils.cc FixedPointMultiply transcribed literally (int64 arithmetic)."""
    left, right = (shift, 0) if shift > 0 else (0, -shift)
    t = x << left
    scaled = t * m
    total = right + 31
    pos = 1 << (total - 1)
    if rounding == "upward":
        rnd = pos
    else:
        rnd = pos if scaled >= 0 else pos - 1
    return (scaled + rnd) >> total


def saturate32(v: int) -> int:
    return max(I32_MIN, min(I32_MAX, v))


# ---------------------------------------------------------------------------- strategies

int32s = st.one_of(
    st.integers(I32_MIN, I32_MAX),
    st.sampled_from([I32_MIN, I32_MIN + 1, -1, 0, 1, I32_MAX - 1, I32_MAX, 2**30, -(2**30)]),
    st.integers(-(2**16), 2**16),
)
# normalised Q31 multipliers in [2^30, 2^31), with extra weight near 2^31
multipliers = st.one_of(
    st.integers(2**30, I32_MAX),
    st.integers(I32_MAX - 64, I32_MAX),
    st.sampled_from([2**30, 2**30 + 1, I32_MAX]),
)
shifts = st.integers(-31, 30)
MODES = ("tflite", "tflite_neon", "tflite_single", "upward", "tonearest")
DOUBLE = ("tflite", "tflite_neon")  # two roundings, int32 left shift that may wrap
triples = st.lists(st.tuples(int32s, multipliers, shifts), min_size=1, max_size=64)


def _ours(xs, ms, ss, rounding):
    out = multiply_by_quantized_multiplier(
        np.array(xs, np.int64), np.array(ms, np.int64), np.array(ss, np.int64), rounding
    )
    assert out.dtype == np.int32
    return [int(v) for v in out]


# ------------------------------------------------------------ fixed-point multiplication


@pytest.mark.parametrize("rounding", MODES)
@SETTINGS
@given(cases=triples)
def test_mbqm_matches_independent_ints(rounding, cases):
    xs, ms, ss = zip(*cases, strict=True)
    got = _ours(xs, ms, ss, rounding)
    for x, m, s, g in zip(xs, ms, ss, got, strict=True):
        want = ref_mbqm(x, m, s, rounding)
        if rounding not in DOUBLE:
            # one-rounding modes compute exactly and saturate to int32 (TFLite DCHECKs,
            # Relay wraps: neither defines an out-of-range result)
            want = saturate32(want)
        assert g == want, (x, m, s)


@SETTINGS
@given(cases=triples)
def test_upward_and_tonearest_equal_relay_literal_transcription(cases):
    """Where Relay's int64 arithmetic does not overflow and the result fits int32."""
    xs, ms, ss = zip(*cases, strict=True)
    for rounding in ("upward", "tonearest"):
        got = _ours(xs, ms, ss, rounding)
        for x, m, s, g in zip(xs, ms, ss, got, strict=True):
            want = relay_fixed_point_multiply(x, m, s, rounding)
            if abs((x << max(s, 0)) * m) < 2**63 and I32_MIN <= want <= I32_MAX:
                assert g == want, (rounding, x, m, s)


def test_mbqm_exhaustive_edge_grid():
    """Every combination of edge inputs, multipliers and all 62 shifts."""
    xs = [I32_MIN, I32_MIN + 1, -(2**30) - 1, -(2**30), -3, -2, -1, 0, 1, 2, 3, 2**30, I32_MAX]
    ms = [0, 1, 2**30, 2**30 + 1, 3 * 2**29, I32_MAX - 1, I32_MAX]
    grid = [(x, m, s) for x in xs for m in ms for s in range(-31, 31)]
    gx, gm, gs = zip(*grid, strict=True)
    for rounding in MODES:
        got = _ours(gx, gm, gs, rounding)
        want = [ref_mbqm(x, m, s, rounding) for x, m, s in grid]
        if rounding not in DOUBLE:
            want = [saturate32(w) for w in want]
        assert got == want, rounding


@pytest.mark.parametrize("rounding", MODES)
@SETTINGS
@given(cases=triples)
def test_mbqm_error_bounds(rounding, cases):
    """Semantic check: within 1 (double rounding) or 1/2 (single) of the exact product."""
    xs, ms, ss = zip(*cases, strict=True)
    got = _ours(xs, ms, ss, rounding)
    bound = Fraction(1) if rounding in DOUBLE else Fraction(1, 2)
    for x, m, s, g in zip(xs, ms, ss, got, strict=True):
        exact = Fraction(x * m, 2 ** (31 - s))
        if rounding in DOUBLE and wrap32(x << max(s, 0)) != x << max(s, 0):
            continue  # TFLite's int32 left shift wrapped: no accuracy promise
        if I32_MIN <= exact <= I32_MAX and not (x == I32_MIN and m == I32_MIN):
            assert abs(g - exact) <= bound, (x, m, s)


def test_tflite_known_values():
    half = quantize_multiplier(0.5)
    quarter = quantize_multiplier(0.25)
    assert [(int(m), int(s)) for m, s in (half, quarter)] == [(2**30, 0), (2**30, -1)]
    # SaturatingRoundingDoublingHighMul alone (shift 0): its nudge 1 - 2^30 sends negative
    # ties toward zero, -2.5 -> -2, while positive ties go up, 2.5 -> 3
    assert _ours([5, -5, 3, -3], [half[0]] * 4, [half[1]] * 4, "tflite") == [3, -2, 2, -1]
    # RoundingDivideByPOT (shift < 0) rounds ties away from zero: +-2.5 -> +-3
    assert _ours([10, -10], [quarter[0]] * 2, [quarter[1]] * 2, "tflite") == [3, -3]
    # LiteRT's NEON path shifts with ties up instead: -2.5 -> -2
    assert _ours([10, -10], [quarter[0]] * 2, [quarter[1]] * 2, "tflite_neon") == [3, -2]
    # single rounding / upward: ties toward +inf; tonearest: away from zero
    assert _ours([5, -5], [half[0]] * 2, [half[1]] * 2, "tflite_single") == [3, -2]
    assert _ours([5, -5], [half[0]] * 2, [half[1]] * 2, "upward") == [3, -2]
    assert _ours([5, -5], [half[0]] * 2, [half[1]] * 2, "tonearest") == [3, -3]
    # the lone overflow case of SaturatingRoundingDoublingHighMul
    assert _ours([I32_MIN], [I32_MIN], [0], "tflite") == [I32_MAX]


def test_mbqm_rejects_bad_arguments():
    with pytest.raises(ValueError, match="shift must lie in"):
        multiply_by_quantized_multiplier(np.array([1]), 2**30, 31)
    with pytest.raises(ValueError, match="shift must lie in"):
        multiply_by_quantized_multiplier(np.array([1]), 2**30, -32)
    with pytest.raises(ValueError, match="no fixed-point form"):
        multiply_by_quantized_multiplier(np.array([1]), 2**30, 0, "float")
    with pytest.raises(ValueError, match="unknown rounding mode"):
        multiply_by_quantized_multiplier(np.array([1]), 2**30, 0, "banker")


# ------------------------------------------------------------------- quantize_multiplier

reals = st.one_of(
    st.floats(min_value=2.0**-40, max_value=2.0**32, allow_nan=False, allow_infinity=False),
    st.floats(min_value=1e-4, max_value=4.0),
    # just below a power of two: the significand rounds up to 2^31
    st.integers(-35, 30).map(lambda e: math.ldexp(1.0 - 2.0**-40, e)),
    st.integers(-35, 30).map(lambda e: math.ldexp(1.0, e)),
    st.just(0.0),
)


@pytest.mark.parametrize("rounding", ["tflite", "tflite_single"])
@SETTINGS
@given(values=st.lists(reals, min_size=1, max_size=64))
@example(values=[1.0 - 2.0**-40, 2.0**-32, 2.0**-31, 2.0**31, 0.0019722, 1.0])
def test_quantize_multiplier_matches_independent(rounding, values):
    m, s = quantize_multiplier(np.array(values), rounding)
    assert m.dtype == np.int32
    for v, mi, si in zip(values, m, s, strict=True):
        want = ref_quantize_multiplier(v, single_rounding=rounding == "tflite_single")
        assert (int(mi), int(si)) == want, v
        if want != (0, 0) and not (rounding == "tflite_single" and si == 30 and mi == I32_MAX):
            # the encoding is within half a Q31 unit of the real multiplier
            approx = Fraction(int(mi)) * Fraction(2) ** (int(si) - 31)
            assert abs(approx - Fraction(v)) <= Fraction(2) ** (int(si) - 32)
            assert 2**30 <= int(mi) < 2**31


def test_quantize_multiplier_rejects_non_finite():
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="must be finite"):
            quantize_multiplier(bad)


# ------------------------------------------------------------ quantize / dequantize / requantize

scales_st = st.floats(min_value=1e-6, max_value=1e3, allow_nan=False, allow_infinity=False)
dtype_zp = st.sampled_from(["int8", "uint8", "int16"]).flatmap(
    lambda d: st.tuples(
        st.just(d), st.integers(*{"int8": (-128, 127), "uint8": (0, 255), "int16": (-100, 100)}[d])
    )
)
RANGES = {
    "int8": (-128, 127),
    "uint8": (0, 255),
    "int16": (-32768, 32767),
    "int32": (I32_MIN, I32_MAX),
}


@SETTINGS
@given(scale=scales_st, dz=dtype_zp, seed=st.integers(0, 2**32 - 1))
def test_quantize_matches_round_half_away_and_roundtrips(scale, dz, seed):
    dtype, zp = dz
    lo, hi = RANGES[dtype]
    rng = np.random.default_rng(seed)
    x = (rng.uniform(lo - zp - 4, hi - zp + 4, 64) * scale).astype(np.float32)
    q = quantize(x, scale, zp, dtype)
    assert q.dtype == np.dtype(dtype)
    s32 = float(np.float32(scale))
    for xi, qi in zip(x.tolist(), q.tolist(), strict=True):
        # TFLite: round_half_away(x / s) in float32 division, then + zp, saturate
        div = float(np.float32(xi) / np.float32(s32))
        assert qi == max(lo, min(hi, round_half_away(Fraction(div)) + zp))
    # in range, dequantize(quantize(x)) is within half a step (plus float32 rounding)
    back = dequantize(q, scale, zp)
    inside = (q > lo) & (q < hi)
    err = np.abs(back[inside].astype(np.float64) - x[inside].astype(np.float64))
    assert np.all(err <= 0.5 * s32 * (1 + 1e-5) + 1e-6 * np.abs(x[inside]))
    # every integer survives dequantize -> quantize
    grid = np.arange(lo, hi + 1, max(1, (hi - lo) // 300)).astype(dtype)
    np.testing.assert_array_equal(quantize(dequantize(grid, scale, zp), scale, zp, dtype), grid)


@SETTINGS
@given(
    in_scale=scales_st,
    out_scale=scales_st,
    in_zp=st.integers(-128, 127),
    out_zp=st.integers(-128, 127),
    rounding=st.sampled_from(MODES),
    seed=st.integers(0, 2**32 - 1),
)
def test_requantize_matches_independent_pipeline(
    in_scale, out_scale, in_zp, out_zp, rounding, seed
):
    x = np.random.default_rng(seed).integers(-(2**20), 2**20, 64).astype(np.int32)
    x[:4] = [I32_MIN + 2**20, I32_MAX - 2**20, in_zp, 0]
    got = requantize(x, in_scale, in_zp, out_scale, out_zp, "int8", rounding)
    real = float(np.float64(in_scale) / np.float64(out_scale))
    m, s = ref_quantize_multiplier(real, single_rounding=rounding == "tflite_single")
    if not -31 <= s <= 30:
        return  # multiplier out of the fixed-point range: requantize must not be used
    for xi, gi in zip(x.tolist(), got.tolist(), strict=True):
        v = ref_mbqm(xi - in_zp, m, s, rounding)
        if rounding not in DOUBLE:
            v = saturate32(v)
        assert gi == max(-128, min(127, v + out_zp)), xi


@SETTINGS
@given(scale=scales_st, zp=st.integers(-128, 127), rounding=st.sampled_from(MODES))
def test_requantize_identity_and_monotone(scale, zp, rounding):
    x = np.arange(-128, 128, dtype=np.int8)
    np.testing.assert_array_equal(requantize(x, scale, zp, scale, zp, "int8", rounding), x)
    acc = np.arange(-5000, 5000, 7, dtype=np.int32)
    y = requantize(acc, scale, 0, scale * 3.7, zp, "int8", rounding).astype(np.int64)
    assert np.all(np.diff(y) >= 0)


def test_requantize_per_axis_equals_per_tensor_slices():
    rng = np.random.default_rng(0)
    x = rng.integers(-(2**15), 2**15, (2, 5, 3)).astype(np.int32)
    in_s, out_s = rng.uniform(1e-4, 1e-2, 5), rng.uniform(0.01, 0.2, 5)
    for rounding in MODES + ("float",):
        per_axis = requantize(x, in_s, 0, out_s, 3, "int8", rounding, axis=1)
        for c in range(5):
            ref = requantize(x[:, c], in_s[c], 0, out_s[c], 3, "int8", rounding)
            np.testing.assert_array_equal(per_axis[:, c], ref)


# ------------------------------------------------------------------------------- errors

BAD_SCALES = [0.0, -1.0, float("nan"), float("inf"), -float("inf"), 1e-40, [0.1, 0.0]]


@pytest.mark.parametrize("scale", BAD_SCALES, ids=str)
def test_bad_scales_raise(scale):
    x8 = np.zeros((2, 2), np.int8)
    xf = np.zeros((2, 2), np.float32)
    axis = 1 if isinstance(scale, list) else None
    calls = [
        lambda: quantize(xf, scale, 0, axis=axis),
        lambda: dequantize(x8, scale, 0, axis=axis),
        lambda: requantize(x8, scale, 0, 1.0, 0, axis=axis),
        lambda: requantize(x8, 1.0, 0, scale, 0, axis=axis),
    ]
    for call in calls:
        with pytest.raises(QuantizationParamError, match="scale must be finite"):
            call()


@pytest.mark.parametrize(
    "dtype, zp", [("int8", 128), ("int8", -129), ("uint8", -1), ("uint8", 256), ("int16", 40000)]
)
def test_zero_point_outside_dtype_raises(dtype, zp):
    x = np.zeros(4, np.float32)
    with pytest.raises(QuantizationParamError, match=f"outside the {dtype} range"):
        quantize(x, 0.1, zp, dtype)
    with pytest.raises(QuantizationParamError, match=f"outside the {dtype} range"):
        dequantize(np.zeros(4, dtype), 0.1, zp)
    with pytest.raises(QuantizationParamError, match=f"outside the {dtype} range"):
        requantize(np.zeros(4, np.int32), 0.1, 0, 0.2, zp, dtype)
    with pytest.raises(QuantizationParamError, match=f"outside the {dtype} range"):
        requantize(np.zeros(4, dtype), 0.1, zp, 0.2, 0, "int8")


def test_fractional_zero_point_and_unknown_dtype_raise():
    with pytest.raises(QuantizationParamError, match="must be an integer"):
        quantize(np.zeros(2, np.float32), 0.1, 0.5)
    with pytest.raises(QuantizationParamError, match="unsupported quantized dtype"):
        quantize(np.zeros(2, np.float32), 0.1, 0, "int4")


def test_per_axis_mismatches_raise():
    xf = np.zeros((2, 3), np.float32)
    x8 = np.zeros((2, 3), np.int8)
    x32 = np.zeros((2, 3), np.int32)
    cases = {
        "has 2 values but axis 1 has length 3": [
            lambda: quantize(xf, [0.1, 0.2], 0, axis=1),
            lambda: quantize(xf, [0.1, 0.2, 0.3], [0, 0], axis=1),
            lambda: dequantize(x8, [0.1, 0.2], 0, axis=1),
            lambda: requantize(x32, [0.1, 0.2], 0, 1.0, 0, axis=1),
            lambda: requantize(x32, [0.1] * 3, 0, [1.0, 2.0], 0, axis=-1),
        ],
        "needs an axis": [lambda: quantize(xf, [0.1, 0.2, 0.3], 0)],
        "out of range for a tensor of rank 2": [
            lambda: quantize(xf, [0.1, 0.2, 0.3], 0, axis=2),
            lambda: dequantize(x8, [0.1, 0.2], 0, axis=-3),
        ],
    }
    for message, calls in cases.items():
        for call in calls:
            with pytest.raises(QuantizationParamError, match=message):
                call()

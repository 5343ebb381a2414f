"""TFLite's int8/uint8 non-linear kernels, as LiteRT's builtin resolver computes them.

Every activation here except softmax maps one 8-bit input to one 8-bit output, so its exact form
is a 256-entry table (``table[v - qmin]`` is the output for input value ``v``):

* LOGISTIC, TANH: TFLite fills the table at Prepare time in float32
  (``round(f(s_in * (v - zp_in)) * (1 / s_out)) + zp_out``), with ``expf``/``tanhf``.
* HARD_SWISH: gemmlowp-style 16-bit fixed point with multipliers formed in float32.
* LEAKY_RELU, RELU, RELU6, RELU_N1_TO_1: a requantize (two multipliers for LEAKY_RELU) with
  the real multiplier formed as a float32 quotient, then clamped.

SOFTMAX (last axis) is float32 arithmetic over a 256-entry ``expf`` table: a sequential float32
sum, ``1 / (sum * s_out)``, a product and a rounding.  :func:`softmax` reproduces it with numpy
float32 operations, which round exactly as the C++ kernel does.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .affine import round_half_away
from .fixed_point import multiply_by_quantized_multiplier, quantize_multiplier
from .params import QuantizationParamError, check_scale, check_zero_point, dtype_range

F32 = np.float32
LUT_DTYPES = ("int8", "uint8")


def _check(dtype: str, in_scale, in_zp, out_scale, out_zp, where: str):
    if str(dtype) not in LUT_DTYPES:
        raise QuantizationParamError(f"{where}: dtype must be int8 or uint8, got {dtype!r}")
    check_scale(in_scale, f"{where} input scale")
    check_scale(out_scale, f"{where} output scale")
    check_zero_point(in_zp, dtype, f"{where} input zero point")
    check_zero_point(out_zp, dtype, f"{where} output zero point")
    if np.size(in_scale) != 1 or np.size(out_scale) != 1:
        raise QuantizationParamError(f"{where}: only per-tensor quantization is supported")


def table_inputs(dtype: str) -> np.ndarray:
    """All values of ``dtype`` in order: ``table[i]`` is the output for ``table_inputs[i]``."""
    lo, hi = dtype_range(dtype)
    return np.arange(lo, hi + 1, dtype=np.int64)


def apply_table(x: np.ndarray, table: np.ndarray, dtype: str) -> np.ndarray:
    """Look up each element of the 8-bit tensor ``x``: ``table[x - qmin]``."""
    x = np.asarray(x)
    if str(x.dtype) != str(dtype):
        raise QuantizationParamError(f"apply_table: input dtype {x.dtype} != table dtype {dtype}")
    table = np.asarray(table)
    if table.shape != (256,):
        raise QuantizationParamError(f"apply_table: table must have 256 entries, got {table.shape}")
    return table[x.astype(np.int64) - dtype_range(dtype)[0]]


def float_table(
    transform: Callable[[np.ndarray], np.ndarray],
    in_scale: float,
    in_zp: int,
    out_scale: float,
    out_zp: int,
    dtype: str,
) -> np.ndarray:
    """TFLite's LUTPopulate: ``transform`` gets and returns float32 arrays."""
    v = table_inputs(dtype)
    dequantized = F32(in_scale) * (v - in_zp).astype(F32)
    transformed = np.asarray(transform(dequantized), dtype=F32)
    inverse_scale = F32(1.0) / F32(out_scale)
    rescaled = round_half_away(transformed * inverse_scale)
    q = rescaled.astype(np.int64) + int(out_zp)
    lo, hi = dtype_range(dtype)
    return np.clip(q, lo, hi).astype(dtype)


def _expf(x: np.ndarray) -> np.ndarray:
    """float32 exp, correctly rounded (glibc's expf is, for all the arguments used here);
    overflow gives inf as in C."""
    with np.errstate(over="ignore"):
        return np.exp(np.asarray(x, F32).astype(np.float64)).astype(F32)


def _sigmoid_f32(x: np.ndarray) -> np.ndarray:
    return F32(1.0) / (F32(1.0) + _expf(-x))


def _tanh_f32(x: np.ndarray) -> np.ndarray:
    return np.tanh(np.asarray(x, F32).astype(np.float64)).astype(F32)


def logistic_table(in_scale, in_zp, out_scale, out_zp, dtype: str) -> np.ndarray:
    _check(dtype, in_scale, in_zp, out_scale, out_zp, "logistic")
    return float_table(_sigmoid_f32, in_scale, in_zp, out_scale, out_zp, dtype)


def tanh_table(in_scale, in_zp, out_scale, out_zp, dtype: str) -> np.ndarray:
    _check(dtype, in_scale, in_zp, out_scale, out_zp, "tanh")
    return float_table(_tanh_f32, in_scale, in_zp, out_scale, out_zp, dtype)


def _f32_ratio(a, b) -> float:
    """``a / b`` divided in float32, as C++ does for two float scales, then widened."""
    return float(F32(a) / F32(b))


def _requant_values(v, real: float, out_zp: int) -> np.ndarray:
    m, s = quantize_multiplier(real)
    return multiply_by_quantized_multiplier(v, m, s).astype(np.int64) + int(out_zp)


def relu_table(
    in_scale, in_zp, out_scale, out_zp, dtype: str, lo: float | None = 0.0, hi: float | None = None
) -> np.ndarray:
    """RELU (lo=0), RELU6 (lo=0, hi=6), RELU_N1_TO_1 (lo=-1, hi=1); ``None`` means unbounded."""
    _check(dtype, in_scale, in_zp, out_scale, out_zp, "relu")
    v = table_inputs(dtype)
    y = _requant_values(v - int(in_zp), _f32_ratio(in_scale, out_scale), out_zp)
    qmin, qmax = dtype_range(dtype)
    # quantized_activation_min/max: zp + (int)roundf(bound / scale), float32 division.
    act_min = qmin if lo is None else max(qmin, int(out_zp) + _roundf(F32(lo) / F32(out_scale)))
    act_max = qmax if hi is None else min(qmax, int(out_zp) + _roundf(F32(hi) / F32(out_scale)))
    return np.clip(y, act_min, act_max).astype(dtype)


def _roundf(x) -> int:
    return int(round_half_away(np.asarray(x, F32)))


def leaky_relu_table(alpha: float, in_scale, in_zp, out_scale, out_zp, dtype: str) -> np.ndarray:
    _check(dtype, in_scale, in_zp, out_scale, out_zp, "leaky_relu")
    v = table_inputs(dtype) - int(in_zp)
    # input_scale * alpha / output_scale is evaluated in float32 (all operands are float).
    alpha_real = float(F32(F32(in_scale) * F32(alpha)) / F32(out_scale))
    ident = _requant_values(v, _f32_ratio(in_scale, out_scale), out_zp)
    neg = _requant_values(v, alpha_real, out_zp)
    lo, hi = dtype_range(dtype)
    return np.clip(np.where(v >= 0, ident, neg), lo, hi).astype(dtype)


def _srdhm16(a: np.ndarray, b) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul on int16."""
    ab = a.astype(np.int64) * int(b)
    nudge = np.where(ab >= 0, 1 << 14, 1 - (1 << 14))
    s = ab + nudge
    high = np.where(s >= 0, s >> 15, -((-s) >> 15))
    return np.where((a == -32768) & (b == -32768), 32767, high)


def _sdhm16(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SaturatingDoublingHighMul: truncating (toward zero) instead of rounding."""
    ab = a.astype(np.int64) * b.astype(np.int64)
    high = np.where(ab >= 0, ab >> 15, -((-ab) >> 15))
    return np.where((a == -32768) & (b == -32768), 32767, high)


def _rdbpot16(x: np.ndarray, e: int) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT on int16: the mask is formed in int16, so for e >= 16 it
    wraps to -1 (the result becomes -1 for x < 0 and 1 otherwise), as LiteRT computes."""
    mask = int(_wrap16(np.int64((1 << e) - 1)))
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + ((x & mask) > threshold)


def _sat16(x: np.ndarray) -> np.ndarray:
    return np.clip(x, -32768, 32767)


def _wrap16(x: np.ndarray) -> np.ndarray:
    return ((x + 32768) % 65536) - 32768


def _to_int16_multiplier(m32: int) -> int:
    if m32 >= 2**31 - 1 - (1 << 15):
        return 32767
    return (m32 + (1 << 15)) >> 16


def hard_swish_params(in_scale, out_scale) -> tuple[int, int, int, int]:
    """(output multiplier int16, output exponent, reluish multiplier int16, reluish exponent)."""
    hires = F32(F32(1.0) / F32(128.0)) * F32(in_scale)
    out_m, out_e = quantize_multiplier(float(hires / F32(out_scale)))
    rel_m, rel_e = quantize_multiplier(float(hires / F32(F32(3.0) / F32(32768.0))))
    if int(out_e) > 0:
        raise QuantizationParamError(
            f"hard_swish: input_scale / output_scale = {in_scale / out_scale:.4g} is too large; "
            "TFLite requires input_scale < 128 * output_scale"
        )
    return (
        _to_int16_multiplier(int(out_m)),
        int(out_e),
        _to_int16_multiplier(int(rel_m)),
        int(rel_e),
    )


def hard_swish_table(in_scale, in_zp, out_scale, out_zp, dtype: str) -> np.ndarray:
    _check(dtype, in_scale, in_zp, out_scale, out_zp, "hard_swish")
    out_m, out_e, rel_m, rel_e = hard_swish_params(in_scale, out_scale)
    hires = (table_inputs(dtype) - int(in_zp)) * 128
    preshift_out = _srdhm16(hires, out_m)
    reluish = hires
    if rel_e > 0:
        reluish = _sat16(reluish * (1 << (rel_e - 1)))
    reluish = _srdhm16(reluish, rel_m)
    if rel_e > 0:
        reluish = _sat16(reluish * 2)
    if rel_e < 0:
        reluish = _rdbpot16(reluish, -rel_e)
    reluish = (reluish + (1 << 15)) >> 1
    out = _rdbpot16(_sdhm16(reluish, preshift_out), -out_e)
    out = _wrap16(out + int(out_zp))  # TFLite adds the zero point in int16
    lo, hi = dtype_range(dtype)
    return np.clip(out, lo, hi).astype(dtype)


def _table_op(make_table):
    def op(x, *params, dtype: str | None = None, **kw):
        dtype = str(np.asarray(x).dtype) if dtype is None else dtype
        return apply_table(x, make_table(*params, dtype, **kw), dtype)

    return op


def logistic(x: np.ndarray, in_scale, in_zp, out_scale, out_zp, dtype=None) -> np.ndarray:
    """TFLite LOGISTIC (int8/uint8).  LiteRT requires ``out_scale == 1/256``."""
    return _table_op(logistic_table)(x, in_scale, in_zp, out_scale, out_zp, dtype=dtype)


def tanh(x: np.ndarray, in_scale, in_zp, out_scale, out_zp, dtype=None) -> np.ndarray:
    return _table_op(tanh_table)(x, in_scale, in_zp, out_scale, out_zp, dtype=dtype)


def hard_swish(x: np.ndarray, in_scale, in_zp, out_scale, out_zp, dtype=None) -> np.ndarray:
    return _table_op(hard_swish_table)(x, in_scale, in_zp, out_scale, out_zp, dtype=dtype)


def leaky_relu(x: np.ndarray, alpha, in_scale, in_zp, out_scale, out_zp, dtype=None):
    return _table_op(leaky_relu_table)(x, alpha, in_scale, in_zp, out_scale, out_zp, dtype=dtype)


def relu(x: np.ndarray, in_scale, in_zp, out_scale, out_zp, dtype=None, lo=0.0, hi=None):
    """RELU/RELU6/RELU_N1_TO_1 with requantization; ``lo``/``hi`` are real-valued bounds."""
    return _table_op(relu_table)(x, in_scale, in_zp, out_scale, out_zp, dtype=dtype, lo=lo, hi=hi)


def softmax_exp_table(in_scale, beta) -> np.ndarray:
    """PopulateSoftmaxLookupTable: ``table[255 - d] = expf(-s_in * beta * d)`` as float32."""
    scale = -F32(in_scale) * F32(beta)
    d = np.arange(256, dtype=F32)
    return _expf(scale * d)[::-1].copy()


def softmax(
    x: np.ndarray, beta, in_scale, in_zp, out_scale, out_zp, dtype: str | None = None
) -> np.ndarray:
    """TFLite SOFTMAX (int8/uint8, last axis), as optimized_ops::Softmax on x86.

    The input zero point cancels out.  uint8 outputs round as ``(int)(p + 0.5f)`` (the kernel
    built for non-aarch64 targets), int8 ones with ``std::round``.  LiteRT only accepts output
    scale 1/256 with zero point -128 (int8) or 0 (uint8); other values follow the same formula
    (for uint8 the x86 kernel would drop the zero point, here it is added).
    """
    x = np.asarray(x)
    dtype = str(x.dtype) if dtype is None else str(dtype)
    _check(dtype, in_scale, in_zp, out_scale, out_zp, "softmax")
    if str(x.dtype) != dtype or x.ndim < 1:
        raise QuantizationParamError(f"softmax: input must be a {dtype} tensor of rank >= 1")
    table = softmax_exp_table(in_scale, beta)
    xi = x.astype(np.int64)
    e = table[255 - xi.max(axis=-1, keepdims=True) + xi]
    total = np.zeros(e.shape[:-1], F32)
    for j in range(e.shape[-1]):  # sequential float32 sum, as the kernel's loop
        total = total + e[..., j]
    inv = F32(1.0) / (total * F32(out_scale))
    prob = e * inv[..., None]
    prob = np.minimum(prob, F32(2.0**30))  # saturates below anyway; keeps the casts defined
    if dtype == "uint8":
        q = np.floor(prob + F32(0.5)).astype(np.int64) + int(out_zp)
    else:
        q = round_half_away(prob).astype(np.int64) + int(out_zp)
    lo, hi = dtype_range(dtype)
    return np.clip(q, lo, hi).astype(dtype)

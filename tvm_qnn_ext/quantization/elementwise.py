"""Reference kernels for quantized add, subtract, multiply and concatenate.

Each rounding mode reproduces one framework:

* ``"tflite"`` / ``"tflite_single"``: LiteRT's builtin int8/uint8/int16 kernels.  ADD/SUB bring
  both inputs to a common scale ``2 * max(s1, s2)`` with ``x << left_shift`` (20 for 8-bit,
  15 for int16) and a multiplier below one, add, then rescale by ``2 * max / (2^ls * s_out)``.
  MUL rescales ``(x1 - zp1) * (x2 - zp2)`` by ``float32(float32(s1 * s2) / s_out)`` (TFLite
  forms that multiplier in single precision).
* ``"upward"`` / ``"tonearest"``: Relay QNN.  add/subtract requantize each input to the output
  (scale, zero point) in int32 and combine; multiply requantizes the product from scale
  ``float32(s1 * s2)``.
* ``"float"``: PyTorch.  add/subtract: ``float32(x - zp) * s`` for both inputs, combine in
  float32, ``rint(y * float32(1 / s_out)) + zp_out``.  multiply: ``rint(float32(c) * m) + zp``
  with ``c`` the integer product and ``m = float32(s1 * s2) * float32(1 / s_out)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .affine import requantize, round_half_away, saturate
from .fixed_point import (
    INTEGER_MODES,
    check_rounding,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
)
from .params import check_scale, check_zero_point, dtype_range

ELEMENTWISE_DTYPES = ("int8", "uint8", "int16")


def op_rounding(rounding: str) -> str:
    """The mode these ops compute in.  ``tflite_neon`` names LiteRT's optimized kernels, which
    for these ops is what ``tflite`` already reproduces, so it is an alias."""
    check_rounding(rounding)
    return "tflite" if rounding == "tflite_neon" else rounding


def _scalar_scale(scale, where: str) -> float:
    s = check_scale(scale, where)
    if s.size != 1:
        raise ValueError(f"{where}: per-tensor scale expected, got {s.size} values")
    return float(s.reshape(()))


def _scalar_zp(zp, dtype: str, where: str) -> int:
    z = check_zero_point(zp, dtype, where)
    if z.size != 1:
        raise ValueError(f"{where}: per-tensor zero point expected, got {z.size} values")
    return int(z.reshape(()))


def activation_bounds(
    out_dtype: str, out_min: int | None, out_max: int | None, where: str
) -> tuple[int, int]:
    """The saturation range: the dtype's range narrowed by a fused activation."""
    lo, hi = dtype_range(out_dtype)
    lo = lo if out_min is None else max(lo, int(out_min))
    hi = hi if out_max is None else min(hi, int(out_max))
    if lo > hi:
        raise ValueError(f"{where}: empty output range [{out_min}, {out_max}] for {out_dtype}")
    return lo, hi


@dataclass(frozen=True)
class AddSubParams:
    """TFLite's ADD/SUB fixed-point parameters (``tflite`` and ``tflite_single`` modes)."""

    left_shift: int
    lhs_multiplier: int
    lhs_shift: int
    rhs_multiplier: int
    rhs_shift: int
    out_multiplier: int
    out_shift: int


def tflite_add_sub_params(
    lhs_scale: float, rhs_scale: float, output_scale: float, in_dtype: str, rounding: str
) -> AddSubParams:
    """Multipliers as TFLite's Prepare computes them (double precision from float32 scales)."""
    s1, s2, so = (float(np.float32(s)) for s in (lhs_scale, rhs_scale, output_scale))
    left_shift = 15 if in_dtype == "int16" else 20
    twice_max = 2.0 * max(s1, s2)
    # (1 << left_shift) * output_scale is a float32 product in TFLite.
    denom = float(np.float32(np.float32(1 << left_shift) * np.float32(so)))
    reals = np.array([s1 / twice_max, s2 / twice_max, twice_max / denom])
    m, s = quantize_multiplier(reals, rounding)
    _check_shifts(s, "add/subtract")
    return AddSubParams(
        left_shift, int(m[0]), int(s[0]), int(m[1]), int(s[1]), int(m[2]), int(s[2])
    )


def tflite_mul_multiplier(lhs_scale: float, rhs_scale: float, output_scale: float) -> np.float32:
    """``s1 * s2 / s_out``: TFLite multiplies and divides the float32 scales in float32."""
    return np.float32(np.float32(lhs_scale) * np.float32(rhs_scale)) / np.float32(output_scale)


def tflite_prelu_multipliers(
    input_scale: float, alpha_scale: float, output_scale: float
) -> tuple[float, float]:
    """PRELU's two rescales as TFLite's Prepare forms them from float32 scales in float32:
    ``s_in / s_out`` (x >= zero point) and ``s_in * s_alpha / s_out`` (x below it)."""
    f32 = np.float32
    return (
        float(f32(input_scale) / f32(output_scale)),
        float(tflite_mul_multiplier(input_scale, alpha_scale, output_scale)),
    )


def relay_mul_multiplier(lhs_scale: float, rhs_scale: float, output_scale: float) -> float:
    """Relay's qnn.mul: the product scale is float32, the division is in double."""
    return float(np.float32(np.float32(lhs_scale) * np.float32(rhs_scale))) / float(
        np.float32(output_scale)
    )


def torch_mul_multiplier(lhs_scale: float, rhs_scale: float, output_scale: float) -> np.float32:
    """PyTorch's qmul: ``self_scale * other_scale * (1 / out_scale)``, all float32."""
    inv = np.float32(1.0) / np.float32(output_scale)
    return np.float32(np.float32(lhs_scale) * np.float32(rhs_scale)) * inv


def _check_shifts(shift: np.ndarray, where: str) -> None:
    if np.any((shift < -31) | (shift > 30)):
        raise ValueError(
            f"{where}: scale ratio out of the fixed-point range (shift {shift.tolist()})"
        )


def _check_inputs(lhs: np.ndarray, rhs: np.ndarray, where: str) -> tuple[int, ...]:
    if lhs.dtype != rhs.dtype:
        raise ValueError(f"{where}: lhs is {lhs.dtype} but rhs is {rhs.dtype}")
    if str(lhs.dtype) not in ELEMENTWISE_DTYPES:
        raise ValueError(f"{where}: dtype {lhs.dtype} not in {list(ELEMENTWISE_DTYPES)}")
    try:
        return np.broadcast_shapes(lhs.shape, rhs.shape)
    except ValueError:
        raise ValueError(f"{where}: shapes {lhs.shape} and {rhs.shape} do not broadcast") from None


def _binary(
    kind: str,
    lhs,
    rhs,
    *,
    lhs_scale,
    lhs_zero_point,
    rhs_scale,
    rhs_zero_point,
    output_scale,
    output_zero_point,
    out_dtype: str,
    rounding: str,
    out_min: int | None,
    out_max: int | None,
    litert_simd: bool = False,
) -> np.ndarray:
    where = f"qnn.{kind}"
    rounding = op_rounding(rounding)
    lhs, rhs = np.asarray(lhs), np.asarray(rhs)
    _check_inputs(lhs, rhs, where)
    in_dtype = str(lhs.dtype)
    s1 = _scalar_scale(lhs_scale, f"{where} lhs_scale")
    s2 = _scalar_scale(rhs_scale, f"{where} rhs_scale")
    so = _scalar_scale(output_scale, f"{where} output_scale")
    z1 = _scalar_zp(lhs_zero_point, in_dtype, f"{where} lhs_zero_point")
    z2 = _scalar_zp(rhs_zero_point, in_dtype, f"{where} rhs_zero_point")
    zo = _scalar_zp(output_zero_point, out_dtype, f"{where} output_zero_point")
    lo, hi = activation_bounds(out_dtype, out_min, out_max, where)
    a = lhs.astype(np.int64) - z1
    b = rhs.astype(np.int64) - z2
    if kind == "prelu":
        y = _prelu(a, b, s1, s2, so, rounding)
    elif kind == "multiply":
        y = _multiply(a * b, s1, s2, so, rounding)
    elif rounding in ("tflite", "tflite_single"):
        loop = None
        if litert_simd and rounding == "tflite" and in_dtype in LITERT_ADD_LANES:
            loop = litert_add_loop(lhs.shape, rhs.shape, in_dtype)
        y = _tflite_add_sub(kind, a, b, s1, s2, so, in_dtype, rounding, loop)
    elif rounding in INTEGER_MODES:
        y = _relay_add_sub(kind, a, b, s1, s2, so, rounding)
    else:
        y = _float_add_sub(kind, a, b, s1, s2, so)
    return saturate(y + zo, out_dtype, lo, hi)


LITERT_ADD_LANES = {"int8": 16, "uint8": 8}
LITERT_SCALAR_BROADCAST_LANES = 8


@dataclass(frozen=True)
class LiteRTAddLoop:
    """How LiteRT's optimized ADD walks the (row-major) output: in rows of ``row`` elements,
    the first ``simd`` of each row in a SIMD loop and the rest in a scalar tail with TFLite's
    reference arithmetic.

    ``kind`` is ``"elementwise"`` (both operands vary along the row: ``AddElementwise``),
    ``"scalar_broadcast"`` (one operand is one value per row: ``AddScalarBroadcast``, 8 lanes)
    or ``"generic"`` (shapes no fivefold loop fits: the reference kernel everywhere)."""

    kind: str
    row: int
    simd: int

    def mask(self, out_shape) -> np.ndarray:
        size = int(np.prod(out_shape, dtype=np.int64))
        return (np.arange(size) % max(self.row, 1) < self.simd).reshape(out_shape)


def _fivefold(a: list[int], b: list[int]) -> list[int] | None:
    """LiteRT's ProcessBroadcastShapes: the dims folded, innermost first, into
    ``(y0, y1, y2, y3, y4)``; ``a`` is the operand broadcast along y3, ``b`` the one possibly
    broadcast along y1.  None if no fivefold loop fits (LiteRT's generic kernel)."""
    y, i = [1] * 5, len(a) - 1

    def fold(slot: int, same: bool, ones: list[int] | None, dims: list[int]) -> None:
        nonlocal i
        while i >= 0 and (a[i] == b[i] if same else ones[i] == 1):
            y[slot] *= dims[i]
            i -= 1

    fold(4, True, None, b)
    fold(3, False, a, b)
    fold(2, True, None, a)
    fold(1, False, b, a)
    fold(0, True, None, b)
    return None if i >= 0 else y


def litert_add_loop(lhs_shape, rhs_shape, in_dtype: str) -> LiteRTAddLoop:
    """The loop LiteRT's optimized 8-bit ADD kernel runs for these operand shapes."""
    a, b = [int(d) for d in lhs_shape], [int(d) for d in rhs_shape]
    n = max(len(a), len(b))
    a, b = [1] * (n - len(a)) + a, [1] * (n - len(b)) + b
    out = np.broadcast_shapes(tuple(a), tuple(b))
    lanes = LITERT_ADD_LANES[in_dtype]
    if a == b:
        total = int(np.prod(out, dtype=np.int64))
        return LiteRTAddLoop("elementwise", total, lanes * (total // lanes))
    first = next(i for i in reversed(range(n)) if a[i] != b[i])
    y = _fivefold(a, b) if a[first] == 1 else _fivefold(b, a)
    if y is None:
        return LiteRTAddLoop("generic", 1, 0)
    if y[4] > 1:
        return LiteRTAddLoop("elementwise", y[4], lanes * (y[4] // lanes))
    sb = LITERT_SCALAR_BROADCAST_LANES
    return LiteRTAddLoop("scalar_broadcast", y[3], sb * (y[3] // sb))


def simd_rescale(x: np.ndarray, m: int, s: int, in_dtype: str, kind: str) -> np.ndarray:
    """The input rescale inside LiteRT's ADD SIMD loops (``x`` already shifted left by 20).

    int8 ``AddElementwise`` shifts by ``20 + s`` before one rounding doubling multiply (a
    single rounding); uint8 ``AddElementwise`` and both dtypes' ``AddScalarBroadcast`` take
    SaturatingRoundingDoublingHighMul and then an arithmetic (flooring) right shift."""
    if in_dtype == "int8" and kind == "elementwise":
        return multiply_by_quantized_multiplier(x, m, s, "tflite_single").astype(np.int64)
    high = (x.astype(np.int64) * np.int64(m) + (1 << 30)) >> 31  # SRDHM, ties away from 0
    return high >> max(-int(s), 0) << max(int(s), 0)


def _tflite_add_sub(kind, a, b, s1, s2, so, in_dtype, rounding, loop=None) -> np.ndarray:
    p = tflite_add_sub_params(s1, s2, so, in_dtype, rounding)
    mbqm = multiply_by_quantized_multiplier
    out_shape = np.broadcast_shapes(a.shape, b.shape)
    a, b = np.broadcast_to(a, out_shape), np.broadcast_to(b, out_shape)

    def rescale(x, m, s):
        y = mbqm(x << p.left_shift, m, s, rounding).astype(np.int64)
        if loop is not None and loop.simd:
            fast = simd_rescale(x << p.left_shift, m, s, in_dtype, loop.kind)
            y = np.where(loop.mask(out_shape), fast, y)
        return y

    a = rescale(a, p.lhs_multiplier, p.lhs_shift)
    b = rescale(b, p.rhs_multiplier, p.rhs_shift)
    raw = a + b if kind == "add" else a - b
    return mbqm(raw, p.out_multiplier, p.out_shift, rounding).astype(np.int64)


def _relay_add_sub(kind, a, b, s1, s2, so, rounding) -> np.ndarray:
    # Both inputs are rescaled to the output scale around zero; Relay's "+ zp_out" on each input
    # and "- zp_out" after the sum cancel exactly in int32.
    mbqm = multiply_by_quantized_multiplier
    (m1, m2), (sh1, sh2) = quantize_multiplier(np.array([s1 / so, s2 / so]), rounding)
    _check_shifts(np.array([sh1, sh2]), f"qnn.{kind}")
    a = mbqm(a, m1, sh1, rounding).astype(np.int64)
    b = mbqm(b, m2, sh2, rounding).astype(np.int64)
    return a + b if kind == "add" else a - b


def _float_add_sub(kind, a, b, s1, s2, so) -> np.ndarray:
    da = a.astype(np.float32) * np.float32(s1)
    db = b.astype(np.float32) * np.float32(s2)
    y = da + db if kind == "add" else da - db
    q = np.rint(y * (np.float32(1.0) / np.float32(so)))
    return np.clip(q, -(2.0**40), 2.0**40).astype(np.int64)


def _multiply(prod: np.ndarray, s1, s2, so, rounding) -> np.ndarray:
    if rounding in ("tflite", "tflite_single"):
        real = float(tflite_mul_multiplier(s1, s2, so))
    elif rounding in INTEGER_MODES:
        real = relay_mul_multiplier(s1, s2, so)
    else:
        q = np.rint(prod.astype(np.float32) * torch_mul_multiplier(s1, s2, so))
        return np.clip(q, -(2.0**40), 2.0**40).astype(np.int64)
    m, s = quantize_multiplier(real, rounding)
    _check_shifts(np.asarray(s), "qnn.multiply")
    return multiply_by_quantized_multiplier(prod, m, s, rounding).astype(np.int64)


def _prelu(a, b, s1, s2, so, rounding) -> np.ndarray:
    if rounding not in INTEGER_MODES:
        raise ValueError(f"qnn.prelu: rounding {rounding!r} is not supported (integer modes only)")
    (m1, m2), (sh1, sh2) = quantize_multiplier(
        np.array(tflite_prelu_multipliers(s1, s2, so)), rounding
    )
    _check_shifts(np.array([sh1, sh2]), "qnn.prelu")
    a, b = np.broadcast_arrays(a, b)
    pos = multiply_by_quantized_multiplier(a, m1, sh1, rounding).astype(np.int64)
    neg = multiply_by_quantized_multiplier(a * b, m2, sh2, rounding).astype(np.int64)
    return np.where(a >= 0, pos, neg)


def add(
    lhs,
    rhs,
    *,
    lhs_scale,
    lhs_zero_point,
    rhs_scale,
    rhs_zero_point,
    output_scale,
    output_zero_point,
    out_dtype: str = "int8",
    rounding: str = "tflite",
    out_min: int | None = None,
    out_max: int | None = None,
    litert_simd: bool = False,
) -> np.ndarray:
    """Quantized ``lhs + rhs`` with numpy broadcasting; see the module doc for the modes.

    ``litert_simd=True`` (rounding ``"tflite"``, int8/uint8) reproduces LiteRT's optimized ADD,
    whose SIMD loops rescale the inputs differently (:func:`litert_add_loop`)."""
    return _binary("add", **locals())


def subtract(
    lhs,
    rhs,
    *,
    lhs_scale,
    lhs_zero_point,
    rhs_scale,
    rhs_zero_point,
    output_scale,
    output_zero_point,
    out_dtype: str = "int8",
    rounding: str = "tflite",
    out_min: int | None = None,
    out_max: int | None = None,
) -> np.ndarray:
    """Quantized ``lhs - rhs`` with numpy broadcasting."""
    return _binary("subtract", **locals())


def multiply(
    lhs,
    rhs,
    *,
    lhs_scale,
    lhs_zero_point,
    rhs_scale,
    rhs_zero_point,
    output_scale,
    output_zero_point,
    out_dtype: str = "int8",
    rounding: str = "tflite",
    out_min: int | None = None,
    out_max: int | None = None,
) -> np.ndarray:
    """Quantized ``lhs * rhs`` with numpy broadcasting."""
    return _binary("multiply", **locals())


def tflite_concat_rescale(x: np.ndarray, in_scale, in_zp, out_scale, out_zp) -> np.ndarray:
    """TFLite's uint8 CONCATENATION rescale, in float32 exactly as the kernel does it:
    ``round_half_away(float32(x * scale) + bias) + out_zp`` with
    ``scale = float32(s_in * float32(1 / s_out))`` and ``bias = float32(-zp_in * scale)``."""
    inv = np.float32(1.0) / np.float32(out_scale)
    scale = np.float32(np.float32(in_scale) * inv)
    bias = np.float32(np.float32(-int(in_zp)) * scale)
    v = (np.asarray(x).astype(np.float32) * scale).astype(np.float32) + bias
    return round_half_away(v).astype(np.int64) + int(out_zp)


def concatenate(
    tensors: Sequence[np.ndarray],
    *,
    axis: int,
    input_scales: Sequence[float],
    input_zero_points: Sequence[int],
    output_scale: float,
    output_zero_point: int,
    out_dtype: str = "int8",
    rounding: str = "tflite",
) -> np.ndarray:
    """Concatenate quantized tensors along ``axis``, rescaling inputs whose (scale, zero point)
    differ from the output's.

    ``"tflite"``/``"tflite_single"`` rescale 8-bit inputs with TFLite's float32 formula
    (:func:`tflite_concat_rescale`; TFLite itself only allows it for uint8, int8 must match) and
    int16 inputs with the fixed-point requantize; the other modes use :func:`requantize` in
    that mode (Relay's qnn.concatenate, PyTorch's float rescale).
    """
    where = "qnn.concatenate"
    rounding = op_rounding(rounding)
    tensors = [np.asarray(t) for t in tensors]
    n = len(tensors)
    if n == 0:
        raise ValueError(f"{where}: needs at least one tensor")
    if len(input_scales) != n or len(input_zero_points) != n:
        raise ValueError(
            f"{where}: {n} tensors but {len(input_scales)} scales and "
            f"{len(input_zero_points)} zero points"
        )
    ndim = tensors[0].ndim
    if not -ndim <= axis < ndim:
        raise ValueError(f"{where}: axis {axis} out of range for rank {ndim}")
    so = _scalar_scale(output_scale, f"{where} output_scale")
    zo = _scalar_zp(output_zero_point, out_dtype, f"{where} output_zero_point")
    parts = []
    for i, t in enumerate(tensors):
        dt = str(t.dtype)
        if dt not in ELEMENTWISE_DTYPES:
            raise ValueError(f"{where}: input {i} has dtype {dt}")
        si = _scalar_scale(input_scales[i], f"{where} input_scales[{i}]")
        zi = _scalar_zp(input_zero_points[i], dt, f"{where} input_zero_points[{i}]")
        if np.float32(si) == np.float32(so) and zi == zo:
            parts.append(saturate(t.astype(np.int64), out_dtype))
        elif rounding in ("tflite", "tflite_single") and dt != "int16":
            parts.append(saturate(tflite_concat_rescale(t, si, zi, so, zo), out_dtype))
        else:
            parts.append(requantize(t, si, zi, so, zo, out_dtype, rounding))
    try:
        return np.concatenate(parts, axis=axis)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def prelu(
    lhs,
    rhs,
    *,
    lhs_scale,
    lhs_zero_point,
    rhs_scale,
    rhs_zero_point,
    output_scale,
    output_zero_point,
    out_dtype: str = "int8",
    rounding: str = "tflite",
    out_min: int | None = None,
    out_max: int | None = None,
) -> np.ndarray:
    """TFLite's quantized PRELU of input ``lhs`` with slope ``rhs`` (broadcast): ``x - zp`` at
    or above zero is rescaled by ``s_in / s_out``, below zero ``(x - zp) * (alpha - zp_a)`` by
    ``s_in * s_alpha / s_out`` (:func:`tflite_prelu_multipliers`)."""
    return _binary("prelu", **locals())

"""Small TFLite conventions shared by the converters: padding, fused activations."""

from __future__ import annotations

import numpy as np

from ...quantization import dtype_range, round_half_away
from .reader import Quant

FUSED_NONE, FUSED_RELU, FUSED_RELU_N1_TO_1, FUSED_RELU6 = 0, 1, 2, 3
PADDING_SAME, PADDING_VALID = 0, 1


def same_or_valid_padding(
    padding: int, in_hw: tuple[int, int], kernel: tuple[int, int], strides, dilation=(1, 1)
) -> tuple[int, int, int, int]:
    """TFLite's explicit (top, left, bottom, right) padding; the odd pixel goes after."""
    if padding == PADDING_VALID:
        return (0, 0, 0, 0)
    if padding != PADDING_SAME:
        raise ValueError(f"unknown padding scheme {padding}")
    before, after = [], []
    for size, k, s, d in zip(in_hw, kernel, strides, dilation, strict=True):
        eff = (k - 1) * d + 1
        out = (size + s - 1) // s
        total = max(0, (out - 1) * s + eff - size)
        before.append(total // 2)
        after.append(total - total // 2)
    return (before[0], before[1], after[0], after[1])


def activation_range(fused: int, quant: Quant, dtype: str) -> tuple[int | None, int | None]:
    """Saturation bounds for a fused activation, as CalculateActivationRangeQuantized does."""
    if fused == FUSED_NONE:
        return None, None
    lo, hi = dtype_range(dtype)
    scale = np.float32(quant.scale[0])
    zp = int(quant.zero_point[0])

    def q(f: float) -> int:
        return zp + int(round_half_away(np.float32(f) / scale))

    if fused == FUSED_RELU:
        return max(lo, q(0.0)), hi
    if fused == FUSED_RELU6:
        return max(lo, q(0.0)), min(hi, q(6.0))
    if fused == FUSED_RELU_N1_TO_1:
        return max(lo, q(-1.0)), min(hi, q(1.0))
    raise ValueError(f"fused activation {fused} is not supported")


def check_fused(op) -> str | None:
    fused = op.options.get("fused_activation_function", FUSED_NONE)
    if fused not in (FUSED_NONE, FUSED_RELU, FUSED_RELU_N1_TO_1, FUSED_RELU6):
        return f"fused activation {fused} (only NONE/RELU/RELU6/RELU_N1_TO_1)"
    return None

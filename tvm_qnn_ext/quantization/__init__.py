"""Reference integer arithmetic in numpy: the single source of truth for ops, passes and tests."""

# conv: conv2d/dense accumulators; elementwise: add/sub/mul/concat; pool: pooling, mean
from . import conv, elementwise, pool  # noqa: F401
from .affine import dequantize, quantize, requantize, round_half_away, saturate
from .fixed_point import (
    INTEGER_MODES,
    ROUNDING_MODES,
    check_rounding,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
)
from .params import QuantizationParamError, check_scale, check_zero_point, dtype_range

__all__ = [
    "INTEGER_MODES",
    "ROUNDING_MODES",
    "QuantizationParamError",
    "check_rounding",
    "check_scale",
    "check_zero_point",
    "dequantize",
    "dtype_range",
    "multiply_by_quantized_multiplier",
    "quantize",
    "quantize_multiplier",
    "requantize",
    "round_half_away",
    "saturate",
]

"""Validation and broadcasting of quantization parameters, shared by the reference and the ops."""

from __future__ import annotations

import numpy as np

_RANGES = {
    "int8": (-128, 127),
    "uint8": (0, 255),
    "int16": (-32768, 32767),
    "uint16": (0, 65535),
    "int32": (-(2**31), 2**31 - 1),
}


class QuantizationParamError(ValueError):
    """A scale, zero point or axis that cannot describe a quantized tensor."""


def dtype_range(dtype: str) -> tuple[int, int]:
    try:
        return _RANGES[str(dtype)]
    except KeyError:
        raise QuantizationParamError(
            f"unsupported quantized dtype {dtype!r}; expected one of {sorted(_RANGES)}"
        ) from None


def check_scale(scale, where: str = "scale") -> np.ndarray:
    """Scales must be finite, positive and representable in float32."""
    s = np.atleast_1d(np.asarray(scale, dtype=np.float64))
    bad = ~np.isfinite(s) | (s <= 0) | (s < np.finfo(np.float32).tiny) | (s > 2.0**64)
    if s.size == 0 or bad.any():
        shown = s[bad][:4] if s.size else s
        raise QuantizationParamError(
            f"{where}: scale must be finite and in (1.2e-38, 1.8e19], got {shown.tolist()}"
        )
    return s.reshape(np.shape(scale)) if np.ndim(scale) else s.reshape(())


def check_zero_point(zero_point, dtype: str, where: str = "zero point") -> np.ndarray:
    zp = np.asarray(zero_point)
    if zp.dtype.kind == "f" and not np.all(zp == np.round(zp)):
        raise QuantizationParamError(f"{where}: zero point must be an integer, got {zp.tolist()}")
    zp = zp.astype(np.int64)
    lo, hi = dtype_range(dtype)
    if np.any((zp < lo) | (zp > hi)):
        raise QuantizationParamError(
            f"{where}: zero point {zp.ravel()[:4].tolist()} outside the {dtype} range [{lo}, {hi}]"
        )
    return zp


def broadcast_param(
    p, ndim: int, axis: int | None, dtype=np.float64, *, shape=None, what: str = "parameter"
) -> np.ndarray:
    """Shape a per-tensor (scalar) or per-axis (1-D) parameter to broadcast against a tensor.

    With ``shape`` (the tensor's shape) a per-axis parameter must match its axis' length.
    """
    p = np.asarray(p, dtype=dtype)
    if p.size == 1:
        return p.reshape(())
    if axis is None:
        raise QuantizationParamError(f"per-axis {what} of length {p.size} needs an axis")
    if not -ndim <= axis < ndim:
        raise QuantizationParamError(
            f"per-axis {what}: axis {axis} out of range for a tensor of rank {ndim}"
        )
    axis = axis % ndim
    if shape is not None and shape[axis] != p.size:
        raise QuantizationParamError(
            f"per-axis {what} has {p.size} values but axis {axis} has length {shape[axis]}"
        )
    bshape = [1] * ndim
    bshape[axis] = p.size
    return p.reshape(bshape)


def is_quantized_dtype(dtype) -> bool:
    return str(dtype) in _RANGES

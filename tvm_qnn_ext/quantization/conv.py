"""Reference int32 accumulators of the accumulating ops: conv2d and dense.

Both compute ``bias[c] + sum((x - zp_x) * (w - zp_w[c]))`` exactly in int64 and return int32.
Convolution pads with the input zero point, so padded taps contribute nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .params import QuantizationParamError, check_zero_point

_INT_TYPES = ("int8", "uint8")


def _check_int(a: np.ndarray, what: str, where: str) -> np.ndarray:
    a = np.asarray(a)
    if str(a.dtype) not in _INT_TYPES:
        raise QuantizationParamError(
            f"{where}: {what} has dtype {a.dtype}, expected one of {list(_INT_TYPES)}"
        )
    return a


def _kernel_zp(zp, dtype, channels: int, where: str) -> np.ndarray:
    zp = np.atleast_1d(check_zero_point(zp, str(dtype), f"{where} kernel_zero_point")).ravel()
    if zp.size not in (1, channels):
        raise QuantizationParamError(
            f"{where}: kernel_zero_point has {zp.size} values, expected 1 or {channels}"
        )
    return np.broadcast_to(zp, (channels,)).astype(np.int64)


def _bias(bias, channels: int, where: str) -> np.ndarray:
    if bias is None:
        return np.zeros(channels, np.int64)
    bias = np.asarray(bias)
    if bias.dtype != np.int32 or bias.shape != (channels,):
        raise QuantizationParamError(
            f"{where}: bias must be int32 of shape ({channels},), got {bias.dtype} {bias.shape}"
        )
    return bias.astype(np.int64)


def _to_int32(acc: np.ndarray, where: str) -> np.ndarray:
    if acc.size and (acc.min() < -(2**31) or acc.max() >= 2**31):
        raise OverflowError(f"{where}: accumulator exceeds int32")
    return acc.astype(np.int32)


def conv2d(
    data: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    strides: Sequence[int] = (1, 1),
    padding: Sequence[int] = (0, 0, 0, 0),
    dilation: Sequence[int] = (1, 1),
    groups: int = 1,
    data_layout: str = "NHWC",
    kernel_layout: str = "OHWI",
    input_zero_point: int = 0,
    kernel_zero_point=0,
    out_dtype: str = "int32",
) -> np.ndarray:
    """2-D (grouped) convolution's int32 accumulator; ``padding`` is (top, left, bottom, right).

    ``kernel_layout`` is any ordering of "OIHW"; I is in_channels / groups, and output channel
    ``o`` belongs to group ``o // (O / groups)``.  TFLite's depthwise 1HW(I*M) weight is "IHWO"
    with ``groups == in_channels``.
    """
    where = "conv2d"
    if out_dtype != "int32":
        raise QuantizationParamError(f"{where}: out_dtype must be int32, got {out_dtype}")
    if data_layout not in ("NHWC", "NCHW"):
        raise QuantizationParamError(f"{where}: unsupported data_layout {data_layout!r}")
    if sorted(kernel_layout) != sorted("OIHW"):
        raise QuantizationParamError(f"{where}: unsupported kernel_layout {kernel_layout!r}")
    data = _check_int(data, "data", where)
    weight = _check_int(weight, "weight", where)
    zx = int(check_zero_point(input_zero_point, str(data.dtype), f"{where} input_zero_point"))
    # Canonical NCHW / OIHW, centered by the zero points, in int64.
    x = data.astype(np.int64)
    if data_layout == "NHWC":
        x = x.transpose(0, 3, 1, 2)
    w = weight.astype(np.int64).transpose([kernel_layout.index(a) for a in "OIHW"])
    n, c, h, wd = x.shape
    o, ig, kh, kw = w.shape
    if groups < 1 or c % groups or o % groups or c // groups != ig:
        raise QuantizationParamError(
            f"{where}: {c} input channels, {o} output channels and weight input channels {ig} "
            f"do not fit groups={groups}"
        )
    w = w - _kernel_zp(kernel_zero_point, weight.dtype, o, where)[:, None, None, None]
    pt, pl, pb, pr = padding
    x = np.pad(x - zx, ((0, 0), (0, 0), (pt, pb), (pl, pr)))  # zero after centering == zp_x
    sh, sw = strides
    dh, dw = dilation
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    if oh < 1 or ow < 1:
        raise QuantizationParamError(f"{where}: kernel larger than padded input")
    og = o // groups
    acc = np.zeros((n, o, oh, ow), np.int64)
    for i in range(kh):
        for j in range(kw):
            # Input patch seen by tap (i, j) at every output position: [n, c, oh, ow].
            patch = x[:, :, i * dh :: sh, j * dw :: sw][:, :, :oh, :ow]
            for g in range(groups):
                xs = patch[:, g * ig : (g + 1) * ig]
                ws = w[g * og : (g + 1) * og, :, i, j]
                acc[:, g * og : (g + 1) * og] += np.einsum("nchw,oc->nohw", xs, ws)
    acc += _bias(bias, o, where)[None, :, None, None]
    if data_layout == "NHWC":
        acc = acc.transpose(0, 2, 3, 1)
    return _to_int32(acc, where)


def dense(
    data: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    input_zero_point: int = 0,
    kernel_zero_point=0,
    weight_layout: str = "NK",
    out_dtype: str = "int32",
) -> np.ndarray:
    """``data [..., K]`` times ``weight [N, K]`` ("NK") or ``[K, N]`` ("KN"): int32 ``[..., N]``."""
    where = "dense"
    if out_dtype != "int32":
        raise QuantizationParamError(f"{where}: out_dtype must be int32, got {out_dtype}")
    if weight_layout not in ("NK", "KN"):
        raise QuantizationParamError(f"{where}: unsupported weight_layout {weight_layout!r}")
    data = _check_int(data, "data", where)
    weight = _check_int(weight, "weight", where)
    w = weight.astype(np.int64)
    if weight_layout == "KN":
        w = w.T
    units, k = w.shape
    if data.shape[-1] != k:
        raise QuantizationParamError(f"{where}: data has {data.shape[-1]} features, weight {k}")
    zx = int(check_zero_point(input_zero_point, str(data.dtype), f"{where} input_zero_point"))
    w = w - _kernel_zp(kernel_zero_point, weight.dtype, units, where)[:, None]
    x = data.astype(np.int64) - zx
    acc = np.tensordot(x, w, axes=([-1], [1])) + _bias(bias, units, where)
    return _to_int32(acc, where)


#: the LiteRT builtin kernels of the accumulating ops, as :func:`litert_rounding` names them
LITERT_KERNELS = ("conv", "grouped_conv", "depthwise", "fully_connected")


def litert_rounding(kernel: str, in_dtype: str, channels: int) -> dict:
    """How LiteRT's builtin kernel rounds its requantize, as ``qnn.requantize`` keywords.

    Measured op by op (tests/test_op_conv.py, the differential fuzzer): CONV_2D and
    FULLY_CONNECTED run their gemm in ruy, whose output stage rounds the final shift ties-up.
    int8 DEPTHWISE_CONV_2D does so on its SIMD blocks of 8 channels and rounds the remaining
    C % 8 channels ties-away; uint8 DEPTHWISE_CONV_2D rounds ties-away throughout.  A grouped
    CONV_2D (filter depth below the input's) runs TFLite's reference kernel: ties-away.
    """
    if kernel not in LITERT_KERNELS:
        raise ValueError(f"unknown LiteRT kernel {kernel!r}; expected one of {LITERT_KERNELS}")
    if kernel in ("conv", "fully_connected"):
        return dict(rounding="tflite_neon")
    if kernel == "depthwise" and in_dtype == "int8":
        return dict(rounding="tflite", neon_channels=8 * (channels // 8))
    return dict(rounding="tflite")

"""PyTorch's quantized CPU kernels (fbgemm / x86 engine), reproduced bit for bit in numpy.

Activations are ``quint8`` (per tensor), weights ``qint8`` (per tensor or per output channel).
All float arithmetic is IEEE float32 with round-to-nearest-even, as in the AVX2/AVX-512 kernels;
``fl(e)`` below means "``e`` evaluated exactly, then rounded once to float32", and ``rint`` is
round half to even.  Every formula here was checked against ``torch`` 2.13 ``int_repr()``
(``tests/test_pytorch_reference.py``).

Engines: ``engine = "fbgemm"`` runs every conv and linear on fbgemm.  ``engine = "x86"`` (the
default on x86 CPUs) prepacks a convolution for oneDNN instead when the CPU has AVX512-VNNI, the
OS is Linux, the weights are symmetric (all zero points 0) and ``groups <= 100``
(:func:`onednn_conv_applies`); oneDNN scales in another order and adds the output zero point in
float before rounding (:func:`onednn_requantize`).  Linear layers stay on fbgemm under "x86".
The choice is made when the weight is prepacked (at ``convert`` time), not when the model runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .params import QuantizationParamError, check_scale, check_zero_point, dtype_range

F32 = np.float32
F64 = np.float64


def _fl(x) -> np.ndarray:
    return np.asarray(x, dtype=F64).astype(F32)


def _scale32(scale, where: str) -> np.ndarray:
    return check_scale(scale, where).astype(F32)


def _rint_saturate(v: np.ndarray, dtype: str, lo: int | None = None) -> np.ndarray:
    """cvtps2dq then clamp: NaN saturates to the top, as fbgemm's min(v, 2^31-128) does first."""
    qmin, qmax = dtype_range(dtype)
    v = np.where(np.isnan(v), np.inf, v)
    r = np.clip(np.rint(v), -(2.0**40), 2.0**40).astype(np.int64)
    return np.clip(r, qmin if lo is None else lo, qmax).astype(dtype)


def _fma32(a, b, c) -> np.ndarray:
    """fl(a * b + c) for float32 operands: the float32 product is exact in float64."""
    return (np.asarray(a, F32).astype(F64) * np.asarray(b, F32) + np.asarray(c, F64)).astype(F32)


def _param(p, ndim: int, axis: int | None, dtype) -> np.ndarray:
    p = np.asarray(p, dtype=dtype)
    if p.size == 1:
        return p.reshape(())
    if axis is None:
        raise QuantizationParamError(f"{p.size} per-channel values need an axis")
    shape = [1] * ndim
    shape[axis % ndim] = p.size
    return p.reshape(shape)


def quantize_per_tensor(x: np.ndarray, scale: float, zero_point: int, dtype: str = "uint8"):
    """``torch.quantize_per_tensor`` (fbgemm ``QuantizeAvx2<T, LEGACY=true>``).

    ``q = clamp(rint(fl(x * inv + zp)), qmin, qmax)`` with ``inv = fl(1 / float32(scale))`` and the
    multiply-add fused (one rounding, FMA).  The zero point is added *before* rounding, so a
    tie ``x * inv = k + 0.5`` rounds to even after the shift by ``zp``.  NaN gives ``qmax``.
    """
    s = _scale32(scale, "quantize_per_tensor")
    zp = check_zero_point(zero_point, dtype, "quantize_per_tensor")
    inv = _fl(F32(1.0) / s)
    return _rint_saturate(_fma32(np.asarray(x, F32), inv, zp), dtype)


def quantize_per_channel(x: np.ndarray, scales, zero_points, axis: int, dtype: str = "int8"):
    """``torch.quantize_per_channel`` (ATen ``quantize_val`` per element, no FMA).

    ``q = clamp(rint(fl(fl(x * inv[c]) + zp[c])), qmin, qmax)``, ``inv[c] = fl(1 / float32(s[c]))``:
    two roundings, the zero point again added before rounding.
    """
    x = np.asarray(x, F32)
    s = _param(_scale32(scales, "quantize_per_channel"), x.ndim, axis, F32)
    zp = _param(check_zero_point(zero_points, dtype, "quantize_per_channel"), x.ndim, axis, F64)
    inv = (F32(1.0) / s).astype(F32)
    return _rint_saturate(_fl((x * inv).astype(F32).astype(F64) + zp), dtype)


def dequantize(q: np.ndarray, scale, zero_point, axis: int | None = None) -> np.ndarray:
    """``Tensor.dequantize()``: ``fl(float32(q - zp) * s)`` (per tensor or per channel)."""
    q = np.asarray(q).astype(np.int64)
    s = _param(_scale32(scale, "dequantize"), q.ndim, axis, F32)
    zp = _param(np.asarray(zero_point, np.int64), q.ndim, axis, np.int64)
    return ((q - zp).astype(F32) * s).astype(F32)


def act_times_w_scale(input_scale: float, weight_scales) -> np.ndarray:
    """``fl(float32(s_in) * float32(s_w[c]))``: the scale of the int32 accumulator."""
    return (
        _scale32(input_scale, "input scale") * np.atleast_1d(_scale32(weight_scales, "w"))
    ).astype(F32)


def fbgemm_requantize(
    acc: np.ndarray,
    act_times_w: np.ndarray,
    bias: np.ndarray | None,
    output_scale: float,
    output_zero_point: int,
    *,
    per_channel: bool,
    axis: int = 1,
    relu: bool = False,
    out_dtype: str = "uint8",
) -> np.ndarray:
    """fbgemm ``requantizeOutputProcessingAvx2`` with a float bias.

    ``acc`` is the exact int32 sum ``sum((x - zp_x) * (w - zp_w))`` (fbgemm subtracts the
    row/column offset terms in int32, which is the same).  With ``a = act_times_w`` (float32):

    * per-channel weights: ``t = fl(float32(acc) + fl(bias[c] / a[c]))``;
      per-tensor weights: ``t = fl(bias[c] * r + float32(acc))``, one rounding (the compiled
      kernel fuses the multiply-add), ``r = float32(1.0 / double(a))``;
    * ``y = fl(t * m[c])``, ``m[c] = fl(a[c] / float32(s_out))``;
    * ``q = clamp(rint(y) + zp_out, relu ? zp_out : qmin, qmax)`` (zero point after rounding).

    Without a bias ``y = fl(float32(acc) * m[c])``.  ``float32(acc)`` rounds to nearest even.
    """
    acc = np.asarray(acc).astype(np.int64)
    a = np.atleast_1d(np.asarray(act_times_w, F32))
    s_out = _scale32(output_scale, "output scale")
    zp = int(check_zero_point(output_zero_point, out_dtype, "output zero point"))
    m = _param((a / s_out).astype(F32), acc.ndim, axis, F32)
    accf = acc.astype(F32)
    if bias is not None:
        b = _param(np.asarray(bias, F32), acc.ndim, axis, F32)
        if per_channel:
            bt = (b / _param(a, acc.ndim, axis, F32)).astype(F32)
            accf = (accf + bt).astype(F32)
        else:
            # The compiler fuses fbgemm's bias * rcp and + acc into one FMA.
            accf = _fma32(b, _fl(1.0 / a.astype(F64)[0]), accf)
    y = (accf * m).astype(F32)
    r = np.clip(np.rint(y), -(2.0**40), 2.0**40).astype(np.int64) + zp
    qmin, qmax = dtype_range(out_dtype)
    return np.clip(r, zp if relu else qmin, qmax).astype(out_dtype)


def onednn_scales(input_scale: float, weight_scales, output_scale: float):
    """The float32 scales PyTorch hands oneDNN for a quantized conv (via ideep >= 3.1):
    ``src = fl(1 / fl(1 / s_in))``, ``w[c] = float32(s_w[c])`` and the output multiplier
    ``dst = fl(1 / fl(1 / fl(1 / s_out)))`` (PyTorch passes ``1 / s_out``, ideep inverts it,
    and oneDNN multiplies by the inverse of that)."""
    s_in = float(check_scale(input_scale, "input scale").reshape(-1)[0])
    s_out = float(check_scale(output_scale, "output scale").reshape(-1)[0])
    src = F32(1.0) / _fl(1.0 / s_in)
    inv_out = _fl(1.0 / s_out)
    dst = F32(1.0) / (F32(1.0) / inv_out)
    w = np.atleast_1d(_scale32(weight_scales, "weight scales"))
    return F32(src), w, F32(dst)


def onednn_requantize(
    acc: np.ndarray,
    input_scale: float,
    weight_scales,
    bias: np.ndarray | None,
    output_scale: float,
    output_zero_point: int,
    *,
    axis: int = 1,
    relu: bool = False,
    out_dtype: str = "uint8",
) -> np.ndarray:
    """oneDNN's int8 convolution epilogue (``brg_conv_fwd`` / ``brdgmm_dw`` / ``brgconv_1x1``
    on AVX512-VNNI), used by PyTorch's x86 engine; ``acc`` is the exact int32 sum.

    With ``src, w, dst`` from :func:`onednn_scales`, every step rounded to float32 on its own
    (no FMA): ``y = fl(fl(float32(acc) * src) * w[c])``, ``y = fl(y + bias[c])``, ``relu``:
    ``max(y, 0)``, ``y = fl(y * dst)``, ``q = clamp(rint(fl(y + zp_out)))`` -- the zero point
    is added *before* rounding, so ties go to the even *output* value.
    """
    acc = np.asarray(acc).astype(np.int64)
    src, w, dst = onednn_scales(input_scale, weight_scales, output_scale)
    zp = int(check_zero_point(output_zero_point, out_dtype, "output zero point"))
    y = (acc.astype(F32) * src).astype(F32)
    y = (y * _param(w, acc.ndim, axis, F32)).astype(F32)
    if bias is not None:
        y = (y + _param(np.asarray(bias, F32), acc.ndim, axis, F32)).astype(F32)
    if relu:
        y = np.maximum(y, F32(0))
    y = (y * dst).astype(F32)
    return _rint_saturate((y + F32(zp)).astype(F32), out_dtype)


def onednn_conv_applies(
    weight_zero_points, groups: int, *, vnni: bool | None = None, linux: bool | None = None
) -> bool:
    """PyTorch's ``should_use_onednn_quant``: does the x86 engine prepack this conv for oneDNN?

    ``vnni`` / ``linux`` default to this machine (AVX512-VNNI in ``/proc/cpuinfo``; the OS).
    """
    import sys

    if linux is None:
        linux = sys.platform.startswith("linux")
    if vnni is None:
        vnni = _has_avx512_vnni()
    symmetric = bool(np.all(np.asarray(weight_zero_points) == 0))
    return bool(linux and vnni and symmetric and int(groups) <= 100)


def _has_avx512_vnni() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return "avx512_vnni" in f.read()
    except OSError:
        return False


def conv2d_accumulate(
    x: np.ndarray,
    x_zero_point: int,
    w: np.ndarray,
    w_zero_points=0,
    *,
    stride: Sequence[int] = (1, 1),
    padding: Sequence[int] = (0, 0),
    dilation: Sequence[int] = (1, 1),
    groups: int = 1,
) -> np.ndarray:
    """Exact ``sum((x - zp_x) * (w - zp_w[o]))``, NCHW ``x``, OIHW ``w``; pads with ``zp_x``."""
    x = np.asarray(x).astype(np.int64) - int(x_zero_point)
    w = np.asarray(w).astype(np.int64)
    w = w - _param(w_zero_points, 4, 0, np.int64)
    n, c, _, _ = x.shape
    o, cg, kh, kw = w.shape
    if c != cg * groups or o % groups:
        raise ValueError(f"conv2d: input channels {c}, weight {w.shape} and groups {groups} differ")
    ph, pw = padding
    x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dh, dw = dilation
    sh, sw = stride
    win = np.lib.stride_tricks.sliding_window_view(
        x, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), (2, 3)
    )
    win = win[:, :, ::sh, ::sw, ::dh, ::dw]  # n, c, oh, ow, kh, kw
    og = o // groups
    outs = []
    for g in range(groups):
        xs = win[:, g * cg : (g + 1) * cg]
        ws = w[g * og : (g + 1) * og]
        outs.append(np.einsum("nchwij,ocij->nohw", xs, ws, optimize=True))
    return np.concatenate(outs, axis=1)


def depthwise_fast_path(in_channels: int, w_shape, stride, padding, dilation, groups: int) -> bool:
    """fbgemm ``takeDepthWiseFastPath`` for 2-D: its kernel sums tap pairs in int16."""
    o, _, kh, kw = w_shape
    return (
        groups == in_channels
        and o in (groups, 2 * groups)
        and groups % 8 == 0
        and all(s in (1, 2) for s in stride)
        and kh == kw
        and kh in (3, 5)
        and all(d == 1 for d in dilation)
        and all(p == (kh - 1) // 2 for p in padding)
    )


def _depthwise_saturating_accumulate(x, x_zero_point, w, w_zero_points, stride) -> np.ndarray:
    """fbgemm's depthwise kernel: raw ``u8 * s8`` products of taps ``(0,1), (2,3), ...`` (row
    major) are summed with ``vpmaddubsw``, which saturates to int16; the zero-point terms are
    subtracted afterwards in int32.  Identical to the exact sum unless a pair leaves int16,
    which needs activations above 127 (fbgemm's qconfig uses ``reduce_range`` to avoid that)."""
    n, c, _, _ = x.shape
    o, _, k, _ = w.shape
    mult = o // c
    zx = int(x_zero_point)
    pad = (k - 1) // 2
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=zx)
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), (2, 3))[
        :, :, :: stride[0], :: stride[1]
    ]
    win = np.repeat(win.reshape(*win.shape[:4], k * k), mult, axis=1)  # n, o, oh, ow, taps
    wf = w.astype(np.int64).reshape(o, k * k)
    prods = win * wf[None, :, None, None, :]
    acc = np.zeros(prods.shape[:4], np.int64)
    for t in range(0, k * k, 2):
        acc += np.clip(prods[..., t : t + 2].sum(-1), -(2**15), 2**15 - 1)
    zw = np.broadcast_to(np.asarray(w_zero_points, np.int64).reshape(-1), (o,)).reshape(1, o, 1, 1)
    acc -= zx * wf.sum(1).reshape(1, o, 1, 1)
    acc -= zw * (win.sum(-1) - zx * k * k)
    return acc


def conv2d(
    x: np.ndarray,
    x_scale: float,
    x_zero_point: int,
    w: np.ndarray,
    w_scales,
    w_zero_points,
    bias: np.ndarray | None,
    output_scale: float,
    output_zero_point: int,
    *,
    stride: Sequence[int] = (1, 1),
    padding: Sequence[int] = (0, 0),
    dilation: Sequence[int] = (1, 1),
    groups: int = 1,
    per_channel: bool | None = None,
    relu: bool = False,
    kernel: str = "fbgemm",
) -> np.ndarray:
    """``torch.ops.quantized.conv2d`` / ``conv2d_relu``: NCHW quint8 in and out.

    ``kernel="fbgemm"``: ``fbgemm_requantize(conv2d_accumulate(...), act_times_w_scale(s_x,
    s_w), bias, ...)`` on axis 1.  ``per_channel`` defaults to ``len(w_scales) > 1``; pass it
    explicitly for a per-channel weight with one output channel.  ``kernel="onednn"``: the x86
    engine's oneDNN kernel, :func:`onednn_requantize` of the exact sum.
    """
    x = np.asarray(x)
    w = np.asarray(w)
    if kernel == "onednn":
        acc = conv2d_accumulate(
            x, x_zero_point, w, w_zero_points, stride=stride, padding=padding,
            dilation=dilation, groups=groups,
        )  # fmt: skip
        return onednn_requantize(
            acc, x_scale, w_scales, bias, output_scale, output_zero_point, axis=1, relu=relu
        )
    if kernel != "fbgemm":
        raise ValueError(f"conv2d: kernel must be 'fbgemm' or 'onednn', got {kernel!r}")
    if depthwise_fast_path(x.shape[1], w.shape, stride, padding, dilation, groups):
        acc = _depthwise_saturating_accumulate(x, x_zero_point, w, w_zero_points, stride)
    else:
        acc = conv2d_accumulate(
            x, x_zero_point, w, w_zero_points, stride=stride, padding=padding,
            dilation=dilation, groups=groups,
        )  # fmt: skip
    a = act_times_w_scale(x_scale, w_scales)
    pc = a.size > 1 if per_channel is None else per_channel
    return fbgemm_requantize(
        acc, a, bias, output_scale, output_zero_point, per_channel=pc, axis=1, relu=relu
    )


def linear(
    x: np.ndarray,
    x_scale: float,
    x_zero_point: int,
    w: np.ndarray,
    w_scales,
    w_zero_points,
    bias: np.ndarray | None,
    output_scale: float,
    output_zero_point: int,
    *,
    per_channel: bool | None = None,
    relu: bool = False,
) -> np.ndarray:
    """``torch.ops.quantized.linear`` / ``linear_relu`` (fbgemm): ``x [..., K]``, ``w [N, K]``.

    Same epilogue as :func:`conv2d`, on the last axis.
    """
    xi = np.asarray(x).astype(np.int64) - int(x_zero_point)
    wi = np.asarray(w).astype(np.int64) - _param(w_zero_points, 2, 0, np.int64)
    acc = xi @ wi.T
    a = act_times_w_scale(x_scale, w_scales)
    pc = a.size > 1 if per_channel is None else per_channel
    return fbgemm_requantize(
        acc, a, bias, output_scale, output_zero_point, per_channel=pc, axis=-1, relu=relu
    )


def _vector_mask(shape, vector_width: int | None) -> np.ndarray:
    n = int(np.prod(shape))
    head = n if vector_width is None else n // vector_width * vector_width
    return (np.arange(n) < head).reshape(shape)


def add(
    a: np.ndarray,
    a_scale: float,
    a_zero_point: int,
    b: np.ndarray,
    b_scale: float,
    b_zero_point: int,
    output_scale: float,
    output_zero_point: int,
    *,
    relu: bool = False,
    dtype: str = "uint8",
    vector_width: int | None = None,
) -> np.ndarray:
    """``torch.ops.quantized.add`` / ``add_relu`` (``FloatFunctional.add``, ``QFunctional.add``).

    Dequantize, add in float, requantize -- with the vectorized kernel's exact roundings:

    * ``da = fl(s_a * float(a) + fl(s_a * -zp_a))`` (an FMA with a premultiplied zero point),
      ``db`` likewise, ``c = fl(da + db)``, ``relu``: ``c = max(c, 0)``;
    * ``q = clamp(rint(fl(c * inv)) + zp_out)``, ``inv = fl(1 / float32(s_out))``.

    ATen's loop handles the last ``numel % W`` elements of each contiguous chunk with a scalar
    path instead: ``da = fl(float(a - zp_a) * s_a)`` and ``q = clamp(rint(fl(fl(c * inv) + zp)))``.
    ``W`` is 64 on AVX-512 builds and 32 on AVX2; pass it as ``vector_width`` to model that tail.
    By default every element follows the vectorized formula.
    """
    sa, sb, so = (_scale32(s, "add scale") for s in (a_scale, b_scale, output_scale))
    za, zb = (
        int(check_zero_point(z, dtype, "add zero point")) for z in (a_zero_point, b_zero_point)
    )
    zo = int(check_zero_point(output_zero_point, dtype, "add output zero point"))
    a = np.asarray(a).astype(np.int64)
    b = np.asarray(b).astype(np.int64)
    a, b = np.broadcast_arrays(a, b)
    inv = _fl(F32(1.0) / so)

    def fma_deq(q, s, z):
        return _fma32(s, q.astype(F32), (s * F32(-z)).astype(F32))

    def plain_deq(q, s, z):
        return ((q - z).astype(F32) * s).astype(F32)

    def finish(c):
        return np.maximum(c, F32(0)) if relu else c

    c_vec = finish((fma_deq(a, sa, za) + fma_deq(b, sb, zb)).astype(F32))
    vec = np.clip(np.rint((c_vec * inv).astype(F32)), -(2.0**40), 2.0**40).astype(np.int64) + zo
    qmin, qmax = dtype_range(dtype)
    vec = np.clip(vec, qmin, qmax)
    if vector_width is None:
        return vec.astype(dtype)
    c_tail = finish((plain_deq(a, sa, za) + plain_deq(b, sb, zb)).astype(F32))
    tail = _rint_saturate(_fl((c_tail * inv).astype(F32).astype(F64) + zo), dtype)
    return np.where(_vector_mask(a.shape, vector_width), vec, tail).astype(dtype)


def mul(
    a: np.ndarray,
    a_scale: float,
    a_zero_point: int,
    b: np.ndarray,
    b_scale: float,
    b_zero_point: int,
    output_scale: float,
    output_zero_point: int,
    *,
    relu: bool = False,
    dtype: str = "uint8",
) -> np.ndarray:
    """``torch.ops.quantized.mul`` / ``mul_relu`` (``FloatFunctional.mul``).

    ``p = (a - zp_a) * (b - zp_b)`` in int32, ``m = fl(fl(s_a * s_b) * fl(1 / s_out))``,
    ``q = clamp(rint(fl(float32(p) * m)) + zp_out, relu ? zp_out : qmin, qmax)``.
    """
    sa, sb, so = (_scale32(s, "mul scale") for s in (a_scale, b_scale, output_scale))
    za, zb = (
        int(check_zero_point(z, dtype, "mul zero point")) for z in (a_zero_point, b_zero_point)
    )
    zo = int(check_zero_point(output_zero_point, dtype, "mul output zero point"))
    m = ((sa * sb).astype(F32) * _fl(F32(1.0) / so)).astype(F32)
    p = (np.asarray(a).astype(np.int64) - za) * (np.asarray(b).astype(np.int64) - zb)
    y = (p.astype(F32) * m).astype(F32)
    r = np.clip(np.rint(y), -(2.0**40), 2.0**40).astype(np.int64) + zo
    qmin, qmax = dtype_range(dtype)
    return np.clip(r, zo if relu else qmin, qmax).astype(dtype)


def cat(
    tensors: Sequence[np.ndarray],
    scales: Sequence[float],
    zero_points: Sequence[int],
    output_scale: float,
    output_zero_point: int,
    axis: int,
    *,
    dtype: str = "uint8",
) -> np.ndarray:
    """``torch.ops.quantized.cat`` (``FloatFunctional.cat``) on contiguous (NCHW) tensors.

    ``quantize_per_tensor(concatenate([dequantize(t_i, s_i, zp_i)]), s_out, zp_out)``: the
    plain dequantize and the FMA quantize above.  (Channels-last inputs concatenated on the
    channel axis take a different fast path in ATen and are not modelled.)
    """
    if not (len(tensors) == len(scales) == len(zero_points)) or not tensors:
        raise ValueError("cat: need one scale and zero point per tensor, and at least one tensor")
    floats = [dequantize(t, s, z) for t, s, z in zip(tensors, scales, zero_points, strict=True)]
    return quantize_per_tensor(
        np.concatenate(floats, axis=axis), output_scale, output_zero_point, dtype
    )


def relu(q: np.ndarray, zero_point: int) -> np.ndarray:
    """``torch.nn.quantized.ReLU`` / ``torch.relu`` on a quantized tensor: ``max(q, zp)``."""
    return np.maximum(q, np.asarray(zero_point).astype(q.dtype))


def quantize_decomposed(x: np.ndarray, scale: float, zero_point: int, qmin: int, qmax: int, dtype):
    """PT2E ``quantized_decomposed.quantize_per_tensor``: ``clamp(rint(fl(x * fl(1/s))) + zp)``."""
    inv = _fl(1.0 / float(scale))
    y = (np.asarray(x, F32) * inv).astype(F32)
    return np.clip(np.rint(y) + zero_point, qmin, qmax).astype(dtype)


def batch_norm_params(weight, bias, mean, var, eps: float, input_scale: float, output_scale: float):
    """ATen's ``compute_fused_params`` for ``quantized::batch_norm2d``: float32 ``alpha, beta``.

    ``inv = float32(1.0 / sqrtf(var + float32(eps)))`` (the division in double),
    ``alpha = float32(fl(inv * w) * (double(s_in) / double(s_out)))``,
    ``beta = float32(fl(b - fl(fl(mean * inv) * w)) / double(s_out))``.
    """
    w, b, m, v = (np.asarray(t, F32) for t in (weight, bias, mean, var))
    inv_sigma = (1.0 / np.sqrt((v + F32(eps)).astype(F32)).astype(F64)).astype(F32)
    ratio = float(input_scale) / float(output_scale)
    alpha = ((inv_sigma * w).astype(F32).astype(F64) * ratio).astype(F32)
    centered = (b - ((m * inv_sigma).astype(F32) * w).astype(F32)).astype(F32)
    beta = (centered.astype(F64) / float(output_scale)).astype(F32)
    return alpha, beta


def batch_norm(
    q: np.ndarray, alpha, beta, input_zero_point: int, output_zero_point: int, *, relu=False
) -> np.ndarray:
    """``quantized::batch_norm2d`` / ``batch_norm2d_relu`` on NCHW input (any engine on x86).

    ``q_out = clamp(rint(fl(alpha[c] * (q - zp_in) + beta[c])) + zp_out)``: one rounding (the
    vector path is an FMA, and the scalar path for leftover channels compiles to one too).
    """
    q = np.asarray(q)
    shape = (1, -1) + (1,) * (q.ndim - 2)
    x = q.astype(np.int64) - int(input_zero_point)
    a = np.asarray(alpha, F32).reshape(shape).astype(F64)
    y = (a * x + np.asarray(beta, F32).reshape(shape)).astype(F32)
    zo = int(output_zero_point)
    return _rint_saturate(np.rint(y).astype(F64) + zo, str(q.dtype), zo if relu else None)


def global_avg_pool(q: np.ndarray) -> np.ndarray:
    """``adaptive_avg_pool2d(q, 1)`` on quantized NCHW: ``rint(fl(float32(sum q) * fl(1 / n)))``.

    The sum is over the raw stored values; the output keeps the input's scale and zero point.
    """
    q = np.asarray(q)
    n = q.shape[2] * q.shape[3]
    total = q.astype(np.int64).sum((2, 3), keepdims=True).astype(F32)
    return _rint_saturate((total * _fl(1.0 / n)).astype(F32), str(q.dtype))

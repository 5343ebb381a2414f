"""qnn.conv2d: the int32 accumulator of a (grouped, depthwise) quantized 2-D convolution.

``acc = bias[o] + sum((x - zp_x) * (w - zp_w[o]))`` with padding by ``zp_x``.  Legalization
expands the product so the reduction is a plain integer dot product (what int8 dot-product
instructions compute) and the zero-point terms become a cheap epilogue::

    acc = dot(x, w) - zp_w[o] * window_sum(x) + (bias[o] - zp_x * sum(w[o]) + K * zp_x * zp_w[o])

The bracket is folded to one constant when the weight (and bias) are constants.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tvm import relax, te, tirx
from tvm.ir import GenericConst

from ..quantization.params import check_zero_point
from ..target.schedule import ANNOTATION
from .common import (
    at,
    attr,
    expect_dtype,
    expect_rank,
    op_name,
    per_axis,
    static_shape,
    tensor_type,
)
from .registry import QnnTypeError, make_call, register_op

DATA_LAYOUTS = ("NHWC", "NCHW")
INT_DTYPES = ("int8", "uint8")


# ---- helpers shared with qnn.dense -------------------------------------------------------------


def int_list(v) -> list[int]:
    return [int(x) for x in np.atleast_1d(np.asarray(v, dtype=np.int64))]


def check_int_operands(call: relax.Call) -> tuple[relax.TensorType, relax.TensorType]:
    """data and weight: int8/uint8 tensors; an optional third argument is the bias."""
    if len(call.args) not in (2, 3):
        raise QnnTypeError(f"{op_name(call)}: expected 2 or 3 arguments, got {len(call.args)}")
    dty, wty = tensor_type(call, 0, "data"), tensor_type(call, 1, "weight")
    expect_dtype(call, "data", dty.dtype, INT_DTYPES)
    expect_dtype(call, "weight", wty.dtype, INT_DTYPES)
    zp = np.asarray(attr(call, "input_zero_point", 0))
    if zp.size != 1:
        raise QnnTypeError(f"{op_name(call)}: input_zero_point must be a single integer")
    check_zero_point(zp, str(dty.dtype), f"{op_name(call)} input_zero_point")
    expect_dtype(call, "out_dtype", attr(call, "out_dtype", "int32"), ("int32",))
    return dty, wty


def check_bias(call: relax.Call, channels: int) -> None:
    if len(call.args) < 3:
        return
    bty = tensor_type(call, 2, "bias")
    expect_dtype(call, "bias", bty.dtype, ("int32",))
    expect_rank(call, "bias", bty, (1,))
    (length,) = static_shape(call, "bias", bty)
    if length != channels:
        raise QnnTypeError(
            f"{op_name(call)}: bias has length {length}, expected {channels} (output channels)"
        )


def kernel_zero_point(call: relax.Call, dtype: str, channels: int) -> np.ndarray:
    """The weight zero point as a length-``channels`` int64 vector."""
    zp = np.atleast_1d(np.asarray(attr(call, "kernel_zero_point", 0), dtype=np.int64))
    if zp.size not in (1, channels):
        raise QnnTypeError(
            f"{op_name(call)}: kernel_zero_point has {zp.size} values, expected 1 or {channels} "
            "(output channels)"
        )
    check_zero_point(zp, str(dtype), f"{op_name(call)} kernel_zero_point")
    return np.broadcast_to(zp, (channels,)).copy()


def constant_value(expr: relax.Expr) -> np.ndarray | None:
    return expr.value.numpy() if isinstance(expr, GenericConst) else None


def _wrap_int32(v: np.ndarray) -> np.ndarray:
    return (((np.asarray(v, np.int64) + 2**31) % 2**32) - 2**31).astype(np.int32)


def _compact(v: np.ndarray) -> np.ndarray:
    """A per-channel vector whose values are all equal becomes per-tensor."""
    return v[:1] if v.size and np.all(v == v[0]) else v


@dataclass(frozen=True)
class OffsetParts:
    """The zero-point and bias terms added to the raw dot product ``sum(x * w)``.

    ``offset[o] = bias[o] - zx * sum(w[o]) + K * zx * zw[o]`` holds every term known at
    legalization; the others are computed at run time when their operand is not constant.
    """

    zx: int
    zw: np.ndarray  # int32, length 1 or O
    offset: np.ndarray  # int32, length 1 or O
    runtime_bias: bool
    needs_kernel_sum: bool  # zx * sum(w[o]) with a non-constant weight
    needs_window_sum: bool  # zw[o] * sum(x over the window), any zw != 0

    @property
    def any_terms(self) -> bool:
        return (
            bool(np.any(self.offset))
            or self.runtime_bias
            or self.needs_kernel_sum
            or self.needs_window_sum
        )

    def te_args(self, call: relax.Call) -> dict:
        """Keyword arguments for ``bb.call_te`` (constants become tensors, scalars stay ints)."""
        return dict(
            offset=per_axis(self.offset, "int32"),
            zw=per_axis(self.zw, "int32"),
            bias=call.args[2] if self.runtime_bias else None,
        )

    def apply(self, dot, o, offset, zw, bias, window_sum, kernel_sum):
        """``dot`` plus the terms for output channel ``o`` (TE expressions)."""
        v = dot
        if np.any(self.offset):
            v = v + at(offset, o)
        if bias is not None:
            v = v + bias(o)
        if window_sum is not None:
            v = v - at(zw, o) * window_sum
        if kernel_sum is not None:
            v = v - kernel_sum(o) * tirx.const(self.zx, "int32")
        return v


def offset_parts(
    call: relax.Call,
    channels: int,
    weight_ok: np.ndarray | None,
    reduction: int,
    zx_shift: int = 0,
    zw_shift: int = 0,
) -> OffsetParts:
    """Split the zero-point and bias terms.

    ``weight_ok`` is the weight as an [O, K] array when it is a constant, else None;
    ``reduction`` is K, the number of products summed per output.  ``zx_shift``/``zw_shift``
    describe operands shifted by the same amount as their zero points (e.g. int8 activations
    moved to uint8 by +128 for u8 x s8 instructions): ``x - zx`` is unchanged.
    """
    bias = call.args[2] if len(call.args) > 2 else None
    zx = int(attr(call, "input_zero_point", 0)) + zx_shift
    zw = kernel_zero_point(call, call.args[1].ty.dtype, channels) + zw_shift
    offset = reduction * zx * zw
    bias_np = None if bias is None else constant_value(bias)
    if bias_np is not None:
        offset = offset + bias_np.astype(np.int64)
    if weight_ok is not None and zx:
        offset = offset - zx * weight_ok.astype(np.int64).sum(axis=1)
    return OffsetParts(
        zx=zx,
        zw=_compact(zw).astype(np.int32),
        offset=_compact(_wrap_int32(offset)),
        runtime_bias=bias is not None and bias_np is None,
        needs_kernel_sum=bool(zx) and weight_ok is None,
        needs_window_sum=bool(np.any(zw)),
    )


# ---- qnn.conv2d -------------------------------------------------------------------------------


def conv2d(
    data: relax.Expr,
    weight: relax.Expr,
    bias: relax.Expr | None = None,
    *,
    strides: Sequence[int] = (1, 1),
    padding: Sequence[int] = (0, 0, 0, 0),
    dilation: Sequence[int] = (1, 1),
    groups: int = 1,
    data_layout: str = "NHWC",
    kernel_layout: str = "OHWI",
    input_zero_point: int = 0,
    kernel_zero_point: int | Sequence[int] = 0,
    out_dtype: str = "int32",
) -> relax.Call:
    """Quantized conv2d producing the int32 accumulator.

    ``padding`` is (top, left, bottom, right) (a pair means symmetric); ``kernel_layout`` is any
    ordering of "OIHW", where I = in_channels / groups.  TFLite's depthwise weight 1HW(I*M) is
    "IHWO" with ``groups == in_channels``.  ``kernel_zero_point`` is per tensor or per output
    channel.
    """
    padding = int_list(padding)
    if len(padding) == 2:
        padding = padding * 2
    args = [data, weight] + ([] if bias is None else [bias])
    call = make_call(
        "qnn.conv2d",
        args,
        dict(
            strides=int_list(strides),
            padding=padding,
            dilation=int_list(dilation),
            groups=int(groups),
            data_layout=str(data_layout),
            kernel_layout=str(kernel_layout),
            input_zero_point=int(input_zero_point),
            kernel_zero_point=int_list(kernel_zero_point),
            out_dtype=str(out_dtype),
        ),
    )
    _check_attrs(call)
    return call


@dataclass(frozen=True)
class Geometry:
    """Static shapes of one conv2d call, in canonical (N, C, H, W) / (O, I, KH, KW) terms."""

    data_layout: str
    kernel_layout: str
    n: int
    c: int
    h: int
    w: int
    o: int
    ig: int  # input channels per group
    kh: int
    kw: int
    groups: int
    strides: tuple[int, int]
    padding: tuple[int, int, int, int]
    dilation: tuple[int, int]
    oh: int
    ow: int

    @property
    def og(self) -> int:
        return self.o // self.groups

    @property
    def depthwise(self) -> bool:
        return self.ig == 1 and self.groups == self.c and self.groups > 1

    def data_index(self, n, c, h, w) -> tuple:
        return (n, h, w, c) if self.data_layout == "NHWC" else (n, c, h, w)

    def kernel_index(self, o, i, h, w) -> tuple:
        named = {"O": o, "I": i, "H": h, "W": w}
        return tuple(named[a] for a in self.kernel_layout)

    def split_data(self, idx) -> tuple:
        """(n, c, h, w) from an index in the data layout."""
        n, a, b, d = idx
        return (n, d, a, b) if self.data_layout == "NHWC" else (n, a, b, d)

    def shape(self, n, c, h, w) -> tuple[int, ...]:
        return self.data_index(n, c, h, w)


def _check_attrs(call: relax.Call) -> None:
    name = op_name(call)
    for key, length, lo in (("strides", 2, 1), ("dilation", 2, 1), ("padding", 4, 0)):
        v = attr(call, key)
        if v is None or len(v) != length or any(int(x) < lo for x in v):
            raise QnnTypeError(f"{name}: {key} must be {length} integers >= {lo}, got {v}")
    if int(attr(call, "groups")) < 1:
        raise QnnTypeError(f"{name}: groups must be >= 1, got {attr(call, 'groups')}")
    if str(attr(call, "data_layout")) not in DATA_LAYOUTS:
        raise QnnTypeError(
            f"{name}: data_layout {attr(call, 'data_layout')!r} not in {list(DATA_LAYOUTS)}"
        )
    kl = str(attr(call, "kernel_layout"))
    if sorted(kl) != sorted("OIHW"):
        raise QnnTypeError(f"{name}: kernel_layout {kl!r} must be an ordering of 'OIHW'")
    expect_dtype(call, "out_dtype", attr(call, "out_dtype"), ("int32",))


def geometry(call: relax.Call) -> Geometry:
    """Check a qnn.conv2d call's operands and attributes and return its shapes."""
    _check_attrs(call)
    name = op_name(call)
    dty, wty = check_int_operands(call)
    for what, ty in (("data", dty), ("weight", wty)):
        expect_rank(call, what, ty, (4,))
    dl, kl = str(attr(call, "data_layout")), str(attr(call, "kernel_layout"))
    dshape, wshape = static_shape(call, "data", dty), static_shape(call, "weight", wty)
    n, c, h, w = (dshape[dl.index(a)] for a in "NCHW")
    o, ig, kh, kw = (wshape[kl.index(a)] for a in "OIHW")
    groups = int(attr(call, "groups"))
    if c % groups or o % groups:
        raise QnnTypeError(
            f"{name}: groups={groups} must divide in_channels {c} and out_channels {o}"
        )
    if c // groups != ig:
        raise QnnTypeError(
            f"{name}: weight has {ig} input channels ({kl} shape {list(wshape)}) but data has "
            f"{c} channels in {groups} group(s), i.e. {c // groups} per group"
        )
    strides, dilation = (tuple(int(x) for x in attr(call, k)) for k in ("strides", "dilation"))
    pad = tuple(int(x) for x in attr(call, "padding"))
    oh = (h + pad[0] + pad[2] - dilation[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (w + pad[1] + pad[3] - dilation[1] * (kw - 1) - 1) // strides[1] + 1
    if oh < 1 or ow < 1 or min(dshape + wshape) < 1:
        raise QnnTypeError(
            f"{name}: empty output: data {list(dshape)} ({dl}), weight {list(wshape)} ({kl}), "
            f"padding {list(pad)}, dilation {list(dilation)}"
        )
    check_bias(call, o)
    kernel_zero_point(call, wty.dtype, o)
    return Geometry(dl, kl, n, c, h, w, o, ig, kh, kw, groups, strides, pad, dilation, oh, ow)


@register_op("qnn.conv2d", 3, "Quantized 2-D convolution: int32 accumulator with zero points")
class Conv2D:
    @staticmethod
    def infer(call, bb):
        g = geometry(call)
        return relax.TensorType(g.shape(g.n, g.o, g.oh, g.ow), "int32")

    @staticmethod
    def legalize(bb, call):
        from . import packed_depthwise, packed_dot  # import this module

        g = geometry(call)
        if g.depthwise:
            packed = packed_depthwise.try_legalize(bb, call, g)
            if packed is not None:
                return packed
        ins = packed_dot.instruction_for(call, g.groups == 1 and g.data_layout == "NHWC")
        if ins is not None:
            return packed_dot.legalize_conv2d(bb, call, g, ins)
        w_np = constant_value(call.args[1])
        if w_np is not None:
            w_np = w_np.transpose([g.kernel_layout.index(a) for a in "OIHW"]).reshape(g.o, -1)
        parts = offset_parts(call, g.o, w_np, reduction=g.ig * g.kh * g.kw)
        return bb.call_te(
            lambda x, w, **kw: _conv2d_te(x, w, g=g, parts=parts, **kw),
            call.args[0],
            call.args[1],
            **parts.te_args(call),
            primfunc_name_hint="qnn_depthwise_conv2d" if g.depthwise else "qnn_conv2d",
        )


def _pad(x: te.Tensor, g: Geometry, zx: int) -> te.Tensor:
    """Pad H and W with the input zero point (padded taps then contribute exactly 0)."""
    pt, pl, pb, pr = g.padding
    if not any(g.padding):
        return x

    def elem(*idx):
        n, c, h, w = g.split_data(idx)
        inside = tirx.all(h >= pt, h < pt + g.h, w >= pl, w < pl + g.w)
        return tirx.if_then_else(
            inside, x(*g.data_index(n, c, h - pt, w - pl)), tirx.const(zx, x.dtype)
        )

    return te.compute(g.shape(g.n, g.c, g.h + pt + pb, g.w + pl + pr), elem, name="pad")


def _conv2d_te(x, w, offset, zw, bias, g: Geometry, parts: OffsetParts) -> te.Tensor:
    xp = _pad(x, g, parts.zx)
    sh, sw = g.strides
    dh, dw = g.dilation
    rh = te.reduce_axis((0, g.kh), name="rh")
    rw = te.reduce_axis((0, g.kw), name="rw")
    rc = te.reduce_axis((0, g.ig), name="rc") if g.ig > 1 else None

    def tap(n, c, oh, ow):
        return xp(*g.data_index(n, c, oh * sh + rh * dh, ow * sw + rw * dw)).astype("int32")

    def dot(*idx):
        n, o, oh, ow = g.split_data(idx)
        c = (o // g.og) * g.ig + (rc if rc is not None else 0)
        wv = w(*g.kernel_index(o, 0 if rc is None else rc, rh, rw)).astype("int32")
        axes = [rh, rw] if rc is None else [rc, rh, rw]
        return te.sum(tap(n, c, oh, ow) * wv, axis=axes)

    out_shape = g.shape(g.n, g.o, g.oh, g.ow)
    attrs = {ANNOTATION: "depthwise_conv2d"} if g.depthwise else None
    acc = te.compute(out_shape, dot, name="dot", attrs=attrs)

    window_sum = None
    if parts.needs_window_sum:
        # sum of the input taps of one group at each output position (for the weight zp term)
        rh2 = te.reduce_axis((0, g.kh), name="rh")
        rw2 = te.reduce_axis((0, g.kw), name="rw")
        rc2 = te.reduce_axis((0, g.ig), name="rc")

        def wsum(*idx):
            n, grp, oh, ow = g.split_data(idx)
            hh, ww = oh * sh + rh2 * dh, ow * sw + rw2 * dw
            v = xp(*g.data_index(n, grp * g.ig + rc2, hh, ww)).astype("int32")
            return te.sum(v, axis=[rc2, rh2, rw2])

        window_sum = te.compute(g.shape(g.n, g.groups, g.oh, g.ow), wsum, name="window_sum")

    kernel_sum = None
    if parts.needs_kernel_sum:
        rk = [te.reduce_axis((0, e), name=f"k{i}") for i, e in enumerate((g.ig, g.kh, g.kw))]
        kernel_sum = te.compute(
            (g.o,),
            lambda o: te.sum(w(*g.kernel_index(o, *rk)).astype("int32"), axis=rk),
            name="kernel_sum",
        )

    def epilogue(*idx):
        n, o, oh, ow = g.split_data(idx)
        ws = None if window_sum is None else window_sum(*g.data_index(n, o // g.og, oh, ow))
        return parts.apply(acc(*idx), o, offset, zw, bias, ws, kernel_sum)

    if not parts.any_terms:
        return acc
    return te.compute(out_shape, epilogue, name="accumulate")


__all__ = ["Geometry", "OffsetParts", "conv2d", "geometry", "offset_parts"]

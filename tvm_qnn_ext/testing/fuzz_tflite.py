"""Differential fuzzing of the TFLite importer against LiteRT's builtin kernels.

Random int8/uint8 models of one operator, or of 2-4 chained operators, are built with
:mod:`~tvm_qnn_ext.testing.tflite_builder`, imported with :func:`from_tflite`, compiled many at a
time (each model's ``main`` becomes ``case_<i>`` of one IRModule) and compared bit for bit with
LiteRT (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``) on random inputs.

Quantization parameters are what a converter would produce: each output scale covers the float
range the op can produce from its input's range (jittered), with ~15% edge cases (scales 4-50x
too small or too large, extreme zero points).  One regime is avoided on purpose: ADD/MUL output
scales so small that the rescaled result leaves int16 before the output zero point, where
LiteRT's SIMD loops wrap through int16 (documented in :mod:`tvm_qnn_ext.op.elementwise`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..quantization import dtype_range
from .tflite_builder import ModelBuilder

ACTS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")
MAX_ELEMENTS = 6000


@dataclass
class T:
    """A quantized (or float) tensor of the model being built."""

    idx: int
    shape: tuple[int, ...]
    dtype: str
    scale: float = 1.0
    zp: int = 0

    @property
    def frange(self) -> tuple[float, float]:
        lo, hi = dtype_range(self.dtype)
        return (lo - self.zp) * self.scale, (hi - self.zp) * self.scale


@dataclass
class InputSpec:
    shape: tuple[int, ...]
    dtype: str
    lo: float = 0.0  # float inputs: the range the following QUANTIZE covers
    hi: float = 0.0
    scale: float = 1.0


class _Gen:
    """A model under construction: builder, graph inputs, extra graph outputs."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.mb = ModelBuilder()
        self.inputs: list[int] = []
        self.specs: list[InputSpec] = []
        self.extra_outputs: list[int] = []
        self.n = 0

    def name(self, stem: str) -> str:
        self.n += 1
        return f"{stem}_{self.n}"

    def tensor(self, shape, dtype: str, scale: float | None = None, zp: int | None = None) -> T:
        shape = tuple(int(d) for d in shape)
        if scale is None:
            idx = self.mb.add_tensor(self.name("t"), shape, dtype)
            return T(idx, shape, dtype)
        scale = float(np.float32(scale))
        idx = self.mb.add_tensor(self.name("t"), shape, dtype, scale=scale, zero_point=int(zp))
        return T(idx, shape, dtype, scale, int(zp))

    def like(self, x: T, shape=None) -> T:
        return self.tensor(x.shape if shape is None else shape, x.dtype, x.scale, x.zp)

    def graph_input(self, shape, dtype: str, scale: float, zp: int) -> T:
        t = self.tensor(shape, dtype, scale, zp)
        self.inputs.append(t.idx)
        self.specs.append(InputSpec(t.shape, dtype))
        return t

    def const(self, data: np.ndarray, dtype: str = "int32") -> int:
        return self.mb.add_const(self.name("c"), np.asarray(data).astype(dtype))

    def qconst(self, data, dtype, scale, zp, axis: int = 0) -> int:
        data = np.asarray(data).astype(dtype)
        return self.mb.add_tensor(
            self.name("w"), data.shape, dtype, scale=scale, zero_point=zp,
            quantized_dimension=axis, data=data,
        )  # fmt: skip

    # ---- random parameters ---------------------------------------------------------------

    def scale(self, lo: float = 1e-3, hi: float = 0.5) -> float:
        return float(np.float32(np.exp(self.rng.uniform(np.log(lo), np.log(hi)))))

    def zp(self, dtype: str) -> int:
        lo, hi = dtype_range(dtype)
        return int(self.rng.integers(lo, hi + 1))

    def out_quant(self, flo: float, fhi: float, dtype: str) -> tuple[float, int]:
        """(scale, zp) a converter would pick for observed float range [flo, fhi]."""
        rng = self.rng
        qlo, qhi = dtype_range(dtype)
        flo, fhi = min(flo, 0.0), max(fhi, 0.0)
        span = max(fhi - flo, 1e-6)
        r = rng.random()
        if r < 0.85:
            scale = span / 255 * float(np.exp(rng.uniform(-0.4, 0.2)))
            zp = qlo - round(flo / scale) + int(rng.integers(-3, 4))
        elif r < 0.95:  # edge: far too small (saturation) or too large (few levels)
            scale = span / 255 * float(np.exp(rng.choice([-1, 1]) * rng.uniform(1.5, 4)))
            zp = qlo - round(flo / scale)
        else:  # edge: extreme zero point
            scale = span / 255 * float(np.exp(rng.uniform(-0.5, 0.5)))
            zp = int(rng.choice([qlo, qhi]))
        return float(np.float32(max(scale, 1e-6))), int(np.clip(zp, qlo, qhi))

    def out_like(self, x: T, flo: float, fhi: float, shape) -> T:
        s, z = self.out_quant(flo, fhi, x.dtype)
        return self.tensor(shape, x.dtype, s, z)

    def act(self, allow_n1: bool = True) -> str:
        return ACTS[int(self.rng.integers(0, 4 if allow_n1 else 3))]


# ---- operator generators: (gen, x) -> output tensor, or None when x does not fit -----------


def _conv_out(size: int, k: int, s: int, d: int, same: bool) -> int:
    eff = (k - 1) * d + 1
    return -(-size // s) if same else (size - eff) // s + 1


def _acc_range(g: _Gen, x: T, w: np.ndarray, zw, bias: np.ndarray, sw) -> tuple[float, float]:
    """Float range of ``s_in * s_w * (bias + sum((x - zp_x) * (w - zp_w)))`` over uniform x,
    as mean +- 3 sigma per output channel (w is (channels, taps))."""
    qlo, qhi = dtype_range(x.dtype)
    mean_x = (qlo + qhi) / 2 - x.zp
    wc = w.astype(np.float64) - np.asarray(zw, dtype=np.float64).reshape(-1, 1)
    mean = bias + mean_x * wc.sum(axis=1)
    sd = np.sqrt((qhi - qlo + 1) ** 2 / 12 * (wc**2).sum(axis=1))
    s = x.scale * np.asarray(sw, dtype=np.float64)
    return float(np.min(s * (mean - 3 * sd))), float(np.max(s * (mean + 3 * sd)))


def _weights(g: _Gen, x: T, channels: int, taps: int, per_channel_ok: bool):
    """Weights (channels, taps), their scales and zero points, and an int32 bias."""
    rng = g.rng
    if x.dtype == "int8":
        w = rng.integers(-127, 128, size=(channels, taps))
        per_channel = per_channel_ok and rng.random() < 0.75
        sw = (
            [g.scale(1e-3, 0.05) for _ in range(channels)] if per_channel else [g.scale(1e-3, 0.05)]
        )
        zw = [0] * len(sw)
    else:
        w = rng.integers(0, 256, size=(channels, taps))
        sw, zw = [g.scale(1e-3, 0.05)], [int(rng.integers(90, 166))]
    sd = np.sqrt(taps) * 80 * 40
    bias = np.round(rng.normal(0, sd, size=channels)).astype(np.int64)
    return w, sw, zw, bias


def _requant_out(g: _Gen, x: T, w, zw, bias, sw, shape) -> tuple[T, str]:
    flo, fhi = _acc_range(g, x, w, zw, bias, np.broadcast_to(sw, (w.shape[0],)))
    act = g.act()
    return g.out_like(x, *_after_act(act, flo, fhi), shape), act


def _after_act(act: str, flo: float, fhi: float) -> tuple[float, float]:
    """The float range a converter observes after a fused activation."""
    if act == "RELU":
        return 0.0, max(fhi, 1e-3)
    if act == "RELU6":
        return 0.0, min(max(fhi, 1e-3), 6.0)
    if act == "RELU_N1_TO_1":
        return max(flo, -1.0), min(fhi, 1.0)
    return flo, fhi


def gen_conv2d(g: _Gen, x: T) -> T | None:
    if len(x.shape) != 4:
        return None
    rng = g.rng
    n, h, wd, cin = x.shape
    kh, kw = (int(v) for v in rng.integers(1, 6, size=2))
    sh, sw_ = (int(v) for v in rng.integers(1, 4, size=2))
    dh, dw = (int(v) for v in (rng.integers(1, 3, size=2) if rng.random() < 0.3 else (1, 1)))
    same = bool(rng.random() < 0.5)
    oh, ow = _conv_out(h, kh, sh, dh, same), _conv_out(wd, kw, sw_, dw, same)
    if oh < 1 or ow < 1:
        return None
    cout = int(rng.integers(1, 17))
    groups = 1
    if cin > 1 and rng.random() < 0.2:  # grouped: the filter holds cin / groups channels
        groups = int(rng.choice([k for k in range(2, cin + 1) if cin % k == 0]))
        cout = groups * int(rng.integers(1, 4))
    w, sw, zw, bias = _weights(g, x, cout, kh * kw * (cin // groups), True)
    y, act = _requant_out(g, x, w, zw, bias, sw, (n, oh, ow, cout))
    wt = g.qconst(w.reshape(cout, kh, kw, cin // groups), x.dtype, sw, zw, axis=0)
    bscale = [x.scale * s for s in sw]
    bt = g.qconst(bias, "int32", bscale, [0] * len(bscale))
    g.mb.add_op(
        "CONV_2D", [x.idx, wt, bt], [y.idx], padding="SAME" if same else "VALID",
        stride_h=sh, stride_w=sw_, dilation_h=dh, dilation_w=dw, fused_activation=act,
    )  # fmt: skip
    return y


def gen_depthwise(g: _Gen, x: T) -> T | None:
    if len(x.shape) != 4:
        return None
    rng = g.rng
    n, h, wd, cin = x.shape
    mult = int(rng.choice([1, 1, 2, 3]))
    cout = cin * mult
    kh, kw = (int(v) for v in rng.integers(1, 5, size=2))
    sh, sw_ = (int(v) for v in rng.integers(1, 3, size=2))
    dh, dw = (int(v) for v in (rng.integers(1, 3, size=2) if rng.random() < 0.3 else (1, 1)))
    same = bool(rng.random() < 0.5)
    oh, ow = _conv_out(h, kh, sh, dh, same), _conv_out(wd, kw, sw_, dw, same)
    if oh < 1 or ow < 1 or cout > 48:
        return None
    w, sw, zw, bias = _weights(g, x, cout, kh * kw, True)
    y, act = _requant_out(g, x, w, zw, bias, sw, (n, oh, ow, cout))
    wt = g.qconst(w.T.reshape(1, kh, kw, cout), x.dtype, sw, zw, axis=3)
    bscale = [x.scale * s for s in sw]
    bt = g.qconst(bias, "int32", bscale, [0] * len(bscale))
    g.mb.add_op(
        "DEPTHWISE_CONV_2D", [x.idx, wt, bt], [y.idx], padding="SAME" if same else "VALID",
        stride_h=sh, stride_w=sw_, dilation_h=dh, dilation_w=dw, depth_multiplier=mult,
        fused_activation=act,
    )  # fmt: skip
    return y


def gen_fully_connected(g: _Gen, x: T) -> T | None:
    rng = g.rng
    size = int(np.prod(x.shape))
    k = x.shape[-1] if len(x.shape) == 1 or rng.random() < 0.6 else size // x.shape[0]
    if k > 512:
        return None
    batch = size // k
    units = int(rng.integers(1, 33))
    w, sw, zw, bias = _weights(g, x, units, k, True)
    y, act = _requant_out(g, x, w, zw, bias, sw, (batch, units))
    wt = g.qconst(w, x.dtype, sw, zw, axis=0)
    ins = [x.idx, wt]
    if rng.random() < 0.8:
        bscale = [x.scale * s for s in sw]
        ins.append(g.qconst(bias, "int32", bscale, [0] * len(bscale)))
    else:
        ins.append(-1)
    g.mb.add_op("FULLY_CONNECTED", ins, [y.idx], fused_activation=act)
    return y


def _broadcast_shape(g: _Gen, shape) -> tuple[int, ...]:
    """The other operand's shape: equal, with 1s, a trailing part, [1], a scalar, or an
    outer-product form that also broadcasts ``shape``'s unit dims (LiteRT picks a different
    loop for each: elementwise rows, scalar broadcast, or its generic kernel)."""
    rng = g.rng
    kind = int(rng.integers(0, 7))
    if kind == 0 or not shape:
        return tuple(shape)
    if kind == 1:
        return tuple(d if rng.random() < 0.5 else 1 for d in shape)
    if kind == 2:
        return tuple(shape[int(rng.integers(0, len(shape))) :])
    if kind == 3:
        return (1,)
    if kind == 4:
        return ()
    if kind == 5:  # outer product: new extents where ``shape`` has 1, 1 where it does not
        return tuple(int(rng.integers(2, 6)) if d == 1 else 1 for d in shape)
    return tuple(int(rng.integers(2, 6)) if d == 1 else (d if rng.random() < 0.5 else 1)
                 for d in shape)  # fmt: skip


def _other_input(g: _Gen, x: T, shape, scale: float | None = None) -> T:
    """Second operand: a graph input, sometimes a constant, in its own quantization."""
    s, z = (g.scale() if scale is None else scale), g.zp(x.dtype)
    if g.rng.random() < 0.2:
        lo, hi = dtype_range(x.dtype)
        data = g.rng.integers(lo, hi + 1, size=shape)
        return T(g.qconst(data, x.dtype, s, z), tuple(shape), x.dtype, s, z)
    return g.graph_input(shape, x.dtype, s, z)


def _binary(op: str):
    def gen(g: _Gen, x: T) -> T | None:
        if len(x.shape) > 4 or not x.shape:
            return None
        bshape = _broadcast_shape(g, x.shape)
        # ~30% ADD/SUB with scale ratios that put many results on rounding ties
        ties = op != "MUL" and g.rng.random() < 0.3
        ratio = float(g.rng.choice([0.5, 0.7, 1.0, 1.4, 2.0]))
        b = _other_input(g, x, bshape, x.scale * ratio if ties else None)
        a = x
        if g.rng.random() < 0.3:
            a, b = b, a
        (alo, ahi), (blo, bhi) = a.frange, b.frange
        if op == "ADD":
            flo, fhi = alo + blo, ahi + bhi
        elif op == "SUB":
            flo, fhi = alo - bhi, ahi - blo
        else:
            prods = [alo * blo, alo * bhi, ahi * blo, ahi * bhi]
            flo, fhi = min(prods), max(prods)
        shape = np.broadcast_shapes(a.shape, b.shape)
        act = g.act()
        s, z = g.out_quant(*_after_act(act, flo, fhi), x.dtype)
        if ties:  # the converter's scale rounded up to 2^k times the larger input scale
            top = max(a.scale, b.scale)
            s = top * 2.0 ** int(np.clip(np.ceil(np.log2(s / top)), 0, 4))
        # Stay out of LiteRT's int16 wraparound regime of its SIMD ADD/MUL loops.
        reach = 32000 - abs(z)
        if op == "MUL":
            top = max(abs(a.zp - v) for v in dtype_range(a.dtype)) * max(
                abs(b.zp - v) for v in dtype_range(b.dtype)
            )
            s = max(s, a.scale * b.scale * top / reach)
        else:
            s = max(s, 256 * (a.scale + b.scale) / reach)
        y = g.tensor(shape, x.dtype, s, z)
        g.mb.add_op(op, [a.idx, b.idx], [y.idx], fused_activation=act)
        return y

    return gen


def gen_prelu(g: _Gen, x: T) -> T | None:
    """PRELU with a slope broadcast along some dims (per channel, per element or one value),
    a constant 70% of the time."""
    if not x.shape or len(x.shape) > 4:
        return None
    rng = g.rng
    kind = int(rng.integers(0, 4))
    if kind == 0:
        ashape = tuple(x.shape)
    elif kind == 1:
        ashape = tuple(x.shape[-1:])
    elif kind == 2:
        ashape = tuple(d if rng.random() < 0.5 else 1 for d in x.shape)
    else:
        ashape = (1,)
    sa, za = g.scale(1 / 512, 1 / 32), g.zp(x.dtype)
    if rng.random() < 0.7:
        lo, hi = dtype_range(x.dtype)
        data = rng.integers(lo, hi + 1, size=ashape)
        alpha = T(g.qconst(data, x.dtype, sa, za), ashape, x.dtype, sa, za)
    else:
        alpha = g.graph_input(ashape, x.dtype, sa, za)
    (xlo, xhi), (alo, ahi) = x.frange, alpha.frange
    negs = [xlo * alo, xlo * ahi]
    y = g.out_like(x, min(0.0, *negs), max(xhi, *negs), x.shape)
    g.mb.add_op("PRELU", [x.idx, alpha.idx], [y.idx])
    return y


def _pool(op: str):
    def gen(g: _Gen, x: T) -> T | None:
        if len(x.shape) != 4:
            return None
        rng = g.rng
        n, h, w, c = x.shape
        kh, kw = int(rng.integers(1, min(h, 4) + 1)), int(rng.integers(1, min(w, 4) + 1))
        sh, sw = (int(v) for v in rng.integers(1, 4, size=2))
        same = bool(rng.random() < 0.5)
        oh, ow = _conv_out(h, kh, sh, 1, same), _conv_out(w, kw, sw, 1, same)
        y = g.like(x, (n, oh, ow, c))
        g.mb.add_op(
            op, [x.idx], [y.idx], padding="SAME" if same else "VALID", stride_h=sh,
            stride_w=sw, filter_height=kh, filter_width=kw, fused_activation=g.act(False),
        )  # fmt: skip
        return y

    return gen


def gen_mean(g: _Gen, x: T) -> T | None:
    rng = g.rng
    rank = len(x.shape)
    if rank == 0 or rank > 4:
        return None
    if rank == 4 and rng.random() < 0.5:
        axes = [1, 2]
    else:
        k = int(rng.integers(1, rank + 1))
        axes = sorted(int(a) for a in rng.choice(rank, size=k, replace=False))
    keep = bool(rng.random() < 0.5)
    shape = [1 if d in axes else s for d, s in enumerate(x.shape)]
    if not keep:
        shape = [s for d, s in enumerate(x.shape) if d not in axes]
    flo, fhi = x.frange
    count = int(np.prod([x.shape[a] for a in axes]))
    # the mean of n uniform values spans about 1/sqrt(n) of their range
    spread = min(1.0, 2.5 / np.sqrt(count)) * float(np.exp(rng.uniform(-0.2, 0.2)))
    mid = (flo + fhi) / 2
    y = g.out_like(x, mid + (flo - mid) * spread, mid + (fhi - mid) * spread, shape)
    if rng.random() < 0.25:
        y = g.tensor(shape, x.dtype, x.scale, x.zp)
    g.mb.add_op("MEAN", [x.idx, g.const(axes)], [y.idx], keep_dims=keep)
    return y


def _pad(op: str):
    def gen(g: _Gen, x: T) -> T | None:
        if not x.shape or len(x.shape) > 4:
            return None
        pads = g.rng.integers(0, 4, size=(len(x.shape), 2))
        if len(x.shape) == 4 and g.rng.random() < 0.5:
            pads[0] = pads[3] = 0
        shape = tuple(int(s + p.sum()) for s, p in zip(x.shape, pads, strict=True))
        y = g.like(x, shape)
        ins = [x.idx, g.const(pads)]
        if op == "PADV2":
            ins.append(g.qconst([g.zp(x.dtype)], x.dtype, x.scale, x.zp))
        g.mb.add_op(op, ins, [y.idx])
        return y

    return gen


def _factor_shape(g: _Gen, size: int) -> list[int]:
    dims, left = [], size
    for _ in range(int(g.rng.integers(0, 3))):
        divs = [d for d in range(1, left + 1) if left % d == 0]
        d = int(g.rng.choice(divs))
        dims.append(d)
        left //= d
    dims.append(left)
    g.rng.shuffle(dims)
    return dims


def gen_reshape(g: _Gen, x: T) -> T | None:
    shape = _factor_shape(g, int(np.prod(x.shape)))
    target = list(shape)
    if g.rng.random() < 0.4:
        target[int(g.rng.integers(0, len(target)))] = -1
    y = g.like(x, shape)
    g.mb.add_op("RESHAPE", [x.idx, g.const(target)], [y.idx])
    return y


def gen_squeeze(g: _Gen, x: T) -> T | None:
    ones = [d for d, s in enumerate(x.shape) if s == 1]
    if not ones or len(x.shape) < 2:
        return None
    dims = sorted(
        int(d)
        for d in g.rng.choice(ones, size=int(g.rng.integers(1, len(ones) + 1)), replace=False)
    )
    if len(dims) == len(x.shape):
        dims = dims[:-1]
    y = g.like(x, [s for d, s in enumerate(x.shape) if d not in dims])
    if g.rng.random() < 0.3 and len(dims) == len(ones):
        g.mb.add_op("SQUEEZE", [x.idx], [y.idx])
    else:
        g.mb.add_op("SQUEEZE", [x.idx], [y.idx], squeeze_dims=dims)
    return y


def gen_concat(g: _Gen, x: T) -> T | None:
    rank = len(x.shape)
    if rank == 0 or rank > 4:
        return None
    rng = g.rng
    axis = int(rng.integers(-rank, rank))
    parts = [x]
    for _ in range(int(rng.integers(1, 4))):
        shape = list(x.shape)
        shape[axis] = int(rng.integers(1, 5))
        if x.dtype == "int8" or rng.random() < 0.3:  # int8 CONCATENATION keeps quantization
            parts.append(g.graph_input(shape, x.dtype, x.scale, x.zp))
        else:
            parts.append(g.graph_input(shape, x.dtype, g.scale(), g.zp(x.dtype)))
    rng.shuffle(parts)
    shape = list(x.shape)
    shape[axis] = sum(p.shape[axis] for p in parts)
    if x.dtype == "int8" or all((p.scale, p.zp) == (x.scale, x.zp) for p in parts):
        y = g.like(x, shape)
    else:
        y = g.out_like(x, min(p.frange[0] for p in parts), max(p.frange[1] for p in parts), shape)
    g.mb.add_op("CONCATENATION", [p.idx for p in parts], [y.idx], axis=axis)
    return y


def _fixed_out(op: str):
    """SOFTMAX/LOGISTIC (scale 1/256) and TANH (1/128): the output quantization LiteRT requires."""

    def gen(g: _Gen, x: T) -> T | None:
        if not x.shape or len(x.shape) > 4:
            return None
        if op == "TANH":
            s, z = 1 / 128, (0 if x.dtype == "int8" else 128)
        else:
            s, z = 1 / 256, (-128 if x.dtype == "int8" else 0)
        y = g.tensor(x.shape, x.dtype, s, z)
        opts = {}
        if op == "SOFTMAX":
            opts["beta"] = float(g.rng.choice([1.0, 1.0, float(g.rng.uniform(0.1, 3.0))]))
        g.mb.add_op(op, [x.idx], [y.idx], **opts)
        return y

    return gen


def _unary(op: str):
    def gen(g: _Gen, x: T) -> T | None:
        if not x.shape:
            return None
        flo, fhi = x.frange
        opts = {}
        if op == "HARD_SWISH":
            flo, fhi = -0.375, max(fhi, 0.0)
        elif op == "LEAKY_RELU":
            alpha = float(
                np.float32(g.rng.choice([0.01, 0.1, 0.2, 0.3, float(g.rng.uniform(0, 1))]))
            )
            opts["alpha"] = alpha
            flo = alpha * flo
        elif op == "RELU":
            flo = 0.0
        elif op == "RELU6":
            flo, fhi = 0.0, min(fhi, 6.0)
        elif op == "RELU_N1_TO_1":
            flo, fhi = -1.0, 1.0
        y = g.out_like(x, flo, fhi, x.shape)
        if op in ("RELU", "RELU6", "RELU_N1_TO_1") and g.rng.random() < 0.3:
            y = g.like(x)
        if op == "HARD_SWISH" and y.scale * 128 <= x.scale:  # TFLite rejects this in Prepare
            y = g.out_like(x, -0.375, max(x.frange[1], 0.0), x.shape)
            if y.scale * 128 <= x.scale:
                return None
        g.mb.add_op(op, [x.idx], [y.idx], **opts)
        return y

    return gen


def gen_quantize(g: _Gen, x: T) -> T | None:
    """int8/uint8 -> int8/uint8 requantize (float -> int is the model's edge, see ``_start``)."""
    dtype = str(g.rng.choice(["int8", "uint8"]))
    flo, fhi = x.frange
    s, z = g.out_quant(flo, fhi, dtype)
    if g.rng.random() < 0.3 and dtype != x.dtype:  # the common int8 <-> uint8 flip
        s, z = x.scale, x.zp + (128 if dtype == "uint8" else -128)
    y = g.tensor(x.shape, dtype, s, z)
    g.mb.add_op("QUANTIZE", [x.idx], [y.idx])
    return y


def gen_dequantize(g: _Gen, x: T) -> T | None:
    if x.shape and g.rng.random() < 0.3:
        x = _per_channel_input(g, x)
    y = g.tensor(x.shape, "float32")
    g.mb.add_op("DEQUANTIZE", [x.idx], [y.idx])
    return y


def _per_channel_input(g: _Gen, x: T) -> T:
    """A new graph input like ``x`` but quantized per channel along a random axis."""
    axis = int(g.rng.integers(0, len(x.shape)))
    n = x.shape[axis]
    scales = [float(np.float32(g.scale())) for _ in range(n)]
    zps = [g.zp(x.dtype) for _ in range(n)]
    idx = g.mb.add_tensor(
        g.name("pc"), x.shape, x.dtype, scale=scales, zero_point=zps, quantized_dimension=axis
    )
    g.inputs.append(idx)
    g.specs.append(InputSpec(x.shape, x.dtype))
    return T(idx, x.shape, x.dtype, scales[0], zps[0])


def gen_expand_dims(g: _Gen, x: T) -> T | None:
    rank = len(x.shape)
    if rank > 4:
        return None
    axis = int(g.rng.integers(-rank - 1, rank + 1))
    shape = list(x.shape)
    shape.insert(axis if axis >= 0 else rank + 1 + axis, 1)
    y = g.like(x, shape)
    g.mb.add_op("EXPAND_DIMS", [x.idx, g.const(np.array([axis]))], [y.idx])
    return y


def _resize(op: str):
    def gen(g: _Gen, x: T) -> T | None:
        if len(x.shape) != 4 or (op == "RESIZE_BILINEAR" and x.dtype == "uint8"):
            return None  # uint8 RESIZE_BILINEAR is float32 arithmetic in LiteRT: rejected
        rng = g.rng
        n, h, w, c = x.shape
        if rng.random() < 0.3:
            oh, ow = 2 * h, 2 * w
        else:
            oh, ow = (int(v) for v in rng.integers(1, 2 * max(h, w) + 4, size=2))
        ac, hp = [(False, False), (True, False), (False, True)][int(rng.integers(0, 3))]
        if op == "RESIZE_NEAREST_NEIGHBOR" and rng.random() < 0.2:
            ac = hp = True
        y = g.like(x, (n, oh, ow, c))
        size = g.const(np.array([oh, ow]))
        g.mb.add_op(op, [x.idx, size], [y.idx], align_corners=ac, half_pixel_centers=hp)
        return y

    return gen


def gen_strided_slice(g: _Gen, x: T) -> T | None:
    rank = len(x.shape)
    if rank == 0 or rank > 4:
        return None
    rng = g.rng
    begin, end, strides = [], [], []
    bmask = emask = shrink = 0
    for d, size in enumerate(x.shape):
        s = int(rng.choice([1, 1, 1, 2, 3, -1]))
        b = int(rng.integers(-size, size))
        e = int(rng.integers(-size, size + 1))
        if rng.random() < 0.2:
            bmask |= 1 << d
        if rng.random() < 0.2:
            emask |= 1 << d
        if rng.random() < 0.1 and s == 1:
            shrink |= 1 << d
        begin.append(b), end.append(e), strides.append(s)
    out_shape = []
    for d, size in enumerate(x.shape):
        if shrink >> d & 1:
            b = begin[d] + size if begin[d] < 0 else begin[d]
            if not 0 <= b < size:
                return None
            continue
        sl = slice(
            None if bmask >> d & 1 else begin[d], None if emask >> d & 1 else end[d], strides[d]
        )
        out_shape.append(len(range(size)[sl]))
    if 0 in out_shape or shrink == (1 << rank) - 1:
        return None
    y = g.like(x, out_shape)
    g.mb.add_op(
        "STRIDED_SLICE", [x.idx, g.const(begin), g.const(end), g.const(strides)], [y.idx],
        begin_mask=bmask, end_mask=emask, shrink_axis_mask=shrink,
    )  # fmt: skip
    return y


def gen_shape_reshape(g: _Gen, x: T) -> T | None:
    """Keras' flatten: SHAPE -> STRIDED_SLICE (batch) -> PACK [batch, -1] -> RESHAPE."""
    if len(x.shape) < 2:
        return None
    rank = len(x.shape)
    shp = g.tensor((rank,), "int32")
    g.mb.add_op("SHAPE", [x.idx], [shp.idx], out_type="int32")
    batch = g.tensor((), "int32")
    g.mb.add_op(
        "STRIDED_SLICE", [shp.idx, g.const([0]), g.const([1]), g.const([1])], [batch.idx],
        shrink_axis_mask=1,
    )  # fmt: skip
    minus1 = g.mb.add_const(g.name("c"), np.array(-1, dtype=np.int32))
    packed = g.tensor((2,), "int32")
    g.mb.add_op("PACK", [batch.idx, minus1], [packed.idx], axis=0)
    y = g.like(x, (x.shape[0], int(np.prod(x.shape[1:]))))
    g.mb.add_op("RESHAPE", [x.idx, packed.idx], [y.idx])
    return y


def gen_pack(g: _Gen, x: T) -> T | None:
    rank = len(x.shape)
    if rank > 3:
        return None
    parts = [x] + [
        g.graph_input(x.shape, x.dtype, x.scale, x.zp) for _ in range(int(g.rng.integers(0, 3)))
    ]
    g.rng.shuffle(parts)
    axis = int(g.rng.integers(0, rank + 1))
    shape = list(x.shape)
    shape.insert(axis, len(parts))
    y = g.like(x, shape)
    g.mb.add_op("PACK", [p.idx for p in parts], [y.idx], axis=axis)
    return y


def gen_transpose(g: _Gen, x: T) -> T | None:
    if not x.shape or len(x.shape) > 5:
        return None
    perm = [int(p) for p in g.rng.permutation(len(x.shape))]
    y = g.like(x, [x.shape[p] for p in perm])
    g.mb.add_op("TRANSPOSE", [x.idx, g.const(perm)], [y.idx])
    return y


def gen_split(g: _Gen, x: T) -> T | None:
    rank = len(x.shape)
    if rank == 0 or rank > 4:
        return None
    axis = int(g.rng.integers(-rank, rank))
    size = x.shape[axis]
    n = int(g.rng.choice([k for k in range(1, min(size, 4) + 1) if size % k == 0]))
    shape = list(x.shape)
    shape[axis] = size // n
    outs = [g.like(x, shape) for _ in range(n)]
    axis_t = g.const(np.array(axis) if g.rng.random() < 0.5 else np.array([axis]))
    g.mb.add_op("SPLIT", [axis_t, x.idx], [o.idx for o in outs])
    keep = int(g.rng.integers(0, n))
    g.extra_outputs.extend(o.idx for k, o in enumerate(outs) if k != keep)
    return outs[keep]


GENERATORS: dict[str, Callable[[_Gen, T], T | None]] = {
    "CONV_2D": gen_conv2d,
    "DEPTHWISE_CONV_2D": gen_depthwise,
    "FULLY_CONNECTED": gen_fully_connected,
    "ADD": _binary("ADD"),
    "SUB": _binary("SUB"),
    "MUL": _binary("MUL"),
    "AVERAGE_POOL_2D": _pool("AVERAGE_POOL_2D"),
    "MAX_POOL_2D": _pool("MAX_POOL_2D"),
    "MEAN": gen_mean,
    "PAD": _pad("PAD"),
    "PADV2": _pad("PADV2"),
    "RESHAPE": gen_reshape,
    "SQUEEZE": gen_squeeze,
    "CONCATENATION": gen_concat,
    "SOFTMAX": _fixed_out("SOFTMAX"),
    "LOGISTIC": _fixed_out("LOGISTIC"),
    "TANH": _fixed_out("TANH"),
    "HARD_SWISH": _unary("HARD_SWISH"),
    "LEAKY_RELU": _unary("LEAKY_RELU"),
    "RELU": _unary("RELU"),
    "RELU6": _unary("RELU6"),
    "RELU_N1_TO_1": _unary("RELU_N1_TO_1"),
    "QUANTIZE": gen_quantize,
    "DEQUANTIZE": gen_dequantize,
    "STRIDED_SLICE": gen_strided_slice,
    "SHAPE": gen_shape_reshape,
    "PACK": gen_pack,
    "TRANSPOSE": gen_transpose,
    "SPLIT": gen_split,
    "EXPAND_DIMS": gen_expand_dims,
    "RESIZE_NEAREST_NEIGHBOR": _resize("RESIZE_NEAREST_NEIGHBOR"),
    "RESIZE_BILINEAR": _resize("RESIZE_BILINEAR"),
    "PRELU": gen_prelu,
}
#: pseudo-op: a float32 graph input quantized by QUANTIZE at the model's edge
FLOAT_QUANTIZE = "QUANTIZE(float)"


def fuzz_ops() -> list[str]:
    """Ops the fuzzer generates: those the importer supports and we have a generator for."""
    from ..frontend.tflite import supported_operators

    supported = set(supported_operators())
    return [op for op in GENERATORS if op in supported] + [FLOAT_QUANTIZE]


# ---- whole models ---------------------------------------------------------------------------


@dataclass
class FuzzCase:
    index: int
    ops: list[str]
    dtype: str
    model: bytes
    inputs: list[InputSpec]


def _start(g: _Gen, dtype: str, float_input: bool, rank4: bool) -> T:
    rng = g.rng
    if rank4:
        shape = (int(rng.choice([1, 1, 1, 2])), *(int(v) for v in rng.integers(1, 11, size=2)))
        shape += (int(rng.choice([1, 2, 3, 4, 8, 13, 16, 20])),)
    else:
        shape = tuple(int(v) for v in rng.integers(1, 9, size=int(rng.integers(1, 5))))
    if float_input:
        flo, fhi = -float(np.exp(rng.uniform(-3, 3))), float(np.exp(rng.uniform(-3, 3)))
        if rng.random() < 0.3:
            flo = 0.0
        xf = g.tensor(shape, "float32")
        g.inputs.append(xf.idx)
        s, z = g.out_quant(flo, fhi, dtype)
        y = g.tensor(shape, dtype, s, z)
        lo, hi = dtype_range(dtype)
        g.specs.append(InputSpec(shape, "float32", (lo - 8 - z) * s, (hi + 8 - z) * s, s))
        g.mb.add_op("QUANTIZE", [xf.idx], [y.idx])
        return y
    return g.graph_input(shape, dtype, g.scale(), g.zp(dtype))


_NEEDS_4D = {
    "CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "MAX_POOL_2D", "RESIZE_NEAREST_NEIGHBOR",
    "RESIZE_BILINEAR",
}  # fmt: skip


def make_case(index: int, seed: int, ops: list[str], n_ops: int = 1) -> FuzzCase | None:
    """One random model: ``ops[index % len(ops)]`` for single-op cases, else a random chain
    of ``n_ops`` ops drawn from ``ops``.  Returns None if the draw did not fit together."""
    rng = np.random.default_rng([seed, index, n_ops])
    g = _Gen(rng)
    dtype = "int8" if rng.random() < 0.7 else "uint8"
    if n_ops == 1:
        chain = [ops[index % len(ops)]]
    else:
        chain = [str(o) for o in rng.choice(ops, size=n_ops)]
        chain = [c for k, c in enumerate(chain) if c != FLOAT_QUANTIZE or k == 0]
        chain = [c for k, c in enumerate(chain) if c != "DEQUANTIZE" or k == len(chain) - 1]
        if not chain:
            return None
    float_in = chain[0] == FLOAT_QUANTIZE
    body = chain[1:] if float_in else chain
    rank4 = any(op in _NEEDS_4D for op in body) or rng.random() < 0.5
    x = _start(g, dtype, float_in, rank4)
    for k, op in enumerate(body):
        y = GENERATORS[op](g, x)
        if y is None or int(np.prod(y.shape)) > MAX_ELEMENTS or int(np.prod(y.shape)) == 0:
            return None
        if not y.shape and k < len(body) - 1:  # a scalar fits few ops: end the chain early
            return None
        x = y
    model = g.mb.finish(g.inputs, [x.idx, *g.extra_outputs])
    return FuzzCase(index, chain, dtype, model, g.specs)


def generate_cases(n: int, seed: int, ops: list[str] | None = None, n_ops: int = 1, start: int = 0):
    """``n`` cases (re-drawing the ones that did not fit)."""
    ops = ops or fuzz_ops()
    cases, index = [], start
    while len(cases) < n:
        for attempt in range(50):
            case = make_case(index, seed + 7919 * attempt, ops, n_ops)
            if case is not None:
                break
        if case is None:
            raise RuntimeError(f"fuzz case {index} ({n_ops} ops) could not be drawn")
        cases.append(case)
        index += 1
    return cases


def random_inputs(case: FuzzCase, rng: np.random.Generator) -> list[np.ndarray]:
    arrays = []
    for spec in case.inputs:
        if spec.dtype == "float32":
            a = rng.uniform(spec.lo, spec.hi, size=spec.shape).astype(np.float32)
            ties = rng.random(spec.shape) < 0.2  # exact half steps of the quantization
            half = (np.round(a / spec.scale) + 0.5) * np.float32(spec.scale)
            arrays.append(np.where(ties, half, a).astype(np.float32))
        else:
            lo, hi = dtype_range(spec.dtype)
            arrays.append(rng.integers(lo, hi + 1, size=spec.shape).astype(spec.dtype))
    return arrays


# ---- running --------------------------------------------------------------------------------


@dataclass
class Problem:
    index: int
    ops: list[str]
    dtype: str
    kind: str  # "mismatch", "import", "compile", "run", "oracle"
    detail: str
    max_diff: float = 0.0
    path: str | None = None


@dataclass
class FuzzReport:
    cases: int = 0
    per_op: Counter = field(default_factory=Counter)
    problems: list[Problem] = field(default_factory=list)

    @property
    def mismatches(self) -> list[Problem]:
        return [p for p in self.problems if p.kind == "mismatch"]

    def failures_by_op(self) -> Counter:
        return Counter(op for p in self.problems for op in set(p.ops))

    def summary(self) -> str:
        return f"fuzz: {self.cases} cases, {len(self.problems)} mismatches"


def merge_modules(mods: dict[str, object]):
    """One IRModule with each module's ``main`` as function ``name``."""
    import tvm

    funcs = {}
    for name, mod in mods.items():
        funcs[name] = mod["main"].with_attr("global_symbol", name)
    return tvm.IRModule(funcs)


def compile_batch(mods: dict[str, object], target="native"):
    """Compile imported modules as one executable; returns a VirtualMachine."""
    import tvm
    from tvm import relax

    from ..target import resolve_target

    mod = relax.transform.LegalizeOps()(merge_modules(mods))
    ex = tvm.compile(mod, resolve_target(target))
    return relax.VirtualMachine(ex, tvm.cpu())


def _compile_bisect(mods: dict, target, bad: dict[str, str]):
    """Compile ``mods``; on failure split until the failing ones are isolated into ``bad``."""
    try:
        return [(compile_batch(mods, target), list(mods))]
    except Exception as e:  # noqa: BLE001 (any TVM failure is a finding)
        if len(mods) == 1:
            bad[next(iter(mods))] = f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}"
            return []
        names = list(mods)
        half = len(names) // 2
        return _compile_bisect({n: mods[n] for n in names[:half]}, target, bad) + _compile_bisect(
            {n: mods[n] for n in names[half:]}, target, bad
        )


def _flatten(out) -> list[np.ndarray]:
    import tvm

    if isinstance(out, tvm.runtime.Tensor):
        return [out.numpy()]
    return [a for o in out for a in _flatten(o)]


def _diff(ours: np.ndarray, ref: np.ndarray) -> float:
    if ours.shape != ref.shape or ours.dtype != ref.dtype:
        return float("inf")
    if ours.size == 0:
        return 0.0
    d = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
    return float(np.max(d))


def run_cases(
    cases: list[FuzzCase],
    samples: int = 3,
    target="native",
    out_dir: str | Path | None = None,
    report: FuzzReport | None = None,
    seed: int = 0,
) -> FuzzReport:
    """Import, batch-compile and compare ``cases`` with LiteRT; adds to ``report``."""
    from ..frontend.tflite import TFLiteImportError, from_tflite
    from .litert import LiteRTRunner

    report = report or FuzzReport()
    mods, oracles, by_name = {}, {}, {}

    def problem(case: FuzzCase, kind: str, detail: str, diff: float = 0.0, inputs=None):
        path = None
        if out_dir is not None:
            d = Path(out_dir)
            d.mkdir(parents=True, exist_ok=True)
            stem = d / f"case_{seed}_{case.index}_{len(case.ops)}"
            stem.with_suffix(".tflite").write_bytes(case.model)
            meta = dict(ops=case.ops, dtype=case.dtype, kind=kind, detail=detail, max_diff=diff)
            stem.with_suffix(".json").write_text(json.dumps(meta, indent=1))
            if inputs is not None:
                np.savez(stem.with_suffix(".npz"), *inputs)
            path = str(stem.with_suffix(".tflite"))
        report.problems.append(Problem(case.index, case.ops, case.dtype, kind, detail, diff, path))

    for case in cases:
        report.cases += 1
        report.per_op.update(set(case.ops))
        try:
            oracles[case.index] = LiteRTRunner(case.model)
        except Exception as e:  # noqa: BLE001 (LiteRT rejecting a generated model)
            problem(case, "oracle", f"LiteRT rejects the model: {e}")
            continue
        try:
            mod = from_tflite(case.model)
        except TFLiteImportError as e:
            problem(case, "import", str(e))
            continue
        except Exception as e:  # noqa: BLE001 (anything else is an importer bug)
            problem(case, "import", f"{type(e).__name__}: {str(e).strip().splitlines()[-1]}")
            continue
        name = f"case_{case.index}_{len(case.ops)}"
        mods[name], by_name[name] = mod, case
    bad: dict[str, str] = {}
    for vm, names in _compile_bisect(mods, target, bad) if mods else []:
        for name in names:
            case = by_name[name]
            rng = np.random.default_rng([seed, case.index, 99])
            for _ in range(samples):
                arrays = random_inputs(case, rng)
                try:
                    ours = run_vm(vm, name, arrays)
                except Exception as e:  # noqa: BLE001
                    problem(case, "run", f"{type(e).__name__}: {e}", inputs=arrays)
                    break
                ref = invoke_litert(oracles[case.index], arrays)
                diffs = [_diff(o, r) for o, r in zip(ours, ref, strict=False)]
                if len(ours) != len(ref) or max(diffs, default=0.0) > 0:
                    worst = max(diffs, default=float("inf"))
                    shapes = (
                        [(o.shape, str(o.dtype)) for o in ours],
                        [(r.shape, str(r.dtype)) for r in ref],
                    )
                    problem(case, "mismatch", f"outputs {shapes}", worst, inputs=arrays)
                    break
    for name, err in bad.items():
        problem(by_name[name], "compile", err)
    return report


def _tvm_tensor(a: np.ndarray):
    import tvm

    return tvm.runtime.tensor(np.array(a, order="C"))  # ascontiguousarray makes 0-d 1-d


def run_vm(vm, name: str, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Call function ``name`` of a :func:`compile_batch` machine on numpy arrays."""
    return _flatten(vm[name](*(_tvm_tensor(a) for a in arrays)))


def invoke_litert(runner, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Run a :class:`~tvm_qnn_ext.testing.litert.LiteRTRunner` on ``arrays``, 0-d inputs
    included (its ``__call__`` passes inputs through ``np.ascontiguousarray``, which makes
    them 1-d)."""
    it = runner.interpreter
    for spec, a in zip(runner.inputs, arrays, strict=True):
        it.set_tensor(spec.index, np.array(a, order="C"))
    it.invoke()
    return [it.get_tensor(o.index).copy() for o in runner.outputs]


def run_fuzz(
    n_cases: int,
    seed: int = 0,
    n_multi: int = 0,
    samples: int = 3,
    batch_size: int = 150,
    out_dir: str | Path | None = None,
    ops: list[str] | None = None,
    target="native",
    progress: Callable[[FuzzReport], None] | None = None,
) -> FuzzReport:
    """``n_cases`` single-op models (ops in turn) plus ``n_multi`` chains of 2-4 ops, each run
    on ``samples`` random inputs in our compiled module and in LiteRT's builtin kernels."""
    ops = ops or fuzz_ops()
    report = FuzzReport()
    todo = [(n_cases, 1)] + [(n_multi, k) for k in (2, 3, 4)]
    for total, n_ops in todo:
        if n_ops > 1:
            total = total // 3 + (1 if n_ops - 2 < total % 3 else 0)
        for start in range(0, total, batch_size):
            cases = generate_cases(min(batch_size, total - start), seed, ops, n_ops, start)
            run_cases(cases, samples, target, out_dir, report, seed)
            if progress is not None:
                progress(report)
    return report

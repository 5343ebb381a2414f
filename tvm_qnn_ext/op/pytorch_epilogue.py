"""PyTorch-specific float epilogues that the generic ops cannot express exactly.

Each op reproduces one ATen/fbgemm kernel of :mod:`tvm_qnn_ext.quantization.pytorch` bit for
bit (its docstring has the formula).  Fused multiply-adds are evaluated in float64 (the float32
product is exact there) and rounded once to float32.  TVM narrows ``float32(float64 expr)`` back
to float32 arithmetic and LLVM contracts a multiply followed by an add into an FMA on targets
that have one, so every value PyTorch rounds on its own passes ``llvm.arithmetic.fence``.

* ``qnn.fbgemm_requantize(acc[, bias])``: conv/linear output stage with a float bias.
* ``qnn.onednn_requantize(acc[, bias])``: the same stage in oneDNN's kernels (PyTorch's x86
  engine on AVX512-VNNI CPUs).
* ``qnn.fbgemm_depthwise_conv2d(x, w)``: the accumulator of fbgemm's depthwise fast path, whose
  tap pairs saturate to int16.
* ``qnn.torch_add(lhs, rhs)``: ``quantized::add`` / ``add_relu`` (vectorized path).
* ``qnn.torch_batch_norm(x)``: ``quantized::batch_norm2d`` (NCHW, per-channel alpha/beta).
* ``qnn.torch_global_avg_pool(x)``: ``adaptive_avg_pool2d(x, 1)`` on a quantized NCHW tensor.
"""

from __future__ import annotations

import numpy as np
from tvm import relax, te, tirx

from ..quantization import dtype_range
from ..quantization.params import check_scale, check_zero_point
from ..quantization.pytorch import (
    batch_norm_params,  # noqa: F401  (re-exported)
    onednn_scales,
)
from .common import attr, expect_dtype, expect_rank, op_name, static_shape, tensor_type
from .registry import QnnTypeError, make_call, register_op

F32, F64 = "float32", "float64"
QUINT = ("uint8", "int8")


def _f32(v) -> float:
    return float(np.float32(v))


def _fconst(v, dtype=F32):
    return tirx.const(float(v), dtype)


def _fence(x):
    """``llvm.arithmetic.fence``: an opaque value, so neither TVM's cast narrowing nor LLVM's
    FMA contraction can merge the rounding of ``x`` into what follows."""
    return tirx.call_llvm_pure_intrin(str(x.ty), "llvm.arithmetic.fence", x)


def _round_once(expr64):
    """A float64 expression (exact here) rounded once to float32."""
    return _fence(expr64).astype(F32)


def _rint_i64(y):
    big = _fconst(2.0**40)
    return tirx.max(tirx.min(te.round(y), big), -big).astype("int64")


def _clamp(v, lo: int, hi: int, dtype: str):
    return tirx.max(tirx.min(v, tirx.const(hi, "int64")), tirx.const(lo, "int64")).astype(dtype)


def _const_array(values, dtype: str):
    return relax.const(np.ascontiguousarray(np.asarray(values).astype(dtype)), dtype)


# ---- qnn.fbgemm_requantize ---------------------------------------------------------------------


def fbgemm_requantize(
    acc: relax.Expr,
    bias: relax.Expr | None,
    *,
    act_times_w_scale,
    output_scale: float,
    output_zero_point: int,
    per_channel: bool,
    axis: int = 1,
    relu: bool = False,
    out_dtype: str = "uint8",
) -> relax.Call:
    """int32 accumulator -> quint8, as :func:`tvm_qnn_ext.quantization.pytorch.fbgemm_requantize`.

    ``act_times_w_scale`` is ``float32(s_in) * float32(s_w[c])`` (one value, or one per channel
    along ``axis``); ``bias`` is a float32 vector or ``None``.
    """
    a = np.atleast_1d(np.asarray(act_times_w_scale, np.float32))
    check_scale(a, "qnn.fbgemm_requantize act_times_w_scale")
    args = [acc] + ([] if bias is None else [bias])
    return make_call(
        "qnn.fbgemm_requantize",
        args,
        dict(
            act_times_w_scale=[float(v) for v in a],
            output_scale=_f32(output_scale),
            output_zero_point=int(output_zero_point),
            per_channel=bool(per_channel),
            axis=int(axis),
            relu=bool(relu),
            out_dtype=str(out_dtype),
        ),
    )


@register_op("qnn.fbgemm_requantize", 2, "fbgemm's float requantization of an int32 accumulator")
class FbgemmRequantize:
    @staticmethod
    def infer(call, bb):
        if len(call.args) not in (1, 2):
            raise QnnTypeError(f"{op_name(call)}: expected 1 or 2 arguments")
        ty = tensor_type(call, 0, "accumulator")
        expect_dtype(call, "accumulator", ty.dtype, ("int32",))
        out_dtype = str(attr(call, "out_dtype"))
        expect_dtype(call, "out_dtype", out_dtype, QUINT)
        check_zero_point(attr(call, "output_zero_point"), out_dtype, op_name(call))
        check_scale(attr(call, "output_scale"), op_name(call))
        shape = static_shape(call, "accumulator", ty)
        axis = int(attr(call, "axis")) % len(shape)
        a = attr(call, "act_times_w_scale")
        if len(a) not in (1, shape[axis]):
            raise QnnTypeError(
                f"{op_name(call)}: {len(a)} act_times_w scales for {shape[axis]} channels"
            )
        if len(call.args) == 2:
            bty = tensor_type(call, 1, "bias")
            expect_dtype(call, "bias", bty.dtype, (F32,))
            if static_shape(call, "bias", bty) != (shape[axis],):
                raise QnnTypeError(f"{op_name(call)}: bias must have shape ({shape[axis]},)")
        return relax.TensorType(ty.shape, out_dtype)

    @staticmethod
    def legalize(bb, call):
        shape = [int(d) for d in call.args[0].ty.shape.values]
        axis = int(attr(call, "axis")) % len(shape)
        c = shape[axis]
        a = np.broadcast_to(np.asarray(attr(call, "act_times_w_scale"), np.float32), (c,))
        s_out = np.float32(attr(call, "output_scale"))
        zp = int(attr(call, "output_zero_point"))
        per_channel = bool(attr(call, "per_channel"))
        out_dtype = str(attr(call, "out_dtype"))
        lo, hi = dtype_range(out_dtype)
        if bool(attr(call, "relu")):
            lo = zp
        mult = (a / s_out).astype(np.float32)
        rcp = np.float32(1.0 / np.float64(a[0]))
        has_bias = len(call.args) == 2

        def compute(acc, m, atw, *bias):
            def elem(*idx):
                ch = idx[axis]
                t = acc(*idx).astype(F32)
                if has_bias:
                    b = bias[0](ch)
                    if per_channel:
                        t = t + b / atw(ch)
                    else:  # fused multiply-add in fbgemm's compiled kernel
                        t = _round_once(b.astype(F64) * _fconst(rcp, F64) + t.astype(F64))
                y = _rint_i64(t * m(ch)) + tirx.const(zp, "int64")
                return _clamp(y, lo, hi, out_dtype)

            return te.compute(acc.shape, elem, name="fbgemm_requantize")

        args = [call.args[0], _const_array(mult, F32), _const_array(a, F32)]
        if has_bias:
            args.append(call.args[1])
        return bb.call_te(compute, *args, primfunc_name_hint="qnn_fbgemm_requantize")


# ---- qnn.onednn_requantize ---------------------------------------------------------------------


def onednn_requantize(
    acc: relax.Expr,
    bias: relax.Expr | None,
    *,
    input_scale: float,
    weight_scales,
    output_scale: float,
    output_zero_point: int,
    axis: int = 1,
    relu: bool = False,
    out_dtype: str = "uint8",
) -> relax.Call:
    """int32 accumulator -> quint8 as oneDNN does it, see
    :func:`tvm_qnn_ext.quantization.pytorch.onednn_requantize`; ``bias`` is float32 or None."""
    src, w, dst = onednn_scales(input_scale, weight_scales, output_scale)
    args = [acc] + ([] if bias is None else [bias])
    return make_call(
        "qnn.onednn_requantize",
        args,
        dict(
            src_scale=float(src),
            weight_scales=[float(v) for v in w],
            dst_multiplier=float(dst),
            output_zero_point=int(output_zero_point),
            axis=int(axis),
            relu=bool(relu),
            out_dtype=str(out_dtype),
        ),
    )


@register_op("qnn.onednn_requantize", 2, "oneDNN's float requantization of an int32 accumulator")
class OnednnRequantize:
    @staticmethod
    def infer(call, bb):
        if len(call.args) not in (1, 2):
            raise QnnTypeError(f"{op_name(call)}: expected 1 or 2 arguments")
        ty = tensor_type(call, 0, "accumulator")
        expect_dtype(call, "accumulator", ty.dtype, ("int32",))
        out_dtype = str(attr(call, "out_dtype"))
        expect_dtype(call, "out_dtype", out_dtype, QUINT)
        check_zero_point(attr(call, "output_zero_point"), out_dtype, op_name(call))
        shape = static_shape(call, "accumulator", ty)
        axis = int(attr(call, "axis")) % len(shape)
        if len(attr(call, "weight_scales")) not in (1, shape[axis]):
            raise QnnTypeError(
                f"{op_name(call)}: {len(attr(call, 'weight_scales'))} weight scales for "
                f"{shape[axis]} channels"
            )
        if len(call.args) == 2:
            bty = tensor_type(call, 1, "bias")
            expect_dtype(call, "bias", bty.dtype, (F32,))
            if static_shape(call, "bias", bty) != (shape[axis],):
                raise QnnTypeError(f"{op_name(call)}: bias must have shape ({shape[axis]},)")
        return relax.TensorType(ty.shape, out_dtype)

    @staticmethod
    def legalize(bb, call):
        shape = [int(d) for d in call.args[0].ty.shape.values]
        axis = int(attr(call, "axis")) % len(shape)
        w = np.broadcast_to(np.asarray(attr(call, "weight_scales"), np.float32), (shape[axis],))
        src = np.float32(attr(call, "src_scale"))
        dst = np.float32(attr(call, "dst_multiplier"))
        zp = np.float32(int(attr(call, "output_zero_point")))
        out_dtype = str(attr(call, "out_dtype"))
        lo, hi = dtype_range(out_dtype)
        relu = bool(attr(call, "relu"))
        has_bias = len(call.args) == 2

        def compute(acc, ws, *bias):
            def elem(*idx):
                ch = idx[axis]
                # each product is fenced: oneDNN rounds every step, no FMA, no reassociation
                y = _fence(acc(*idx).astype(F32) * _fconst(src))
                y = _fence(y * ws(ch))
                if has_bias:
                    y = y + bias[0](ch)
                if relu:
                    y = tirx.max(y, _fconst(0.0))
                y = _fence(y * _fconst(dst))
                return _clamp(_rint_i64(_fence(y + _fconst(zp))), lo, hi, out_dtype)

            return te.compute(acc.shape, elem, name="onednn_requantize")

        args = [call.args[0], _const_array(w, F32)] + ([call.args[1]] if has_bias else [])
        return bb.call_te(compute, *args, primfunc_name_hint="qnn_onednn_requantize")


# ---- qnn.torch_add -----------------------------------------------------------------------------


def torch_add(
    lhs: relax.Expr,
    rhs: relax.Expr,
    *,
    lhs_scale: float,
    lhs_zero_point: int,
    rhs_scale: float,
    rhs_zero_point: int,
    output_scale: float,
    output_zero_point: int,
    relu: bool = False,
    vector_width: int = 0,
) -> relax.Call:
    """``quantized::add`` / ``add_relu``, as :func:`tvm_qnn_ext.quantization.pytorch.add`.

    ``vector_width`` > 0 applies ATen's scalar formula to the last ``numel % vector_width``
    elements, as PyTorch does when the whole tensor is one chunk (one thread, or at most 32768
    elements); 0 uses the vectorized formula everywhere.
    """
    for s in (lhs_scale, rhs_scale, output_scale):
        check_scale(s, "qnn.torch_add")
    return make_call(
        "qnn.torch_add",
        [lhs, rhs],
        dict(
            lhs_scale=_f32(lhs_scale),
            lhs_zero_point=int(lhs_zero_point),
            rhs_scale=_f32(rhs_scale),
            rhs_zero_point=int(rhs_zero_point),
            output_scale=_f32(output_scale),
            output_zero_point=int(output_zero_point),
            relu=bool(relu),
            vector_width=int(vector_width),
        ),
    )


@register_op("qnn.torch_add", 2, "PyTorch quantized add: FMA dequantize, float add, quantize")
class TorchAdd:
    @staticmethod
    def infer(call, bb):
        lt, rt = tensor_type(call, 0, "lhs"), tensor_type(call, 1, "rhs")
        expect_dtype(call, "lhs", lt.dtype, QUINT)
        if rt.dtype != lt.dtype:
            raise QnnTypeError(f"{op_name(call)}: lhs is {lt.dtype} but rhs is {rt.dtype}")
        if static_shape(call, "lhs", lt) != static_shape(call, "rhs", rt):
            raise QnnTypeError(f"{op_name(call)}: lhs {lt.shape} and rhs {rt.shape} differ")
        for k in ("lhs_zero_point", "rhs_zero_point", "output_zero_point"):
            check_zero_point(attr(call, k), str(lt.dtype), f"{op_name(call)} {k}")
        return relax.TensorType(lt.shape, lt.dtype)

    @staticmethod
    def legalize(bb, call):
        dtype = str(call.args[0].ty.dtype)
        lo, hi = dtype_range(dtype)
        zo = int(attr(call, "output_zero_point"))
        relu = bool(attr(call, "relu"))
        inv = np.float32(1.0) / np.float32(attr(call, "output_scale"))

        def deq(v, s_key, z_key):
            s = np.float32(attr(call, s_key))
            pre = np.float32(s * np.float32(-int(attr(call, z_key))))
            return _round_once(_fconst(s, F64) * v.astype(F64) + _fconst(pre, F64))

        shape = [int(d) for d in call.args[0].ty.shape.values]
        width = int(attr(call, "vector_width", 0))
        numel = int(np.prod(shape))
        head = numel if width <= 0 else numel // width * width

        def finish(c):
            return tirx.max(c, _fconst(0.0)) if relu else c

        def tail_deq(v, s_key, z_key):
            s = np.float32(attr(call, s_key))
            return _round_once((v.astype("int32") - int(attr(call, z_key))).astype(F64) * s)

        def compute(a, b):
            def elem(*idx):
                c = finish(
                    deq(a(*idx), "lhs_scale", "lhs_zero_point")
                    + deq(b(*idx), "rhs_scale", "rhs_zero_point")
                )
                y = _rint_i64(c * _fconst(inv)) + tirx.const(zo, "int64")
                if head < numel:
                    flat = tirx.const(0, "int64")
                    for i, d in zip(idx, shape, strict=True):
                        flat = flat * d + i.astype("int64")
                    ct = finish(
                        tail_deq(a(*idx), "lhs_scale", "lhs_zero_point")
                        + tail_deq(b(*idx), "rhs_scale", "rhs_zero_point")
                    )
                    # scalar path: zero point added before rounding, no FMA
                    yt = _rint_i64(_fence(ct * _fconst(inv)) + _fconst(zo))
                    y = tirx.Select(flat >= head, yt, y)
                return _clamp(y, lo, hi, dtype)

            return te.compute(a.shape, elem, name="torch_add")

        return bb.call_te(compute, *call.args, primfunc_name_hint="qnn_torch_add")


# ---- qnn.torch_batch_norm ----------------------------------------------------------------------


def torch_batch_norm(
    x: relax.Expr,
    alpha,
    beta,
    *,
    input_zero_point: int,
    output_zero_point: int,
    relu: bool = False,
) -> relax.Call:
    """``quantized::batch_norm2d``: ``clamp(rint(fl(alpha[c] * (x - zp_in) + beta[c])) + zp_out)``
    with one rounding (FMA); ``alpha``, ``beta`` from :func:`batch_norm_params`."""
    return make_call(
        "qnn.torch_batch_norm",
        [x, _const_array(alpha, F32), _const_array(beta, F32)],
        dict(
            input_zero_point=int(input_zero_point),
            output_zero_point=int(output_zero_point),
            relu=bool(relu),
        ),
    )


@register_op("qnn.torch_batch_norm", 3, "PyTorch quantized batch_norm2d (NCHW)")
class TorchBatchNorm:
    @staticmethod
    def infer(call, bb):
        ty = tensor_type(call, 0, "input")
        expect_dtype(call, "input", ty.dtype, QUINT)
        expect_rank(call, "input", ty, (4,))
        c = static_shape(call, "input", ty)[1]
        for i, name in ((1, "alpha"), (2, "beta")):
            pty = tensor_type(call, i, name)
            if static_shape(call, name, pty) != (c,) or pty.dtype != F32:
                raise QnnTypeError(f"{op_name(call)}: {name} must be float32 of shape ({c},)")
        check_zero_point(attr(call, "input_zero_point"), str(ty.dtype), op_name(call))
        check_zero_point(attr(call, "output_zero_point"), str(ty.dtype), op_name(call))
        return relax.TensorType(ty.shape, ty.dtype)

    @staticmethod
    def legalize(bb, call):
        dtype = str(call.args[0].ty.dtype)
        lo, hi = dtype_range(dtype)
        zi, zo = int(attr(call, "input_zero_point")), int(attr(call, "output_zero_point"))
        if bool(attr(call, "relu")):
            lo = max(lo, zo)

        def compute(x, alpha, beta):
            def elem(n, c, h, w):
                v = (x(n, c, h, w).astype("int32") - zi).astype(F64)
                y = _round_once(alpha(c).astype(F64) * v + beta(c).astype(F64))
                return _clamp(_rint_i64(y) + tirx.const(zo, "int64"), lo, hi, dtype)

            return te.compute(x.shape, elem, name="torch_batch_norm")

        return bb.call_te(compute, *call.args, primfunc_name_hint="qnn_torch_batch_norm")


# ---- qnn.torch_global_avg_pool -----------------------------------------------------------------


def torch_global_avg_pool(x: relax.Expr) -> relax.Call:
    """``adaptive_avg_pool2d(x, 1)`` on quantized NCHW: ``rint(fl(float32(sum(x)) * fl(1/n)))``
    over the raw values (the input zero point cancels because the output keeps the input's
    scale and zero point)."""
    return make_call("qnn.torch_global_avg_pool", [x], {})


@register_op("qnn.torch_global_avg_pool", 1, "PyTorch quantized global average pool (NCHW)")
class TorchGlobalAvgPool:
    @staticmethod
    def infer(call, bb):
        ty = tensor_type(call, 0, "input")
        expect_dtype(call, "input", ty.dtype, QUINT)
        expect_rank(call, "input", ty, (4,))
        n, c, _, _ = static_shape(call, "input", ty)
        return relax.TensorType([n, c, 1, 1], ty.dtype)

    @staticmethod
    def legalize(bb, call):
        dtype = str(call.args[0].ty.dtype)
        lo, hi = dtype_range(dtype)
        _, _, h, w = (int(d) for d in call.args[0].ty.shape.values)
        inv = np.float32(1.0 / (h * w))

        def compute(x):
            rh = te.reduce_axis((0, h), name="rh")
            rw = te.reduce_axis((0, w), name="rw")
            n_, c_ = x.shape[0], x.shape[1]
            total = te.compute(
                (n_, c_),
                lambda n, c: te.sum(x(n, c, rh, rw).astype("int32"), axis=[rh, rw]),
                name="pool_sum",
            )
            return te.compute(
                (n_, c_, 1, 1),
                lambda n, c, i, j: _clamp(
                    _rint_i64(total(n, c).astype(F32) * _fconst(inv)), lo, hi, dtype
                ),
                name="torch_global_avg_pool",
            )

        return bb.call_te(compute, call.args[0], primfunc_name_hint="qnn_torch_global_avg_pool")


# ---- qnn.fbgemm_depthwise_conv2d ---------------------------------------------------------------


def fbgemm_depthwise_conv2d(
    data: relax.Expr,
    weight: np.ndarray,
    *,
    strides,
    input_zero_point: int,
    kernel_zero_point,
) -> relax.Call:
    """int32 accumulator of fbgemm's depthwise fast path, as
    :func:`tvm_qnn_ext.quantization.pytorch._depthwise_saturating_accumulate`: NCHW uint8 data,
    OIHW int8 ``weight`` of shape ``(C * m, 1, k, k)``, ``k`` in (3, 5), padding ``(k - 1) / 2``;
    raw products of tap pairs ``(0, 1), (2, 3), ...`` are summed with int16 saturation, the
    zero-point terms are subtracted afterwards in int32."""
    w = np.ascontiguousarray(np.asarray(weight, np.int8))
    zw = np.broadcast_to(np.asarray(kernel_zero_point, np.int64).reshape(-1), (w.shape[0],))
    return make_call(
        "qnn.fbgemm_depthwise_conv2d",
        [data, relax.const(w, "int8")],
        dict(
            strides=[int(v) for v in strides],
            input_zero_point=int(input_zero_point),
            kernel_zero_point=[int(v) for v in zw],
        ),
    )


@register_op(
    "qnn.fbgemm_depthwise_conv2d", 2, "fbgemm's depthwise conv accumulator (int16 tap pairs)"
)
class FbgemmDepthwiseConv2d:
    @staticmethod
    def infer(call, bb):
        ty, wty = tensor_type(call, 0, "data"), tensor_type(call, 1, "weight")
        expect_dtype(call, "data", ty.dtype, ("uint8",))
        expect_dtype(call, "weight", wty.dtype, ("int8",))
        expect_rank(call, "data", ty, (4,))
        n, c, h, w = static_shape(call, "data", ty)
        o, one, kh, kw = static_shape(call, "weight", wty)
        if one != 1 or kh != kw or kh not in (3, 5) or o % c:
            raise QnnTypeError(f"{op_name(call)}: weight {(o, one, kh, kw)} for {c} channels")
        sh, sw = (int(v) for v in attr(call, "strides"))
        p = (kh - 1) // 2
        oh, ow = (h + 2 * p - kh) // sh + 1, (w + 2 * p - kw) // sw + 1
        return relax.TensorType([n, o, oh, ow], "int32")

    @staticmethod
    def legalize(bb, call):
        from tvm import topi

        o, _, k, _ = (int(d) for d in call.args[1].ty.shape.values)
        c = int(call.args[0].ty.shape.values[1])
        mult = o // c
        sh, sw = (int(v) for v in attr(call, "strides"))
        zx = int(attr(call, "input_zero_point"))
        zw = np.asarray(attr(call, "kernel_zero_point"), np.int32)
        taps, pad = k * k, (k - 1) // 2
        out_shape = [int(d) for d in call.ty.shape.values]

        def compute(x, w, zws):
            xp = topi.nn.pad(x, [0, 0, pad, pad], [0, 0, pad, pad], pad_value=zx)
            r = te.reduce_axis((0, (taps + 1) // 2), name="pair")
            i32 = "int32"

            def tap(n, oc, i, j, t):
                return xp[n, oc // mult, i * sh + t // k, j * sw + t % k].astype(i32)

            def wt(oc, t):
                return w[oc, 0, t // k, t % k].astype(i32)

            def pair_sum(n, oc, i, j):
                t0 = 2 * r
                t1 = tirx.min(2 * r + 1, taps - 1)
                second = tirx.Select(2 * r + 1 < taps, tap(n, oc, i, j, t1) * wt(oc, t1), 0)
                v = tap(n, oc, i, j, t0) * wt(oc, t0) + second
                return te.sum(tirx.max(tirx.min(v, 32767), -32768), axis=r)

            raw = te.compute(out_shape, pair_sum, name="pair_sum")
            rw = te.reduce_axis((0, taps), name="tap")
            wsum = te.compute((o,), lambda oc: te.sum(wt(oc, rw), axis=rw), name="w_sum")
            rx = te.reduce_axis((0, taps), name="xtap")
            xsum = te.compute(
                out_shape, lambda n, oc, i, j: te.sum(tap(n, oc, i, j, rx), axis=rx), name="x_sum"
            )
            return te.compute(
                out_shape,
                lambda n, oc, i, j: (
                    raw[n, oc, i, j] - zx * wsum[oc] - zws[oc] * (xsum[n, oc, i, j] - zx * taps)
                ),
                name="fbgemm_depthwise_conv2d",
            )

        return bb.call_te(
            compute, call.args[0], call.args[1], _const_array(zw, "int32"),
            primfunc_name_hint="qnn_fbgemm_depthwise_conv2d",
        )  # fmt: skip

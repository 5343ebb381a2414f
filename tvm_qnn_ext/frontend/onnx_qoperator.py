"""Converters for the QOperator-format ONNX ops TVM's importer cannot read.

onnxruntime's ``quantize_static(..., QuantFormat.QOperator)`` writes QLinearConv, QLinearMatMul
and the com.microsoft ops QLinearAdd, QGemm, QLinearConcat, QLinearAveragePool and
QLinearGlobalAveragePool.  Each is expanded into the QDQ form TVM emits
for the rest of the graph (``R.dequantize -> float op -> R.quantize``, reusing TVM's own Conv
and Gemm converters), so the ONNX QDQ rules turn it into integer QNN ops like any other region.
The int32 bias is dequantized at ``fl32(x_scale * w_scale)``, its meaning in these ops.
"""

from __future__ import annotations

import numpy as np
from tvm import relax
from tvm.ir import GenericConst
from tvm.relax.frontend.onnx.onnx_frontend import (
    AveragePool,
    Concat,
    Conv,
    Gemm,
    GlobalAveragePool,
    OnnxOpConverter,
    onnx_input,
)


class QOperatorError(ValueError):
    """A QOperator node cannot be expanded; the message names it and the reason."""


def _value(expr, what: str) -> np.ndarray:
    if not isinstance(expr, GenericConst):
        raise QOperatorError(f"{what} must be a constant (an initializer)")
    return expr.value.numpy()


def _zero_point(zp, like: relax.Expr) -> relax.Expr:
    """An omitted zero point is 0 of the quantized tensor's dtype."""
    return relax.const(0, str(like.ty.dtype)) if zp is None else zp


def _dequantize(bb, x, scale, zp, axis: int) -> relax.Expr:
    return bb.normalize(relax.op.dequantize(x, scale, _zero_point(zp, x), axis=axis))


def _quantize(y, scale, zp, like: relax.Expr) -> relax.Expr:
    """Quantize to the dtype of ``zp`` (or of ``like`` when the zero point is omitted)."""
    zp = _zero_point(zp, like)
    return relax.op.quantize(y, scale, zp, axis=1, out_dtype=str(zp.ty.dtype))


def _bias(bb, bias, x_scale, w_scale, what: str) -> relax.Expr | None:
    if bias is None:
        return None
    scale = np.float32(_value(x_scale, f"{what} x_scale")) * _value(w_scale, f"{what} w_scale")
    scale = np.atleast_1d(np.asarray(scale, dtype=np.float32))
    return _dequantize(bb, bias, relax.const(scale), relax.const(0, "int32"), 0)


class QLinearConv(OnnxOpConverter):
    """``y = Q(Conv(DQ(x), DQ(w), DQ(bias)))`` (ONNX opset 10)."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        x, xs, xz, w, ws, wz, ys, yz = (inputs[i] for i in range(8))
        xf = _dequantize(bb, x, xs, xz, 1)
        wf = _dequantize(bb, w, ws, wz, 0)
        bf = _bias(bb, inputs[8], xs, ws, "QLinearConv")
        y = Conv.get_converter(11)(bb, onnx_input([xf, wf, bf]), dict(attr), params)
        return _quantize(bb.normalize(y), ys, yz, x)


class QLinearMatMul(OnnxOpConverter):
    """``y = Q(MatMul(DQ(a), DQ(b)))``; ``b``'s per-column scales lie on its last axis."""

    @classmethod
    def _impl_v10(cls, bb, inputs, attr, params):
        a, a_s, az, b, b_s, bz, ys, yz = (inputs[i] for i in range(8))
        af = _dequantize(bb, a, a_s, az, 1)
        bf = _dequantize(bb, b, b_s, bz, -1)
        y = bb.normalize(relax.op.matmul(af, bf))
        return _quantize(y, ys, yz, a)


class QLinearAdd(OnnxOpConverter):
    """com.microsoft QLinearAdd: ``C = Q(DQ(A) + DQ(B))``."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        a, a_s, az, b, b_s, bz, cs, cz = (inputs[i] for i in range(8))
        y = relax.op.add(_dequantize(bb, a, a_s, az, 1), _dequantize(bb, b, b_s, bz, 1))
        return _quantize(bb.normalize(y), cs, cz, a)


class QGemm(OnnxOpConverter):
    """com.microsoft QGemm: ``Y = [Q](alpha * DQ(A) @ DQ(B) + DQ(C))``; without ``y_scale``
    the result stays float."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        a, a_s, az, b, b_s, bz, c, ys, yz = (inputs[i] for i in range(9))
        if attr.get("transA", 0):
            raise QOperatorError("QGemm with transA=1 is not supported")
        af = _dequantize(bb, a, a_s, az, 1)
        bf = _dequantize(bb, b, b_s, bz, 0 if attr.get("transB", 0) else 1)
        cf = _bias(bb, c, a_s, b_s, "QGemm")
        gemm = {k: v for k, v in attr.items() if k in ("alpha", "transB")}
        y = bb.normalize(Gemm.get_converter(13)(bb, onnx_input([af, bf, cf]), gemm, params))
        return y if ys is None else _quantize(y, ys, yz, a)


def _channels_first(attr: dict, op: str) -> None:
    if attr.get("channels_last", 0):
        raise QOperatorError(f"{op} with channels_last=1 is not supported")


class QLinearConcat(OnnxOpConverter):
    """com.microsoft QLinearConcat(Y_scale, Y_zp, (X, X_scale, X_zp)...):
    ``Q(Concat(DQ(X)...))``."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        ys, yz, rest = inputs[0], inputs[1], list(inputs)[2:]
        if not rest or len(rest) % 3:
            raise QOperatorError(
                f"QLinearConcat needs (tensor, scale, zero point) triples, got {len(rest)} inputs"
            )
        xs = [_dequantize(bb, *rest[i : i + 3], 1) for i in range(0, len(rest), 3)]
        y = bb.normalize(Concat.get_converter(13)(bb, onnx_input(xs), dict(attr), params))
        return _quantize(y, ys, yz, rest[0])


class QLinearAveragePool(OnnxOpConverter):
    """com.microsoft QLinearAveragePool: ``Q(AveragePool(DQ(X)))`` (NCHW)."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        _channels_first(attr, "QLinearAveragePool")
        x, xs, xz, ys, yz = (inputs[i] for i in range(5))
        pool_attr = {k: v for k, v in attr.items() if k != "channels_last"}
        y = AveragePool.get_converter(19)(
            bb, onnx_input([_dequantize(bb, x, xs, xz, 1)]), pool_attr, params
        )
        return _quantize(bb.normalize(y), ys, yz, x)


class QLinearGlobalAveragePool(OnnxOpConverter):
    """com.microsoft QLinearGlobalAveragePool: ``Q(GlobalAveragePool(DQ(X)))`` (NCHW)."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        _channels_first(attr, "QLinearGlobalAveragePool")
        x, xs, xz, ys, yz = (inputs[i] for i in range(5))
        xf = onnx_input([_dequantize(bb, x, xs, xz, 1)])
        y = GlobalAveragePool.get_converter(1)(bb, xf, {}, params)
        return _quantize(bb.normalize(y), ys, yz, x)


CONVERTERS: dict[str, type] = {
    "QLinearConcat": QLinearConcat,
    "QLinearAveragePool": QLinearAveragePool,
    "QLinearGlobalAveragePool": QLinearGlobalAveragePool,
    "QLinearConv": QLinearConv,
    "QLinearMatMul": QLinearMatMul,
    "QLinearAdd": QLinearAdd,
    "QGemm": QGemm,
}

"""qnn.dense: the int32 accumulator of a quantized fully-connected layer.

``acc[..., n] = bias[n] + sum_k((x[..., k] - zp_x) * (w[n, k] - zp_w[n]))``, legalized like
qnn.conv2d as a plain dot product plus zero-point terms (see :mod:`.conv`).
"""

from __future__ import annotations

from collections.abc import Sequence

from tvm import relax, te

from .common import attr, expect_rank, op_name, static_shape
from .conv import (
    OffsetParts,
    check_bias,
    check_int_operands,
    constant_value,
    int_list,
    kernel_zero_point,
    offset_parts,
)
from .registry import QnnTypeError, make_call, register_op

WEIGHT_LAYOUTS = ("NK", "KN")


def dense(
    data: relax.Expr,
    weight: relax.Expr,
    bias: relax.Expr | None = None,
    *,
    input_zero_point: int = 0,
    kernel_zero_point: int | Sequence[int] = 0,
    weight_layout: str = "NK",
    out_dtype: str = "int32",
) -> relax.Call:
    """Quantized dense: ``data [..., K]`` with ``weight [N, K]`` ("NK") or ``[K, N]`` ("KN")."""
    if weight_layout not in WEIGHT_LAYOUTS:
        raise QnnTypeError(f"qnn.dense: weight_layout {weight_layout!r} not in {WEIGHT_LAYOUTS}")
    args = [data, weight] + ([] if bias is None else [bias])
    return make_call(
        "qnn.dense",
        args,
        dict(
            input_zero_point=int(input_zero_point),
            kernel_zero_point=int_list(kernel_zero_point),
            weight_layout=str(weight_layout),
            out_dtype=str(out_dtype),
        ),
    )


def _shapes(call: relax.Call) -> tuple[tuple[int, ...], int, int, str]:
    """(data shape, K, N, weight layout) after checking the call."""
    dty, wty = check_int_operands(call)
    if dty.ndim < 1:
        raise QnnTypeError(f"{op_name(call)}: data must have rank >= 1, got {dty.ndim}")
    expect_rank(call, "weight", wty, (2,))
    layout = str(attr(call, "weight_layout", "NK"))
    if layout not in WEIGHT_LAYOUTS:
        raise QnnTypeError(f"{op_name(call)}: weight_layout {layout!r} not in {WEIGHT_LAYOUTS}")
    dshape, wshape = static_shape(call, "data", dty), static_shape(call, "weight", wty)
    units, k = wshape if layout == "NK" else wshape[::-1]
    if dshape[-1] != k:
        raise QnnTypeError(
            f"{op_name(call)}: data has {dshape[-1]} input features (shape {list(dshape)}) but "
            f"weight {list(wshape)} ({layout}) has {k}"
        )
    check_bias(call, units)
    kernel_zero_point(call, wty.dtype, units)
    return dshape, k, units, layout


@register_op("qnn.dense", 3, "Quantized dense layer: int32 accumulator with zero points")
class Dense:
    @staticmethod
    def infer(call, bb):
        dshape, _, units, _ = _shapes(call)
        return relax.TensorType(dshape[:-1] + (units,), "int32")

    @staticmethod
    def legalize(bb, call):
        from . import packed_dot  # imports .conv, which this module uses too

        dshape, k, units, layout = _shapes(call)
        ins = packed_dot.instruction_for(call, True)
        if ins is not None:
            return packed_dot.legalize_dense(bb, call, k, units, layout, ins)
        w_np = constant_value(call.args[1])
        if w_np is not None and layout == "KN":
            w_np = w_np.T
        parts = offset_parts(call, units, w_np, reduction=k)
        return bb.call_te(
            lambda x, w, **kw: _dense_te(x, w, k=k, units=units, layout=layout, parts=parts, **kw),
            call.args[0],
            call.args[1],
            **parts.te_args(call),
            primfunc_name_hint="qnn_dense",
        )


def _dense_te(x, w, offset, zw, bias, k: int, units: int, layout: str, parts: OffsetParts):
    out_shape = tuple(x.shape[:-1]) + (units,)

    def weight(n, kk):
        return w(n, kk) if layout == "NK" else w(kk, n)

    rk = te.reduce_axis((0, k), name="rk")
    acc = te.compute(
        out_shape,
        lambda *i: te.sum(
            x(*i[:-1], rk).astype("int32") * weight(i[-1], rk).astype("int32"), axis=rk
        ),
        name="dot",
    )
    row_sum = None
    if parts.needs_window_sum:
        rr = te.reduce_axis((0, k), name="rk")
        row_sum = te.compute(
            tuple(x.shape[:-1]),
            lambda *i: te.sum(x(*i, rr).astype("int32"), axis=rr),
            name="row_sum",
        )
    kernel_sum = None
    if parts.needs_kernel_sum:
        rs = te.reduce_axis((0, k), name="rk")
        kernel_sum = te.compute(
            (units,), lambda n: te.sum(weight(n, rs).astype("int32"), axis=rs), name="kernel_sum"
        )
    if not parts.any_terms:
        return acc

    def epilogue(*i):
        rs_v = None if row_sum is None else row_sum(*i[:-1])
        return parts.apply(acc(*i), i[-1], offset, zw, bias, rs_v, kernel_sum)

    return te.compute(out_shape, epilogue, name="accumulate")


__all__ = ["dense"]

"""qnn.lookup_table and qnn.softmax: TFLite's int8/uint8 non-linear kernels, bit-exact.

LOGISTIC, TANH, HARD_SWISH, LEAKY_RELU and requantizing RELU/RELU6 map one 8-bit value to
another, so their constructors evaluate the numpy reference on all 256 inputs and emit a
``qnn.lookup_table``.  SOFTMAX is float32 arithmetic in TFLite; ``qnn.softmax`` reproduces every
float32 rounding with integer-only TIR (see ``softfloat_te``).
"""

from __future__ import annotations

import numpy as np
from tvm import relax, te, tirx

from ..quantization import activation as ref
from ..quantization import dtype_range
from . import softfloat_te as sf
from .common import attr, expect_dtype, op_name, scales, tensor_type, zero_points
from .registry import QnnTypeError, make_call, register_op

IN_DTYPES = ("int8", "uint8")
TABLE_OUT_DTYPES = ("int8", "uint8", "int16", "int32")


def lookup_table(data: relax.Expr, table: np.ndarray, out_dtype: str) -> relax.Call:
    """``out[i] = table[data[i] - qmin]``: ``table`` has one entry per value of the 8-bit input,
    in increasing input order (see :func:`tvm_qnn_ext.quantization.activation.table_inputs`)."""
    table = np.asarray(table)
    if table.shape != (256,):
        raise QnnTypeError(f"qnn.lookup_table: table must have 256 entries, got {table.shape}")
    if table.dtype.kind not in "iu":
        raise QnnTypeError(f"qnn.lookup_table: table must hold integers, got {table.dtype}")
    return make_call(
        "qnn.lookup_table",
        [data],
        dict(table=[int(v) for v in table], out_dtype=str(out_dtype)),
    )


def _in_dtype(data: relax.Expr, out_dtype: str, where: str) -> str:
    ty = getattr(data, "ty", None)
    dtype = str(ty.dtype) if isinstance(ty, relax.TensorType) and ty.dtype != "void" else out_dtype
    if dtype != str(out_dtype):
        raise QnnTypeError(f"qnn.{where}: input dtype {dtype} differs from out_dtype {out_dtype}")
    if dtype not in IN_DTYPES:
        raise QnnTypeError(f"qnn.{where}: dtype must be int8 or uint8, got {dtype}")
    return dtype


def _table_call(name, make_table, data, params, out_dtype) -> relax.Call:
    dtype = _in_dtype(data, out_dtype, name)
    return lookup_table(data, make_table(*params, dtype), dtype)


def logistic(
    data: relax.Expr,
    *,
    input_scale: float,
    input_zero_point: int,
    output_scale: float = 1.0 / 256,
    output_zero_point: int | None = None,
    out_dtype: str = "int8",
) -> relax.Call:
    """TFLite LOGISTIC; the output zero point defaults to TFLite's (-128 int8, 0 uint8)."""
    if output_zero_point is None:
        output_zero_point = dtype_range(out_dtype)[0]
    params = (input_scale, input_zero_point, output_scale, output_zero_point)
    return _table_call("logistic", ref.logistic_table, data, params, out_dtype)


def tanh(
    data: relax.Expr,
    *,
    input_scale: float,
    input_zero_point: int,
    output_scale: float,
    output_zero_point: int,
    out_dtype: str = "int8",
) -> relax.Call:
    params = (input_scale, input_zero_point, output_scale, output_zero_point)
    return _table_call("tanh", ref.tanh_table, data, params, out_dtype)


def hard_swish(
    data: relax.Expr,
    *,
    input_scale: float,
    input_zero_point: int,
    output_scale: float,
    output_zero_point: int,
    out_dtype: str = "int8",
) -> relax.Call:
    params = (input_scale, input_zero_point, output_scale, output_zero_point)
    return _table_call("hard_swish", ref.hard_swish_table, data, params, out_dtype)


def leaky_relu(
    data: relax.Expr,
    alpha: float,
    *,
    input_scale: float,
    input_zero_point: int,
    output_scale: float,
    output_zero_point: int,
    out_dtype: str = "int8",
) -> relax.Call:
    params = (alpha, input_scale, input_zero_point, output_scale, output_zero_point)
    return _table_call("leaky_relu", ref.leaky_relu_table, data, params, out_dtype)


def relu(
    data: relax.Expr,
    *,
    input_scale: float,
    input_zero_point: int,
    output_scale: float,
    output_zero_point: int,
    out_dtype: str = "int8",
    lo: float | None = 0.0,
    hi: float | None = None,
) -> relax.Call:
    """TFLite RELU (``hi=None``), RELU6 (``hi=6``), RELU_N1_TO_1 (``lo=-1, hi=1``), which
    requantize when the input and output quantization differ."""
    dtype = _in_dtype(data, out_dtype, "relu")
    table = ref.relu_table(
        input_scale, input_zero_point, output_scale, output_zero_point, dtype, lo=lo, hi=hi
    )
    return lookup_table(data, table, dtype)


def softmax(
    data: relax.Expr,
    axis: int = -1,
    beta: float = 1.0,
    *,
    input_scale: float,
    input_zero_point: int,
    output_scale: float = 1.0 / 256,
    output_zero_point: int | None = None,
    out_dtype: str = "int8",
) -> relax.Call:
    """TFLite SOFTMAX on int8/uint8 (LiteRT requires output scale 1/256, zero point -128 for
    int8 and 0 for uint8; other output parameters follow the same formula)."""
    if output_zero_point is None:
        output_zero_point = dtype_range(out_dtype)[0]
    if not (np.isfinite(beta) and beta > 0):
        raise QnnTypeError(f"qnn.softmax: beta must be finite and positive, got {beta}")
    return make_call(
        "qnn.softmax",
        [data],
        dict(
            axis=int(axis),
            beta=float(beta),
            input_scale=[float(input_scale)],
            input_zero_point=[int(input_zero_point)],
            output_scale=[float(output_scale)],
            output_zero_point=[int(output_zero_point)],
            out_dtype=str(out_dtype),
        ),
    )


@register_op("qnn.lookup_table", 1, "Map each 8-bit value through a 256-entry table")
class LookupTable:
    @staticmethod
    def infer(call, bb):
        ty = tensor_type(call, 0, "input")
        expect_dtype(call, "input", ty.dtype, IN_DTYPES)
        out_dtype = attr(call, "out_dtype")
        expect_dtype(call, "out_dtype", out_dtype, TABLE_OUT_DTYPES)
        table = np.asarray(attr(call, "table", []), dtype=np.int64)
        if table.shape != (256,):
            raise QnnTypeError(f"{op_name(call)}: table must have 256 entries, got {table.size}")
        lo, hi = dtype_range(out_dtype)
        if table.min() < lo or table.max() > hi:
            raise QnnTypeError(f"{op_name(call)}: table values exceed the {out_dtype} range")
        return relax.TensorType(ty.shape, out_dtype)

    @staticmethod
    def legalize(bb, call):
        ty = call.args[0].ty
        out_dtype = attr(call, "out_dtype")
        table = relax.const(np.asarray(attr(call, "table"), dtype=out_dtype))
        qmin = dtype_range(str(ty.dtype))[0]

        def compute(x, t):
            return te.compute(
                x.shape, lambda *i: t(x(*i).astype("int32") - qmin), name="lookup_table"
            )

        return bb.call_te(compute, call.args[0], table, primfunc_name_hint="qnn_lookup_table")


def _softmax_params(call, ty):
    dtype = str(ty.dtype)
    out_dtype = attr(call, "out_dtype")
    expect_dtype(call, "input", dtype, IN_DTYPES)
    expect_dtype(call, "out_dtype", out_dtype, IN_DTYPES)
    if ty.ndim < 1:
        raise QnnTypeError(f"{op_name(call)}: input must have rank >= 1")
    axis = int(attr(call, "axis", -1))
    if not -ty.ndim <= axis < ty.ndim:
        raise QnnTypeError(f"{op_name(call)}: axis {axis} out of range for rank {ty.ndim}")
    in_s, out_s = scales(call, "input_scale"), scales(call, "output_scale")
    zero_points(call, "input_zero_point", dtype)
    out_zp = zero_points(call, "output_zero_point", out_dtype)
    if in_s.size != 1 or out_s.size != 1:
        raise QnnTypeError(f"{op_name(call)}: only per-tensor quantization is supported")
    beta = float(attr(call, "beta", 1.0))
    return axis % ty.ndim, beta, float(in_s[0]), float(out_s[0]), int(out_zp[0]), out_dtype


@register_op("qnn.softmax", 1, "TFLite int8/uint8 softmax, float32 roundings in integer TIR")
class Softmax:
    @staticmethod
    def infer(call, bb):
        ty = tensor_type(call, 0, "input")
        out_dtype = _softmax_params(call, ty)[-1]
        return relax.TensorType(ty.shape, out_dtype)

    @staticmethod
    def legalize(bb, call):
        ty = call.args[0].ty
        axis, beta, in_s, out_s, out_zp, out_dtype = _softmax_params(call, ty)
        exp_bits = ref.softmax_exp_table(in_s, beta).view(np.int32)
        out_bits = int(np.float32(out_s).view(np.int32))
        shape = [int(d) for d in ty.shape.values]
        rows = int(np.prod(shape)) // shape[axis]

        x_buf = tirx.decl_buffer(shape, str(ty.dtype), "x")
        table_buf = tirx.decl_buffer((256,), "int32", "table")
        out_buf = tirx.decl_buffer(shape, out_dtype, "out")
        scratch = [tirx.decl_buffer((rows,), "int32", "row_max")]
        scratch.append(tirx.decl_buffer((rows,), "int64", "acc"))
        scratch.append(tirx.decl_buffer((sf.REGISTERS,), "int64", "registers"))
        bufs = [x_buf, table_buf, out_buf, *scratch]
        body = _softmax_stmt(
            [x_buf, table_buf], [out_buf, *scratch], shape, axis, out_bits, out_zp, out_dtype
        )
        func = tirx.PrimFunc(bufs, body)
        func = func.with_attr({"tirx.noalias": True})
        gv = bb.add_func(func, "qnn_softmax")
        out_types = [relax.TensorType(b.shape, b.dtype) for b in (out_buf, *scratch)]
        res = bb.emit(relax.call_tir(gv, [call.args[0], relax.const(exp_bits)], out_types))
        return relax.TupleGetItem(res, 0)


def _unravel(flat, dims):
    idx = []
    for d in reversed(dims):
        idx.append(tirx.floormod(flat, sf.c(d)))
        flat = tirx.floordiv(flat, sf.c(d))
    return idx[::-1]


def _softmax_stmt(ins, outs, shape, axis, out_bits, out_zp, out_dtype):
    """TFLite's loops, one row (all indices but ``axis``) at a time.  ``row_max`` and ``acc``
    are scratch outputs; ``acc`` holds the float32 bits of the sum, then of the scaled
    reciprocal."""
    x, table = ins
    out, row_max, acc, regs = outs
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1 :], dtype=np.int64))
    o, r = tirx.Var("o", "int64"), tirx.Var("r", "int64")
    p = o * sf.c(inner) + r
    mx = tirx.BufferLoad(row_max, [p])
    lo, hi = dtype_range(out_dtype)
    rnd = _round_uint8 if out_dtype == "uint8" else _round_half_up
    n = sf.c(shape[axis])

    def element(j):
        index = _unravel(o, shape[:axis]) + [j] + _unravel(r, shape[axis + 1 :])
        xj = tirx.BufferLoad(x, index).astype("int32")
        ex = tirx.BufferLoad(table, [(tirx.const(255, "int32") - mx + xj).astype("int64")])
        return index, xj, ex

    # Every intermediate goes through a scratch register (see sf.bind_statements): bound
    # expressions would make TIR's simplifier take minutes.

    def with_loads(ex, make_store):
        with sf.bind_statements(regs) as binds:
            a = sf.let(tirx.BufferLoad(acc, [p]), lambda v: v, "a")
            b = sf.let(ex.astype("int64"), lambda v: v, "b") if ex is not None else None
            store = make_store(a, b)
        return tirx.SeqStmt([*binds, store])

    def row_loop(body):
        # A fresh variable per loop: TIR is ill-formed when two loops bind the same one.
        j = tirx.Var("j", "int64")
        return tirx.For(j, sf.c(0), n, tirx.ForKind.SERIAL, body(j))

    def max_step(j):
        _, xj, _ = element(j)
        return tirx.BufferStore(row_max, tirx.max(mx, xj), [p])

    def sum_step(j):
        _, _, ex = element(j)
        return with_loads(ex, lambda a, b: tirx.BufferStore(acc, sf.add(a, b), [p]))

    def out_step(j):
        index, _, ex = element(j)

        def store_out(a, b):
            q = sf.mul(b, a, rnd)
            q = tirx.max(tirx.min(q + sf.c(out_zp), sf.c(hi)), sf.c(lo)).astype(out_dtype)
            return tirx.BufferStore(out, q, index)

        return with_loads(ex, store_out)

    def loop(var, extent, body):
        return tirx.For(var, sf.c(0), extent, tirx.ForKind.SERIAL, body)

    row = tirx.SeqStmt(
        [
            tirx.BufferStore(row_max, tirx.const(-(2**31), "int32"), [p]),
            row_loop(max_step),
            tirx.BufferStore(acc, sf.c(0), [p]),
            # Sequential, in index order: the kernel's float32 sum.
            row_loop(sum_step),
            with_loads(
                None,
                lambda a, _: tirx.BufferStore(
                    acc, sf.mul(a, sf.c(out_bits), sf.reciprocal_bits), [p]
                ),
            ),
            row_loop(out_step),
        ]
    )
    return loop(o, sf.c(outer), loop(r, sf.c(inner), row))


_BIG = 1 << 20  # any value beyond the 8-bit range: the result saturates


def _shift_floor(v, right):
    """floor(v * 2**-right) for right >= 1, 0 once right exceeds 62."""
    return sf.sel(right > sf.c(62), 0, v >> tirx.min(right, sf.c(62)))


def _saturated(m, e, small):
    """``m * 2**e`` >= 2**23 saturates; zero stays zero; otherwise ``small(right)``."""
    return sf.sel(e >= sf.c(0), sf.sel(m == sf.c(0), 0, _BIG), small(tirx.max(-e, sf.c(1))))


def _round_half_up(m, e):
    """std::round of a positive float32 ``m * 2**e`` (half away from zero)."""

    def small(right):
        return _shift_floor(m + (sf.c(1) << tirx.min(right - sf.c(1), sf.c(61))), right)

    return _saturated(m, e, small)


def _round_uint8(m, e):
    """(int)(p + 0.5f): the sum rounds to float32 before truncation."""

    def small(right):
        t = m + (sf.c(1) << tirx.min(right - sf.c(1), sf.c(61)))
        return sf.normalize(
            t,
            -right,
            None,
            lambda mt, et: sf.sel(et >= sf.c(0), _BIG, _shift_floor(mt, tirx.max(-et, sf.c(1)))),
        )

    return _saturated(m, e, lambda r: sf.let(r, small))

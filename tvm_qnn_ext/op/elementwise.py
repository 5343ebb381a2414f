"""qnn.add, qnn.subtract, qnn.multiply and qnn.prelu: quantized elementwise arithmetic with
broadcasting.

The arithmetic of each rounding mode is documented in
:mod:`tvm_qnn_ext.quantization.elementwise` (the numpy reference).  ``tflite`` is TFLite's
reference/scalar kernel.  LiteRT's optimized ADD differs from it inside its SIMD loops: the
input rescale rounds once (int8 elementwise) or floors its final shift (uint8, and any scalar
broadcast); ``litert_simd=True`` reproduces which output elements take which path (see
``litert_add_loop`` in the reference).  Outside the modelled regime, results whose rescaled
value before the output zero point leaves int16 wrap through int16 in LiteRT's SIMD ADD/MUL
loops (only for output scales ~100x too small for the data).  SUB and MUL match the reference
arithmetic for every broadcast form tried.

``float`` follows PyTorch's formula in float32 (dequantize, add, ``rint`` requantize).  On
FMA-capable targets LLVM may contract the dequantize multiply into the add, which can change a
result that lies within one float32 ulp of a rounding tie.
"""

from __future__ import annotations

import numpy as np
from tvm import relax, te, tirx
from tvm.ir.expr import Expr as PrimExpr

from ..quantization import INTEGER_MODES, check_rounding, dtype_range, quantize_multiplier
from ..quantization import elementwise as ref
from . import fixed_point_te as fp
from .common import attr, expect_dtype, op_name, scales, tensor_type, zero_points
from .registry import QnnTypeError, make_call, register_op

DTYPES = ("int8", "uint8", "int16")


def _floats(v) -> list[float]:
    return [float(s) for s in np.atleast_1d(np.asarray(v, dtype=np.float64))]


def _ints(v) -> list[int]:
    return [int(z) for z in np.atleast_1d(np.asarray(v, dtype=np.int64))]


def _make(
    name, lhs, rhs, lhs_scale, lhs_zero_point, rhs_scale, rhs_zero_point, output_scale,
    output_zero_point, out_dtype, rounding, out_min, out_max, litert_simd=False,
) -> relax.Call:  # fmt: skip
    check_rounding(rounding)
    return make_call(
        name,
        [lhs, rhs],
        dict(
            lhs_scale=_floats(lhs_scale),
            lhs_zero_point=_ints(lhs_zero_point),
            rhs_scale=_floats(rhs_scale),
            rhs_zero_point=_ints(rhs_zero_point),
            output_scale=_floats(output_scale),
            output_zero_point=_ints(output_zero_point),
            out_dtype=out_dtype,
            rounding=rounding,
            out_min=None if out_min is None else int(out_min),
            out_max=None if out_max is None else int(out_max),
            litert_simd=True if litert_simd else None,
        ),
    )


def add(
    lhs: relax.Expr,
    rhs: relax.Expr,
    *,
    lhs_scale: float,
    lhs_zero_point: int,
    rhs_scale: float,
    rhs_zero_point: int,
    output_scale: float,
    output_zero_point: int,
    out_dtype: str = "int8",
    rounding: str = "tflite",
    out_min: int | None = None,
    out_max: int | None = None,
    litert_simd: bool = False,
) -> relax.Call:
    """Quantized ``lhs + rhs`` (numpy broadcasting); ``out_min``/``out_max`` fuse a clamp.

    ``litert_simd=True`` (rounding "tflite", int8/uint8, static shapes) reproduces LiteRT's
    optimized ADD, whose SIMD loops rescale the inputs differently from its scalar tail (see
    ``litert_add_loop`` in the reference)."""
    return _make("qnn.add", **locals())


def subtract(
    lhs: relax.Expr,
    rhs: relax.Expr,
    *,
    lhs_scale: float,
    lhs_zero_point: int,
    rhs_scale: float,
    rhs_zero_point: int,
    output_scale: float,
    output_zero_point: int,
    out_dtype: str = "int8",
    rounding: str = "tflite",
    out_min: int | None = None,
    out_max: int | None = None,
) -> relax.Call:
    """Quantized ``lhs - rhs`` (numpy broadcasting)."""
    return _make("qnn.subtract", **locals())


def multiply(
    lhs: relax.Expr,
    rhs: relax.Expr,
    *,
    lhs_scale: float,
    lhs_zero_point: int,
    rhs_scale: float,
    rhs_zero_point: int,
    output_scale: float,
    output_zero_point: int,
    out_dtype: str = "int8",
    rounding: str = "tflite",
    out_min: int | None = None,
    out_max: int | None = None,
) -> relax.Call:
    """Quantized ``lhs * rhs`` (numpy broadcasting)."""
    return _make("qnn.multiply", **locals())


def prelu(
    lhs: relax.Expr,
    rhs: relax.Expr,
    *,
    lhs_scale: float,
    lhs_zero_point: int,
    rhs_scale: float,
    rhs_zero_point: int,
    output_scale: float,
    output_zero_point: int,
    out_dtype: str = "int8",
    rounding: str = "tflite",
    out_min: int | None = None,
    out_max: int | None = None,
) -> relax.Call:
    """TFLite's quantized PRELU of input ``lhs`` with slope ``rhs`` (broadcast); integer
    rounding modes only."""
    return _make("qnn.prelu", **locals())


def _is_one(d) -> bool:
    return isinstance(d, tirx.IntImm) and int(d) == 1


def broadcast_shape(call: relax.Call, lhs: relax.TensorType, rhs: relax.TensorType) -> list:
    """numpy broadcasting of two Relax shapes; symbolic dims must match or meet a 1."""
    if lhs.shape is None or rhs.shape is None:
        raise QnnTypeError(f"{op_name(call)}: operands need known shapes")
    a, b = list(lhs.shape.values), list(rhs.shape.values)
    n = max(len(a), len(b))
    a = [tirx.IntImm("int64", 1)] * (n - len(a)) + a
    b = [tirx.IntImm("int64", 1)] * (n - len(b)) + b
    out = []
    for da, db in zip(a, b, strict=True):
        if _is_one(db):
            out.append(da)
        elif _is_one(da):
            out.append(db)
        elif isinstance(da, tirx.IntImm) and isinstance(db, tirx.IntImm):
            if int(da) != int(db):
                raise QnnTypeError(
                    f"{op_name(call)}: shapes {list(lhs.shape.values)} and "
                    f"{list(rhs.shape.values)} do not broadcast (dims {da} and {db})"
                )
            out.append(da)
        elif da.same_as(db) or str(da) == str(db):
            out.append(da)
        else:
            raise QnnTypeError(
                f"{op_name(call)}: cannot prove dims {da} and {db} are equal or 1 for broadcasting"
            )
    return out


def per_tensor_scale(call: relax.Call, key: str) -> float:
    s = scales(call, key)
    if s.size != 1:
        raise QnnTypeError(f"{op_name(call)}: {key} must be per-tensor, got {s.size} values")
    return float(s[0])


def per_tensor_zp(call: relax.Call, key: str, dtype: str) -> int:
    z = zero_points(call, key, dtype)
    if z.size != 1:
        raise QnnTypeError(f"{op_name(call)}: {key} must be per-tensor, got {z.size} values")
    return int(z[0])


def output_bounds(call: relax.Call, out_dtype: str) -> tuple[int, int]:
    try:
        return ref.activation_bounds(
            out_dtype, attr(call, "out_min"), attr(call, "out_max"), op_name(call)
        )
    except ValueError as e:
        raise QnnTypeError(str(e)) from None


def check_call_rounding(call: relax.Call) -> str:
    rounding = attr(call, "rounding", "tflite")
    try:
        return ref.op_rounding(str(rounding))
    except ValueError as e:
        raise QnnTypeError(f"{op_name(call)}: {e}") from None


class _Binary:
    """Type inference shared by the three ops; ``_values`` gathers the legalization inputs."""

    @staticmethod
    def infer(call, bb):
        lt = tensor_type(call, 0, "lhs")
        rt = tensor_type(call, 1, "rhs")
        expect_dtype(call, "lhs", lt.dtype, DTYPES)
        if str(rt.dtype) != str(lt.dtype):
            raise QnnTypeError(f"{op_name(call)}: lhs is {lt.dtype} but rhs is {rt.dtype}")
        out_dtype = str(attr(call, "out_dtype"))
        expect_dtype(call, "out_dtype", out_dtype, DTYPES)
        _arith(op_name(call)[4:], _values(call), op_name(call))
        return relax.TensorType(broadcast_shape(call, lt, rt), out_dtype)


def _values(call) -> dict:
    in_dtype = str(call.args[0].ty.dtype)
    out_dtype = str(attr(call, "out_dtype"))
    lo, hi = output_bounds(call, out_dtype)
    return dict(
        s1=per_tensor_scale(call, "lhs_scale"),
        s2=per_tensor_scale(call, "rhs_scale"),
        so=per_tensor_scale(call, "output_scale"),
        z1=per_tensor_zp(call, "lhs_zero_point", in_dtype),
        z2=per_tensor_zp(call, "rhs_zero_point", in_dtype),
        zo=per_tensor_zp(call, "output_zero_point", out_dtype),
        in_dtype=in_dtype,
        out_dtype=out_dtype,
        lo=lo,
        hi=hi,
        rounding=check_call_rounding(call),
    )


def broadcast_index(idx, shape) -> list:
    """Index into a (right-aligned) broadcast operand of TE ``shape``."""
    idx = list(idx)[len(idx) - len(shape) :]
    return [tirx.const(0, "int64") if _is_one(d) else i for i, d in zip(idx, shape, strict=True)]


def _out_te_shape(a: te.Tensor, b: te.Tensor) -> list:
    sa, sb = list(a.shape), list(b.shape)
    n = max(len(sa), len(sb))
    one = tirx.IntImm("int64", 1)
    sa = [one] * (n - len(sa)) + sa
    sb = [one] * (n - len(sb)) + sb
    return [db if _is_one(da) else da for da, db in zip(sa, sb, strict=True)]


I32, I64 = "int32", "int64"


def _float_const(v) -> PrimExpr:
    return tirx.const(float(np.float32(v)), "float32")


def _multiplier(real: float, rounding: str, where: str) -> tuple[int, int]:
    m, s = quantize_multiplier(real, rounding)
    if not -31 <= int(s) <= 30:
        raise QnnTypeError(f"{where}: scale ratio {real:g} is out of the fixed-point range")
    return int(m), int(s)


def _arith(kind: str, v: dict, where: str):
    """The per-element formula of each mode and the integer type of the centered operands it
    takes (int64, or int32 for TFLite's ADD/SUB where everything fits).  Multipliers are
    computed here, eagerly, so type inference reports unusable scales."""
    r = v["rounding"]
    mbqm = fp.multiply_by_quantized_multiplier
    if kind == "prelu":
        if r not in INTEGER_MODES:
            raise QnnTypeError(f"{where}: rounding {r!r} is not supported (integer modes only)")
        real1, real2 = ref.tflite_prelu_multipliers(v["s1"], v["s2"], v["so"])
        m1, s1 = _multiplier(real1, r, where)
        m2, s2 = _multiplier(real2, r, where)
        return (
            lambda a, b: tirx.Select(a >= fp._i64(0), mbqm(a, m1, s1, r), mbqm(a * b, m2, s2, r)),
            I64,
        )
    if kind == "multiply":
        if r in INTEGER_MODES:
            if r in ("tflite", "tflite_single"):
                real = float(ref.tflite_mul_multiplier(v["s1"], v["s2"], v["so"]))
            else:
                real = ref.relay_mul_multiplier(v["s1"], v["s2"], v["so"])
            m, s = _multiplier(real, r, where)
            return (lambda a, b: mbqm(a * b, m, s, r)), I64
        mult = _float_const(ref.torch_mul_multiplier(v["s1"], v["s2"], v["so"]))
        return (lambda a, b: _round_f32((a * b).astype("float32") * mult)), I64

    sign = 1 if kind == "add" else -1
    if r in ("tflite", "tflite_single"):
        try:
            p = ref.tflite_add_sub_params(v["s1"], v["s2"], v["so"], v["in_dtype"], r)
        except ValueError as e:
            raise QnnTypeError(f"{where}: {e}") from None
        return _tflite_add_sub(kind, v, p)
    if r in INTEGER_MODES:
        m1, s1 = _multiplier(v["s1"] / v["so"], r, where)
        m2, s2 = _multiplier(v["s2"] / v["so"], r, where)

        def relay(a, b):
            a1, b1 = mbqm(a, m1, s1, r), mbqm(b, m2, s2, r)
            return a1 + b1 if sign > 0 else a1 - b1

        return relay, I64
    f1, f2 = _float_const(v["s1"]), _float_const(v["s2"])
    inv = _float_const(np.float32(1.0) / np.float32(v["so"]))

    def flt(a, b):
        da, db = a.astype("float32") * f1, b.astype("float32") * f2
        return _round_f32((da + db if sign > 0 else da - db) * inv)

    return flt, I64


def _fits_int32(v: dict, p) -> bool:
    """Whether TFLite's ADD/SUB can run on int32 lanes, the width TFLite itself computes in:
    an input shifted left by 20 (15 for int16) stays in int32 and the input rescales never
    shift left, so their single-rounding SIMD form cannot saturate."""
    if v["rounding"] != "tflite" or v["in_dtype"] not in ("int8", "uint8", "int16"):
        return False
    if p.lhs_shift > 0 or p.rhs_shift > 0:
        return False
    lo, hi = dtype_range(v["in_dtype"])
    reach = max(max(abs(lo - z), abs(hi - z)) for z in (v["z1"], v["z2"]))
    return reach << p.left_shift < 1 << 31  # not e.g. int16 with a zero point


def _tflite_add_sub(kind: str, v: dict, p):
    """TFLite's ADD/SUB (LiteRT's SIMD-loop rescales where ``simd`` is given), on int32 lanes
    where :func:`_fits_int32`, else on int64."""
    r = v["rounding"]
    narrow = _fits_int32(v, p)
    lane = I32 if narrow else I64
    mbqm = fp.multiply_by_quantized_multiplier
    if narrow:
        mbqm = fp.multiply_by_quantized_multiplier_i32
    left = fp._as(p.left_shift, lane)

    def single_rounding(x, m, s):
        if narrow:
            return fp.mul_shift_round(x, m, 31 - s)
        return fp.multiply_by_quantized_multiplier(x, m, s, "tflite_single")

    def high_mul_shift(x, m, s):  # SRDHM (ties away from zero), then an arithmetic right shift
        if narrow:
            return fp.high_mul(x, m) >> fp._as(-s, I32)
        high = (x * fp._i64(m) + fp._i64(1 << 30)) >> fp._i64(31)
        return high >> fp._i64(max(-s, 0))

    def rescale(x, m, s, simd):
        shifted = x << left
        y = mbqm(shifted, m, s, r)
        if simd is None:
            return y
        pred, loop = simd
        if v["in_dtype"] == "int8" and loop == "elementwise":
            fast = single_rounding(shifted, m, s)
        else:
            fast = high_mul_shift(shifted, m, s)
        return tirx.Select(pred, fast, y)

    def tfl(a, b, simd=None):
        a1 = rescale(a, p.lhs_multiplier, p.lhs_shift, simd)
        b1 = rescale(b, p.rhs_multiplier, p.rhs_shift, simd)
        return mbqm(a1 + b1 if kind == "add" else a1 - b1, p.out_multiplier, p.out_shift, r)

    return tfl, lane


def _round_f32(y: PrimExpr) -> PrimExpr:
    big = tirx.const(2.0**40, "float32")
    r = fp.round_half_even_f32(y)
    return tirx.max(tirx.min(r, big), -big).astype("int64")


def _simd_predicate(call, idx):
    """(predicate, loop kind) of ``ref.litert_add_loop`` at output index ``idx``, or None."""
    if not attr(call, "litert_simd", False) or attr(call, "rounding", "tflite") != "tflite":
        return None
    in_dtype = str(call.args[0].ty.dtype)
    if in_dtype not in ref.LITERT_ADD_LANES:
        return None
    la = [int(d) for d in call.args[0].ty.shape.values]
    lb = [int(d) for d in call.args[1].ty.shape.values]
    loop = ref.litert_add_loop(la, lb, in_dtype)
    if loop.simd == 0:
        return None
    dims = [int(d) for d in np.broadcast_shapes(tuple(la), tuple(lb))]
    pos = fp._i64(0)
    for i, d in zip(idx, dims, strict=True):
        pos = pos * fp._i64(d) + fp._i64(i)
    return tirx.floormod(pos, fp._i64(loop.row)) < fp._i64(loop.simd), loop.kind


def _legalize(kind: str):
    def legalize(bb, call):
        v = _values(call)
        f, lane = _arith(kind, v, op_name(call))

        def compute(a, b):
            def elem(*idx):
                xa = a(*broadcast_index(idx, a.shape)).astype(lane) - fp._as(v["z1"], lane)
                xb = b(*broadcast_index(idx, b.shape)).astype(lane) - fp._as(v["z2"], lane)
                simd = _simd_predicate(call, idx)
                y = f(xa, xb) if simd is None else f(xa, xb, simd)
                return fp.add_zero_point_clamp_cast(y, v["zo"], v["lo"], v["hi"], v["out_dtype"])

            return te.compute(_out_te_shape(a, b), elem, name=kind)

        return bb.call_te(compute, call.args[0], call.args[1], primfunc_name_hint=f"qnn_{kind}")

    return legalize


@register_op("qnn.add", 2, "Quantized elementwise addition with broadcasting")
class Add(_Binary):
    legalize = staticmethod(_legalize("add"))


@register_op("qnn.subtract", 2, "Quantized elementwise subtraction with broadcasting")
class Subtract(_Binary):
    legalize = staticmethod(_legalize("subtract"))


@register_op("qnn.multiply", 2, "Quantized elementwise multiplication with broadcasting")
class Multiply(_Binary):
    legalize = staticmethod(_legalize("multiply"))


@register_op("qnn.prelu", 2, "TFLite quantized PRELU: input and broadcast slope")
class Prelu(_Binary):
    legalize = staticmethod(_legalize("prelu"))

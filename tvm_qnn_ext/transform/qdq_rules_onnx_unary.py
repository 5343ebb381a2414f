"""ONNX elementwise functions of one quantized tensor become 256-entry lookup tables.

``DQ(x) -> f -> Q`` where ``f`` is any chain of elementwise float ops whose only non-constant
input is that one 8-bit tensor (Sigmoid, Tanh, HardSigmoid, HardSwish, LeakyRelu, Gelu, Exp,
``x * c``...) is evaluated here on all 256 input values, with TVM's own float kernels, and
quantized as ONNX QuantizeLinear does (``y / s`` in float32, ties to even, saturated).
onnxruntime builds the same kind of table (QLinearSigmoid, QLinearLeakyRelu) but with its own
float approximations (MLAS's logistic, tanh), so an entry whose value lies within float noise
of a rounding boundary may differ by one step.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir import GenericConst

from .. import op as qnn
from ..quantization import dtype_range
from .qdq_rules_onnx import ONNX, act_bounds, deviation, requantize_output
from .qdq_to_qnn import NotRewritable, QParams, Region, dtype_of, op_name, qdq_rule

#: Elementwise float ops a tabulated chain may contain (besides scalar constants).
ELEMENTWISE = (
    "relax.sigmoid",
    "relax.tanh",
    "relax.exp",
    "relax.log",
    "relax.sqrt",
    "relax.rsqrt",
    "relax.erf",
    "relax.abs",
    "relax.negative",
    "relax.square",
    "relax.sin",
    "relax.cos",
    "relax.floor",
    "relax.ceil",
    "relax.round",
    "relax.add",
    "relax.subtract",
    "relax.multiply",
    "relax.divide",
    "relax.power",
    "relax.maximum",
    "relax.minimum",
    "relax.clip",
    "relax.nn.relu",
    "relax.nn.gelu",
    "relax.nn.gelu_tanh",
    "relax.nn.silu",
    "relax.nn.leakyrelu",
    "relax.nn.softplus",
)
#: Chains may end in these ops (add and multiply have their own rules, which fall back to
#: :func:`tabulate`).
ANCHORS = tuple(n for n in ELEMENTWISE if n not in ("relax.add", "relax.multiply"))


class _Chain:
    """The float subgraph between one dequantize and the quantize, rebuilt on a 1-D input."""

    def __init__(self, region: Region):
        self.ctx = region.ctx
        self.source: relax.Expr | None = None
        self.qparams: QParams | None = None
        self.param = relax.Var("x", relax.TensorType((256,), "float32"))
        self.bb = relax.BlockBuilder()
        self.memo: dict = {}
        with self.bb.function("main", [self.param]):
            self.bb.emit_func_output(self.bb.emit(self.rebuild(region.anchor)))
        if self.source is None:
            raise NotRewritable("no dequantized input")

    def rebuild(self, expr) -> relax.Expr:
        ctx = self.ctx
        value = ctx.value(expr)
        key = value
        if key in self.memo:
            return self.memo[key]
        if isinstance(value, GenericConst):
            c = value.value.numpy()
            if c.size != 1:
                raise NotRewritable(f"a constant of shape {c.shape} (only scalars tabulate)")
            new = relax.const(c.reshape(()), str(c.dtype))
        elif op_name(value) == "relax.dequantize":
            found = ctx.dequantized(value)
            src, q = found
            if self.source is not None and not src.same_as(self.source):
                raise NotRewritable("more than one quantized input")
            if q.dtype not in ("int8", "uint8") or q.per_axis:
                raise NotRewritable(f"input is {q.dtype}{' per axis' if q.per_axis else ''}")
            self.source, self.qparams = src, q
            new = self.param
        elif op_name(value) in ELEMENTWISE and dtype_of(value) == "float32":
            args = [self.rebuild(a) for a in value.args]
            new = self.bb.emit(relax.Call(value.op, args, value.attrs))
        elif not isinstance(value, (relax.Call, relax.Var)):
            new = value  # a PrimValue operand (clip's bounds)
        else:
            raise NotRewritable(f"{op_name(value) or type(value).__name__} is not elementwise")
        self.memo[key] = new
        return new

    def evaluate(self, x: np.ndarray) -> np.ndarray:
        mod = self.bb.get()
        ex = tvm.compile(relax.transform.LegalizeOps()(mod), tvm.target.Target({"kind": "llvm"}))
        vm = relax.VirtualMachine(ex, tvm.cpu())
        return vm["main"](tvm.runtime.tensor(x)).numpy()


def _quantize_onnx(y: np.ndarray, out: QParams) -> np.ndarray:
    """ONNX QuantizeLinear in float32: ``rint(y / s) + zp``, saturated (NaN -> 0 + zp)."""
    lo, hi = dtype_range(out.dtype)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        q = np.rint(y.astype(np.float32) / np.float32(out.s))
    q = np.nan_to_num(q, nan=0.0, posinf=hi, neginf=lo)
    return np.clip(q.astype(np.float64) + out.zp, lo, hi).astype(np.int64)


@qdq_rule(*ANCHORS, framework=ONNX)
def tabulate(region: Region) -> relax.Expr:
    """An elementwise function of one 8-bit tensor as a ``qnn.lookup_table``."""
    chain = _Chain(region)
    q = chain.qparams
    lo, hi = dtype_range(q.dtype)
    inputs = np.arange(lo, hi + 1, dtype=np.int64)
    dequantized = ((inputs - q.zp).astype(np.float32) * np.float32(q.s)).astype(np.float32)
    table = _quantize_onnx(chain.evaluate(dequantized), region.out)
    out_min, out_max = act_bounds(region)  # a peeled relu/clip after the chain
    table = np.clip(table, out_min, out_max) if region.act != (None, None) else table
    return qnn.lookup_table(chain.ctx.use(chain.source), table, region.out.dtype)


@qdq_rule("relax.multiply", framework=ONNX)
def multiply(region: Region) -> relax.Expr:
    """The product of two quantized tensors (QLinearMul: ``a' * b' * sa * sb / sy``) as an int32
    product requantized once; otherwise (``x * c``, ``x * sigmoid(x)``...) a lookup table."""
    ctx = region.ctx
    found = [ctx.dequantized(a) for a in region.anchor.args]
    if all(f is not None and ctx.constant(f[0]) is None for f in found):
        (a, qa), (b, qb) = (ctx.input(a, "a factor") for a in region.anchor.args)
        return _product(region, a, qa, b, qb)
    return tabulate(region)


def _product(region: Region, a, qa: QParams, b, qb: QParams) -> relax.Expr:
    ctx = region.ctx
    if qa.per_axis or qb.per_axis:
        raise NotRewritable("a per-axis factor")

    def centred(v, q: QParams):
        c = relax.op.astype(v, "int32")
        return relax.op.subtract(c, relax.const(q.zp, "int32")) if q.zp else c

    prod = ctx.emit(relax.op.multiply(centred(a, qa), centred(b, qb)))
    # onnxruntime multiplies the dequantized floats (not fused here): the exact product of
    # the scales is closest to that.
    real = float(np.float32(qa.s)) * float(np.float32(qb.s))
    return requantize_output(region, prod, real, 0, bound=deviation(qa) * deviation(qb))

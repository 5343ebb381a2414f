"""QDQToQNN: ``dequantize -> float op(s) -> quantize`` regions become QNN dialect ops.

Stock TVM frontends express quantized models as fake quantization: ``R.dequantize`` feeds a
float op whose result goes to ``R.quantize``.  This pass finds each such region and replaces it
with the integer op of the source framework's kernel (``framework`` picks the exact semantics).

Rules live in a registry keyed by the Relax op name of the binding they rewrite, and by
framework (``None`` = any).  Rule modules named ``tvm_qnn_ext.transform.qdq_rules_*`` are
imported automatically, so a new framework's rules need no edit here::

    @qdq_rule("relax.nn.conv2d", framework="onnx")
    def conv(region: Region) -> relax.Expr: ...

A *region rule* receives a :class:`Region` (the float op that feeds a ``quantize``, with any
relu/clip between them peeled into ``region.act``) and returns the integer expression, or raises
:class:`NotRewritable` with the reason.  A *binding rule* (``qdq_binding_rule``) rewrites any
binding (``ctx, binding``) whose value calls the op (e.g. TVM's integer avg_pool2d, the
model-edge quantize) and returns ``None`` when it does not apply.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.ir import GenericConst

from .. import op as qnn
from ..op import QnnTypeError
from ..quantization import QuantizationParamError
from .pipeline import pipeline_stage
from .report import report

STAGE = "qdq_to_qnn"
FRAMEWORKS = ("tflite", "onnx", "pytorch")
QUANT_DTYPES = ("int8", "uint8", "int16")


class NotRewritable(Exception):
    """A rule cannot turn this region into integer ops; the message says why."""


class QDQRewriteError(ValueError):
    """``hard_fail=True`` and some regions were left in float (every one is listed)."""


@dataclass(frozen=True)
class QParams:
    """Quantization of one tensor: ``real = scale * (q - zero_point)``."""

    scale: np.ndarray  # float64, 1-D (one entry per channel when per-axis)
    zero_point: np.ndarray  # int64, 1-D
    axis: int | None
    dtype: str

    @property
    def per_axis(self) -> bool:
        return self.scale.size > 1

    @property
    def s(self) -> float:
        """The per-tensor scale (raises for per-axis parameters)."""
        if self.per_axis:
            raise NotRewritable(f"per-axis scale of {self.scale.size} channels where one expected")
        return float(self.scale[0])

    @property
    def zp(self) -> int:
        zp = np.unique(self.zero_point)
        if zp.size != 1:
            raise NotRewritable(f"per-axis zero points {self.zero_point.tolist()}")
        return int(zp[0])

    def same_as(self, other: QParams) -> bool:
        return (
            self.dtype == other.dtype
            and np.array_equal(self.scale, other.scale)
            and np.array_equal(self.zero_point, other.zero_point)
        )


@dataclass
class Region:
    """One ``float op -> [relu/clip] -> quantize`` region, seen from its float op."""

    anchor: relax.Call
    out: QParams
    ctx: RewriteContext
    act: tuple[float | None, float | None] = (None, None)  # float bounds of a peeled relu/clip

    @property
    def framework(self) -> str:
        return self.ctx.framework

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.ctx.shape(self.anchor)


RegionRule = Callable[[Region], relax.Expr]
BindingRule = Callable[["RewriteContext", relax.VarBinding], relax.Expr | None]

_REGION_RULES: dict[tuple[str, str | None], RegionRule] = {}
_BINDING_RULES: dict[tuple[str, str | None], BindingRule] = {}


def qdq_rule(*op_names: str, framework: str | None = None):
    """Register a region rule for float ops ``op_names`` (e.g. ``"relax.nn.conv2d"``)."""
    return _registrar(_REGION_RULES, op_names, framework)


def qdq_binding_rule(*op_names: str, framework: str | None = None):
    """Register a rule that may rewrite any binding calling one of ``op_names``."""
    return _registrar(_BINDING_RULES, op_names, framework)


def _registrar(table: dict, op_names: tuple[str, ...], framework: str | None):
    if framework is not None and framework not in FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r}; expected one of {FRAMEWORKS}")

    def deco(fn):
        for name in op_names:
            table[(name, framework)] = fn
        return fn

    return deco


def _lookup(table: dict, op_name: str, framework: str):
    return table.get((op_name, framework)) or table.get((op_name, None))


def load_rules() -> None:
    """Import every ``tvm_qnn_ext.transform.qdq_rules_*`` module (each registers its rules)."""
    from .. import transform

    for info in pkgutil.iter_modules(transform.__path__):
        if info.name.startswith("qdq_rules_"):
            importlib.import_module(f"{transform.__name__}.{info.name}")


def region_rule_names(framework: str) -> list[str]:
    load_rules()
    return sorted({op for op, fw in _REGION_RULES if fw in (None, framework)})


def op_name(expr: relax.Expr) -> str | None:
    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
        return str(expr.op.name)
    return None


def dtype_of(expr: relax.Expr) -> str:
    ty = expr.ty
    return str(ty.dtype) if isinstance(ty, relax.TensorType) else ""


class RewriteContext:
    """What rules see: bindings of the function (original vars), and the builder."""

    def __init__(self, mutator: _Rewriter, framework: str):
        self._mutator = mutator
        self.framework = framework
        self.bindings: dict[relax.Var, relax.Expr] = {}
        self.uses: dict[relax.Var, int] = {}
        self.emitted: list[str] = []  # ops emitted by the rule running now, for the report

    # -- looking at the original graph -------------------------------------------------------
    def value(self, expr: relax.Expr) -> relax.Expr:
        """The expression bound to a var (the expr itself otherwise)."""
        while isinstance(expr, relax.Var) and expr in self.bindings:
            expr = self.bindings[expr]
        return expr

    def call(self, expr: relax.Expr, *names: str) -> relax.Call | None:
        v = self.value(expr)
        return v if op_name(v) is not None and (not names or op_name(v) in names) else None

    def shape(self, expr: relax.Expr) -> tuple[int, ...]:
        ty = expr.ty
        if not isinstance(ty, relax.TensorType) or ty.shape is None:
            raise NotRewritable(f"{op_name(expr) or 'value'} has no static shape")
        try:
            return tuple(int(d) for d in ty.shape.values)
        except TypeError:
            raise NotRewritable(f"{op_name(expr) or 'value'} has a symbolic shape") from None

    def constant(self, expr: relax.Expr) -> np.ndarray | None:
        """The numpy value of a constant, looking through shape ops applied to constants."""
        v = self.value(expr)
        if isinstance(v, GenericConst):
            return v.value.numpy()
        if isinstance(v, (tvm.tirx.IntImm, tvm.tirx.FloatImm)):
            return np.asarray(v.value)  # e.g. clip bounds
        name = op_name(v)
        if name in _CONST_FOLDERS:
            inner = self.constant(v.args[0])
            return None if inner is None else _CONST_FOLDERS[name](inner, v)
        return None

    def scalar(self, expr: relax.Expr, what: str) -> np.ndarray:
        c = self.constant(expr)
        if c is None:
            raise NotRewritable(f"non-constant {what}")
        return np.atleast_1d(c).reshape(-1)

    def dequantized(self, expr: relax.Expr) -> tuple[relax.Expr, QParams] | None:
        """``(quantized input, its parameters)`` when ``expr`` is an ``R.dequantize``."""
        call = self.call(expr, "relax.dequantize")
        if call is None:
            return None
        q = self.qparams(call, dtype_of(call.args[0]))
        return call.args[0], q

    def qparams(self, call: relax.Call, dtype: str) -> QParams:
        scale = self.scalar(call.args[1], "scale").astype(np.float64)
        zp = self.scalar(call.args[2], "zero point").astype(np.int64)
        axis = int(call.attrs.axis) if scale.size > 1 else None
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            raise NotRewritable(f"invalid scale {scale.tolist()[:4]}")
        if zp.size not in (1, scale.size):
            raise NotRewritable(f"{zp.size} zero points for {scale.size} scales")
        if axis is not None and zp.size == 1:
            zp = np.repeat(zp, scale.size)
        return QParams(scale, zp, axis, dtype)

    def input(self, expr: relax.Expr, what: str = "input") -> tuple[relax.Expr, QParams]:
        """The rewritten integer operand behind a dequantized ``expr`` (raises otherwise)."""
        found = self.dequantized(expr)
        if found is None:
            raise NotRewritable(
                f"{what} is not a dequantize ({op_name(self.value(expr)) or 'var'})"
            )
        q_expr, q = found
        if q.dtype not in QUANT_DTYPES:
            raise NotRewritable(f"{what} dequantizes {q.dtype or 'a non-tensor'}")
        return self.use(q_expr), q

    def const_input(self, expr: relax.Expr, what: str) -> tuple[np.ndarray, QParams]:
        """A dequantized constant (weights, bias): its integer values and parameters."""
        found = self.dequantized(expr)
        if found is None:
            raise NotRewritable(f"{what} is not a dequantized constant")
        data = self.constant(found[0])
        if data is None:
            raise NotRewritable(f"{what} is not constant")
        return data, found[1]

    def single_use(self, expr: relax.Expr) -> bool:
        return not isinstance(expr, relax.Var) or self.uses.get(expr, 0) <= 1

    # -- building the replacement ------------------------------------------------------------
    def use(self, expr: relax.Expr) -> relax.Expr:
        """``expr`` (from the original graph) as it is in the rewritten function."""
        return self._mutator.visit_expr(expr)

    def rewritten(self, expr: relax.Expr) -> relax.Expr | None:
        """The value now bound to ``expr``'s rewritten var (None for inputs and constants)."""
        new = self.use(expr)
        return self._mutator.lookup_binding(new) if isinstance(new, relax.Var) else None

    def emit(self, expr: relax.Expr) -> relax.Var:
        self.emitted.append(op_name(expr) or "value")
        return self._mutator.builder_.emit(expr)


def quantize_model_input(ctx: RewriteContext, binding: relax.VarBinding, rounding: str):
    """A ``relax.quantize`` of a float model input as ``qnn.quantize`` with the framework's
    ``rounding``; None for any other quantize (those belong to a region)."""
    call = binding.value
    if dtype_of(call.args[0]) != "float32" or ctx.call(call.args[0]) is not None:
        return None
    q = ctx.qparams(call, str(call.attrs.out_dtype))
    return qnn.quantize(ctx.use(call.args[0]), q.s, q.zp, q.dtype, rounding=rounding)


def concat_region(region: Region, rounding: str) -> relax.Expr:
    """``qnn.concatenate`` of a quantized concat region: each input requantized to the output's
    parameters with ``rounding`` (the frameworks differ only there)."""
    ctx = region.ctx
    fields = ctx.value(region.anchor.args[0])
    if not isinstance(fields, relax.Tuple):
        raise NotRewritable("concat of a non-literal tuple")
    inputs = [ctx.input(f, f"concat input {i}") for i, f in enumerate(fields.fields)]
    out = region.out
    return qnn.concatenate(
        [x for x, _ in inputs],
        axis=int(region.anchor.attrs.axis) % len(region.out_shape),
        input_scales=[q.s for _, q in inputs],
        input_zero_points=[q.zp for _, q in inputs],
        output_scale=out.s,
        output_zero_point=out.zp,
        out_dtype=out.dtype,
        rounding=rounding,
    )


def _fold_permute(c: np.ndarray, call: relax.Call) -> np.ndarray:
    axes = call.attrs.axes
    return np.transpose(c) if axes is None else np.transpose(c, [int(a) for a in axes])


def _fold_reshape(c: np.ndarray, call: relax.Call) -> np.ndarray:
    shape = call.ty.shape
    return c.reshape([int(d) for d in shape.values])


def fold_shape_op(call: relax.Call, value: np.ndarray) -> np.ndarray:
    """Apply a reshape-like ``call`` to a numpy ``value`` (e.g. weights under a dequantize)."""
    name = op_name(call)
    if name not in _CONST_FOLDERS:
        raise NotRewritable(f"cannot fold {name} into a constant")
    return _CONST_FOLDERS[name](value, call)


_CONST_FOLDERS = {
    "relax.permute_dims": _fold_permute,
    "relax.reshape": _fold_reshape,
    "relax.expand_dims": _fold_reshape,
    "relax.squeeze": _fold_reshape,
}

# Float ops between the region's op and its quantize that fold into the saturation bounds.
_ACTIVATIONS = ("relax.nn.relu", "relax.clip")


def _peel_activation(ctx: RewriteContext, expr: relax.Expr):
    """``(input, (lo, hi))`` of a float relu/clip, else ``(expr, (None, None))``."""
    call = ctx.call(expr, *_ACTIVATIONS)
    if call is None or dtype_of(call) != "float32" or not ctx.single_use(expr):
        return expr, (None, None)
    if op_name(call) == "relax.nn.relu":
        return call.args[0], (0.0, None)
    lo, hi = (float(ctx.scalar(a, "clip bound")[0]) for a in call.args[1:3])
    return call.args[0], (lo if np.isfinite(lo) else None, hi if np.isfinite(hi) else None)


# Rules reject a region by raising NotRewritable; the dialect's constructors reject invalid
# parameters with these, which equally leave the region in float with the reason.
_REJECTIONS = (NotRewritable, QnnTypeError, QuantizationParamError)


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, framework: str, ops: Collection[str] | None):
        super().__init__(mod)
        self.ctx = RewriteContext(self, framework)
        self.ops = None if ops is None else set(ops)
        self.rewritten = 0
        self.why: dict[relax.Var, str] = {}

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        self.ctx.bindings[binding.var] = binding.value
        new = None
        name = op_name(binding.value)
        if name is not None:
            new = self._rewrite(binding, name)
        if new is None:
            super().visit_var_binding_(binding)
        else:
            super().visit_var_binding_(relax.VarBinding(binding.var, new))
            self.rewritten += 1

    def _rewrite(self, binding: relax.VarBinding, name: str) -> relax.Expr | None:
        try:
            rule = _lookup(_BINDING_RULES, name, self.ctx.framework)
            new = None if rule is None else rule(self.ctx, binding)
            if new is None and name == "relax.quantize":
                new = self._region(binding)
            return new
        except _REJECTIONS as e:
            self.why.setdefault(binding.var, f"{name}: {e}")
            return None

    def _region(self, binding: relax.VarBinding) -> relax.Expr | None:
        ctx, call = self.ctx, binding.value
        if dtype_of(call.args[0]) != "float32":
            return None
        src, act = _peel_activation(ctx, call.args[0])
        anchor = ctx.call(src)
        if anchor is None:
            return None  # quantize of a function input: a binding rule handles the model edge
        anchor_name = op_name(anchor)
        try:
            rule = _lookup(_REGION_RULES, anchor_name, ctx.framework)
            if rule is None:
                raise NotRewritable(f"no {ctx.framework} rule for {anchor_name}")
            if self.ops is not None and anchor_name not in self.ops:
                raise NotRewritable(f"{anchor_name} is not in the op allow-list")
            out = ctx.qparams(call, str(call.attrs.out_dtype))
            ctx.emitted = []
            new = rule(Region(anchor, out, ctx, act))
        except _REJECTIONS as e:
            why = f"{anchor_name} -> quantize: {e}"
            for var in (binding.var, call.args[0], src):
                if isinstance(var, relax.Var):
                    self.why.setdefault(var, why)
            return None
        ops = " + ".join([*ctx.emitted, op_name(new) or "its integer input"])
        report(STAGE, f"{binding.var.name}: {anchor_name} region -> {ops}")
        return new


def _count_uses(func: relax.Function) -> dict[relax.Var, int]:
    uses: dict[relax.Var, int] = {}

    def visit(e):
        if isinstance(e, relax.Var):
            uses[e] = uses.get(e, 0) + 1

    relax.analysis.post_order_visit(func.body, visit)
    return uses


def _float_leftovers(func: relax.Function, why: dict[str, str]) -> list[str]:
    """Every binding still computing in float, except the model's edges."""
    params = set(func.params)
    left = []
    for block in func.body.blocks:
        for b in block.bindings:
            name = op_name(b.value)
            if name is None or name.startswith("qnn."):
                continue
            tys = [dtype_of(b.value)] + [dtype_of(a) for a in b.value.args if hasattr(a, "ty")]
            if not any(t.startswith(("float", "bfloat")) for t in tys):
                continue
            if name == "relax.quantize" and b.value.args[0] in params:
                continue
            reason = why.get(b.var.name) or _default_reason(name)
            left.append(f"{b.var.name} = {name}: {reason}")
    return left


def _default_reason(name: str) -> str:
    if name in ("relax.dequantize", "relax.quantize"):
        return "not part of a rewritten region (its float consumer or producer stayed float)"
    return "float op not feeding a quantize (no dequantize -> op -> quantize region)"


@dataclass
class QDQReport:
    rewritten: int
    left_in_float: list[str]

    def __str__(self) -> str:
        lines = [f"QDQToQNN: {self.rewritten} bindings rewritten"]
        lines += [f"left in float: {x}" for x in self.left_in_float]
        return "\n".join(lines)


def qdq_to_qnn(
    mod: tvm.IRModule,
    *,
    framework: str = "tflite",
    hard_fail: bool = False,
    ops: Collection[str] | None = None,
) -> tuple[tvm.IRModule, QDQReport]:
    """Rewrite every QDQ region of ``mod``; return the module and what was left in float."""
    if framework not in FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r}; expected one of {FRAMEWORKS}")
    if ops is not None:
        unknown = sorted(set(ops) - set(region_rule_names(framework)))
        if unknown:
            raise ValueError(
                f"op allow-list names ops without a {framework} rule: {unknown}; "
                f"known: {region_rule_names(framework)}"
            )
    load_rules()
    mod = relax.transform.Normalize()(mod)
    total = QDQReport(0, [])
    for gv, func in list(mod.functions.items()):
        if not isinstance(func, relax.Function):
            continue
        rw = _Rewriter(mod, framework, ops)
        rw.ctx.uses = _count_uses(func)
        new = rw.visit_expr(func)
        mod[gv] = new
        total.rewritten += rw.rewritten
        why = {v.name: msg for v, msg in rw.why.items()}
        mod = relax.transform.DeadCodeElimination()(mod)
        total.left_in_float += [f"{gv.name_hint}: {x}" for x in _float_leftovers(mod[gv], why)]
    for line in total.left_in_float:
        report(STAGE, f"left in float: {line}")
    if hard_fail and total.left_in_float:
        raise QDQRewriteError(
            f"QDQToQNN left {len(total.left_in_float)} bindings in float:\n  "
            + "\n  ".join(total.left_in_float)
        )
    return mod, total


def QDQToQNN(
    framework: str = "tflite", hard_fail: bool = False, ops: Collection[str] | None = None
) -> tvm.transform.Pass:
    """The pass form of :func:`qdq_to_qnn` (its report goes to ``transform.report``)."""

    @tvm.transform.module_pass(opt_level=0, name="QDQToQNN")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return qdq_to_qnn(mod, framework=framework, hard_fail=hard_fail, ops=ops)[0]

    return _pass


@pipeline_stage(STAGE, order=10)
def _stage(target: tvm.target.Target, options: dict) -> tvm.transform.Pass:
    """dequantize -> float op -> quantize regions become QNN ops (options: qdq_framework,
    qdq_hard_fail, qdq_ops).  The framework defaults to the importer's ``qnn.framework``
    module attribute, else TFLite."""

    @tvm.transform.module_pass(opt_level=0, name="QDQToQNNStage")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        framework = options.get("qdq_framework") or source_framework(mod) or "tflite"
        return QDQToQNN(
            framework=framework,
            hard_fail=bool(options.get("qdq_hard_fail", False)),
            ops=options.get("qdq_ops"),
        )(mod)

    return _pass


FRAMEWORK_ATTR = "qnn.framework"


def source_framework(mod: tvm.IRModule) -> str | None:
    """The framework an importer recorded on the module (``FRAMEWORK_ATTR``), if any."""
    attrs = mod.attrs
    if attrs is None or FRAMEWORK_ATTR not in attrs:
        return None
    return str(attrs[FRAMEWORK_ATTR])

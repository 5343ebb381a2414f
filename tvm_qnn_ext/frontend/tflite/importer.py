"""The TFLite -> QNN importer: walks the graph and dispatches each operator to its converter."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from .reader import Graph, Operator, Quant, Tensor, TFLiteImportError, read_model

Value = relax.Expr | np.ndarray
ConvertFn = Callable[["Context", Operator], list[Value] | None]
CheckFn = Callable[["Context", Operator], str | None]


@dataclass(frozen=True)
class Converter:
    convert: ConvertFn
    check: CheckFn | None


CONVERTERS: dict[str, Converter] = {}

QUANT_DTYPES = ("int8", "uint8")


def converter(*names: str, check: CheckFn | None = None):
    """Register a converter for one or more TFLite builtin operators."""

    def wrap(fn: ConvertFn) -> ConvertFn:
        for name in names:
            CONVERTERS[name] = Converter(fn, check)
        return fn

    return wrap


def quantized_io(ctx: Context, op: Operator) -> str | None:
    """Default check: the first input and every output are int8/uint8 with quantization."""
    for role, idx in (("input", op.inputs[:1]), ("output", op.outputs)):
        for i in idx:
            t = ctx.tensor(i)
            if t.dtype == "int16":
                return f"int16 {role} (int16x8 quantization is not supported)"
            if t.dtype not in QUANT_DTYPES:
                return f"{t.dtype} {role} (only int8/uint8 quantized tensors are supported)"
            if t.quant is None:
                return f"{role} {t.name!r} has no quantization parameters"
    return None


class Context:
    """What converters see: tensors, their current Relax values, and the block builder."""

    def __init__(self, graph: Graph, bb: relax.BlockBuilder):
        self.graph = graph
        self.bb = bb
        self.values: dict[int, Value] = {}

    def tensor(self, i: int) -> Tensor:
        return self.graph.tensors[i]

    def quant(self, i: int) -> Quant:
        t = self.tensor(i)
        if t.quant is None:
            raise TFLiteImportError(f"tensor {t.name!r} has no quantization parameters")
        return t.quant

    def value(self, i: int) -> Value:
        if i in self.values:
            return self.values[i]
        t = self.tensor(i)
        if t.data is not None:
            return t.data
        raise TFLiteImportError(f"tensor {t.name!r} is used before it is produced")

    def const(self, i: int) -> np.ndarray:
        v = self.value(i)
        if not isinstance(v, np.ndarray):
            raise TFLiteImportError(
                f"tensor {self.tensor(i).name!r} must be a constant for this operator"
            )
        return v

    def is_const(self, i: int) -> bool:
        return isinstance(self.value(i), np.ndarray)

    def expr(self, i: int) -> relax.Expr:
        v = self.value(i)
        if isinstance(v, np.ndarray):
            return relax.const(v, str(v.dtype))
        return v

    def emit(self, call: relax.Expr) -> relax.Var:
        return self.bb.emit(call)


def _needed_ops(graph: Graph, outputs: list[int]) -> list[Operator]:
    """The operators that the requested outputs depend on, in graph order."""
    producer = {t: op for op in graph.operators for t in op.outputs}
    needed, stack = set(), list(outputs)
    while stack:
        op = producer.get(stack.pop())
        if op is not None and op.index not in needed:
            needed.add(op.index)
            stack.extend(i for i in op.inputs if i >= 0)
    return [op for op in graph.operators if op.index in needed]


def _unsupported(ctx: Context, ops: list[Operator]) -> Counter:
    problems: Counter = Counter()
    for op in ops:
        conv = CONVERTERS.get(op.name)
        if conv is None:
            problems[f"{op.name}"] += 1
            continue
        try:
            reason = conv.check(ctx, op) if conv.check else None
        except (IndexError, KeyError, ValueError, TypeError) as e:  # e.g. missing inputs
            reason = f"malformed operator ({type(e).__name__}: {e})"
        if reason:
            problems[f"{op.name}: {reason}"] += 1
    return problems


def _has_quantized_activations(graph: Graph, ops: list[Operator]) -> bool:
    tensors = {i for op in ops for i in op.inputs + op.outputs if i >= 0}
    return any(
        graph.tensors[i].dtype in ("int8", "uint8", "int16") and graph.tensors[i].data is None
        for i in tensors
    )


def _check_variables(graph: Graph) -> None:
    variables = [t.name for t in graph.tensors if t.is_variable]
    if variables:
        raise TFLiteImportError(
            f"model has {len(variables)} variable tensors ({', '.join(variables[:4])}); "
            "stateful models are not supported"
        )


def from_tflite(source: str | Path | bytes, outputs: list[int | str] | None = None) -> tvm.IRModule:
    """Import a pre-quantized TFLite model into an IRModule of QNN dialect ops.

    Weights stay int8 (bias int32); the graph is integer-only between the model's float
    QUANTIZE/DEQUANTIZE edges, if it has any.  Raises :class:`TFLiteImportError` listing every
    unsupported operator with its count.  ``outputs`` (tensor indices or names) replaces the
    model's outputs, e.g. to compare intermediate tensors layer by layer.
    """
    from . import converters  # noqa: F401  (registers the converters)

    graph = read_model(source)
    if outputs is not None:
        graph.outputs = [_tensor_index(graph, o) for o in outputs]
    ops = _needed_ops(graph, graph.outputs)
    bb = relax.BlockBuilder()
    ctx = Context(graph, bb)
    problems = _unsupported(ctx, ops)
    if problems:
        listing = "; ".join(f"{name} x{n}" for name, n in sorted(problems.items()))
        kind = "" if _has_quantized_activations(graph, ops) else "float model (only pre-quantized "
        kind += "int8/uint8 models are supported); " if kind else ""
        raise TFLiteImportError(f"{kind}unsupported operators: {listing}")
    _check_variables(graph)

    params = []
    for i in graph.inputs:
        t = graph.tensors[i]
        if t.data is not None:
            continue
        var = relax.Var(_name(t.name, i), relax.TensorType(t.shape, t.dtype))
        ctx.values[i] = var
        params.append(var)
    with bb.function("main", params):
        with bb.dataflow():
            for op in ops:
                _convert(ctx, op)
            outs = [bb.emit_output(ctx.expr(i)) for i in graph.outputs]
        result = outs[0] if len(outs) == 1 else relax.Tuple(outs)
        bb.emit_func_output(result)
    mod = bb.get()
    return relax.transform.Normalize()(mod)


def _convert(ctx: Context, op: Operator) -> None:
    try:
        results = CONVERTERS[op.name].convert(ctx, op)
    except TFLiteImportError:
        raise
    except (
        ValueError, TypeError, IndexError, KeyError, ArithmeticError, tvm.error.InternalError
    ) as e:  # fmt: skip
        # InternalError: Relax type inference rejecting what a corrupt operator describes.
        detail = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise TFLiteImportError(f"operator {op.index} ({op.name}): {detail}") from e
    if results is None:
        return
    if len(results) != len(op.outputs):
        raise TFLiteImportError(
            f"operator {op.index} ({op.name}): produced {len(results)} of {len(op.outputs)} outputs"
        )
    for i, v in zip(op.outputs, results, strict=True):
        _check_shape(ctx, op, i, v)
        ctx.values[i] = v


def _check_shape(ctx: Context, op: Operator, i: int, v: Value) -> None:
    """The computed shape must be the one the model declares: a corrupt attribute (say a
    PAD of 2^28) otherwise surfaces only as a failed allocation at run time."""
    declared = ctx.tensor(i).shape
    if isinstance(v, np.ndarray):
        shape = v.shape
    else:
        ty = v.ty
        if not isinstance(ty, relax.TensorType) or ty.shape is None:
            return
        if not all(isinstance(d, tvm.tirx.IntImm) for d in ty.shape.values):
            return
        shape = tuple(int(d) for d in ty.shape.values)
    if declared and int(np.prod(shape)) != int(np.prod(declared)):
        raise TFLiteImportError(
            f"operator {op.index} ({op.name}): computes shape {tuple(shape)} but the model "
            f"declares {declared} for tensor {ctx.tensor(i).name!r}"
        )


def _tensor_index(graph: Graph, key: int | str) -> int:
    if isinstance(key, str):
        for t in graph.tensors:
            if t.name == key:
                return t.index
        raise TFLiteImportError(f"no tensor named {key!r}")
    if not 0 <= int(key) < len(graph.tensors):
        raise TFLiteImportError(f"tensor index {key} out of range")
    return int(key)


def _name(name: str, i: int) -> str:
    clean = "".join(c if c.isalnum() else "_" for c in name).strip("_")
    return clean or f"input_{i}"

"""Pre-quantized QDQ (and QOperator) ONNX models -> QNN dialect.

TVM's own importer (``tvm.relax.frontend.onnx.from_onnx``) reads the model into
``R.dequantize -> float op -> R.quantize`` form with every dynamic dimension fixed to a static
size; ops it cannot read (QLinearConv, QLinearMatMul, com.microsoft QLinearAdd/QGemm, and any
in :data:`EXTRA_CONVERTERS`) are expanded to that form by our converters; then QDQToQNN's ONNX
rules (:mod:`tvm_qnn_ext.transform.qdq_rules_onnx`) rewrite each region into integer QNN ops.

The model's input quantize stays TVM's ``R.quantize``, which is exactly ONNX QuantizeLinear
(``x / s`` in float32, ties to even, saturated).  The module carries ``qnn.framework = "onnx"``,
so the pipeline's QDQToQNN stage rewrites that quantize with ONNX rounding, not LiteRT's.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path

import tvm

from ..transform.qdq_to_qnn import FRAMEWORK_ATTR, QDQReport, qdq_to_qnn


class OnnxImportError(ValueError):
    """The ONNX model cannot be imported; the message names the problem."""


def _onnx():
    try:
        import onnx
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise OnnxImportError("importing ONNX models needs the 'onnx' package") from e
    return onnx


def load_model(source) -> object:
    """An ``onnx.ModelProto`` from a path, serialized bytes or a ModelProto."""
    onnx = _onnx()
    if isinstance(source, onnx.ModelProto):
        model = source
    elif isinstance(source, (bytes, bytearray, memoryview)):
        model = _parse(onnx, bytes(source), "<bytes>")
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {path}")
        model = _parse(onnx, path.read_bytes(), str(path))
    else:
        raise TypeError(f"expected a path, bytes or onnx.ModelProto, got {type(source).__name__}")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise OnnxImportError(f"invalid ONNX model: {str(e).splitlines()[0]}") from None
    return model


def _parse(onnx, data: bytes, where: str):
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as e:  # protobuf raises DecodeError and friends
        raise OnnxImportError(f"{where}: not an ONNX model ({type(e).__name__}: {e})") from None
    if not model.graph.node:
        raise OnnxImportError(f"{where}: not an ONNX model (no graph nodes)")
    return model


def _graph_inputs(model) -> list:
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def static_shapes(
    model, shape: Mapping[str, Sequence[int]] | None = None, batch: int = 1
) -> dict[str, list[int]]:
    """Every graph input's shape with dynamic dimensions fixed.

    ``shape`` gives whole shapes by input name; otherwise a symbolic or unknown first dimension
    becomes ``batch`` and any other dynamic dimension is an error naming it.
    """
    shape = dict(shape or {})
    inputs = _graph_inputs(model)
    unknown = set(shape) - {i.name for i in inputs}
    if unknown:
        raise OnnxImportError(
            f"shape given for {sorted(unknown)}, but the model's inputs are "
            f"{[i.name for i in inputs]}"
        )
    if int(batch) < 1:
        raise OnnxImportError(f"batch must be >= 1, got {batch}")
    result = {}
    for inp in inputs:
        dims = inp.type.tensor_type.shape.dim
        if inp.name in shape:
            given = [int(d) for d in shape[inp.name]]
            if len(given) != len(dims) or any(d < 1 for d in given):
                raise OnnxImportError(
                    f"input {inp.name!r}: shape {given} does not fit the model's rank {len(dims)}"
                )
            for axis, (g, d) in enumerate(zip(given, dims, strict=True)):
                if d.HasField("dim_value") and d.dim_value != g:
                    raise OnnxImportError(
                        f"input {inp.name!r}: axis {axis} is {d.dim_value} in the model, got {g}"
                    )
            result[inp.name] = given
            continue
        fixed = []
        for axis, d in enumerate(dims):
            if d.HasField("dim_value") and d.dim_value > 0:
                fixed.append(int(d.dim_value))
            elif axis == 0:
                fixed.append(int(batch))
            else:
                name = d.dim_param or "?"
                raise OnnxImportError(
                    f"input {inp.name!r}: axis {axis} is dynamic ({name}); pass shape="
                    f"{{{inp.name!r}: [...]}}"
                )
        result[inp.name] = fixed
    return result


#: More converters for ops TVM cannot read: ONNX op type -> a subclass of TVM's
#: ``OnnxOpConverter`` (``_impl_vN(cls, bb, inputs, attr, params)`` returning Relax).
EXTRA_CONVERTERS: dict[str, type] = {}


def _our_converters() -> dict[str, type]:
    from .onnx_qoperator import CONVERTERS  # imports TVM's ONNX frontend, hence onnx

    return {**CONVERTERS, **EXTRA_CONVERTERS}


@contextlib.contextmanager
def _extra_converters() -> Iterator[None]:
    from tvm.relax.frontend.onnx import onnx_frontend

    original = onnx_frontend._get_convert_map
    ours = _our_converters()

    def extended():
        return {**original(), **ours}

    onnx_frontend._get_convert_map = extended
    try:
        yield
    finally:
        onnx_frontend._get_convert_map = original


def supported_operators() -> list[str]:
    from tvm.relax.frontend.onnx import onnx_frontend

    return sorted({*onnx_frontend._get_convert_map(), *_our_converters()})


def import_relax(model, shapes: Mapping[str, Sequence[int]]) -> tvm.IRModule:
    """TVM's ONNX importer (plus :data:`EXTRA_CONVERTERS`): the QDQ Relax module."""
    from tvm.relax.frontend.onnx import from_onnx as tvm_from_onnx

    known = set(supported_operators()) | {"Constant", "If"}
    missing = sorted({n.op_type for n in model.graph.node} - known)
    if missing:
        raise OnnxImportError(f"unsupported ONNX operators: {', '.join(missing)}")
    with _extra_converters():
        try:
            mod = tvm_from_onnx(
                model, shape_dict={k: list(v) for k, v in shapes.items()}, opset=None
            )
        except (RuntimeError, ValueError, KeyError, IndexError, TypeError, AssertionError) as e:
            raise OnnxImportError(f"TVM's ONNX importer failed: {type(e).__name__}: {e}") from e
    return mod


def from_onnx(
    source,
    shape: Mapping[str, Sequence[int]] | None = None,
    batch: int = 1,
    *,
    hard_fail: bool = False,
    allow: Collection[str] | None = None,
    return_report: bool = False,
) -> tvm.IRModule | tuple[tvm.IRModule, QDQReport]:
    """Import a quantized ONNX model (path, bytes or ModelProto) into the QNN dialect.

    ``shape``/``batch`` fix dynamic input dimensions (see :func:`static_shapes`).
    ``hard_fail`` raises when a quantized region stays in float; ``allow`` limits the rewrite
    to the listed Relax float ops.  With ``return_report`` the rewrite summary is returned too.
    """
    model = load_model(source)
    mod = import_relax(model, static_shapes(model, shape, batch))
    mod, report = qdq_to_qnn(mod, framework="onnx", hard_fail=hard_fail, ops=allow)
    # The pipeline's QDQToQNN stage then rounds what is left (the input edge) the ONNX way.
    mod = mod.with_attr(FRAMEWORK_ATTR, "onnx")
    return (mod, report) if return_report else mod


__all__ = [
    "EXTRA_CONVERTERS",
    "OnnxImportError",
    "from_onnx",
    "import_relax",
    "load_model",
    "static_shapes",
    "supported_operators",
]

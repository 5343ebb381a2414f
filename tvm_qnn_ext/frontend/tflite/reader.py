"""Read a .tflite flatbuffer into plain dataclasses, validating as we go.

Everything the importer needs is copied out of the flatbuffer here, so a corrupt or truncated
file fails in one place with a clear :class:`TFLiteImportError` instead of deep in a converter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tflite

from ...quantization.params import QuantizationParamError, check_scale


class TFLiteImportError(ValueError):
    """The model cannot be imported: corrupt file, unsupported ops or invalid quantization."""


_TENSOR_TYPES = {
    v: k for k, v in vars(tflite.TensorType).items() if not k.startswith("_") and isinstance(v, int)
}
_NUMPY_DTYPES = {
    "FLOAT32": "float32",
    "FLOAT16": "float16",
    "INT32": "int32",
    "UINT8": "uint8",
    "INT64": "int64",
    "BOOL": "bool",
    "INT16": "int16",
    "INT8": "int8",
    "UINT32": "uint32",
    "UINT16": "uint16",
    "FLOAT64": "float64",
}
_OP_NAMES = {
    v: k
    for k, v in vars(tflite.BuiltinOperator).items()
    if not k.startswith("_") and isinstance(v, int)
}
_OPTION_NAMES = {
    v: k
    for k, v in vars(tflite.BuiltinOptions).items()
    if not k.startswith("_") and isinstance(v, int)
}


@dataclass
class Quant:
    scale: np.ndarray  # float64, 1-D
    zero_point: np.ndarray  # int64, 1-D
    axis: int

    @property
    def per_axis(self) -> bool:
        return self.scale.size > 1


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    quant: Quant | None
    data: np.ndarray | None  # constant contents, if any
    is_variable: bool = False


@dataclass
class Operator:
    index: int
    name: str  # BUILTIN name, e.g. "CONV_2D", or "CUSTOM:<code>"
    inputs: list[int]
    outputs: list[int]
    options: dict = field(default_factory=dict)


@dataclass
class Graph:
    tensors: list[Tensor]
    operators: list[Operator]
    inputs: list[int]
    outputs: list[int]


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _read_options(op: tflite.Operator) -> dict:
    kind = op.BuiltinOptionsType()
    if kind == 0:
        return {}
    cls_name = _OPTION_NAMES.get(kind)
    cls = getattr(tflite, cls_name, None) if cls_name else None
    if cls is None:
        return {}
    table = op.BuiltinOptions()
    if table is None:
        return {}
    opts = cls()
    opts.Init(table.Bytes, table.Pos)
    out = {}
    for attr in dir(cls):
        if attr.startswith("_") or attr in ("Init",) or attr.startswith("GetRootAs"):
            continue
        if attr.endswith(("BufferHasIdentifier", "Length", "IsNone")):
            continue
        fn = getattr(opts, attr)
        if attr.endswith("AsNumpy"):
            v = fn()
            out[_snake(attr[: -len("AsNumpy")])] = [] if isinstance(v, int) else list(v)
            continue
        if hasattr(opts, attr + "AsNumpy"):
            continue
        try:
            out[_snake(attr)] = fn()
        except TypeError:
            continue  # accessors that need an index
    return out


def _quant(t: tflite.Tensor, name: str) -> Quant | None:
    q = t.Quantization()
    if q is None or q.ScaleLength() == 0:
        return None
    scale = np.asarray(q.ScaleAsNumpy(), dtype=np.float32).astype(np.float64)
    zp = (
        np.asarray(q.ZeroPointAsNumpy(), dtype=np.int64)
        if q.ZeroPointLength()
        else np.zeros(scale.size, dtype=np.int64)
    )
    if zp.size not in (1, scale.size):
        raise TFLiteImportError(f"tensor {name!r}: {scale.size} scales but {zp.size} zero points")
    try:
        check_scale(scale, f"tensor {name!r}")
    except QuantizationParamError as e:
        raise TFLiteImportError(str(e)) from None
    return Quant(scale, np.broadcast_to(zp, scale.shape).copy(), int(q.QuantizedDimension()))


def _tensor(model, graph, i: int) -> Tensor:
    t = graph.Tensors(i)
    name = (t.Name() or b"").decode("utf-8", "replace")
    type_name = _TENSOR_TYPES.get(t.Type(), f"type#{t.Type()}")
    dtype = _NUMPY_DTYPES.get(type_name, type_name)
    shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
    if any(d < 0 for d in shape):
        raise TFLiteImportError(f"tensor {name!r}: negative dimension in shape {shape}")
    data = None
    buf_idx = t.Buffer()
    if buf_idx >= model.BuffersLength():
        raise TFLiteImportError(f"tensor {name!r}: buffer index {buf_idx} out of range")
    if buf_idx > 0:
        buf = model.Buffers(buf_idx)
        if buf.DataLength() > 0:
            if dtype not in _NUMPY_DTYPES.values():
                raise TFLiteImportError(f"tensor {name!r}: constant of unsupported type {dtype}")
            raw = buf.DataAsNumpy().tobytes()
            expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            if len(raw) != expected:
                raise TFLiteImportError(
                    f"tensor {name!r}: buffer holds {len(raw)} bytes, shape {shape} of {dtype} "
                    f"needs {expected}"
                )
            data = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
        elif buf.Offset() > 1:
            raise TFLiteImportError(f"tensor {name!r}: external buffers are not supported")
    return Tensor(i, name, shape, dtype, _quant(t, name), data, bool(t.IsVariable()))


def _operator(model, graph, i: int, n_tensors: int) -> Operator:
    op = graph.Operators(i)
    if op.OpcodeIndex() >= model.OperatorCodesLength():
        raise TFLiteImportError(f"operator {i}: opcode index {op.OpcodeIndex()} out of range")
    code = model.OperatorCodes(op.OpcodeIndex())
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    name = _OP_NAMES.get(builtin, f"BUILTIN#{builtin}")
    if name == "CUSTOM":
        name = "CUSTOM:" + (code.CustomCode() or b"?").decode("utf-8", "replace")
    inputs = [int(x) for x in op.InputsAsNumpy()] if op.InputsLength() else []
    outputs = [int(x) for x in op.OutputsAsNumpy()] if op.OutputsLength() else []
    for t in inputs + outputs:
        if t >= n_tensors or t < -1:
            raise TFLiteImportError(f"operator {i} ({name}): tensor index {t} out of range")
    return Operator(i, name, inputs, outputs, _read_options(op))


def read_model(source: str | Path | bytes) -> Graph:
    """Parse and validate a .tflite model (path or bytes) into a :class:`Graph`."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        buf = bytes(source)
        where = "<bytes>"
    else:
        where = str(source)
        try:
            buf = Path(source).read_bytes()
        except OSError as e:
            raise TFLiteImportError(f"{where}: cannot read model: {e.strerror}") from None
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise TFLiteImportError(f"{where}: not a TFLite flatbuffer (missing 'TFL3' identifier)")
    try:
        model = tflite.Model.GetRootAsModel(buf, 0)
        if model.SubgraphsLength() < 1:
            raise TFLiteImportError(f"{where}: model has no subgraph")
        if model.SubgraphsLength() > 1:
            raise TFLiteImportError(
                f"{where}: model has {model.SubgraphsLength()} subgraphs; control flow "
                "(WHILE/IF/CALL_ONCE) is not supported"
            )
        g = model.Subgraphs(0)
        n = g.TensorsLength()
        tensors = [_tensor(model, g, i) for i in range(n)]
        ops = [_operator(model, g, i, n) for i in range(g.OperatorsLength())]
        inputs = [int(x) for x in g.InputsAsNumpy()] if g.InputsLength() else []
        outputs = [int(x) for x in g.OutputsAsNumpy()] if g.OutputsLength() else []
    except TFLiteImportError:
        raise
    except Exception as e:  # flatbuffers raises whatever a bad offset produces
        raise TFLiteImportError(
            f"{where}: corrupt or truncated TFLite model ({type(e).__name__}: {e})"
        ) from None
    for t in inputs + outputs:
        if not 0 <= t < n:
            raise TFLiteImportError(f"{where}: graph input/output tensor {t} out of range")
    if not outputs:
        raise TFLiteImportError(f"{where}: model declares no outputs")
    return Graph(tensors, ops, inputs, outputs)

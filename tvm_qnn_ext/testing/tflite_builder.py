"""Build small ``.tflite`` flatbuffers in memory, for differential tests against LiteRT.

Uses the schema code generated into the ``tflite`` package (``*Start``/``Add*``/``End``) on a
``flatbuffers.Builder``.  Operator options are passed as snake_case keywords and mapped onto the
options table's fields, so any builtin op whose options are scalars, enums or int vectors works::

    mb = ModelBuilder()
    x = mb.add_tensor("x", (1, 8, 8, 3), "int8", scale=0.05, zero_point=-3)
    w = mb.add_tensor("w", (4, 3, 3, 3), "int8", scale=[0.01] * 4, zero_point=[0] * 4, data=wd)
    b = mb.add_tensor("b", (4,), "int32", scale=[5e-4] * 4, zero_point=[0] * 4, data=bd)
    y = mb.add_tensor("y", (1, 8, 8, 4), "int8", scale=0.1, zero_point=2)
    mb.add_op("CONV_2D", [x, w, b], [y], padding="SAME", fused_activation="RELU")
    model = mb.finish(inputs=[x], outputs=[y])
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass

import flatbuffers
import numpy as np
import tflite
from tflite.ActivationFunctionType import ActivationFunctionType
from tflite.BuiltinOperator import BuiltinOperator
from tflite.BuiltinOptions import BuiltinOptions
from tflite.Padding import Padding
from tflite.TensorType import TensorType

_TENSOR_TYPES = {
    "float32": TensorType.FLOAT32,
    "float16": TensorType.FLOAT16,
    "int32": TensorType.INT32,
    "uint8": TensorType.UINT8,
    "int64": TensorType.INT64,
    "bool": TensorType.BOOL,
    "int16": TensorType.INT16,
    "int8": TensorType.INT8,
    "uint16": TensorType.UINT16,
    "uint32": TensorType.UINT32,
}

# Builtin ops whose options table is not simply "<CamelCaseName>Options".
_OPTIONS = {
    "CONV_2D": "Conv2DOptions",
    "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
    "TRANSPOSE_CONV": "TransposeConvOptions",
    "AVERAGE_POOL_2D": "Pool2DOptions",
    "MAX_POOL_2D": "Pool2DOptions",
    "L2_POOL_2D": "Pool2DOptions",
    "MEAN": "ReducerOptions",
    "SUM": "ReducerOptions",
    "REDUCE_MAX": "ReducerOptions",
    "REDUCE_MIN": "ReducerOptions",
    "REDUCE_PROD": "ReducerOptions",
    "PADV2": "PadV2Options",
    "CONCATENATION": "ConcatenationOptions",
    "MAXIMUM": "MaximumMinimumOptions",
    "MINIMUM": "MaximumMinimumOptions",
    "BATCH_MATMUL": "BatchMatMulOptions",
    "LOG_SOFTMAX": "LogSoftmaxOptions",
    "SPLIT_V": "SplitVOptions",
    "RESIZE_NEAREST_NEIGHBOR": "ResizeNearestNeighborOptions",
    "L2_NORMALIZATION": "L2NormOptions",
    "GATHER_ND": "GatherNdOptions",
    "BATCH_TO_SPACE_ND": "BatchToSpaceNDOptions",
    "SPACE_TO_BATCH_ND": "SpaceToBatchNDOptions",
}

# Options whose flatbuffer default (0) is never what a test wants.
_DEFAULTS = {
    "CONV_2D": dict(stride_w=1, stride_h=1, dilation_w_factor=1, dilation_h_factor=1),
    "DEPTHWISE_CONV_2D": dict(
        stride_w=1, stride_h=1, dilation_w_factor=1, dilation_h_factor=1, depth_multiplier=1
    ),
    "TRANSPOSE_CONV": dict(stride_w=1, stride_h=1),
    "AVERAGE_POOL_2D": dict(stride_w=1, stride_h=1),
    "MAX_POOL_2D": dict(stride_w=1, stride_h=1),
    "SOFTMAX": dict(beta=1.0),
    "LOG_SOFTMAX": {},
    "LEAKY_RELU": dict(alpha=0.2),
}

# Short aliases accepted for option names.
_ALIASES = {
    "fused_activation": "fused_activation_function",
    "activation": "fused_activation_function",
    "dilation_w": "dilation_w_factor",
    "dilation_h": "dilation_h_factor",
    "filter_w": "filter_width",
    "filter_h": "filter_height",
}

_ENUMS = {
    "padding": Padding,
    "fused_activation_function": ActivationFunctionType,
    "out_type": TensorType,
}


class TFLiteBuildError(ValueError):
    """A tensor or operator that cannot be written into a valid TFLite model."""


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: list[float] | None
    zero_point: list[int] | None
    quantized_dimension: int
    buffer: int


@dataclass
class _Operator:
    opcode: int
    inputs: list[int]
    outputs: list[int]
    options_name: str | None
    options: dict


def _camel(snake: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in snake.lower().split("_"))


def _options_name(op: str) -> str | None:
    name = _OPTIONS.get(op, _camel(op) + "Options")
    return name if hasattr(BuiltinOptions, name) else None


def tensor_type(dtype: str) -> int:
    try:
        return _TENSOR_TYPES[str(np.dtype(dtype))]
    except (KeyError, TypeError):
        raise TFLiteBuildError(
            f"unsupported tensor dtype {dtype!r}; expected one of {sorted(_TENSOR_TYPES)}"
        ) from None


class ModelBuilder:
    """Accumulates tensors and operators of one subgraph, then serialises the model."""

    def __init__(self) -> None:
        self._tensors: list[_Tensor] = []
        self._buffers: list[bytes] = [b""]  # buffer 0: the empty sentinel
        self._ops: list[_Operator] = []
        self._opcodes: list[tuple[int, int]] = []  # (builtin code, version)

    @property
    def num_tensors(self) -> int:
        return len(self._tensors)

    def add_tensor(
        self,
        name: str,
        shape: Sequence[int],
        dtype: str,
        scale: float | Sequence[float] | None = None,
        zero_point: int | Sequence[int] | None = None,
        quantized_dimension: int = 0,
        data: np.ndarray | None = None,
    ) -> int:
        """Add a tensor and return its index; ``data`` makes it a constant (weights, bias)."""
        shape = tuple(int(d) for d in shape)
        tensor_type(dtype)
        dtype = str(np.dtype(dtype))
        scales = zps = None
        if scale is not None:
            scales = [float(s) for s in np.atleast_1d(scale)]
            zps = [int(z) for z in np.atleast_1d(0 if zero_point is None else zero_point)]
            if len(zps) == 1 and len(scales) > 1:
                zps = zps * len(scales)
            if len(zps) != len(scales):
                raise TFLiteBuildError(
                    f"tensor {name!r}: {len(scales)} scales but {len(zps)} zero points"
                )
            if len(scales) > 1 and not (
                0 <= quantized_dimension < len(shape) and shape[quantized_dimension] == len(scales)
            ):
                raise TFLiteBuildError(
                    f"tensor {name!r}: {len(scales)} per-channel scales do not match dimension "
                    f"{quantized_dimension} of shape {shape}"
                )
        elif zero_point is not None:
            raise TFLiteBuildError(f"tensor {name!r}: zero_point given without scale")
        buffer = 0
        if data is not None:
            arr = np.asarray(data)
            if tuple(arr.shape) != shape:
                raise TFLiteBuildError(f"tensor {name!r}: data shape {arr.shape} != shape {shape}")
            arr = np.ascontiguousarray(arr.astype(dtype, copy=False))
            self._buffers.append(arr.astype(arr.dtype.newbyteorder("<")).tobytes())
            buffer = len(self._buffers) - 1
        self._tensors.append(
            _Tensor(name, shape, dtype, scales, zps, int(quantized_dimension), buffer)
        )
        return len(self._tensors) - 1

    def add_const(self, name: str, data: np.ndarray, dtype: str | None = None, **quant) -> int:
        """A constant tensor whose shape and dtype come from ``data``."""
        arr = np.asarray(data)
        return self.add_tensor(name, arr.shape, dtype or str(arr.dtype), data=arr, **quant)

    def add_op(
        self, op: str, inputs: Sequence[int], outputs: Sequence[int], version: int = 1, **options
    ) -> None:
        """Add builtin ``op`` (e.g. ``"CONV_2D"``); ``-1`` marks an omitted optional input."""
        code = getattr(BuiltinOperator, op, None)
        if code is None:
            raise TFLiteBuildError(f"unknown TFLite builtin operator {op!r}")
        for t in list(inputs) + list(outputs):
            if not -1 <= t < len(self._tensors):
                raise TFLiteBuildError(f"{op}: tensor index {t} does not exist")
        key = (code, int(version))
        if key not in self._opcodes:
            self._opcodes.append(key)
        opts = dict(_DEFAULTS.get(op, {}))
        if op == "PACK":
            opts["values_count"] = len(inputs)
        if op == "SPLIT":
            opts["num_splits"] = len(outputs)
        opts.update({_ALIASES.get(k, k): v for k, v in options.items()})
        options_name = _options_name(op)
        if options_name is None and opts:
            raise TFLiteBuildError(f"{op} takes no options, got {sorted(opts)}")
        if options_name is not None:
            _check_fields(options_name, opts)
        self._ops.append(_Operator(key, list(inputs), list(outputs), options_name, opts))

    def finish(self, inputs: Sequence[int], outputs: Sequence[int]) -> bytes:
        """Serialise the model with graph ``inputs`` and ``outputs`` (tensor indices)."""
        b = flatbuffers.Builder(1024)
        buffers = [self._write_buffer(b, data) for data in self._buffers]
        tensors = [self._write_tensor(b, t) for t in self._tensors]
        ops = [self._write_operator(b, o) for o in self._ops]
        subgraph = self._write_subgraph(b, tensors, ops, inputs, outputs)
        opcodes = []
        for code, version in self._opcodes:
            tflite.OperatorCodeStart(b)
            tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
            tflite.OperatorCodeAddBuiltinCode(b, code)
            tflite.OperatorCodeAddVersion(b, version)
            opcodes.append(tflite.OperatorCodeEnd(b))
        description = b.CreateString("tvm_qnn_ext.testing.tflite_builder")
        opcodes_vec = _offset_vector(b, tflite.ModelStartOperatorCodesVector, opcodes)
        subgraphs_vec = _offset_vector(b, tflite.ModelStartSubgraphsVector, [subgraph])
        buffers_vec = _offset_vector(b, tflite.ModelStartBuffersVector, buffers)
        tflite.ModelStart(b)
        tflite.ModelAddVersion(b, 3)
        tflite.ModelAddOperatorCodes(b, opcodes_vec)
        tflite.ModelAddSubgraphs(b, subgraphs_vec)
        tflite.ModelAddDescription(b, description)
        tflite.ModelAddBuffers(b, buffers_vec)
        b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
        return bytes(b.Output())

    @staticmethod
    def _write_buffer(b: flatbuffers.Builder, data: bytes) -> int:
        vec = None
        if data:
            # 16-byte alignment so kernels may read int32/int64 constants in place.
            b.StartVector(1, len(data), 16)
            b.head -= len(data)
            b.Bytes[b.head : b.head + len(data)] = data
            vec = b.EndVector()
        tflite.BufferStart(b)
        if vec is not None:
            tflite.BufferAddData(b, vec)
        return tflite.BufferEnd(b)

    def _write_tensor(self, b: flatbuffers.Builder, t: _Tensor) -> int:
        name = b.CreateString(t.name)
        shape = _int_vector(b, tflite.TensorStartShapeVector, t.shape)
        quant = None
        if t.scale is not None:
            scale = _scalar_vector(b, tflite.QuantizationParametersStartScaleVector, t.scale, "f4")
            zp = _scalar_vector(
                b, tflite.QuantizationParametersStartZeroPointVector, t.zero_point, "i8"
            )
            tflite.QuantizationParametersStart(b)
            tflite.QuantizationParametersAddScale(b, scale)
            tflite.QuantizationParametersAddZeroPoint(b, zp)
            tflite.QuantizationParametersAddQuantizedDimension(b, t.quantized_dimension)
            quant = tflite.QuantizationParametersEnd(b)
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, shape)
        tflite.TensorAddType(b, tensor_type(t.dtype))
        tflite.TensorAddBuffer(b, t.buffer)
        tflite.TensorAddName(b, name)
        if quant is not None:
            tflite.TensorAddQuantization(b, quant)
        return tflite.TensorEnd(b)

    def _write_operator(self, b: flatbuffers.Builder, o: _Operator) -> int:
        options = None
        if o.options_name is not None:
            options = _write_options(b, o.options_name, o.options)
        inputs = _int_vector(b, tflite.OperatorStartInputsVector, o.inputs)
        outputs = _int_vector(b, tflite.OperatorStartOutputsVector, o.outputs)
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, self._opcodes.index(o.opcode))
        tflite.OperatorAddInputs(b, inputs)
        tflite.OperatorAddOutputs(b, outputs)
        if options is not None:
            tflite.OperatorAddBuiltinOptionsType(b, getattr(BuiltinOptions, o.options_name))
            tflite.OperatorAddBuiltinOptions(b, options)
        return tflite.OperatorEnd(b)

    def _write_subgraph(self, b, tensors, ops, inputs, outputs) -> int:
        for t in list(inputs) + list(outputs):
            if not 0 <= t < len(self._tensors):
                raise TFLiteBuildError(f"graph input/output {t} is not a tensor index")
        name = b.CreateString("main")
        tensors_vec = _offset_vector(b, tflite.SubGraphStartTensorsVector, tensors)
        in_vec = _int_vector(b, tflite.SubGraphStartInputsVector, inputs)
        out_vec = _int_vector(b, tflite.SubGraphStartOutputsVector, outputs)
        ops_vec = _offset_vector(b, tflite.SubGraphStartOperatorsVector, ops)
        tflite.SubGraphStart(b)
        tflite.SubGraphAddTensors(b, tensors_vec)
        tflite.SubGraphAddInputs(b, in_vec)
        tflite.SubGraphAddOutputs(b, out_vec)
        tflite.SubGraphAddOperators(b, ops_vec)
        tflite.SubGraphAddName(b, name)
        return tflite.SubGraphEnd(b)


def _check_fields(options_name: str, options: dict) -> None:
    mod = importlib.import_module(f"tflite.{options_name}")
    for key in options:
        if not hasattr(mod, f"Add{_camel(key)}"):
            known = sorted(n[3:] for n in dir(mod) if n.startswith("Add"))
            raise TFLiteBuildError(f"{options_name} has no field {key!r}; fields: {known}")


def _write_options(b: flatbuffers.Builder, options_name: str, options: dict) -> int:
    mod = importlib.import_module(f"tflite.{options_name}")
    # Vectors must be written before the table is started.
    values = {}
    for key, value in options.items():
        field = _camel(key)
        if key in _ENUMS and isinstance(value, str):
            try:
                value = getattr(_ENUMS[key], value.upper())
            except AttributeError:
                raise TFLiteBuildError(f"{options_name}.{key}: unknown value {value!r}") from None
        elif key == "out_type" and not isinstance(value, int):
            value = tensor_type(value)
        elif isinstance(value, (list, tuple, np.ndarray)):
            value = _int_vector(b, getattr(mod, f"Start{field}Vector"), value)
        values[field] = value
    mod.Start(b)
    for field, value in values.items():
        getattr(mod, f"Add{field}")(b, value)
    return mod.End(b)


def _int_vector(b: flatbuffers.Builder, start, values: Sequence[int]) -> int:
    return _scalar_vector(b, start, values, "i4")


_PREPEND = {"i4": "PrependInt32", "i8": "PrependInt64", "f4": "PrependFloat32"}


def _scalar_vector(b: flatbuffers.Builder, start, values, kind: str) -> int:
    values = list(values)
    start(b, len(values))
    prepend = getattr(b, _PREPEND[kind])
    for v in reversed(values):
        prepend(float(v) if kind == "f4" else int(v))
    return b.EndVector()


def _offset_vector(b: flatbuffers.Builder, start, offsets: Sequence[int]) -> int:
    start(b, len(offsets))
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def single_op_model(
    op: str, inputs: Sequence[dict], outputs: Sequence[dict], version: int = 1, **options
) -> bytes:
    """A model of one operator.  Each input/output is a dict of :meth:`ModelBuilder.add_tensor`
    keywords (``name`` optional); inputs carrying ``data`` become constants, the rest graph
    inputs in order.  ``None`` in ``inputs`` is an omitted optional input."""
    mb = ModelBuilder()
    graph_in, op_in, op_out = [], [], []
    for i, spec in enumerate(inputs):
        if spec is None:
            op_in.append(-1)
            continue
        spec = dict(spec)
        idx = mb.add_tensor(spec.pop("name", f"input_{i}"), **spec)
        op_in.append(idx)
        if spec.get("data") is None:
            graph_in.append(idx)
    for i, spec in enumerate(outputs):
        spec = dict(spec)
        op_out.append(mb.add_tensor(spec.pop("name", f"output_{i}"), **spec))
    mb.add_op(op, op_in, op_out, version=version, **options)
    return mb.finish(graph_in, op_out)

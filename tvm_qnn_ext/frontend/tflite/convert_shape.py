"""Data movement: RESHAPE, SQUEEZE, EXPAND_DIMS, SHAPE, STRIDED_SLICE, PACK, TRANSPOSE, SPLIT,
PAD/PADV2 and CONCATENATION.

Shapes are static, so shape arithmetic (SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE) folds to
numpy constants at import time.
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from ... import op as qnn
from .importer import QUANT_DTYPES, Context, converter
from .reader import Operator


def _same_quant(ctx: Context, op: Operator, inputs=None) -> str | None:
    """Data movement on quantized tensors must not change quantization."""
    out = ctx.tensor(op.outputs[0])
    for i in inputs if inputs is not None else op.inputs[:1]:
        t = ctx.tensor(i)
        if t.dtype != out.dtype:
            return f"input dtype {t.dtype} differs from output dtype {out.dtype}"
        if t.dtype in ("float32",) and t.data is None:
            return "float32 activations (only quantized models are supported)"
        if t.dtype in QUANT_DTYPES and (t.quant is None or out.quant is None):
            return "missing quantization parameters"
        if (
            t.quant is not None
            and out.quant is not None
            and (
                t.quant.scale[0] != out.quant.scale[0]
                or t.quant.zero_point[0] != out.quant.zero_point[0]
            )
        ):
            return "input and output quantization differ"
    return None


def _target_shape(ctx: Context, op: Operator) -> tuple[int, ...]:
    in_size = int(np.prod(ctx.tensor(op.inputs[0]).shape))
    shape = None
    if len(op.inputs) > 1 and op.inputs[1] >= 0:
        v = ctx.value(op.inputs[1])
        if isinstance(v, np.ndarray):
            shape = [int(d) for d in v.reshape(-1)]
    if shape is None and op.options.get("new_shape"):
        shape = [int(d) for d in op.options["new_shape"]]
    if shape is None:
        shape = list(ctx.tensor(op.outputs[0]).shape)
    if shape.count(-1) > 1:
        raise ValueError(f"reshape target {shape} has more than one -1")
    if -1 in shape:
        known = int(np.prod([d for d in shape if d != -1]))
        shape[shape.index(-1)] = in_size // known
    if int(np.prod(shape)) != in_size:
        raise ValueError(f"cannot reshape {in_size} elements to {shape}")
    return tuple(shape)


@converter("RESHAPE", "SQUEEZE", "EXPAND_DIMS", check=_same_quant)
def convert_reshape(ctx: Context, op: Operator):
    shape = (
        _target_shape(ctx, op) if op.name == "RESHAPE" else tuple(ctx.tensor(op.outputs[0]).shape)
    )
    v = ctx.value(op.inputs[0])
    if isinstance(v, np.ndarray):
        return [v.reshape(shape)]
    return [ctx.emit(relax.op.reshape(v, shape))]


@converter("SHAPE")
def convert_shape(ctx: Context, op: Operator):
    dtype = ctx.tensor(op.outputs[0]).dtype
    return [np.asarray(ctx.tensor(op.inputs[0]).shape, dtype=dtype)]


def _check_strided_slice(ctx: Context, op: Operator) -> str | None:
    if op.options.get("ellipsis_mask", 0) or op.options.get("new_axis_mask", 0):
        return "ellipsis_mask/new_axis_mask"
    return _same_quant(ctx, op)


def _slices(ctx: Context, op: Operator, shape) -> tuple[list[slice], list[int]]:
    begin, end, strides = (ctx.const(i).reshape(-1).astype(np.int64) for i in op.inputs[1:4])
    o = op.options
    slices, shrink = [], []
    for d, size in enumerate(shape):
        if d >= len(begin):
            slices.append(slice(None))
            continue
        b, e, s = int(begin[d]), int(end[d]), int(strides[d])
        if s == 0:
            raise ValueError("STRIDED_SLICE stride of 0")
        if o.get("offset", False):
            e = b + e
        if o.get("shrink_axis_mask", 0) >> d & 1:
            b = b + size if b < 0 else b
            if o.get("begin_mask", 0) >> d & 1:  # LiteRT applies begin_mask here too (TF doesn't)
                b = 0 if s > 0 else size - 1
            if not 0 <= b < size:
                raise ValueError(f"STRIDED_SLICE index {b} out of range for axis of size {size}")
            slices.append(slice(b, b + 1, 1))
            shrink.append(d)
            continue
        slices.append(
            slice(
                None if o.get("begin_mask", 0) >> d & 1 else b,
                None if o.get("end_mask", 0) >> d & 1 else e,
                s,
            )
        )
    return slices, shrink


@converter("STRIDED_SLICE", check=_check_strided_slice)
def convert_strided_slice(ctx: Context, op: Operator):
    shape = ctx.tensor(op.inputs[0]).shape
    slices, shrink = _slices(ctx, op, shape)
    v = ctx.value(op.inputs[0])
    if isinstance(v, np.ndarray):
        return [np.squeeze(v[tuple(slices)], axis=tuple(shrink))]
    for axis, sl in enumerate(slices):
        idx = np.arange(shape[axis])[sl]
        if len(idx) == shape[axis] and np.all(idx == np.arange(shape[axis])):
            continue
        v = ctx.emit(relax.op.take(v, relax.const(idx.astype("int32"), "int32"), axis=axis))
    out_shape = tuple(ctx.tensor(op.outputs[0]).shape)
    return [ctx.emit(relax.op.reshape(v, out_shape))]


@converter("PACK", check=lambda ctx, op: _same_quant(ctx, op, op.inputs))
def convert_pack(ctx: Context, op: Operator):
    axis = int(op.options.get("axis", 0))
    values = [ctx.value(i) for i in op.inputs]
    if all(isinstance(v, np.ndarray) for v in values):
        return [np.stack(values, axis=axis)]
    return [ctx.emit(relax.op.stack([ctx.expr(i) for i in op.inputs], axis=axis))]


@converter("TRANSPOSE", check=_same_quant)
def convert_transpose(ctx: Context, op: Operator):
    perm = [int(p) for p in ctx.const(op.inputs[1]).reshape(-1)]
    v = ctx.value(op.inputs[0])
    if isinstance(v, np.ndarray):
        return [np.transpose(v, perm)]
    return [ctx.emit(relax.op.permute_dims(v, perm))]


def _check_split(ctx: Context, op: Operator) -> str | None:
    data = ctx.tensor(op.inputs[1])
    out = ctx.tensor(op.outputs[0])
    if data.quant is None or out.quant is None or data.dtype not in QUANT_DTYPES:
        return "SPLIT of non-quantized data"
    if (data.quant.scale[0], data.quant.zero_point[0]) != (
        out.quant.scale[0],
        out.quant.zero_point[0],
    ):
        return "input and output quantization differ"
    return None


@converter("SPLIT", check=_check_split)
def convert_split(ctx: Context, op: Operator):
    rank = len(ctx.tensor(op.inputs[1]).shape)
    axis = int(ctx.const(op.inputs[0]).reshape(-1)[0]) % rank
    n = len(op.outputs)
    if n == 1:  # relax's split into one section returns the tensor itself, not a tuple
        return [ctx.expr(op.inputs[1])]
    parts = ctx.emit(relax.op.split(ctx.expr(op.inputs[1]), n, axis=axis))
    return [ctx.emit(relax.TupleGetItem(parts, k)) for k in range(n)]


def _check_pad(ctx: Context, op: Operator) -> str | None:
    reason = _same_quant(ctx, op)
    if reason:
        return reason
    if ctx.tensor(op.inputs[1]).data is None:
        return "non-constant paddings"
    return None


@converter("PAD", "PADV2", check=_check_pad)
def convert_pad(ctx: Context, op: Operator):
    rank = len(ctx.tensor(op.inputs[0]).shape)
    pads = ctx.const(op.inputs[1]).astype(np.int64)
    if pads.size != 2 * rank:
        raise ValueError(f"paddings of shape {pads.shape} for a rank-{rank} input")
    pads = pads.reshape(rank, 2)
    if np.any(pads < 0):
        raise ValueError(f"negative paddings {pads.tolist()}")
    out = ctx.tensor(op.outputs[0])
    if op.name == "PADV2" and len(op.inputs) > 2 and op.inputs[2] >= 0:
        value = int(ctx.const(op.inputs[2]).reshape(-1)[0])
    else:
        value = int(out.quant.zero_point[0]) if out.quant is not None else 0
    x = ctx.expr(op.inputs[0])
    return [ctx.emit(relax.op.nn.pad(x, [int(p) for p in pads.reshape(-1)], "constant", value))]


def _check_concat(ctx: Context, op: Operator) -> str | None:
    out = ctx.tensor(op.outputs[0])
    if out.dtype not in QUANT_DTYPES or out.quant is None:
        return f"{out.dtype} output (only quantized tensors are supported)"
    for i in op.inputs:
        t = ctx.tensor(i)
        if t.dtype != out.dtype or t.quant is None:
            return f"input {t.name!r} is {t.dtype} without matching quantization"
    if op.options.get("fused_activation_function", 0) != 0:
        return "fused activation on CONCATENATION"
    return None


@converter("CONCATENATION", check=_check_concat)
def convert_concat(ctx: Context, op: Operator):
    rank = len(ctx.tensor(op.outputs[0]).shape)
    axis = int(op.options.get("axis", 0)) % rank
    qs = [ctx.quant(i) for i in op.inputs]
    qo = ctx.quant(op.outputs[0])
    call = qnn.concatenate(
        [ctx.expr(i) for i in op.inputs],
        axis=axis,
        input_scales=[q.scale[0] for q in qs],
        input_zero_points=[int(q.zero_point[0]) for q in qs],
        output_scale=qo.scale[0],
        output_zero_point=int(qo.zero_point[0]),
        out_dtype=ctx.tensor(op.outputs[0]).dtype,
        rounding="tflite",
    )
    return [ctx.emit(call)]

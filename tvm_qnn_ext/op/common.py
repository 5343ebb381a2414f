"""Helpers shared by the op families: attribute access, type checks, constant parameters."""

from __future__ import annotations

import numpy as np
from tvm import relax, te

from ..quantization.params import check_scale, check_zero_point
from .registry import QnnTypeError


def attr(call: relax.Call, key: str, default=None):
    """A call attribute as plain Python (Arrays become lists)."""
    if call.attrs is None or key not in call.attrs.keys():
        return default
    v = call.attrs[key]
    if hasattr(v, "__len__") and not isinstance(v, str):
        return [x for x in v]
    return v


def op_name(call: relax.Call) -> str:
    return call.op.name


def tensor_type(call: relax.Call, index: int, what: str) -> relax.TensorType:
    ty = call.args[index].ty
    if not isinstance(ty, relax.TensorType) or ty.dtype == "void" or ty.ndim < 0:
        raise QnnTypeError(f"{op_name(call)}: {what} must be a tensor of known dtype and rank")
    return ty


def expect_dtype(call: relax.Call, what: str, dtype: str, allowed: tuple[str, ...]):
    if str(dtype) not in allowed:
        raise QnnTypeError(
            f"{op_name(call)}: {what} has dtype {dtype}, expected one of {list(allowed)}"
        )


def expect_rank(call: relax.Call, what: str, ty: relax.TensorType, ranks: tuple[int, ...]):
    if ty.ndim not in ranks:
        raise QnnTypeError(
            f"{op_name(call)}: {what} has rank {ty.ndim}, expected {' or '.join(map(str, ranks))}"
        )


def static_shape(call: relax.Call, what: str, ty: relax.TensorType) -> tuple[int, ...]:
    try:
        return tuple(int(d) for d in ty.shape.values)
    except (TypeError, AttributeError):
        raise QnnTypeError(
            f"{op_name(call)}: {what} needs a static shape, got {ty.shape}"
        ) from None


def scales(call: relax.Call, key: str) -> np.ndarray:
    return np.atleast_1d(check_scale(attr(call, key), f"{op_name(call)} {key}"))


def zero_points(call: relax.Call, key: str, dtype: str) -> np.ndarray:
    return np.atleast_1d(check_zero_point(attr(call, key, 0), dtype, f"{op_name(call)} {key}"))


def check_axis_length(call: relax.Call, key: str, values: np.ndarray, ty, axis: int | None):
    """A per-axis parameter must match the length of its axis."""
    if values.size == 1:
        return
    if axis is None:
        raise QnnTypeError(f"{op_name(call)}: {key} has {values.size} values but no axis is given")
    shape = static_shape(call, "input", ty)
    if not -len(shape) <= axis < len(shape):
        raise QnnTypeError(f"{op_name(call)}: axis {axis} out of range for rank {len(shape)}")
    if shape[axis] != values.size:
        raise QnnTypeError(
            f"{op_name(call)}: {key} has {values.size} values but axis {axis} has length "
            f"{shape[axis]}"
        )


def per_axis(values: np.ndarray, dtype: str):
    """Per-tensor parameters stay Python scalars; per-axis ones become Relax constants.

    Pass the result to ``bb.call_te``: constants arrive in the TE function as tensors.  Read
    either form with :func:`at`.
    """
    values = np.asarray(values)
    if values.size == 1:
        return values.reshape(()).astype(dtype).item()
    return relax.const(values.reshape(-1).astype(dtype), dtype)


def at(param, channel):
    """Element ``channel`` of a :func:`per_axis` parameter inside a TE function."""
    if isinstance(param, te.Tensor):
        return param(channel)
    return param

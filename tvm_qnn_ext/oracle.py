"""What the CLI's ``check`` and ``bench`` need around LiteRT: validated model bytes, the
quantization behind each graph input/output, random inputs, and single-threaded runners
(builtin kernels: the bit-exact oracle; XNNPACK: the fast path, not bit-exact)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .quantization import dtype_range
from .testing.litert import LiteRTRunner


class ModelFileError(ValueError):
    """A model file that is missing or not a TFLite flatbuffer."""


def read_tflite(path: str | os.PathLike) -> bytes:
    """The bytes of a ``.tflite`` file, checked to be a TFLite flatbuffer."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    data = path.read_bytes()
    # A TFLite flatbuffer carries the file identifier "TFL3" at offset 4.
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelFileError(f"{path}: not a TFLite model (no TFL3 flatbuffer identifier)")
    return data


@dataclass(frozen=True)
class IOSpec:
    """A graph input or output and the quantization of the integer domain behind it.

    For an int8/uint8 tensor that is its own quantization.  For a float input it is the
    output of the QUANTIZE that consumes it; for a float output the input of the DEQUANTIZE
    that produces it.  ``scale`` is None when no such quantization exists.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    qdtype: str | None
    scale: float | None
    zero_point: int | None


def io_specs(model: bytes) -> tuple[list[IOSpec], list[IOSpec]]:
    import tflite
    from tflite.BuiltinOperator import BuiltinOperator
    from tflite.TensorType import TensorType

    names = {v: k.lower() for k, v in vars(TensorType).items() if not k.startswith("_")}
    m = tflite.Model.GetRootAsModel(model, 0)
    g = m.Subgraphs(0)

    def code(op) -> int:
        c = m.OperatorCodes(op.OpcodeIndex())
        return max(c.BuiltinCode(), c.DeprecatedBuiltinCode())

    def quant(idx: int) -> tuple[str, float, int] | None:
        t = g.Tensors(idx)
        q = t.Quantization()
        if q is None or q.ScaleLength() != 1:
            return None
        return names[t.Type()], float(q.Scale(0)), int(q.ZeroPoint(0))

    ops = [g.Operators(i) for i in range(g.OperatorsLength())]

    def spec(idx: int, is_input: bool) -> IOSpec:
        t = g.Tensors(idx)
        dtype = names[t.Type()]
        q = None
        if dtype in ("int8", "uint8", "int16"):
            q = quant(idx)
        elif dtype == "float32":
            for op in ops:
                if is_input and code(op) == BuiltinOperator.QUANTIZE and op.Inputs(0) == idx:
                    q = quant(op.Outputs(0))
                elif not is_input and code(op) == BuiltinOperator.DEQUANTIZE:
                    if op.Outputs(0) == idx:
                        q = quant(op.Inputs(0))
                if q is not None:
                    break
        shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        return IOSpec(t.Name().decode(), shape, dtype, *(q if q else (None, None, None)))

    ins = [spec(int(i), True) for i in g.InputsAsNumpy()]
    outs = [spec(int(i), False) for i in g.OutputsAsNumpy()]
    return ins, outs


def random_input(spec: IOSpec, rng: np.random.Generator) -> np.ndarray:
    """Uniform over the full integer range, or for float inputs over the range the input's
    quantization covers."""
    if spec.dtype in ("int8", "uint8", "int16"):
        lo, hi = dtype_range(spec.dtype)
        return rng.integers(lo, hi, size=spec.shape, endpoint=True).astype(spec.dtype)
    if spec.dtype == "float32":
        if spec.scale is None:
            raise ValueError(
                f"float input {spec.name!r} is not followed by a QUANTIZE: its range is unknown"
            )
        lo, hi = dtype_range(spec.qdtype)
        a, b = (lo - spec.zero_point) * spec.scale, (hi - spec.zero_point) * spec.scale
        return rng.uniform(a, b, size=spec.shape).astype(np.float32)
    raise ValueError(f"input {spec.name!r} has dtype {spec.dtype}; cannot generate random data")


def litert(model: bytes, xnnpack: bool = False) -> LiteRTRunner:
    """A single-threaded LiteRT runner: builtin kernels, or the XNNPACK delegate."""
    try:
        return LiteRTRunner(model, xnnpack=xnnpack, num_threads=1)
    except (ValueError, RuntimeError) as e:
        raise ModelFileError(f"LiteRT cannot load the model: {e}") from None

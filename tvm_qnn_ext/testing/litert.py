"""LiteRT as the oracle: run ``.tflite`` bytes with the builtin (bit-exact reference) kernels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TensorInfo:
    """What LiteRT reports about a graph input or output."""

    name: str
    index: int
    shape: tuple[int, ...]
    dtype: str
    scale: np.ndarray  # float32, one per channel (or one per tensor); empty if not quantized
    zero_point: np.ndarray  # int64
    quantized_dimension: int


def _info(d: dict) -> TensorInfo:
    q = d.get("quantization_parameters", {})
    return TensorInfo(
        name=d["name"],
        index=int(d["index"]),
        shape=tuple(int(s) for s in d["shape"]),
        dtype=str(np.dtype(d["dtype"])),
        scale=np.asarray(q.get("scales", []), dtype=np.float32),
        zero_point=np.asarray(q.get("zero_points", []), dtype=np.int64),
        quantized_dimension=int(q.get("quantized_dimension", 0)),
    )


class LiteRTRunner:
    """One interpreter, invoked on many inputs.

    ``xnnpack=False`` uses ``BUILTIN_WITHOUT_DEFAULT_DELEGATES``: TFLite's own kernels, the
    bit-exact oracle.  ``xnnpack=True`` uses the default resolver (XNNPACK delegate), which is
    not bit-exact with it.
    """

    def __init__(self, model_bytes: bytes, xnnpack: bool = False, num_threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = (
            OpResolverType.AUTO if xnnpack else (OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        )
        self._model = bytes(model_bytes)  # the interpreter reads the flatbuffer in place
        self.interpreter = Interpreter(
            model_content=self._model,
            experimental_op_resolver_type=resolver,
            num_threads=num_threads,
        )
        self.interpreter.allocate_tensors()
        self.inputs = [_info(d) for d in self.interpreter.get_input_details()]
        self.outputs = [_info(d) for d in self.interpreter.get_output_details()]

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        if len(inputs) != len(self.inputs):
            raise ValueError(f"model takes {len(self.inputs)} inputs, got {len(inputs)}")
        for spec, a in zip(self.inputs, inputs, strict=True):
            a = np.asarray(a)
            if str(a.dtype) != spec.dtype or tuple(a.shape) != spec.shape:
                raise ValueError(
                    f"input {spec.name!r}: expected {spec.dtype}{list(spec.shape)}, "
                    f"got {a.dtype}{list(a.shape)}"
                )
            self.interpreter.set_tensor(spec.index, np.ascontiguousarray(a))
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(o.index).copy() for o in self.outputs]


def run_litert(
    model_bytes: bytes, inputs: list[np.ndarray], xnnpack: bool = False
) -> list[np.ndarray]:
    """Run a model once and return its outputs."""
    return LiteRTRunner(model_bytes, xnnpack)(inputs)


def model_details(model_bytes: bytes) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """(inputs, outputs) of a model as LiteRT sees them."""
    r = LiteRTRunner(model_bytes)
    return r.inputs, r.outputs

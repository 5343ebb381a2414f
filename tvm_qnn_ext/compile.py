"""compile_model: any supported source -> a callable, exportable compiled model."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from .target import resolve_target


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str


def _specs(func: relax.Function) -> list[TensorSpec]:
    specs = []
    for p in func.params:
        ty = p.ty
        shape = tuple(int(d) for d in ty.shape.values) if ty.shape is not None else ()
        specs.append(TensorSpec(str(p.name), shape, str(ty.dtype)))
    return specs


class CompiledModel:
    """A compiled model: call it on numpy arrays, get a list of numpy arrays back."""

    def __init__(self, executable, inputs: list[TensorSpec], device=None):
        self.executable = executable
        self.inputs = inputs
        self.device = device or tvm.cpu()
        self._vm = relax.VirtualMachine(executable, self.device)

    def __call__(self, *arrays: np.ndarray) -> list[np.ndarray]:
        if len(arrays) != len(self.inputs):
            raise ValueError(f"model takes {len(self.inputs)} inputs, got {len(arrays)}")
        args = []
        for spec, a in zip(self.inputs, arrays, strict=False):
            a = np.asarray(a)
            if a.dtype != np.dtype(spec.dtype):
                raise TypeError(f"input {spec.name!r}: expected dtype {spec.dtype}, got {a.dtype}")
            if spec.shape and tuple(a.shape) != spec.shape:
                raise ValueError(f"input {spec.name!r}: expected shape {spec.shape}, got {a.shape}")
            args.append(tvm.runtime.tensor(np.ascontiguousarray(a), self.device))
        out = self._vm["main"](*args)
        return [o.numpy() for o in _flatten(out)]

    def export(self, path: str | os.PathLike) -> Path:
        """Write a shared library loadable with :meth:`load` (or TVM's runtime directly)."""
        path = Path(path)
        self.executable.export_library(str(path))
        spec_path = path.with_suffix(path.suffix + ".inputs.npy")
        np.save(
            spec_path,
            np.array([(s.name, s.shape, s.dtype) for s in self.inputs], dtype=object),
            allow_pickle=True,
        )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> CompiledModel:
        path = Path(path)
        lib = tvm.runtime.load_module(str(path))
        spec_path = path.with_suffix(path.suffix + ".inputs.npy")
        inputs = [TensorSpec(n, tuple(s), d) for n, s, d in np.load(spec_path, allow_pickle=True)]
        return cls(lib, inputs)


def _flatten(out) -> list:
    if isinstance(out, tvm.runtime.Tensor):
        return [out]
    result = []
    for o in out:
        result.extend(_flatten(o))
    return result


def load_source(source, **options) -> tvm.IRModule:
    """Import a model from a path, bytes or an IRModule into our QNN dialect."""
    if isinstance(source, tvm.IRModule):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        from .frontend.tflite import from_tflite

        return from_tflite(bytes(source), **options)
    if _is_torch_model(source):
        from .frontend.pytorch import from_pytorch

        return from_pytorch(source, **options)
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"model file not found: {path}")
    if path.suffix == ".tflite":
        from .frontend.tflite import from_tflite

        return from_tflite(path, **options)
    if path.suffix == ".pt2":
        import torch

        from .frontend.pytorch import from_pytorch

        return from_pytorch(torch.export.load(str(path)), **options)
    if path.suffix == ".onnx":
        from .frontend.onnx import from_onnx

        return from_onnx(path, **options)
    raise ValueError(
        f"{path}: unsupported model format {path.suffix!r}; supported: .tflite, .pt2, .onnx"
    )


def _is_torch_model(source) -> bool:
    """An nn.Module or ExportedProgram, detected without importing torch."""
    mod = type(source).__module__
    return mod.split(".")[0] == "torch" or any(
        c.__module__.startswith("torch.nn") for c in type(source).__mro__
    )


def compile_model(
    source, target="native", *, pipeline_options: dict | None = None, **options
) -> CompiledModel:
    """Import (if needed) and compile a quantized model for ``target`` with the ``"qnn"`` pipeline.

    ``options`` go to the importer; ``pipeline_options`` to the pipeline's stages.
    """
    from .transform import pipeline  # noqa: F401  (registers the "qnn" pipeline)

    mod = load_source(source, **options)
    tgt = resolve_target(target)
    qnn = relax.get_pipeline("qnn", target=tgt, **(pipeline_options or {}))
    executable = tvm.compile(mod, tgt, relax_pipeline=qnn)
    return CompiledModel(executable, _specs(mod["main"]))

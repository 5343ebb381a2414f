"""compile_model: any supported source -> a callable, exportable compiled model."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from .target import resolve_target
from .transform.preallocate import PREALLOCATED, WORKSPACE, add_preallocated_main


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
    """A compiled model: call it on numpy arrays, get a list of numpy arrays back.

    On the CPU a call costs the kernels plus about 1.5 us: inputs are copied into preallocated,
    64-byte aligned buffers that TVM shares without a copy (``tvm.runtime.tensor`` would
    allocate and wrap a new tensor each call, about 25 us), the VM runs
    ``main_preallocated`` on a workspace allocated once (see ``transform/preallocate.py``;
    about 0.03 us per kernel call in the compiled exec mode), and outputs are copied out of
    numpy views of that workspace, so each call returns fresh arrays.  One
    instance is not meant to be called from several threads at once.
    """

    def __init__(self, executable, inputs: list[TensorSpec], device=None):
        self.executable = executable
        self.inputs = inputs
        self.device = device or tvm.cpu()
        self._vm = relax.VirtualMachine(executable, self.device)
        self._main = self._vm["main"]
        self._staging: list[np.ndarray] | None = None
        self._args: list[tvm.runtime.Tensor] = []
        self._run = self._main
        self._run_args: list = []
        self._outputs: list[np.ndarray] | None = None
        # (staging buffer, dtype, shape, spec) per input; empty: inputs go through tvm tensors
        self._slots: list[tuple] = []
        # set after the first preallocated call of a one-input, one-output model
        self._one_to_one = None
        on_cpu = self.device.dlpack_device_type() == tvm.cpu().dlpack_device_type()
        if on_cpu and all(s.shape for s in inputs):
            self._staging = [_aligned_empty(s.shape, s.dtype) for s in inputs]
            self._args = [tvm.runtime.from_dlpack(a) for a in self._staging]
            self._run_args = list(self._args)
            self._slots = [
                (buf, buf.dtype, buf.shape, spec)
                for buf, spec in zip(self._staging, inputs, strict=True)
            ]
            if self._vm.module.implements_function(PREALLOCATED):
                self._run = self._vm[PREALLOCATED]
                self._run_args += list(self._vm[WORKSPACE]())

    def _check(self, spec: TensorSpec, a) -> np.ndarray:
        a = np.asarray(a)
        if a.dtype != np.dtype(spec.dtype):
            raise TypeError(f"input {spec.name!r}: expected dtype {spec.dtype}, got {a.dtype}")
        if spec.shape and tuple(a.shape) != spec.shape:
            raise ValueError(f"input {spec.name!r}: expected shape {spec.shape}, got {a.shape}")
        return a

    def __call__(self, *arrays: np.ndarray) -> list[np.ndarray]:
        fast = self._one_to_one
        if fast is not None and len(arrays) == 1:
            return fast(arrays[0])
        slots = self._slots
        if not slots:
            return self._call_unstaged(arrays)
        if len(arrays) != len(slots):
            raise ValueError(f"model takes {len(self.inputs)} inputs, got {len(arrays)}")
        for (buf, dtype, shape, spec), a in zip(slots, arrays, strict=True):
            if type(a) is not np.ndarray or a.dtype != dtype or a.shape != shape:
                a = self._check(spec, a)
            buf[...] = a
        out = self._run(*self._run_args)
        views = self._outputs
        if views is None:
            views = [np.from_dlpack(o) for o in _flatten(out)]
            if self._run is not self._main:
                # main_preallocated returns the same workspace tensors on every call
                self._outputs = views
                if len(slots) == 1 and len(views) == 1:
                    self._one_to_one = self._one_to_one_call(slots[0], views[0])
        if len(views) == 1:
            return [views[0].copy()]
        return [view.copy() for view in views]

    def _one_to_one_call(self, slot: tuple, view: np.ndarray):
        """The call of a one-input, one-output model with the per-call Python work cut to the
        copies (about 0.7 us less than the general path; it matters in models of a few us)."""
        buf, dtype, shape, spec = slot
        run, run_args, check = self._run, self._run_args, self._check

        def call(a) -> list[np.ndarray]:
            if type(a) is not np.ndarray or a.dtype != dtype or a.shape != shape:
                a = check(spec, a)
            buf[...] = a
            run(*run_args)
            return [view.copy()]

        return call

    def _call_unstaged(self, arrays) -> list[np.ndarray]:
        if len(arrays) != len(self.inputs):
            raise ValueError(f"model takes {len(self.inputs)} inputs, got {len(arrays)}")
        checked = [self._check(spec, a) for spec, a in zip(self.inputs, arrays, strict=True)]
        args = [tvm.runtime.tensor(np.ascontiguousarray(a), self.device) for a in checked]
        return [o.numpy() for o in _flatten(self._main(*args))]

    def export(self, path: str | os.PathLike) -> Path:
        """Write a shared library loadable with :meth:`load` (or TVM's runtime directly)."""
        path = Path(path)
        with _without_scope_warnings():
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
        with _without_scope_warnings():
            lib = tvm.runtime.load_module(str(path))
        spec_path = path.with_suffix(path.suffix + ".inputs.npy")
        inputs = [TensorSpec(n, tuple(s), d) for n, s, d in np.load(spec_path, allow_pickle=True)]
        return cls(lib, inputs)


def _aligned_empty(shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """An uninitialised array whose data starts on a 64-byte boundary (TVM's DLPack minimum)."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(nbytes + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start : start + nbytes].view(dtype).reshape(shape)


_SCOPE_WARNINGS = ("Warning: Scope Saving:", "Warning: Scope Loaded:")


@contextlib.contextmanager
def _without_scope_warnings() -> Iterator[None]:
    """TVM 0.27 logs a warning per constant when it saves or loads a VM executable; drop
    those lines from stderr and pass every other line through."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not any(w in line for w in _SCOPE_WARNINGS):
                    sys.stderr.write(line)


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


EXEC_MODES = ("compiled", "bytecode")


def compile_model(
    source,
    target="native",
    *,
    pipeline_options: dict | None = None,
    exec_mode: str = "compiled",
    **options,
) -> CompiledModel:
    """Import (if needed) and compile a quantized model for ``target`` with the ``"qnn"`` pipeline.

    ``options`` go to the importer; ``pipeline_options`` to the pipeline's stages.
    ``exec_mode`` is the Relax VM's: ``"compiled"`` turns the VM functions into native code
    (about 0.05 us less per kernel call); ``"bytecode"`` interprets them, and is the mode in
    which ``VirtualMachine.set_instrument`` (the per-kernel profile) sees each call.
    """
    from .transform import pipeline  # noqa: F401  (registers the "qnn" pipeline)

    if exec_mode not in EXEC_MODES:
        raise ValueError(f"exec_mode must be one of {EXEC_MODES}, got {exec_mode!r}")
    mod = load_source(source, **options)
    tgt = resolve_target(target)
    qnn = relax.get_pipeline("qnn", target=tgt, **(pipeline_options or {}))
    lowering = tvm.transform.Sequential([qnn, add_preallocated_main])
    executable = relax.build(mod, tgt, relax_pipeline=lowering, exec_mode=exec_mode)
    return CompiledModel(executable, _specs(mod["main"]))

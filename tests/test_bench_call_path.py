"""CompiledModel's call path (preallocated aligned inputs shared with TVM, outputs read via
DLPack): fresh, correct, independent results on every call, against the numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from tvm_qnn_ext import op
from tvm_qnn_ext.compile import CompiledModel, _aligned_empty, compile_model
from tvm_qnn_ext.quantization import requantize

SHAPE = (2, 5, 7)


def _two_input_module() -> tvm.IRModule:
    """(requantize(a), b through an identity requantize): two inputs, a tuple of two outputs."""
    bb = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType(SHAPE, "int8"))
    b = relax.Var("b", relax.TensorType(SHAPE, "int8"))
    with bb.function("main", [a, b]):
        with bb.dataflow():
            r = bb.emit(op.requantize(a, 0.05, 3, 0.11, -7, "int8"))
            s = bb.emit(op.requantize(b, 0.05, 0, 0.05, 0, "int8"))
            out = bb.emit_output(relax.Tuple([r, s]))
        bb.emit_func_output(out)
    return bb.get()


@pytest.fixture(scope="module")
def model() -> CompiledModel:
    return compile_model(_two_input_module())


def test_every_call_sees_its_own_inputs(model):
    rng = np.random.default_rng(0)
    assert model._staging is not None  # the fast path is the one under test
    results = []
    for _ in range(5):
        a = rng.integers(-128, 128, SHAPE).astype(np.int8)
        b = rng.integers(-128, 128, SHAPE).astype(np.int8)
        r, s = model(a, b)
        np.testing.assert_array_equal(r, requantize(a, 0.05, 3, 0.11, -7, "int8"))
        np.testing.assert_array_equal(s, b)
        results.append((a, r, s))
    # earlier outputs are copies: later calls did not overwrite them
    for a, r, _ in results:
        np.testing.assert_array_equal(r, requantize(a, 0.05, 3, 0.11, -7, "int8"))


def test_non_contiguous_and_list_inputs_are_accepted(model):
    rng = np.random.default_rng(1)
    big = rng.integers(-128, 128, (2, 5, 14)).astype(np.int8)
    a = big[:, :, ::2]  # a strided view
    b = big[:, :, 1::2].tolist()
    r, s = model(a, np.asarray(b, np.int8))
    np.testing.assert_array_equal(r, requantize(a, 0.05, 3, 0.11, -7, "int8"))
    np.testing.assert_array_equal(s, big[:, :, 1::2])


def test_bad_inputs_still_name_the_problem(model):
    a = np.zeros(SHAPE, np.int8)
    with pytest.raises(ValueError, match="takes 2 inputs, got 1"):
        model(a)
    with pytest.raises(TypeError, match="input 'b': expected dtype int8, got int16"):
        model(a, a.astype(np.int16))
    with pytest.raises(ValueError, match=r"input 'a': expected shape \(2, 5, 7\)"):
        model(np.zeros((5, 7), np.int8), a)


def test_staging_buffers_are_aligned_for_dlpack():
    for shape, dtype in [((1,), "int8"), ((3, 5), "float32"), ((7, 1, 3), "uint8")]:
        buf = _aligned_empty(shape, dtype)
        assert buf.ctypes.data % 64 == 0 and buf.shape == shape and buf.dtype == dtype
        buf[...] = 1
        assert tvm.runtime.from_dlpack(buf).numpy().sum() == buf.size

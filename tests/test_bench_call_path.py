"""CompiledModel's call path (preallocated aligned inputs shared with TVM, the VM's
``main_preallocated`` on a workspace allocated once, outputs copied out through DLPack): fresh,
correct, independent results on every call, against the numpy reference and LiteRT builtin."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from tvm_qnn_ext import op
from tvm_qnn_ext.bench import model_inputs
from tvm_qnn_ext.compile import CompiledModel, _aligned_empty, compile_model
from tvm_qnn_ext.quantization import requantize
from tvm_qnn_ext.testing.litert import LiteRTRunner
from tvm_qnn_ext.transform.preallocate import PREALLOCATED, WORKSPACE, add_preallocated_main
from tvm_qnn_ext.transform.report import collect_reports

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
    assert model._run is not model._main  # ... on the preallocated workspace
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


def test_plain_main_and_preallocated_main_agree(model):
    rng = np.random.default_rng(2)
    a = rng.integers(-128, 128, SHAPE).astype(np.int8)
    b = rng.integers(-128, 128, SHAPE).astype(np.int8)
    plain = model._main(tvm.runtime.tensor(a), tvm.runtime.tensor(b))
    r, s = model(a, b)
    np.testing.assert_array_equal(plain[0].numpy(), r)
    np.testing.assert_array_equal(plain[1].numpy(), s)


def test_a_module_that_is_not_vm_lowered_is_left_alone():
    mod = _two_input_module()
    with collect_reports() as entries:
        out = add_preallocated_main(mod)
    assert PREALLOCATED not in [g.name_hint for g in out.get_global_vars()]
    assert any("main left as is" in e.message for e in entries)


@pytest.fixture(scope="module")
def magic_wand(models):
    """A real model whose main has a reshape view, a softmax with scratch outputs and a tuple."""
    path = models["tflite_micro_magic_wand"]
    return path, compile_model(path)


@pytest.mark.parametrize("name", ["tflite_micro_magic_wand", "anomaly_detection"])
def test_real_model_calls_are_independent_and_bit_exact(models, magic_wand, name):
    path, model = magic_wand if name == "tflite_micro_magic_wand" else (None, None)
    if model is None:
        path = models[name]
        model = compile_model(path)
    litert = LiteRTRunner(path.read_bytes())
    assert model._vm.module.implements_function(WORKSPACE)
    inputs = [model_inputs(path, seed) for seed in range(3)]
    outputs = [model(*x) for x in inputs]
    for x, out in zip(inputs, outputs, strict=True):
        for ours, ref in zip(out, litert(x), strict=True):
            np.testing.assert_array_equal(ours, ref)
    if name == "anomaly_detection":  # (magic_wand's softmax saturates on random inputs)
        assert not np.array_equal(outputs[0][0], outputs[1][0])
    # one input, one output: calls after the first take the short path, checks included
    assert model._one_to_one is not None
    x = inputs[0][0]
    with pytest.raises(TypeError, match="expected dtype"):
        model(x.astype(np.float64))
    with pytest.raises(ValueError, match="expected shape"):
        model(x.reshape(-1))
    np.testing.assert_array_equal(model(x)[0], outputs[0][0])


def test_exported_model_keeps_both_entry_points(magic_wand, tmp_path):
    path, model = magic_wand
    loaded = CompiledModel.load(model.export(tmp_path / "wand.so"))
    assert loaded._run is not loaded._main
    x = model_inputs(path, 5)
    expected = LiteRTRunner(path.read_bytes())(x)
    np.testing.assert_array_equal(loaded(*x)[0], expected[0])
    # TVM's runtime alone still runs the allocating main
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(tmp_path / "wand.so")), tvm.cpu())
    plain = vm["main"](*[tvm.runtime.tensor(a) for a in x])
    np.testing.assert_array_equal(plain.numpy(), expected[0])


def test_bytecode_mode_is_seen_by_the_vm_instrument():
    model = compile_model(_two_input_module(), exec_mode="bytecode")
    seen: list[str] = []

    def instrument(func, symbol, before, ret, *args):
        seen.append(str(symbol))
        return 0

    model._vm.set_instrument(instrument)
    a = np.arange(70, dtype=np.int8).reshape(SHAPE)
    r, s = model(a, -a)
    np.testing.assert_array_equal(r, requantize(a, 0.05, 3, 0.11, -7, "int8"))
    np.testing.assert_array_equal(s, -a)
    assert any("requantize" in name for name in seen)


def test_an_unknown_exec_mode_is_named():
    with pytest.raises(ValueError, match="exec_mode must be one of"):
        compile_model(_two_input_module(), exec_mode="jit")


def test_a_result_made_per_call_keeps_the_allocating_main():
    """A VM-level main returning a reshape view of its input: no workspace holds the result."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 8), "int8"))
    with bb.function("main", [x], pure=False):
        view = tvm.ir.Call(
            relax.ExternFunc("vm.builtin.reshape"),
            [x, relax.ShapeExpr([16])],
            ty_args=[relax.TensorType((16,), "int8")],
        )
        bb.emit_func_output(bb.emit(view))
    with collect_reports() as entries:
        out = add_preallocated_main(bb.get())
    assert PREALLOCATED not in [g.name_hint for g in out.get_global_vars()]
    assert [e.message for e in entries] == ["main left as is: its result ['gv'] is made per call"]

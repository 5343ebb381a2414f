"""Folding passes: bias add into qnn.conv2d / qnn.dense, clip / relu into qnn.requantize, and
requantize pairs.  Oracle: the unfolded module compiled by TVM, on random and exhaustive data."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from tvm_qnn_ext import op as qnn
from tvm_qnn_ext.transform import collect_reports
from tvm_qnn_ext.transform.fold_bias_add import FoldBiasAdd
from tvm_qnn_ext.transform.fold_clip_into_requantize import FoldClipIntoRequantize
from tvm_qnn_ext.transform.fold_requantize_pair import FoldRequantizePair

TARGET = tvm.target.Target({"kind": "llvm"})
FOLDS = tvm.transform.Sequential([FoldBiasAdd(), FoldClipIntoRequantize(), FoldRequantizePair()])


def build(shape, dtype, body) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(body(bb, x))
        bb.emit_func_output(out)
    return bb.get()


def run(mod, x) -> np.ndarray:
    vm = relax.VirtualMachine(tvm.compile(mod, TARGET), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def fold(mod):
    with collect_reports() as entries:
        out = FOLDS(mod)
    return out, [str(e) for e in entries]


def op_names(mod) -> list[str]:
    names = []

    def visit(e):
        if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op):
            names.append(e.op.name)

    relax.analysis.post_order_visit(mod["main"], visit)
    return names


def assert_same(mod, out, x):
    np.testing.assert_array_equal(run(out, x), run(mod, x))


def test_conv_bias_add_and_relu_clip_fold():
    rng = np.random.default_rng(0)
    w = relax.const(rng.integers(-128, 128, (6, 3, 3, 4)).astype(np.int8))
    bias = relax.const(rng.integers(-(2**20), 2**20, 6).astype(np.int32))
    # Large enough that bias + add wraps int32: the fold must wrap the same way.
    added = relax.const(np.array([2**31 - 5, -(2**31), 7, 0, -9, 2**30], np.int32).reshape(6))

    def body(bb, x):
        acc = bb.emit(qnn.conv2d(x, w, bias, padding=(1, 1), input_zero_point=3))
        acc = bb.emit(relax.op.add(acc, added))
        q = bb.emit(qnn.requantize(acc, 1e-4, 0, 0.05, -10, "int8"))
        q = bb.emit(relax.op.nn.relu(q))
        return relax.op.clip(q, -128.0, 100.0)

    mod = build((1, 9, 9, 4), "int8", body)
    out, msgs = fold(mod)
    assert op_names(out) == ["qnn.conv2d", "qnn.requantize"], msgs
    assert any("bias" in m for m in msgs) and any("[0, 127] -> [0, 100]" in m for m in msgs)
    x = rng.integers(-128, 128, (1, 9, 9, 4)).astype(np.int8)
    assert_same(mod, out, x)


def test_dense_per_channel_add_folds_scalar_maximum_minimum():
    rng = np.random.default_rng(1)
    w = relax.const(rng.integers(-128, 128, (5, 16)).astype(np.int8))
    added = relax.const(rng.integers(-5000, 5000, (1, 5)).astype(np.int32))

    def body(bb, x):
        acc = bb.emit(relax.op.add(added, qnn.dense(x, w, input_zero_point=-7)))
        q = bb.emit(qnn.requantize(acc, 3e-4, 0, 0.02, 5, "int8"))
        q = bb.emit(relax.op.maximum(q, relax.const(np.int8(-20))))
        return relax.op.minimum(relax.const(np.int8(90)), q)

    mod = build((3, 16), "int8", body)
    out, msgs = fold(mod)
    assert op_names(out) == ["qnn.dense", "qnn.requantize"], msgs
    x = rng.integers(-128, 128, (3, 16)).astype(np.int8)
    assert_same(mod, out, x)


def test_adds_that_are_not_bias_are_kept():
    rng = np.random.default_rng(2)
    w = relax.const(rng.integers(-128, 128, (4, 8)).astype(np.int8))
    per_row = relax.const(np.arange(2, dtype=np.int32).reshape(2, 1))

    def body(bb, x):
        acc = bb.emit(qnn.dense(x, w))
        return relax.op.add(acc, per_row)

    out, msgs = fold(build((2, 8), "int8", body))
    assert "relax.add" in op_names(out) and "not per channel" in msgs[0]


def test_clip_missing_the_requantize_range_is_kept():
    def body(bb, x):
        q = bb.emit(qnn.requantize(x, 0.1, 0, 0.1, 0, "uint8"))
        return relax.op.clip(q, 0.0, 300.0)

    out, msgs = fold(build((8,), "int16", body))
    assert "relax.clip" in op_names(out) and "not integers of the dtype" in msgs[0]


@pytest.mark.parametrize("first_unit", [False, True], ids=["second_identity", "first_identity"])
def test_requantize_pair_with_an_identity_folds_exactly(first_unit):
    """Every int8 input: the folded single requantize equals the pair."""
    scale = 0.0371 if first_unit else 1.0

    def body(bb, x):
        if first_unit:  # zero-point shift and clamp, then a real rescale
            u = bb.emit(qnn.requantize(x, 0.5, 3, 0.5, -20, "int8", out_min=-100, out_max=90))
            return qnn.requantize(u, 0.5, -20, 0.5 / scale, 7, "uint8", rounding="upward")
        u = bb.emit(qnn.requantize(x, 0.02, -4, 0.13, 11, "int8", out_min=-120))
        return qnn.requantize(u, 0.13, 11, 0.13, 140, "uint8", out_max=250)

    mod = build((256,), "int8", body)
    out, msgs = fold(mod)
    assert op_names(out) == ["qnn.requantize"], msgs
    assert "folded into one" in msgs[0]
    assert_same(mod, out, np.arange(-128, 128, dtype=np.int8))


def test_requantize_pair_with_two_roundings_is_kept():
    def body(bb, x):
        u = bb.emit(qnn.requantize(x, 0.02, 0, 0.13, 0, "int8"))
        return qnn.requantize(u, 0.13, 0, 0.3, 0, "int8")

    out, msgs = fold(build((4,), "int16", body))
    assert op_names(out).count("qnn.requantize") == 2
    assert "two roundings do not compose" in msgs[0]

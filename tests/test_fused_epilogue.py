"""The requantize runs in the conv's epilogue: in the module the "qnn" pipeline builds, every
kernel that accumulates int32 (conv, depthwise, dense) writes int8 directly, and no int32
tensor the size of an accumulator is handed from one kernel to another.

Asserted on properties of the lowered TIR (reduction blocks, buffer dtypes), not on kernel
names, so it holds whatever schedule a target picks.  The same module is run against LiteRT's
builtin kernels so the fused code is also shown to compute the right thing."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax, s_tir, tirx

from tvm_qnn_ext.frontend.tflite import from_tflite
from tvm_qnn_ext.target import resolve_target
from tvm_qnn_ext.testing.litert import LiteRTRunner
from tvm_qnn_ext.transform.pipeline import run_stages

# A conv and a dense by default; convs, depthwise convs and pools behind the slow marker.
MODELS = ["tflite_micro_speech", pytest.param("keyword_spotting_on_off_v3", marks=pytest.mark.slow)]
QUANTIZED = ("int8", "uint8")


def tir_nodes(stmt):
    """Every statement under ``stmt`` (blocks included), depth first."""
    stack = [stmt]
    while stack:
        node = stack.pop()
        if node is None:
            continue
        yield node
        for key in ("body", "block", "init", "then_case", "else_case"):
            child = getattr(node, key, None)
            if isinstance(child, (tirx.Stmt, s_tir.SBlock)):
                stack.append(child)
        if isinstance(node, tirx.SeqStmt):
            stack.extend(node.seq)


def accumulates_int32(func: tirx.PrimFunc) -> bool:
    """A block with a reduction axis that writes int32: a conv / dense / sum kernel."""
    for node in tir_nodes(func.body):
        if isinstance(node, s_tir.SBlock) and node.writes:
            reduces = any(int(iv.iter_type) == tirx.IterVar.CommReduce for iv in node.iter_vars)
            written = node.writes[0]
            buffer = getattr(written, "buffer", None) or written.source
            if reduces and str(buffer.dtype) == "int32":
                return True
    return False


def call_tir_kernels(mod: tvm.IRModule):
    """(callee PrimFunc, [output tensor types], [input vars]) per call_tir in main."""
    call_tir = tvm.ir.Op.get("relax.call_tir")
    found = []
    for block in mod["main"].body.blocks:
        for b in block.bindings:
            v = b.value
            if isinstance(v, relax.Call) and v.op.same_as(call_tir):
                ty = b.var.ty
                outs = list(ty.fields) if isinstance(ty, relax.TupleType) else [ty]
                found.append((b.var, mod[v.args[0]], outs, list(v.args[1].fields)))
    return found


def size(ty) -> int:
    return int(np.prod([int(d) for d in ty.shape.values]))


@pytest.fixture(scope="module", params=MODELS)
def model(request, models):
    return models[request.param]


@pytest.fixture(scope="module")
def lowered(model):
    out, _ = run_stages(from_tflite(model), resolve_target("native"))
    return out


def test_accumulating_kernels_write_int8(lowered):
    kernels = [(var, f, outs) for var, f, outs, _ in call_tir_kernels(lowered)]
    accumulating = [(var, f, outs) for var, f, outs in kernels if accumulates_int32(f)]
    assert len(accumulating) >= 2, "the model's conv and dense were not found"
    for var, func, outs in accumulating:
        assert [str(t.dtype) for t in outs] == [str(outs[0].dtype)] and outs[0].dtype in QUANTIZED
        out_param = func.params[-1].ty  # call_tir passes the output buffer last
        assert str(out_param.dtype) in QUANTIZED, f"{var.name} writes {out_param.dtype}"


def test_no_accumulator_sized_int32_tensor_between_kernels(lowered):
    kernels = call_tir_kernels(lowered)
    smallest_accumulator = min(size(outs[0]) for _, f, outs, _ in kernels if accumulates_int32(f))
    produced = {var: outs for var, _, outs, _ in kernels}
    for var, _, _, inputs in kernels:
        for x in inputs:
            if x in produced and isinstance(x.ty, relax.TensorType) and str(x.ty.dtype) == "int32":
                assert size(x.ty) < smallest_accumulator, f"{x.name} feeds {var.name} as int32"


def test_checks_catch_an_unfused_module(model):
    """Control: legalized but not fused, the convs hand int32 accumulators to requantize."""
    unfused = relax.transform.LegalizeOps()(from_tflite(model))
    kernels = call_tir_kernels(unfused)
    assert any(accumulates_int32(f) and outs[0].dtype == "int32" for _, f, outs, _ in kernels)


def test_fused_module_matches_litert(model, lowered):
    """The very module inspected above, built and run against LiteRT builtin."""
    target = resolve_target("native")
    vm = relax.VirtualMachine(tvm.compile(lowered, target, relax_pipeline="default"), tvm.cpu())
    litert = LiteRTRunner(model.read_bytes())
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = [rng.integers(-128, 128, s.shape).astype(s.dtype) for s in litert.inputs]
        got = vm["main"](*[tvm.runtime.tensor(a) for a in x])
        got = [got] if isinstance(got, tvm.runtime.Tensor) else list(got)
        for g, want in zip(got, litert(x), strict=True):
            np.testing.assert_array_equal(g.numpy(), want)

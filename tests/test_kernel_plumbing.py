"""The schedule stage's plumbing: stack scratch tiles, the elementwise fallback, flat kernel
rows for few-channel convs.  Values are checked against numpy."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from tvm import relax, tirx

from tvm_qnn_ext import op
from tvm_qnn_ext.op.packed_dot import use_flat_rows
from tvm_qnn_ext.quantization import conv as ref
from tvm_qnn_ext.quantization import elementwise as ref_elementwise
from tvm_qnn_ext.quantization import pool as ref_pool
from tvm_qnn_ext.quantization import requantize
from tvm_qnn_ext.target import detect_cpu, resolve_target, stack_buffers
from tvm_qnn_ext.target.asm import assembly, count_instruction
from tvm_qnn_ext.transform import run_stages


def _allocs(stmt, found):
    if isinstance(stmt, tirx.AllocBuffer):
        found.append(stmt)
    for field in ("seq", "body", "then_case", "else_case"):
        child = getattr(stmt, field, None)
        if child is None:
            continue
        for s in child if isinstance(child, (list, tvm.ir.Array)) else [child]:
            if isinstance(s, tirx.Stmt):
                _allocs(s, found)
    return found


def _func_with_scratch(size: int) -> tirx.PrimFunc:
    buf = tirx.decl_buffer((size,), "int32", name="scratch")
    out = tirx.decl_buffer((1,), "int32", name="out")
    body = tirx.SeqStmt(
        [
            tirx.AllocBuffer(buf),
            tirx.BufferStore(buf, tirx.const(7, "int32"), [0]),
            tirx.BufferStore(out, tirx.BufferLoad(buf, [0]), [0]),
        ]
    )
    return tirx.PrimFunc([out], body)


@pytest.mark.parametrize("marked", [True, False])
def test_stack_buffers_marks_only_small_buffers_of_marked_kernels(marked):
    small, large = _func_with_scratch(16), _func_with_scratch(stack_buffers.MAX_BYTES)
    mod = tvm.IRModule({"small": small, "large": large})
    if marked:
        mod = tvm.IRModule(
            {gv: f.with_attr(stack_buffers.ATTR, True) for gv, f in mod.functions.items()}
        )
    out = stack_buffers.annotate_stack_buffers(mod)
    flags = {
        gv.name_hint: ["disable_lower_builtin" in a.annotations for a in _allocs(f.body, [])]
        for gv, f in out.functions.items()
    }
    # MAX_BYTES int32 elements is 4x the limit: never on the stack
    assert flags == {"small": [marked], "large": [False]}


def test_stack_buffers_installed_once_in_tvm_pipeline():
    from tvm.tirx import compilation_pipeline

    stack_buffers.install()
    stack_buffers.install()
    factory = compilation_pipeline.PIPELINE_MAP["s_tir"]
    assert getattr(factory, "_qnn_stack_buffers", False)
    _, host, _ = factory()
    names = [p.info.name for p in host().passes]
    assert names[0] == "QnnStackBuffers", names


def _conv_module(x, w, bias, scales, **attrs):
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType(x.shape, "int8"))
    with bb.function("main", [xv]):
        with bb.dataflow():
            acc = bb.emit(op.conv2d(xv, relax.const(w), relax.const(bias), **attrs))
            y = bb.emit_output(op.requantize(acc, scales, 0, 0.05, -2, "int8", axis=3))
        bb.emit_func_output(y)
    return bb.get()


@pytest.mark.parametrize(
    "shape, kernel, strides",
    [((1, 49, 40, 1), (8, 10, 8), (2, 2)), ((1, 31, 29, 3), (16, 3, 3), (2, 2)),
     ((1, 20, 19, 2), (5, 3, 5), (1, 1))],
)  # fmt: skip
def test_few_channel_conv_exact_on_every_tile(shape, kernel, strides):
    """micro_speech's 10x8 mono conv, an RGB stem, a 2-channel 3x5: stack tiles, flat rows."""
    rng = np.random.default_rng(sum(shape))
    o, kh, kw = kernel
    x = rng.integers(-128, 128, shape, dtype=np.int8)
    w = rng.integers(-127, 128, (o, kh, kw, shape[3]), dtype=np.int8)
    bias = rng.integers(-3000, 3000, o).astype(np.int32)
    scales = list(rng.uniform(1e-4, 1e-3, o))
    attrs = dict(strides=strides, padding=(1, 2, 1, 0), input_zero_point=5)
    expected = requantize(ref.conv2d(x, w, bias, **attrs), scales, 0, 0.05, -2, "int8", axis=3)
    target = resolve_target("native")
    ex = tvm.compile(_conv_module(x, w, bias, scales, **attrs), target,
                     relax_pipeline=relax.get_pipeline("qnn", target=target))  # fmt: skip
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(got, expected)


def test_flat_rows_only_where_it_saves_instructions():
    from tvm_qnn_ext.op.conv import Geometry

    def geo(c, kw, dw=1):
        return Geometry("NHWC", "OHWI", 1, c, 8, 8, 4, c, 3, kw, 1, (1, 1), (0, 0, 0, 0),
                        (1, dw), 6, 8 - dw * (kw - 1))  # fmt: skip

    assert use_flat_rows(geo(1, 3), 4)  # 3 taps of 1 channel: 4 per row instead of 12
    assert use_flat_rows(geo(2, 5), 4)  # 10 -> 12 instead of 20
    assert not use_flat_rows(geo(3, 3), 4)  # 9 -> 12, the same as 3 taps x 4
    assert not use_flat_rows(geo(8, 3), 4)  # channels already fill the reduction
    assert not use_flat_rows(geo(1, 3, dw=2), 4)  # dilated rows are not contiguous
    assert not use_flat_rows(geo(1, 1), 4)


def _single_op_kernel(x, make):
    """Compile ``make(x)`` through the qnn pipeline: its output, the schedule reports, the
    scheduled module and the executable."""
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType(x.shape, str(x.dtype)))
    with bb.function("main", [xv]):
        with bb.dataflow():
            y = bb.emit_output(make(xv))
        bb.emit_func_output(y)
    target = resolve_target("native")
    mod, results = run_stages(relax.transform.ConvertToDataflow()(bb.get()), target, trace=True)
    ex = tvm.compile(mod, target, relax_pipeline=relax.get_pipeline("default"))
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    return got, [str(e) for r in results for e in r.reports], mod, ex


def test_elementwise_fallback_vectorizes_with_a_tail():
    """A [49, 40] int8 requantize (1960 = 122 x 16 + 8): 16 lanes plus a scalar tail, exact."""
    x = np.random.default_rng(3).integers(-128, 128, (1, 49, 1, 40), dtype=np.int8)
    got, reports, mod, _ = _single_op_kernel(
        x, lambda v: op.requantize(v, 0.031, 3, 0.017, -9, "int8")
    )
    assert any("122x16 lanes + 8 scalar" in r for r in reports), reports
    kernel = next(f for f in mod.functions.values() if isinstance(f, tirx.PrimFunc))
    assert stack_buffers.ATTR in kernel.attrs
    assert "T.vectorized(T.int64(16))" in kernel.script()
    np.testing.assert_array_equal(got, requantize(x, 0.031, 3, 0.017, -9, "int8"))


@pytest.mark.parametrize("channels", [120, 40])
def test_epilogue_vectorized_with_remainder(channels):
    """Output channels that 16 does not divide (keyword spotting's 120): the per-tile epilogue
    runs 16-lane steps and a vectorized remainder instead of a scalar loop, still exact."""
    rng = np.random.default_rng(channels)
    x = rng.integers(-128, 128, (1, 9, 3, 24), dtype=np.int8)
    w = rng.integers(-127, 128, (channels, 1, 1, 24), dtype=np.int8)
    bias = rng.integers(-3000, 3000, channels).astype(np.int32)
    scales = list(rng.uniform(1e-4, 1e-3, channels))
    attrs = dict(input_zero_point=-7)
    expected = requantize(ref.conv2d(x, w, bias, **attrs), scales, 0, 0.05, -2, "int8", axis=3)
    target = resolve_target("native")
    mod = relax.transform.ConvertToDataflow()(_conv_module(x, w, bias, scales, **attrs))
    mod, _ = run_stages(mod, target)
    kernel = next(f for f in mod.functions.values() if isinstance(f, tirx.PrimFunc))
    script = kernel.script()
    assert f"in range(T.int64({channels}))" not in script, script
    remainder = re.findall(rf"T\.vectorized\(T\.int64\((\d+)\), T\.int64\({channels}\)\)", script)
    if detect_cpu().has("avx512vnni"):  # 16 lanes: 120 = 7 x 16 + 8, 40 = 2 x 16 + 8
        assert remainder == [str(channels // 16 * 16)], script
    ex = tvm.compile(mod, target, relax_pipeline=relax.get_pipeline("default"))
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(got, expected)


def test_elementwise_fallback_flattens_two_dimensions_without_gathers():
    """A [1, 12, 10, 24] requantize runs as 12 rows of 240 contiguous lanes: flattened whole,
    TVM left per-lane index arithmetic and byte gathers (vpinsrb) in the vector loop."""
    x = np.random.default_rng(4).integers(-128, 128, (1, 12, 10, 24), dtype=np.int8)
    got, reports, _, ex = _single_op_kernel(
        x, lambda v: op.requantize(v, 0.031, 3, 0.017, -9, "int8")
    )
    assert any("12 rows of 15x16 lanes" in r for r in reports), reports
    if detect_cpu().arch == "x86_64":
        asm = assembly(ex)
        assert count_instruction(asm, "vpinsrb") == 0 and count_instruction(asm, "vpextrb") == 0
    np.testing.assert_array_equal(got, requantize(x, 0.031, 3, 0.017, -9, "int8"))


_POOL = dict(pool_size=(2, 3), strides=(2, 2))
_MEAN = dict(axis=[1, 2], keepdims=True, input_scale=0.05, input_zero_point=3,
             output_scale=0.04, output_zero_point=-2)  # fmt: skip


@pytest.mark.parametrize(
    "name, padding",
    [("avg_pool2d", (0, 0, 0, 0)), ("avg_pool2d", (1, 1, 1, 1)), ("max_pool2d", (0, 1, 0, 1)),
     ("mean", None)],
)  # fmt: skip
def test_reductions_run_channels_inside_the_window(name, padding):
    """Pools and spatial means: the window loops outside a contiguous channel loop, the
    per-output step fused per position; exact against the numpy reference, padded or not."""
    x = np.random.default_rng(7).integers(-128, 128, (1, 11, 13, 24), dtype=np.int8)
    kw = dict(_MEAN) if name == "mean" else dict(_POOL, padding=padding)
    got, reports, _, _ = _single_op_kernel(x, lambda v: getattr(op, name)(v, **kw))
    np.testing.assert_array_equal(got, getattr(ref_pool, name)(x, **kw))
    assert any("24 channels inside the window" in r for r in reports), reports


@pytest.mark.parametrize("dtype, zps", [("int8", (-3, 5, -7)), ("uint8", (131, 120, 128))])
def test_litert_add_runs_on_int32_lanes(dtype, zps):
    """LiteRT's ADD (SIMD loops and scalar tail, 1000 = 62 x 16 + 8 elements) on int32 lanes:
    no int64 arithmetic left in the kernel, exact against the numpy reference."""
    rng = np.random.default_rng(8)
    lo, hi = (-128, 128) if dtype == "int8" else (0, 256)
    x = rng.integers(lo, hi, (1, 10, 4, 25)).astype(dtype)
    y = rng.integers(lo, hi, (1, 10, 4, 25)).astype(dtype)
    kw = dict(lhs_scale=0.031, lhs_zero_point=zps[0], rhs_scale=0.047, rhs_zero_point=zps[1],
              output_scale=0.052, output_zero_point=zps[2], out_dtype=dtype)  # fmt: skip
    got, _, mod, _ = _single_op_kernel(
        x, lambda v: op.add(v, relax.const(y), **kw, litert_simd=True)
    )
    kernel = next(f for f in mod.functions.values() if isinstance(f, tirx.PrimFunc))
    assert 'T.Cast("int64"' not in kernel.script()
    np.testing.assert_array_equal(got, ref_elementwise.add(x, y, **kw, litert_simd=True))


def _reduction_kernel(two_inputs: bool, bool_step: bool):
    from tvm import s_tir, te

    a = te.placeholder((6, 5, 8), "int8", name="a")
    b = te.placeholder((6, 5, 8), "int8", name="b")
    k = te.reduce_axis((0, 5), name="k")

    def term(i, c):
        v = a[i, k, c].astype("int32")
        return v * b[i, k, c].astype("int32") if two_inputs else v

    total = te.compute((6, 8), lambda i, c: te.sum(term(i, c), axis=k), name="total")
    out = total
    if bool_step:
        positive = te.compute((6, 8), lambda i, c: total[i, c] > 0, name="positive")
        out = te.compute((6, 8), lambda i, c: tvm.tirx.Select(positive[i, c], 1, 0), name="out")
    return s_tir.Schedule(te.create_prim_func([a, b, out]))


def test_reduction_rule_takes_window_reductions_only():
    """A dot product over two inputs (a portable conv) and kernels with bool intermediates
    (TVM's codegen mixes i1 and i8 lanes when they are vectorized) are left alone."""
    from tvm_qnn_ext.target.schedules.reduction import schedule_reduction

    assert schedule_reduction(_reduction_kernel(False, False)) == (
        "total: 8 channels inside the window"
    )
    assert schedule_reduction(_reduction_kernel(True, False)) is None
    assert schedule_reduction(_reduction_kernel(False, True)) is None


def test_few_channel_input_pad_is_not_built_byte_by_byte():
    """An RGB input padded to 4 channels: the pad's channel loop is unrolled, not vectorized
    (where LLVM assembled each 4-byte vector byte by byte, 2.5x slower on a 96x96 stem)."""
    rng = np.random.default_rng(11)
    x = rng.integers(-128, 128, (1, 40, 40, 3), dtype=np.int8)
    w = rng.integers(-127, 128, (8, 3, 3, 3), dtype=np.int8)
    bias = rng.integers(-3000, 3000, 8).astype(np.int32)
    scales = list(rng.uniform(1e-4, 1e-3, 8))
    attrs = dict(strides=(2, 2), padding=(1, 1, 1, 1), input_zero_point=-7)
    expected = requantize(ref.conv2d(x, w, bias, **attrs), scales, 0, 0.05, -2, "int8", axis=3)

    def make(xv):
        acc = op.conv2d(xv, relax.const(w), relax.const(bias), **attrs)
        return op.requantize(acc, scales, 0, 0.05, -2, "int8", axis=3)

    got, _, mod, _ = _single_op_kernel(x, make)
    np.testing.assert_array_equal(got, expected)
    (kernel,) = [f for gv, f in mod.functions.items() if "conv2d" in gv.name_hint]
    pad_loops = kernel.script().split('T.sblock("pad")')[0].split("T.sblock_alloc_buffer")[-1]
    assert "T.unroll(T.int64(4))" in pad_loops and "T.vectorized" not in pad_loops, pad_loops

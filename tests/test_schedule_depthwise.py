"""The depthwise conv2d schedule (target/schedules/depthwise.py) against the numpy reference.

Random depthwise convolutions (both layouts, channel counts around the SIMD block, strides,
dilations, asymmetric padding, channel multipliers, per-channel weight zero points, runtime or
constant weights, some followed by a per-channel requantize) go through the ``"qnn"``
pipeline, whose schedule stage applies the rule; every output must equal the reference bit for
bit, and the rule must actually have scheduled the kernels (not left them as they were).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from tvm_qnn_ext import op
from tvm_qnn_ext.quantization import conv as ref
from tvm_qnn_ext.quantization import requantize
from tvm_qnn_ext.target import resolve_target
from tvm_qnn_ext.testing.batch import Case
from tvm_qnn_ext.transform.pipeline import run_stages

CHANNELS = (2, 3, 8, 16, 17, 32, 48)


def _rand(rng, shape, dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return rng.integers(info.min, int(info.max) + 1, shape).astype(dtype)


def _case(rng, i: int) -> Case:
    layout = "NHWC" if i % 4 else "NCHW"
    c = CHANNELS[i % len(CHANNELS)]
    mult = 1 if i % 5 else 2
    h, w = (int(v) for v in rng.integers(3, 13, 2))
    kh, kw = (int(v) for v in rng.choice([1, 3, 5], 2))
    strides = tuple(int(v) for v in rng.integers(1, 3, 2))
    dilation = (1, 1) if i % 3 else (2, 1)
    padding = tuple(int(v) for v in rng.integers(0, 3, 4))
    if h + padding[0] + padding[2] < dilation[0] * (kh - 1) + 1:
        padding = (kh * 2, padding[1], padding[2], padding[3])
    if w + padding[1] + padding[3] < dilation[1] * (kw - 1) + 1:
        padding = (padding[0], kw * 2, padding[2], padding[3])
    dx, dw = ("int8", "uint8")[i % 2], ("int8", "uint8")[(i // 2) % 2]
    o = c * mult
    data = _rand(rng, (1, h, w, c) if layout == "NHWC" else (1, c, h, w), dx)
    weight = np.ascontiguousarray(_rand(rng, (o, 1, kh, kw), dw).transpose(1, 2, 3, 0))  # IHWO
    bias = rng.integers(-(2**16), 2**16, o).astype("int32")
    zw = 0 if i % 3 else [int(v) for v in _rand(rng, (o,), dw)]
    attrs = dict(
        strides=strides,
        padding=padding,
        dilation=dilation,
        groups=c,
        data_layout=layout,
        kernel_layout="IHWO",
        input_zero_point=int(_rand(rng, (), dx)),
        kernel_zero_point=zw,
    )
    acc = ref.conv2d(data, weight, bias, **attrs)
    const_weight = i % 2 == 0
    inputs = [data] + ([] if const_weight else [weight])

    def conv(x, *rest, attrs=attrs, weight=weight, bias=bias, const_weight=const_weight):
        wv = relax.const(weight) if const_weight else rest[0]
        return op.conv2d(x, wv, relax.const(bias), **attrs)

    if i % 2:
        return Case(inputs, conv, dict(attrs, expected=acc))
    axis = 3 if layout == "NHWC" else 1
    in_scale = [float(s) for s in rng.uniform(1e-5, 1e-3, o)]
    out_zp = int(rng.integers(-20, 20))
    expected = requantize(acc, in_scale, 0, 0.05, out_zp, "int8", "tflite", axis)

    def chain(*params, conv=conv, q=(in_scale, out_zp, axis)):
        s, zp, ax = q
        return op.requantize(conv(*params), s, 0, 0.05, zp, "int8", axis=ax, rounding="tflite")

    return Case(inputs, chain, dict(attrs, expected=expected))


def _module(cases: list[Case]) -> tvm.IRModule:
    """One function per case, in a dataflow block so that FuseOps fuses the requantize."""
    bb = relax.BlockBuilder()
    for i, case in enumerate(cases):
        params = [
            relax.Var(f"x{j}", relax.TensorType(a.shape, str(a.dtype)))
            for j, a in enumerate(case.inputs)
        ]
        with bb.function(f"case_{i}", params):
            with bb.dataflow():
                out = bb.emit_output(case.build(*params))
            bb.emit_func_output(out)
    return bb.get()


def test_scheduled_depthwise_matches_reference():
    rng = np.random.default_rng(5)
    cases = [_case(rng, i) for i in range(56)]
    target = resolve_target("native")
    mod, stages = run_stages(_module(cases), target, trace=True)
    messages = [str(e) for s in stages if s.stage.name == "schedule" for e in s.reports]
    applied = [m for m in messages if "depthwise_conv2d: N" in m]
    assert len(applied) == len(cases), [m for m in messages if m not in applied]
    fused = [m for m in applied if "fused_qnn_depthwise_conv2d" in m and "requantize" in m]
    assert len(fused) == sum(i % 2 == 0 for i in range(len(cases)))
    assert sum("NHWC" in m for m in applied) == sum(c.meta["data_layout"] == "NHWC" for c in cases)
    vm = relax.VirtualMachine(tvm.compile(mod, target, relax_pipeline="default"), tvm.cpu())
    for i, case in enumerate(cases):
        out = vm[f"case_{i}"](*[tvm.runtime.tensor(a) for a in case.inputs]).numpy()
        np.testing.assert_array_equal(out, case.meta["expected"], err_msg=f"case {i}: {case.meta}")

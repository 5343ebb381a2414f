"""The depthwise conv2d schedule (target/schedules/depthwise.py) against the numpy reference.

Random depthwise convolutions (both layouts, channel counts around the SIMD block, strides,
dilations, asymmetric padding, channel multipliers, per-channel weight zero points, runtime or
constant weights, some followed by a per-channel requantize) go through the ``"qnn"``
pipeline, whose schedule stage applies the rule; every output must equal the reference bit for
bit, and the rule must actually have scheduled the kernels (not left them as they were).
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from tvm_qnn_ext import op
from tvm_qnn_ext.quantization import conv as ref
from tvm_qnn_ext.quantization import requantize
from tvm_qnn_ext.target import detect_cpu, dot_product, resolve_target
from tvm_qnn_ext.target.asm import assembly, count_instruction
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


# the portable form on this CPU, and on an AVX2-only target (which never packs taps)
@pytest.mark.parametrize("target", ["native", {"kind": "llvm", "mcpu": "haswell"}], ids=str)
def test_scheduled_depthwise_matches_reference(target):
    rng = np.random.default_rng(5)
    cases = [_case(rng, i) for i in range(56)]
    target = resolve_target(target)
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


# ---- the vpdpbusd form (op/packed_depthwise.py) ------------------------------------------------

# A target per packed variant; cases run only where this CPU has the target's features.
PACKED_TARGETS = {
    "vpdpbusd_x16": {"kind": "llvm", "mcpu": "znver4"},  # AVX512-VNNI zmm
    "vpdpbusd_x8": {"kind": "llvm", "mcpu": "alderlake"},  # AVX-VNNI ymm (no AVX512)
    "pmaddwd_x16": {"kind": "llvm", "mcpu": "skylake-avx512"},  # AVX512BW, no VNNI
}


def _packed_case(rng, i: int, lanes: int) -> Case:
    """Random NHWC depthwise cases the packed form takes: constant weights whose zero point
    folds into int8, channels a multiple of the vector width (or of 8, padded to it); kernels
    of 1 to 9 rows (one to three packed groups), strides, dilations, odd and even output
    heights (two output rows per packed word, one, or every input row packed once),
    asymmetric padding, int8/uint8 activations."""
    c = lanes * int(rng.integers(1, 4))
    if lanes == 16 and i % 6 == 5:  # a multiple of 8 only: AVX512-VL's ymm vpdpbusd
        c = 8 * int(rng.choice([1, 3, 5]))
    if i % 7 == 6:  # padded to whole 16-lane registers where the lanes do not divide them
        c = 8 * int(rng.choice([7, 15]))
    kh, kw = int(rng.choice([1, 2, 3, 3, 5, 7, 9, 9])), int(rng.choice([1, 3, 3, 4]))
    strides = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    dilation = (1, 1) if i % 3 else (int(rng.integers(1, 3)), 2)
    padding = tuple(int(v) for v in rng.integers(0, 3, 4))
    h = int(rng.integers(dilation[0] * (kh - 1) + 1, max(15, dilation[0] * (kh - 1) + 8)))
    w = int(rng.integers(dilation[1] * (kw - 1) + 1, 15))
    dx = ("int8", "uint8")[i % 2]
    if i % 4 == 3:  # uint8 weights around a zero point, folded into int8
        zw = [int(v) for v in rng.integers(100, 156, c)]
        weight = np.array([rng.integers(z - 100, z + 100, (kh, kw)) for z in zw]).astype("uint8")
        weight = np.ascontiguousarray(weight.transpose(1, 2, 0))[None]
    else:
        zw = 0
        weight = _rand(rng, (1, kh, kw, c), "int8")
    data = _rand(rng, (int(rng.integers(1, 3)), h, w, c), dx)
    bias = rng.integers(-(2**16), 2**16, c).astype("int32")
    attrs = dict(
        strides=strides,
        padding=padding,
        dilation=dilation,
        groups=c,
        data_layout="NHWC",
        kernel_layout="IHWO",
        input_zero_point=int(_rand(rng, (), dx)),
        kernel_zero_point=zw,
    )
    acc = ref.conv2d(data, weight, bias, **attrs)
    runtime_bias = i % 5 == 4
    inputs = [data] + ([bias] if runtime_bias else [])

    def conv(x, *rest, attrs=attrs, weight=weight, bias=bias, runtime_bias=runtime_bias):
        b = rest[0] if runtime_bias else relax.const(bias)
        return op.conv2d(x, relax.const(weight), b, **attrs)

    if i % 2:
        return Case(inputs, conv, dict(attrs, expected=acc))
    in_scale = [float(s) for s in rng.uniform(1e-5, 1e-3, c)]
    out_zp = int(rng.integers(-20, 20))
    rq = dict(axis=3, rounding="tflite", out_min=-100, out_max=120, neon_channels=8 * (c // 8))
    expected = requantize(acc, in_scale, 0, 0.05, out_zp, "int8", **rq)

    def chain(*params, conv=conv, q=(in_scale, out_zp)):
        return op.requantize(conv(*params), q[0], 0, 0.05, q[1], "int8", **rq)

    return Case(inputs, chain, dict(attrs, expected=expected))


def _unfoldable(rng, lanes: int) -> Case:
    """uint8 weights 200..255 with zero point 0: ``w - zw`` does not fit int8, so the packed
    form refuses and the portable one computes it."""
    c = 2 * lanes
    data = _rand(rng, (1, 6, 7, c), "uint8")
    weight = rng.integers(200, 256, (1, 3, 3, c)).astype("uint8")
    attrs = dict(padding=(1, 1, 1, 1), groups=c, kernel_layout="IHWO", input_zero_point=3)
    expected = ref.conv2d(data, weight, None, **attrs)
    conv = lambda x: op.conv2d(x, relax.const(weight), **attrs)  # noqa: E731
    return Case([data], conv, {"expected": expected})


@pytest.mark.parametrize("variant", sorted(PACKED_TARGETS))
def test_packed_depthwise_matches_reference(variant):
    target = resolve_target(PACKED_TARGETS[variant])
    kind, lanes = variant.split("_x")
    lanes = int(lanes)
    rng = np.random.default_rng(50 + lanes)
    cases = [_packed_case(rng, i, lanes) for i in range(24)]
    cases.append(_unfoldable(rng, lanes))
    mod, stages = run_stages(_module(cases), target, trace=True)
    messages = [str(e) for s in stages if s.stage.name == "schedule" for e in s.reports]
    packed = [m for m in messages if f"packed taps, {kind} x" in m]
    assert len(packed) == len(cases) - 1, messages
    assert any(f"{kind} x{lanes} lanes" in m for m in packed)
    assert lanes == 8 or any(f"{kind} x8 lanes" in m for m in packed)
    assert any("per 2 output row(s)" in m for m in packed)
    assert any("per 1 output row(s)" in m for m in packed)
    assert any("per input row" in m for m in packed)
    assert lanes == 8 or any("channels padded to" in m for m in packed)
    executable = tvm.compile(mod, target, relax_pipeline="default")
    mnemonic = {"vpdpbusd": "vpdpbusd", "pmaddwd": "vpmaddwd"}[kind]
    assert count_instruction(assembly(executable), mnemonic) > 0
    missing = dot_product.target_features(target) - detect_cpu().features
    if missing:
        pytest.skip(f"compiled; this CPU cannot run {PACKED_TARGETS[variant]} ({sorted(missing)})")
    vm = relax.VirtualMachine(executable, tvm.cpu())
    for i, case in enumerate(cases):
        out = vm[f"case_{i}"](*[tvm.runtime.tensor(a) for a in case.inputs]).numpy()
        np.testing.assert_array_equal(out, case.meta["expected"], err_msg=f"case {i}: {case.meta}")

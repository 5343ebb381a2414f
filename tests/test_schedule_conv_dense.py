"""Tensorized conv2d/dense kernels (packed weights, fused requantize) vs the numpy reference.

Every case goes through the full "qnn" pipeline for a target whose best instruction is the one
under test, so legalization packs the weights for it and the schedule tensorizes with it.
Instructions this CPU cannot run are skipped.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from tvm_qnn_ext import op
from tvm_qnn_ext.op.packed_dot import padded_width
from tvm_qnn_ext.quantization import conv as ref
from tvm_qnn_ext.quantization import requantize
from tvm_qnn_ext.target import detect_cpu, dot_product, resolve_target
from tvm_qnn_ext.target.schedules.dot_tiling import Tile, choose_tile
from tvm_qnn_ext.testing.batch import Case, build_module
from tvm_qnn_ext.transform import run_stages

# A target per x86 instruction: the instruction is the best one that CPU model has.
TARGETS = {
    "avx512_vnni": {"kind": "llvm", "mcpu": "znver4"},
    "avx_vnni": {"kind": "llvm", "mcpu": "alderlake"},
    "avx512bw_pmadd": {"kind": "llvm", "mcpu": "skylake-avx512"},
    "avx2_pmadd": {"kind": "llvm", "mcpu": "haswell"},
    "generic": {"kind": "llvm"},
}


def _runnable(name: str) -> dict:
    tgt = tvm.target.Target(TARGETS[name])
    if dot_product.select(tgt).name != name:
        pytest.skip(f"{TARGETS[name]} does not select {name}")
    missing = dot_product.target_features(tgt) - detect_cpu().features
    if missing or (dot_product.target_arch(tgt) != detect_cpu().arch and name != "generic"):
        pytest.skip(f"this CPU cannot run {name} (lacks {sorted(missing)})")
    return TARGETS[name]


def _rand_int(rng, shape, dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return rng.integers(info.min, int(info.max) + 1, shape).astype(dtype)


def _zp(rng, dtype) -> int:
    info = np.iinfo(dtype)
    return int(rng.integers(info.min, int(info.max) + 1))


def _requantized(rng, acc_expr, acc_ref, channels, axis):
    """Half the cases end in a per-channel requantize to int8, fused into the kernel."""
    if rng.integers(2):
        return acc_expr, acc_ref
    in_scale = list(rng.uniform(1e-5, 1e-3, channels))
    out_scale, out_zp = float(rng.uniform(0.01, 0.2)), _zp(rng, "int8")
    expr = op.requantize(acc_expr, in_scale, 0, out_scale, out_zp, "int8", axis=axis)
    return expr, requantize(acc_ref, in_scale, 0, out_scale, out_zp, "int8", axis=axis)


def _conv_case(rng) -> Case:
    c, o = int(rng.integers(1, 41)), int(rng.integers(1, 50))
    kh, kw = (int(k) for k in rng.choice([1, 1, 3, 3, 5, 2], 2))
    while True:
        h, w = (int(v) for v in rng.integers(1, 17, 2))
        strides = tuple(int(v) for v in rng.integers(1, 3, 2))
        dilation = tuple(int(v) for v in rng.choice([1, 1, 1, 2], 2))
        padding = tuple(int(v) for v in rng.integers(0, 3, 4))
        if (
            h + padding[0] + padding[2] >= dilation[0] * (kh - 1) + 1
            and w + padding[1] + padding[3] >= dilation[1] * (kw - 1) + 1
        ):
            break
    dx, dw = (("int8", "uint8")[i] for i in rng.integers(2, size=2))
    x = _rand_int(rng, (int(rng.integers(1, 3)), h, w, c), dx)
    weight = _rand_int(rng, (o, kh, kw, c), dw)
    bias = rng.integers(-(2**20), 2**20, o).astype("int32") if rng.integers(2) else None
    kzp = 0 if dw == "int8" else ([_zp(rng, dw) for _ in range(o)] if rng.integers(2) else 128)
    attrs = dict(
        strides=strides, padding=padding, dilation=dilation, input_zero_point=_zp(rng, dx),
        kernel_zero_point=kzp,
    )  # fmt: skip
    acc = ref.conv2d(x, weight, bias, **attrs)
    epilogue = int(rng.integers(3))  # none, requantize, requantize + PAD (fused, larger output)
    pads = [0, 0, 0, 1, 0, 1, 0, 0]

    def build(xv):
        b = None if bias is None else relax.const(bias)
        expr = op.conv2d(xv, relax.const(weight), b, **attrs)
        if epilogue:
            expr = op.requantize(expr, scales, 0, 0.05, 3, "int8", axis=3)
        if epilogue == 2:
            expr = relax.op.nn.pad(expr, pads, "constant", 3)
        return expr

    scales = list(rng.uniform(1e-5, 1e-3, o))
    expected = requantize(acc, scales, 0, 0.05, 3, "int8", axis=3) if epilogue else acc
    if epilogue == 2:
        expected = np.pad(expected, np.reshape(pads, (4, 2)), constant_values=3)
    return Case([x], build, dict(attrs, expected=expected, shape=(x.shape, weight.shape)))


def _dense_case(rng) -> Case:
    k, units = int(rng.integers(1, 300)), int(rng.integers(1, 70))
    lead = tuple(int(v) for v in rng.integers(1, 6, rng.integers(1, 3)))
    dx, dw = (("int8", "uint8")[i] for i in rng.integers(2, size=2))
    x = _rand_int(rng, lead + (k,), dx)
    layout = ("NK", "KN")[rng.integers(2)]
    weight = _rand_int(rng, (units, k) if layout == "NK" else (k, units), dw)
    bias = rng.integers(-(2**20), 2**20, units).astype("int32")
    kzp = 0 if dw == "int8" else _zp(rng, dw)
    attrs = dict(input_zero_point=_zp(rng, dx), kernel_zero_point=kzp, weight_layout=layout)
    acc = ref.dense(x, weight, bias, **attrs)
    epilogue = rng.integers(2)
    scales = list(rng.uniform(1e-5, 1e-3, units))
    axis = len(lead)

    def build(xv):
        expr = op.dense(xv, relax.const(weight), relax.const(bias), **attrs)
        if epilogue:
            return op.requantize(expr, scales, 0, 0.05, -7, "int8", axis=axis)
        return expr

    expected = requantize(acc, scales, 0, 0.05, -7, "int8", axis=axis) if epilogue else acc
    return Case([x], build, dict(attrs, expected=expected, shape=(x.shape, weight.shape)))


def _run_pipeline(cases, target) -> tuple[list[np.ndarray], list[str]]:
    """The "qnn" pipeline's stages (keeping their reports), then TVM's default build."""
    tgt = resolve_target(target)
    mod = relax.transform.ConvertToDataflow()(build_module(cases))  # so FuseOps can fuse
    mod, results = run_stages(mod, tgt, trace=True)
    ex = tvm.compile(mod, tgt, relax_pipeline=relax.get_pipeline("default"))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    outs = []
    for i, case in enumerate(cases):
        outs.append(vm[f"case_{i}"](*[tvm.runtime.tensor(a) for a in case.inputs]).numpy())
    return outs, [str(e) for r in results for e in r.reports]


def _check(cases, target):
    outs, reports = _run_pipeline(cases, target)
    for i, (case, out) in enumerate(zip(cases, outs, strict=True)):
        np.testing.assert_array_equal(out, case.meta["expected"], err_msg=f"case {i}: {case.meta}")
    return reports


@pytest.mark.parametrize("name", list(TARGETS))
def test_conv2d_and_dense_match_reference(name):
    target = _runnable(name)
    rng = np.random.default_rng(sorted(TARGETS).index(name))
    cases = [_conv_case(rng) for _ in range(24)] + [_dense_case(rng) for _ in range(10)]
    reports = _check(cases, target)
    scheduled = [r for r in reports if f": {name} tile" in r]
    assert len(scheduled) >= len(cases) // 2, reports


def _matches_litert(path, target, samples: int) -> None:
    from tvm_qnn_ext import compile_model
    from tvm_qnn_ext.oracle import io_specs, litert, random_input, read_tflite

    data = read_tflite(path)
    model, oracle = compile_model(data, target=target), litert(data)
    rng = np.random.default_rng(0)
    inputs, _ = io_specs(data)
    for _ in range(samples):
        xs = [random_input(spec, rng) for spec in inputs]
        for a, b in zip(model(*xs), oracle(xs), strict=True):
            np.testing.assert_array_equal(a, b)


def test_avx2_path_matches_litert_on_a_real_model(models):
    """keyword_spotting_with_transfer_learning fuses a PAD into a conv epilogue."""
    _matches_litert(models["keyword_spotting_with_transfer_learning"], _runnable("avx2_pmadd"), 3)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TARGETS))
def test_every_model_matches_litert_per_instruction_set(models, name):
    target = _runnable(name)
    for path in models.values():
        _matches_litert(path, target, 5)


def _column_case(rng, h: int, c: int, o: int, kh: int) -> Case:
    """A conv on an H x 1 map (keyword spotting's layout), requantized per channel."""
    x = _rand_int(rng, (1, h, 1, c), "int8")
    weight = _rand_int(rng, (o, kh, 1, c), "int8")
    bias = rng.integers(-(2**20), 2**20, o).astype("int32")
    pad = (kh // 2, 0, kh // 2, 0)
    attrs = dict(padding=pad, input_zero_point=_zp(rng, "int8"), kernel_zero_point=0)
    scales = list(rng.uniform(1e-5, 1e-3, o))
    expected = requantize(ref.conv2d(x, weight, bias, **attrs), scales, 0, 0.05, 3, "int8", axis=3)

    def build(xv):
        expr = op.conv2d(xv, relax.const(weight), relax.const(bias), **attrs)
        return op.requantize(expr, scales, 0, 0.05, 3, "int8", axis=3)

    return Case([x], build, dict(attrs, expected=expected, shape=(x.shape, weight.shape)))


def test_column_maps_tile_along_the_height():
    """H x 1 maps are tiled over several rows of the height, and a tile that splits the
    output channels splits them evenly (120 real of 128 padded: all blocks in one tile)."""
    target = _runnable("avx512_vnni")
    rng = np.random.default_rng(7)
    shapes = [(49, 40, 120, 1), (49, 120, 40, 1), (98, 104, 40, 3), (13, 40, 120, 1)]
    reports = _check([_column_case(rng, *s) for s in shapes], target)
    tiles = [r.split(" tile ")[1].split()[0] for r in reports if ": avx512_vnni tile" in r]
    rows = [int(t.split("x")[0]) for t in tiles]
    assert len(tiles) == len(shapes) and max(rows) > 1, reports
    assert "1x8" in tiles, tiles  # 40 -> 120 channels (of 128): a tile spans all 8 blocks


def test_choose_tile_keeps_padded_channels_in_whole_tiles():
    vnni = dot_product.BY_NAME["avx512_vnni"]
    assert choose_tile(49, 8, vnni) == Tile(7, 2)  # all 128 channels real: any split
    assert choose_tile(49, 8, vnni, channels=120) == Tile(1, 8)
    assert choose_tile(49, 8, vnni, channels=96) == Tile(7, 2)  # 96 = 3 x 32
    # no tile spans 1000 of 1008 channels evenly within the budget: the predicate stays
    assert choose_tile(1, 63, vnni, channels=1000).blocks in (1, 3, 7, 9, 21)


@pytest.mark.parametrize(
    "c, kernel, wdtype", [(1, (3, 3), "int8"), (3, (3, 3), "uint8"), (16, (1, 1), "int8")]
)
def test_prime_widths_run_in_padded_tiles(c, kernel, wdtype):
    """23 output columns (no tile of 8-16 divides them) are computed as 24, in whole tiles,
    and the extra column is never stored: flat rows (1 channel), per-tap taps with a weight
    zero point (window sums), and a 1x1 conv."""
    target = _runnable("avx512_vnni")
    rng = np.random.default_rng(c)
    kh, kw = kernel
    x = _rand_int(rng, (1, 9, 23 + kw - 1, c), "int8")
    weight = _rand_int(rng, (16, kh, kw, c), wdtype)
    bias = rng.integers(-(2**20), 2**20, 16).astype("int32")
    kzp = 0 if wdtype == "int8" else [_zp(rng, wdtype) for _ in range(16)]
    attrs = dict(input_zero_point=_zp(rng, "int8"), kernel_zero_point=kzp)
    scales = list(rng.uniform(1e-5, 1e-3, 16))
    acc = ref.conv2d(x, weight, bias, **attrs)
    expected = requantize(acc, scales, 0, 0.05, 3, "int8", axis=3)

    def build(xv):
        expr = op.conv2d(xv, relax.const(weight), relax.const(bias), **attrs)
        return op.requantize(expr, scales, 0, 0.05, 3, "int8", axis=3)

    reports = _check([Case([x], build, dict(attrs, expected=expected))], target)
    (tile,) = [r.split(" tile ")[1].split()[0] for r in reports if ": avx512_vnni tile" in r]
    assert int(tile.split("x")[0]) in (8, 12, 24), reports  # rows dividing 24, not 23 or 1
    assert padded_width(23) == 24 and padded_width(82) == 84 and padded_width(112) == 112
    assert padded_width(16) == 16 and padded_width(17) == 18

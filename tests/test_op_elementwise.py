"""qnn.add / qnn.subtract / qnn.multiply / qnn.concatenate: Relax ops vs the numpy reference
(bit for bit, every rounding mode), and the reference vs LiteRT's builtin kernels."""

from __future__ import annotations

import numpy as np
import pytest
from tvm import relax

from tvm_qnn_ext import op
from tvm_qnn_ext.op import QnnTypeError
from tvm_qnn_ext.quantization import ROUNDING_MODES, dtype_range
from tvm_qnn_ext.quantization import elementwise as ref
from tvm_qnn_ext.testing.batch import Case, run_cases
from tvm_qnn_ext.testing.random import random_data, random_scale, random_zero_point

MODES = sorted(ROUNDING_MODES)
DTYPES = ("int8", "uint8", "int16")
BINARY = ("add", "subtract", "multiply")


def _scale(rng, lo=1e-4, hi=1.0) -> float:
    return random_scale(rng, lo, hi)


_zp, _data = random_zero_point, random_data


def _shapes(rng) -> tuple[tuple[int, ...], tuple[int, ...]]:
    rank = int(rng.integers(1, 6))  # the batch harness cannot pass 0-d arrays
    base = [int(rng.integers(1, 6)) for _ in range(rank)]
    kind = int(rng.integers(0, 4))
    a, b = list(base), list(base)
    if kind == 1:  # rhs broadcasts along some dims
        b = [d if rng.random() < 0.5 else 1 for d in base]
    elif kind == 2:  # rhs has lower rank
        b = b[int(rng.integers(0, rank)) :]
    elif kind == 3:  # both broadcast
        a = [d if rng.random() < 0.5 else 1 for d in base]
        b = [d if rng.random() < 0.5 else 1 for d in base]
    if rng.random() < 0.5:
        a, b = b, a
    return tuple(a), tuple(b)


def _bounds(rng, dtype: str) -> tuple[int | None, int | None]:
    lo, hi = dtype_range(dtype)
    if rng.random() < 0.5:
        return None, None
    a, b = sorted(int(v) for v in rng.integers(lo, hi + 1, size=2))
    return (a if rng.random() < 0.7 else None), (b if rng.random() < 0.7 else None)


def _binary_params(rng, name: str, dtype: str, out_dtype: str, rounding: str) -> dict:
    s1, s2 = _scale(rng), _scale(rng)
    if name == "multiply":
        so = float(np.float32(s1 * s2 * np.exp(rng.uniform(-3, 5))))
    else:
        so = float(np.float32(max(s1, s2) * np.exp(rng.uniform(-3, 3))))
    out_min, out_max = _bounds(rng, out_dtype)
    return dict(
        lhs_scale=s1,
        lhs_zero_point=_zp(rng, dtype),
        rhs_scale=s2,
        rhs_zero_point=_zp(rng, dtype),
        output_scale=so,
        output_zero_point=_zp(rng, out_dtype),
        out_dtype=out_dtype,
        rounding=rounding,
        out_min=out_min,
        out_max=out_max,
    )


@pytest.mark.parametrize("name", BINARY)
def test_binary_matches_reference(name):
    rng = np.random.default_rng(BINARY.index(name))
    cases, expected = [], []
    for i in range(200):
        rounding = MODES[i % len(MODES)]
        dtype = DTYPES[int(rng.integers(0, 3))]
        out_dtype = dtype if rng.random() < 0.8 else DTYPES[int(rng.integers(0, 3))]
        sa, sb = _shapes(rng)
        lhs, rhs = _data(rng, sa, dtype), _data(rng, sb, dtype)
        kw = _binary_params(rng, name, dtype, out_dtype, rounding)
        cases.append(Case([lhs, rhs], lambda a, b, kw=kw: getattr(op, name)(a, b, **kw), kw))
        expected.append(getattr(ref, name)(lhs, rhs, **kw))
    for case, want, got in zip(cases, expected, run_cases(cases), strict=True):
        np.testing.assert_array_equal(got, want, err_msg=str(case.meta))
        assert got.dtype == want.dtype


def test_concatenate_matches_reference():
    rng = np.random.default_rng(7)
    cases, expected = [], []
    for i in range(200):
        rounding = MODES[i % len(MODES)]
        dtype = DTYPES[int(rng.integers(0, 3))]
        out_dtype = dtype if rng.random() < 0.8 else DTYPES[int(rng.integers(0, 3))]
        rank = int(rng.integers(1, 5))
        base = [int(rng.integers(1, 5)) for _ in range(rank)]
        axis = int(rng.integers(-rank, rank))
        xs = []
        for _ in range(int(rng.integers(1, 5))):
            shape = list(base)
            shape[axis] = int(rng.integers(1, 4))
            xs.append(_data(rng, shape, dtype))
        so, zo = _scale(rng), _zp(rng, out_dtype)
        same = rng.random() < 0.3
        kw = dict(
            axis=axis,
            input_scales=[so if same else _scale(rng) for _ in xs],
            input_zero_points=[zo if same and dtype == out_dtype else _zp(rng, dtype) for _ in xs],
            output_scale=so,
            output_zero_point=zo,
            out_dtype=out_dtype,
            rounding=rounding,
        )
        cases.append(Case(xs, lambda *a, kw=kw: op.concatenate(list(a), **kw), kw))
        expected.append(ref.concatenate(xs, **kw))
    for case, want, got in zip(cases, expected, run_cases(cases), strict=True):
        np.testing.assert_array_equal(got, want, err_msg=str(case.meta))


def test_reference_hand_values():
    """Small cases worked out by hand, independent of the fixed-point helpers."""
    q = dict(lhs_scale=0.5, lhs_zero_point=0, rhs_scale=0.5, rhs_zero_point=0)
    x, y = np.array([2, -3, 100], "int8"), np.array([4, 5, 100], "int8")
    out = dict(output_scale=0.5, output_zero_point=1)
    for mode in MODES:
        np.testing.assert_array_equal(ref.add(x, y, **q, **out, rounding=mode), [7, 3, 127])
        np.testing.assert_array_equal(ref.subtract(x, y, **q, **out, rounding=mode), [-1, -7, 1])
        # 0.5 * 0.5 / 0.5 = 0.5: 8 * 0.5 = 4, -15 * 0.5 = -7.5, 10000 * 0.5 saturates
        got = ref.multiply(x, y, **q, **out, rounding=mode, out_max=100)
        # -7.5: TFLite's SaturatingRoundingDoublingHighMul and single rounding round half up
        tie = -8 if mode in ("tonearest", "float") else -7
        np.testing.assert_array_equal(got, [5, tie + 1, 100])


def _emit(build, *types):
    bb = relax.BlockBuilder()
    params = [relax.Var(f"x{i}", t) for i, t in enumerate(types)]
    with bb.function("main", params):
        out = bb.emit(build(*params))
        bb.emit_func_output(out)


def _t(shape, dtype="int8"):
    return relax.TensorType(shape, dtype)


Q = dict(
    lhs_scale=0.1, lhs_zero_point=0, rhs_scale=0.1, rhs_zero_point=0, output_scale=0.2,
    output_zero_point=0,
)  # fmt: skip


@pytest.mark.parametrize(
    "types, kw, match",
    [
        ((_t((2, 3)), _t((2, 3), "uint8")), {}, "lhs is int8 but rhs is uint8"),
        ((_t((2, 3)), _t((4, 3))), {}, "do not broadcast"),
        ((_t((2, 3), "int32"), _t((2, 3), "int32")), {}, "dtype int32"),
        ((_t((2, 3)), _t((2, 3))), dict(out_dtype="float32"), "out_dtype"),
        ((_t((2, 3)), _t((2, 3))), dict(out_min=10, out_max=5), "empty output range"),
        ((_t((2, 3)), _t((2, 3))), dict(lhs_scale=[0.1, 0.2]), "lhs_scale must be per-tensor"),
        ((_t((2, 3)), _t((2, 3))), dict(output_zero_point=300), "outside the int8 range"),
    ],
)
def test_binary_type_errors(types, kw, match):
    args = {**Q, **kw}
    with pytest.raises((QnnTypeError, ValueError), match=match):
        _emit(lambda a, b: op.add(a, b, **args), *types)


def test_unknown_rounding_mode():
    with pytest.raises(ValueError, match="unknown rounding mode"):
        op.multiply(relax.Var("a", _t((2,))), relax.Var("b", _t((2,))), **Q, rounding="even")


@pytest.mark.parametrize(
    "types, kw, match",
    [
        ((_t((2, 3)), _t((2, 4))), dict(axis=2), "axis 2 out of range"),
        ((_t((2, 3)), _t((3, 4))), dict(axis=1), "differs from input 0"),
        ((_t((2, 3)), _t((2, 3, 1))), dict(axis=0), "rank"),
        ((_t((2, 3)), _t((2, 3))), dict(axis=0, input_scales=[0.1]), "2 tensors but 1"),
        ((_t((2, 3)), _t((2, 3), "float32")), dict(axis=0), "input 1 has dtype float32"),
    ],
)
def test_concatenate_type_errors(types, kw, match):
    args = dict(input_scales=[0.1, 0.1], input_zero_points=[0, 0], output_scale=0.1)
    args.update(output_zero_point=0, **kw)
    with pytest.raises((QnnTypeError, ValueError), match=match):
        _emit(lambda a, b: op.concatenate([a, b], **args), *types)


# ---------------------------------------------------------------------------------------------
# The reference against LiteRT's builtin kernels


def _tflite_act(act: str, scale: float, zp: int, dtype: str) -> tuple[int | None, int | None]:
    """CalculateActivationRangeQuantized: ``zp + TfLiteRound(f / scale)`` in float32."""
    lo, hi = dtype_range(dtype)

    def q(f):
        v = np.float32(f) / np.float32(scale)
        return zp + int(np.sign(v) * np.floor(np.abs(v) + 0.5))

    bounds = {"NONE": (None, None), "RELU": (q(0.0), None), "RELU6": (q(0.0), q(6.0))}
    bounds["RELU_N1_TO_1"] = (q(-1.0), q(1.0))
    a, b = bounds[act]
    return (None if a is None else max(lo, a)), (None if b is None else min(hi, b))


def _litert_binary_params(rng, name: str, dtype: str) -> dict:
    s1, s2 = _scale(rng, 1e-3), _scale(rng, 1e-3)
    z1, z2, zo = _zp(rng, dtype), _zp(rng, dtype), _zp(rng, dtype)
    reach = 32000 - abs(zo)  # LiteRT's SIMD loops wrap results outside int16 (see op doc)
    if name == "multiply":
        top = max(abs(z1 - v) for v in dtype_range(dtype)) * max(
            abs(z2 - v) for v in dtype_range(dtype)
        )
        floor = s1 * s2 * top / reach
        so = float(np.float32(max(s1 * s2 * np.exp(rng.uniform(-1, 3)), floor)))
    else:
        floor = 256 * (s1 + s2) / reach
        so = float(np.float32(max(max(s1, s2) * np.exp(rng.uniform(-2, 3)), floor)))
    return dict(
        lhs_scale=s1,
        lhs_zero_point=z1,
        rhs_scale=s2,
        rhs_zero_point=z2,
        output_scale=so,
        output_zero_point=zo,
    )


TFLITE_BINARY = {"add": "ADD", "subtract": "SUB", "multiply": "MUL"}


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("name", BINARY)
def test_binary_reference_matches_litert(name, dtype):
    pytest.importorskip("ai_edge_litert")
    from tvm_qnn_ext.testing.litert import run_litert
    from tvm_qnn_ext.testing.tflite_builder import single_op_model

    rng = np.random.default_rng(100 + BINARY.index(name) + 3 * (dtype == "uint8"))
    for _ in range(40):
        sa, sb = _shapes(rng)
        if rng.random() < 0.25:  # long rows, so LiteRT's vector loops run too
            sa, sb = (2, 40), (2, 40)
        kw = _litert_binary_params(rng, name, dtype)
        act = ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"][int(rng.integers(0, 4))]
        out_min, out_max = _tflite_act(act, kw["output_scale"], kw["output_zero_point"], dtype)
        lhs, rhs = _data(rng, sa, dtype), _data(rng, sb, dtype)
        want = getattr(ref, name)(lhs, rhs, **kw, out_dtype=dtype, out_min=out_min, out_max=out_max)
        model = single_op_model(
            TFLITE_BINARY[name],
            [
                dict(shape=sa, dtype=dtype, scale=kw["lhs_scale"], zero_point=kw["lhs_zero_point"]),
                dict(shape=sb, dtype=dtype, scale=kw["rhs_scale"], zero_point=kw["rhs_zero_point"]),
            ],
            [
                dict(
                    shape=want.shape,
                    dtype=dtype,
                    scale=kw["output_scale"],
                    zero_point=kw["output_zero_point"],
                )
            ],
            fused_activation=act,
        )
        got = run_litert(model, [lhs, rhs])[0]
        np.testing.assert_array_equal(want, got, err_msg=f"{sa} {sb} {act} {kw}")


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_concatenate_reference_matches_litert(dtype):
    pytest.importorskip("ai_edge_litert")
    from tvm_qnn_ext.testing.litert import run_litert
    from tvm_qnn_ext.testing.tflite_builder import single_op_model

    rng = np.random.default_rng(200 + (dtype == "uint8"))
    for _ in range(60):
        rank = int(rng.integers(1, 5))
        base = [int(rng.integers(1, 6)) for _ in range(rank)]
        axis = int(rng.integers(-rank, rank))
        shapes = []
        for _ in range(int(rng.integers(1, 5))):
            shape = list(base)
            shape[axis] = int(rng.integers(1, 5))
            shapes.append(tuple(shape))
        so, zo = _scale(rng, 1e-3), _zp(rng, dtype)
        # int8 CONCATENATION requires every input in the output's quantization
        qs = [
            (_scale(rng, 1e-3), _zp(rng, dtype)) if dtype == "uint8" and rng.random() < 0.7
            else (so, zo)
            for _ in shapes
        ]  # fmt: skip
        xs = [_data(rng, s, dtype) for s in shapes]
        want = ref.concatenate(
            xs,
            axis=axis,
            input_scales=[s for s, _ in qs],
            input_zero_points=[z for _, z in qs],
            output_scale=so,
            output_zero_point=zo,
            out_dtype=dtype,
        )
        model = single_op_model(
            "CONCATENATION",
            [
                dict(shape=s, dtype=dtype, scale=q[0], zero_point=q[1])
                for s, q in zip(shapes, qs, strict=True)
            ],
            [dict(shape=want.shape, dtype=dtype, scale=so, zero_point=zo)],
            axis=axis,
        )
        np.testing.assert_array_equal(want, run_litert(model, xs)[0], err_msg=f"{shapes} {qs}")


@pytest.mark.parametrize("dtype,zps", [("int8", (-3, 2, 1)), ("uint8", (125, 130, 128))])
@pytest.mark.parametrize(
    "shapes",
    [
        ((1, 40), (1, 40)),  # elementwise, SIMD body and tail
        ((1, 23), (1, 23)),
        ((1, 3, 12), (1, 1, 12)),  # elementwise rows of 12
        ((2, 3, 23), (3, 23)),
        ((1, 5, 7, 20), ()),  # scalar broadcast, rows of 140
        ((1,), (3, 37)),
        ((9, 1), (1, 37)),  # outer product: scalar broadcast rows of 37
        ((1, 5, 7, 1), (1, 5, 7, 20)),
        ((2, 1, 3, 1, 9), (1, 4, 1, 6, 1)),  # no fivefold loop: reference kernel
    ],
)
def test_add_litert_simd_matches_litert(shapes, dtype, zps):
    """Tie-heavy scales (0.05 + 0.07 -> 0.1): LiteRT's ADD SIMD loops rescale the inputs
    differently from their scalar tails; plain 'tflite' misses some ties, litert_simd matches
    all, in the reference and compiled."""
    from tvm_qnn_ext.frontend import from_tflite
    from tvm_qnn_ext.testing.fuzz_tflite import compile_batch, invoke_litert, run_vm
    from tvm_qnn_ext.testing.litert import LiteRTRunner
    from tvm_qnn_ext.testing.tflite_builder import single_op_model

    q = dict(
        lhs_scale=0.05,
        lhs_zero_point=zps[0],
        rhs_scale=0.07,
        rhs_zero_point=zps[1],
        output_scale=0.1,
        output_zero_point=zps[2],
        out_dtype=dtype,
    )
    model = single_op_model(
        "ADD",
        [
            dict(shape=s, dtype=dtype, scale=[sc], zero_point=[z])
            for s, sc, z in zip(shapes, (0.05, 0.07), zps[:2], strict=True)
        ],
        [dict(shape=np.broadcast_shapes(*shapes), dtype=dtype, scale=[0.1], zero_point=[zps[2]])],
    )
    litert, vm = LiteRTRunner(model), compile_batch({"main": from_tflite(model)})
    lo, hi = dtype_range(dtype)
    rng = np.random.default_rng(7)
    plain_misses = 0
    for _ in range(40):
        a, b = (np.array(rng.integers(lo, hi + 1, s), dtype=dtype) for s in shapes)
        want = invoke_litert(litert, [a, b])[0]
        np.testing.assert_array_equal(ref.add(a, b, litert_simd=True, **q), want)
        np.testing.assert_array_equal(run_vm(vm, "main", [a, b])[0], want)
        plain_misses += int((ref.add(a, b, **q) != want).sum())
    if ref.litert_add_loop(*shapes, dtype).simd:
        assert plain_misses > 0, "the case must tell the two roundings apart"

"""RESIZE_NEAREST_NEIGHBOR and int8 RESIZE_BILINEAR against LiteRT's builtin kernels, bit for bit.

Random NHWC shapes (upscale, downscale, exact 2x, mixed), all four option combinations,
int8 and uint8; each model is compiled with ``compile_model`` and run on random full-range
inputs.
"""

from __future__ import annotations

import numpy as np
import pytest

from tvm_qnn_ext import compile_model
from tvm_qnn_ext.frontend.tflite import from_tflite
from tvm_qnn_ext.frontend.tflite.reader import TFLiteImportError
from tvm_qnn_ext.quantization import dtype_range
from tvm_qnn_ext.testing.litert import LiteRTRunner
from tvm_qnn_ext.testing.tflite_builder import single_op_model

OPTIONS = [(False, False), (True, False), (False, True), (True, True)]


def _case(i: int):
    rng = np.random.default_rng(1000 + i)
    dtype = ("int8", "uint8")[i % 2]
    align_corners, half_pixel = OPTIONS[(i // 2) % 4]
    kind = (i // 8) % 5
    n, c = int(rng.integers(1, 3)), int(rng.integers(1, 5))
    h, w = (int(d) for d in rng.integers(1, 12, size=2))
    if kind == 0:  # 2x upscale
        oh, ow = 2 * h, 2 * w
    elif kind == 1:  # upscale by a non-integer factor
        oh, ow = h + int(rng.integers(1, 20)), w + int(rng.integers(1, 20))
    elif kind == 2:  # downscale
        h, w = h + 8, w + 8
        oh, ow = int(rng.integers(1, h)), int(rng.integers(1, w))
    elif kind == 3:  # mixed
        h = h + 5
        oh, ow = int(rng.integers(1, h)), w + int(rng.integers(1, 15))
    else:  # anything, including size 1 and identity
        oh, ow = (int(d) for d in rng.integers(1, 25, size=2))
    return dict(
        dtype=dtype,
        in_shape=(n, h, w, c),
        size=(oh, ow),
        align_corners=align_corners,
        half_pixel_centers=half_pixel,
        scale=float(rng.uniform(0.005, 0.2)),
        zero_point=int(rng.integers(*dtype_range(dtype))),
        seed=i,
    )


CASES = [_case(i) for i in range(48)]


def _model(op, case, out_scale=None, out_zp=None):
    n, _, _, c = case["in_shape"]
    oh, ow = case["size"]
    q = dict(scale=case["scale"], zero_point=case["zero_point"])
    qo = dict(
        scale=case["scale"] if out_scale is None else out_scale,
        zero_point=case["zero_point"] if out_zp is None else out_zp,
    )
    return single_op_model(
        op,
        [
            dict(shape=case["in_shape"], dtype=case["dtype"], **q),
            dict(shape=(2,), dtype="int32", data=np.array([oh, ow], np.int32)),
        ],
        [dict(shape=(n, oh, ow, c), dtype=case["dtype"], **qo)],
        align_corners=case["align_corners"],
        half_pixel_centers=case["half_pixel_centers"],
    )


def _compare(model: bytes, case, samples: int = 3):
    compiled = compile_model(model)
    oracle = LiteRTRunner(model)
    rng = np.random.default_rng(case["seed"])
    lo, hi = dtype_range(case["dtype"])
    for _ in range(samples):
        x = rng.integers(lo, hi + 1, size=case["in_shape"]).astype(case["dtype"])
        (ours,) = compiled(x)
        (ref,) = oracle([x])
        assert ours.dtype == ref.dtype and ours.shape == ref.shape
        np.testing.assert_array_equal(ours, ref, err_msg=str(case))


def _id(case):
    ac, hp = case["align_corners"], case["half_pixel_centers"]
    return (
        f"{case['dtype']}-{'x'.join(map(str, case['in_shape']))}"
        f"-to{case['size'][0]}x{case['size'][1]}-ac{int(ac)}-hp{int(hp)}"
    )


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_resize_nearest_neighbor_matches_litert(case):
    _compare(_model("RESIZE_NEAREST_NEIGHBOR", case), case)


def test_resize_nearest_neighbor_index_formula_matches_litert_exhaustively():
    """The import-time index rule against LiteRT on one-channel ramps: every in/out size pair
    up to 20 for every option combination (the ramp's value is its source index)."""
    from tvm_qnn_ext.frontend.tflite.convert_resize import nearest_indices

    for ac, hp in OPTIONS:
        for in_size in range(1, 21):
            ramp = np.arange(in_size, dtype=np.uint8).reshape(1, in_size, 1, 1)
            for out_size in range(1, 21):
                case = dict(
                    dtype="uint8",
                    in_shape=(1, in_size, 1, 1),
                    size=(out_size, 1),
                    align_corners=ac,
                    half_pixel_centers=hp,
                    scale=0.1,
                    zero_point=0,
                )
                (ref,) = LiteRTRunner(_model("RESIZE_NEAREST_NEIGHBOR", case))([ramp])
                ours = nearest_indices(in_size, out_size, ac, hp)
                np.testing.assert_array_equal(ours, ref.reshape(-1), err_msg=str(case))


def test_resize_requantizing_rejected():
    case = dict(CASES[0])
    model = _model("RESIZE_NEAREST_NEIGHBOR", case, out_scale=case["scale"] * 2)
    with pytest.raises(TFLiteImportError, match="quantization differ"):
        from_tflite(model)


# ---- RESIZE_BILINEAR ------------------------------------------------------------------------

BILINEAR_OPTIONS = [(False, False), (True, False), (False, True)]
BILINEAR_CASES = [
    dict(_case(i), dtype="int8", zero_point=int(np.random.default_rng(i).integers(-128, 128)))
    for i in range(60)
]
for _i, _c in enumerate(BILINEAR_CASES):
    _c["align_corners"], _c["half_pixel_centers"] = BILINEAR_OPTIONS[_i % 3]


def _random_input(case, rng):
    lo, hi = dtype_range(case["dtype"])
    return rng.integers(lo, hi + 1, size=case["in_shape"]).astype(case["dtype"])


def test_resize_bilinear_reference_matches_litert():
    """The numpy reference (ResizeBilinearInteger) on 300 random int8 resizes."""
    from tvm_qnn_ext.quantization.resize import resize_bilinear

    rng = np.random.default_rng(5)
    for i in range(300):
        case = dict(BILINEAR_CASES[i % 60], seed=i)
        n, h, w, c = case["in_shape"]
        case["in_shape"] = (n, int(rng.integers(1, 14)), int(rng.integers(1, 14)), c)
        case["size"] = (int(rng.integers(1, 30)), int(rng.integers(1, 30)))
        x = _random_input(case, rng)
        (want,) = LiteRTRunner(_model("RESIZE_BILINEAR", case))([x])
        got = resize_bilinear(x, case["size"], case["align_corners"], case["half_pixel_centers"])
        np.testing.assert_array_equal(got, want, err_msg=str(case))


def _compare_bilinear(cases):
    from tvm_qnn_ext.testing.fuzz_tflite import compile_batch, run_vm

    models = {f"case_{i}": _model("RESIZE_BILINEAR", c) for i, c in enumerate(cases)}
    vm = compile_batch({name: from_tflite(m) for name, m in models.items()})
    for i, case in enumerate(cases):
        oracle = LiteRTRunner(models[f"case_{i}"])
        rng = np.random.default_rng(case["seed"])
        for _ in range(3):
            x = _random_input(case, rng)
            (ours,) = run_vm(vm, f"case_{i}", [x])
            (want,) = oracle([x])
            assert ours.dtype == want.dtype
            np.testing.assert_array_equal(ours, want, err_msg=str(case))


def test_resize_bilinear_matches_litert():
    """12 random int8 models (2x, up, down, mixed; each option), compiled as one module."""
    _compare_bilinear(BILINEAR_CASES[::5])


@pytest.mark.slow
def test_resize_bilinear_matches_litert_many():
    _compare_bilinear(BILINEAR_CASES)


def test_resize_bilinear_uint8_rejected():
    case = dict(CASES[1], align_corners=False, half_pixel_centers=False)
    assert case["dtype"] == "uint8"
    with pytest.raises(TFLiteImportError, match="RESIZE_BILINEAR: uint8 input"):
        from_tflite(_model("RESIZE_BILINEAR", case))


def test_resize_bilinear_uint8_float32_reference_matches_litert():
    """What an integer-only uint8 RESIZE_BILINEAR would have to reproduce: LiteRT's float32
    arithmetic, checked operation by operation on 100 random models."""
    from tvm_qnn_ext.quantization.resize import resize_bilinear_uint8_float32

    rng = np.random.default_rng(17)
    for i in range(100):
        case = dict(CASES[1], seed=i)
        case["align_corners"], case["half_pixel_centers"] = BILINEAR_OPTIONS[i % 3]
        case["in_shape"] = (1, int(rng.integers(1, 9)), int(rng.integers(1, 9)), 3)
        case["size"] = (int(rng.integers(1, 20)), int(rng.integers(1, 20)))
        x = _random_input(case, rng)
        (want,) = LiteRTRunner(_model("RESIZE_BILINEAR", case))([x])
        got = resize_bilinear_uint8_float32(
            x, case["size"], case["align_corners"], case["half_pixel_centers"]
        )
        np.testing.assert_array_equal(got, want, err_msg=str(case))

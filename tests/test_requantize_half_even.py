"""requantize_half_even: the tie test, and the integer rounding against numpy's rint."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from tvm import relax

from tvm_qnn_ext.transform.requantize_half_even import half_even_requantize, ties_possible


def _brute_force_ties(real: float, bound: int) -> bool:
    x = np.arange(-bound, bound + 1, dtype=np.float64)
    frac = np.abs(x * real) % 1.0  # exact: real has at most 24 significant bits here
    return bool(np.any(frac == 0.5))


@pytest.mark.parametrize("seed", range(4))
def test_ties_possible_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    for _ in range(150):
        # float32 multipliers with few significant bits, where ties can actually happen
        bits = int(rng.integers(1, 24))
        real = float(np.float32(rng.integers(1, 2**bits) * 2.0 ** -int(rng.integers(bits, 30))))
        bound = int(rng.integers(1, 5000))
        assert ties_possible(real, bound) == _brute_force_ties(real, bound), (real, bound)
    # A generic multiplier (24-bit significand) never ties on accumulator-sized inputs.
    assert not ties_possible(np.float32(0.0123456), 2**20)
    assert ties_possible(0.25, 2) and not ties_possible(0.25, 1) and not ties_possible(1.0, 2**30)


def _build(real, shape, axis, zp_in, zp_out, lo, hi, zero_point_first):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "int32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = half_even_requantize(
                bb.emit,
                x,
                real,
                in_zero_point=zp_in,
                out_zero_point=zp_out,
                axis=axis,
                ndim=len(shape),
                out_min=lo,
                out_max=hi,
                out_dtype="int8",
                bound=2**20,
                zero_point_first=zero_point_first,
            )
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return relax.transform.LegalizeOps()(bb.get())


@pytest.mark.parametrize("zero_point_first", [False, True])
def test_rounds_half_to_even_like_rint(zero_point_first):
    rng = np.random.default_rng(1)
    channels = 6
    real = np.array([0.25, 0.5, 0.375, 1 / 1024, 3.0, np.float32(0.0123456)], np.float64)
    x = rng.integers(-2000, 2000, (64, channels)).astype(np.int32)
    x[:, :3] = rng.integers(-40, 40, (64, 3))  # small values: many exact ties
    zp_in, zp_out, lo, hi = 7, -3, -100, 120
    mod = _build(real, x.shape, 1, zp_in, zp_out, lo, hi, zero_point_first)
    for _, f in mod.functions.items():
        if isinstance(f, tvm.tirx.PrimFunc):
            assert not re.findall(r".*float.*", f.script()), "float in the rounding"
    vm = relax.VirtualMachine(tvm.compile(mod, "llvm"), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    v = (x.astype(np.float64) - zp_in) * real
    want = np.rint(v + zp_out) if zero_point_first else np.rint(v) + zp_out
    want = np.clip(want, lo, hi).astype(np.int8)
    ties = np.abs(v % 1.0) == 0.5
    assert ties.sum() > 20  # the case the rounding is about
    np.testing.assert_array_equal(got, want)

"""The ``qnn_high_mul`` TIR intrinsic against gemmlowp's SaturatingRoundingDoublingHighMul at
every vector width (lane pairs for even widths, the plain int64 form otherwise)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import s_tir, te

from tvm_qnn_ext.op.high_mul_intrin import high_mul_call, high_mul_rdbpot_call
from tvm_qnn_ext.quantization.fixed_point import _rounding_divide_by_pot
from tvm_qnn_ext.quantization.fixed_point import _srdhm as gemmlowp_high_mul
from tvm_qnn_ext.target import detect_cpu, resolve_target
from tvm_qnn_ext.target.asm import assembly, count_instruction

N = 1024


def _build(lanes: int, target, shift: int = 31):
    x = te.placeholder((N,), "int32", name="x")
    m = te.placeholder((N,), "int32", name="m")
    y = te.compute((N,), lambda i: high_mul_call(x[i], m[i], shift), name="y")
    sch = s_tir.Schedule(te.create_prim_func([x, m, y]))
    if lanes > 1:
        (loop,) = sch.get_loops(sch.get_sblock("y"))
        sch.vectorize(sch.split(loop, [None, lanes])[1])
    return tvm.compile(sch.mod, target)


def _operands(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(-(2**31), 2**31, N, dtype=np.int64).astype(np.int32)
    m = rng.integers(0, 2**31, N, dtype=np.int64).astype(np.int32)
    x[:6] = [-(2**31), -(2**31), 2**31 - 1, -1, 1, 0]
    m[:6] = [2**31 - 1, 1 << 30, 2**31 - 1, 2**31 - 1, 1 << 30, 2**31 - 1]
    # ties: x * m + 2^30 an exact multiple of 2^31 on both signs
    x[6:10], m[6:10] = [1, -1, 3, -3], [1 << 30, 1 << 30, 1 << 30, 1 << 30]
    return x, m


@pytest.mark.parametrize("lanes", [16, 8, 4, 3, 1])
def test_high_mul_matches_numpy_at_every_width(lanes):
    lib = _build(lanes, resolve_target("native"))
    x, m = _operands(lanes)
    out = tvm.runtime.tensor(np.zeros(N, np.int32))
    lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(m), out)
    expected = gemmlowp_high_mul(x.astype(np.int64), m.astype(np.int64))  # its own nudge form
    np.testing.assert_array_equal(out.numpy(), expected)


@pytest.mark.parametrize("lanes", [16, 1])
@pytest.mark.parametrize("shift", [32, 33, 45, 62])
def test_wider_shifts_match_numpy(lanes, shift):
    """The single-rounding form (LiteRT's int8 ADD input rescale): (x m + 2^(t-1)) >> t."""
    lib = _build(lanes, resolve_target("native"), shift)
    x, m = _operands(shift)
    out = tvm.runtime.tensor(np.zeros(N, np.int32))
    lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(m), out)
    prod = x.astype(np.int64) * m.astype(np.int64)
    expected = (prod + (np.int64(1) << (shift - 1))) >> shift  # numpy's >> floors
    np.testing.assert_array_equal(out.numpy(), expected.astype(np.int32))


def test_shift_outside_the_int32_result_range_is_refused():
    with pytest.raises(ValueError, match="outside"):
        high_mul_call(tvm.tirx.const(1, "int32"), tvm.tirx.const(1, "int32"), 30)


@pytest.mark.skipif(not detect_cpu().has("avx512bw"), reason="needs AVX512 (zmm) on this CPU")
def test_lane_pairs_leave_no_widening_shuffles():
    asm = assembly(_build(16, resolve_target("native")))
    assert count_instruction(asm, "vpmuldq") > 0
    for shuffle in ("vpmovsxdq", "vpmovqd", "vinserti64x4"):
        assert count_instruction(asm, shuffle) == 0, shuffle


def _build_rdbpot(lanes: int, target):
    x, m, e, up = (te.placeholder((N,), "int32", name=n) for n in ("x", "m", "e", "up"))
    y = te.compute((N,), lambda i: high_mul_rdbpot_call(x[i], m[i], e[i], up[i] != 0), name="y")
    sch = s_tir.Schedule(te.create_prim_func([x, m, e, up, y]))
    if lanes > 1:
        (loop,) = sch.get_loops(sch.get_sblock("y"))
        sch.vectorize(sch.split(loop, [None, lanes])[1])
    return tvm.compile(sch.mod, target)


@pytest.mark.parametrize("lanes", [16, 8, 4, 3, 1])
def test_high_mul_rdbpot_matches_gemmlowp_at_every_width(lanes):
    """Both roundings in one int64 step equal gemmlowp's RoundingDivideByPOT of its
    SaturatingRoundingDoublingHighMul (or, in ties-up lanes, NEON's rounding shift), for every
    exponent 0..31 (per lane, as per-channel shifts are), extreme operands and the ties of
    both roundings."""
    lib = _build_rdbpot(lanes, resolve_target("native"))
    x, m = _operands(100 + lanes)
    rng = np.random.default_rng(lanes)
    e = rng.integers(0, 32, N).astype(np.int32)
    e[:32] = np.arange(32)
    # ties of the second rounding: h = SRDHM(x, 2^30) = x / 2 (x even) at +-(k + 1/2) 2^e
    x[32:96:2] = (np.arange(32) * 0 + 3) << np.arange(32).clip(max=28)
    x[33:96:2] = -x[32:96:2]
    m[32:96], e[32:96] = 1 << 30, np.repeat(np.arange(32), 2).clip(1, 29)
    up = (rng.random(N) < 0.5).astype(np.int32)  # LiteRT's NEON ties-up lanes, per lane
    out = tvm.runtime.tensor(np.zeros(N, np.int32))
    lib["main"](*[tvm.runtime.tensor(a) for a in (x, m, e, up)], out)
    high = gemmlowp_high_mul(x.astype(np.int64), m.astype(np.int64))
    e64 = e.astype(np.int64)
    away = _rounding_divide_by_pot(high, e64)
    ties_up = (high + ((np.int64(1) << e64) >> 1)) >> e64  # vrshl: round half toward +inf
    np.testing.assert_array_equal(out.numpy(), np.where(up != 0, ties_up, away))


@pytest.mark.parametrize("mcpu, fused", [("znver4", True), ("haswell", False)])
def test_tflite_requantize_uses_the_one_step_rounding_on_avx512(mcpu, fused):
    """AVX-512 has the 64-bit variable arithmetic shifts the one-step rounding needs; AVX2
    keeps the int32 rounding shift (both exact: the model tests run each)."""
    from tvm_qnn_ext.op import fixed_point_te as fp

    x = tvm.tirx.Var("x", "int32")
    with tvm.target.Target({"kind": "llvm", "mcpu": mcpu}):
        expr = fp.multiply_by_quantized_multiplier_i32(x, 1 << 30, -3, "tflite")
    assert ("qnn_high_mul_rdbpot" in str(expr)) == fused, expr

"""CastMultiplyRoundToRequantize: seed 003's float requantize chains become qnn.requantize, and
the compiled rewrite equals the compiled float chain bit for bit (or the pass refuses and says
why).  Oracles: TVM's own compilation of the float32 chain, and its numpy emulation."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from tvm import relax

from tvm_qnn_ext.compile import compile_model
from tvm_qnn_ext.transform import collect_reports
from tvm_qnn_ext.transform import float32_emulation as fe
from tvm_qnn_ext.transform.cast_multiply_round import CastMultiplyRoundToRequantize, find_chains
from tvm_qnn_ext.transform.requantize_proof import build_steps, evaluate

TARGET = tvm.target.Target({"kind": "llvm"})
I32 = np.iinfo(np.int32)


def f32(v) -> relax.Constant:
    return relax.const(np.asarray(v, dtype=np.float32))


def i32(v) -> relax.Constant:
    return relax.const(np.asarray(v, dtype=np.int32))


def float_chain(scale, zp=None, lo=-127.0, hi=127.0, out="int32"):
    """Seed 003: astype(float32) -> multiply -> round -> [add zp] -> clip -> astype."""

    def build(bb, x):
        v = bb.emit(relax.op.astype(x, "float32"))
        v = bb.emit(relax.op.multiply(v, f32(scale)))
        v = bb.emit(relax.op.round(v))
        if zp is not None:
            v = bb.emit(relax.op.add(v, f32(zp)))
        v = bb.emit(relax.op.clip(v, lo, hi))
        return bb.emit(relax.op.astype(v, out))

    return build


def module(chains, shape, dtype="int32") -> tvm.IRModule:
    """One function applying each chain builder to the same input; a tuple of results."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            outs = [bb.emit_output(build(bb, x)) for build in chains]
        bb.emit_func_output(relax.Tuple(outs) if len(outs) > 1 else outs[0])
    return bb.get()


def rewrite(mod, **kw):
    with collect_reports() as entries:
        out = CastMultiplyRoundToRequantize(**kw)(mod)
    return out, [e.message for e in entries]


def run_float(mod, x) -> list[np.ndarray]:
    vm = relax.VirtualMachine(tvm.compile(mod, TARGET), tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x))
    return [o.numpy() for o in out] if isinstance(out, tvm.ir.Array) else [out.numpy()]


def op_names(mod) -> list[str]:
    names = []
    relax.analysis.post_order_visit(
        mod["main"],
        lambda e: (
            names.append(e.op.name) if isinstance(e, relax.Call) and hasattr(e.op, "name") else None
        ),
    )
    return names


def float_values(mod) -> int:
    """How many bindings of main compute a float tensor."""
    return sum(
        str(b.var.ty.dtype).startswith("float")
        for block in mod["main"].body.blocks
        for b in block.bindings
        if isinstance(b.var.ty, relax.TensorType)
    )


def accumulators(rng, scale: float, n: int) -> np.ndarray:
    """int32 inputs: half where the output does not saturate, a quarter anywhere in int32, a
    quarter just around the rounding boundaries (x * scale near k + 1/2)."""
    active = int(min(I32.max, 130 / scale))
    k = rng.integers(-128, 128, n // 4)
    near = np.round((k + 0.5) / scale).astype(np.int64) + rng.integers(-3, 4, n // 4)
    parts = [
        rng.integers(-active, active + 1, n - 2 * (n // 4)),
        rng.integers(I32.min, I32.max, n // 4, endpoint=True),
        np.clip(near, I32.min, I32.max),
    ]
    return np.concatenate(parts).astype(np.int32)


def random_scales(rng, n: int) -> np.ndarray:
    return (10.0 ** rng.uniform(-7, 0, n)).astype(np.float32)


def check_scales(scales, n_inputs, seed) -> int:
    """Each scale's chain is either proven (and then the compiled rewrite equals the compiled
    float chain on every input) or refused with a witness; with allow_inexact the refused ones
    are rewritten and differ by no more than the reported bound.  Returns the number proven."""
    rng = np.random.default_rng(seed)
    mod = module([float_chain(s) for s in scales], (n_inputs,))
    _, strict = rewrite(mod)
    out, msgs = rewrite(mod, allow_inexact=True)
    assert float_values(out) == 0
    assert op_names(out).count("qnn.requantize") == len(scales)
    proven = ["proven bit-exact" in m for m in msgs]
    assert proven == ["left in float" not in m for m in strict], strict
    witness = [int(re.search(r"x=(-?\d+)", m).group(1)) for m in strict if "left" in m]
    x = np.concatenate([accumulators(rng, float(s), n_inputs // len(scales)) for s in scales])
    x = np.resize(x, n_inputs)
    x[: len(witness) + 2] = [I32.min, I32.max, *witness]
    want = run_float(mod, x)
    got = compile_model(out)(x)
    for s, w, g, ok, m in zip(scales, want, got, proven, msgs, strict=True):
        if ok:
            np.testing.assert_array_equal(g, w, err_msg=f"scale {s!r}")
        else:
            bound = int(re.search(r"at most (\d+) step", m).group(1))
            assert 0 < np.abs(g.astype(np.int64) - w).max() <= bound, (s, m)
    for s, w in zip(scales[:5], want, strict=False):
        steps = build_steps(find_chains(*_single(s))[0][0])[0]
        emulated = evaluate(steps, x[None].astype(np.int64))
        np.testing.assert_array_equal(emulated[0], w, err_msg=f"emulation, scale {s!r}")
    return sum(proven)


def _single(scale):
    block = module([float_chain(scale)], (4,))["main"].body
    return block.blocks[0], block.body


def test_seed_003_scalar_scales_rewritten_bit_exact():
    assert check_scales(np.float32([0.0018843, 0.0340026]), 200_000, seed=0) == 2


def test_100_random_scales_bounded():
    proven = check_scales(random_scales(np.random.default_rng(1), 100), 400_000, seed=1)
    assert proven >= 40  # measured: 53 of 100 (scales 1e-7..1); the rest refused with witness


@pytest.mark.slow
def test_100_random_scales_million_inputs_each():
    """Issue 4's done-when: 10^6 int32 accumulators for each of 100 random scales (each module
    applies 10 chains to the same 10^7 inputs, 10^6 of them aimed at each chain's scale).

    Measured 2026-11-23: 51 of 100 proven and bit-exact on all 10^7 inputs; the other 49
    (scales 1.1e-7 .. 2.1e-3) refused with a witness, their allow_inexact rewrites within the
    reported 1-step bound.  5 min 35 s on 2 shared cores."""
    scales = random_scales(np.random.default_rng(2), 100)
    proven = sum(
        check_scales(scales[i : i + 10], 10 * 10**6, seed=100 + i) for i in range(0, 100, 10)
    )
    assert proven >= 40


def test_per_channel_scale_rewritten_bit_exact():
    rng = np.random.default_rng(3)
    channels = 16
    scales = (10.0 ** rng.uniform(-3, 0, channels)).astype(np.float32).reshape(1, channels, 1, 1)
    mod = module([float_chain(scales)], (1, channels, 50, 50))
    out, msgs = rewrite(mod)
    assert "per channel (axis 1, 16 channels)" in msgs[0] and "proven bit-exact" in msgs[0]
    x = np.stack([accumulators(rng, float(s), 2500) for s in scales.ravel()])
    x = x.reshape(1, channels, 50, 50)
    np.testing.assert_array_equal(compile_model(out)(x)[0], run_float(mod, x)[0])


CHAIN_FORMS = {
    # zero point added after round, uint8 output
    "zp_after_round": float_chain(np.float32(0.0123), zp=128.0, lo=0.0, hi=255.0, out="uint8"),
    # zero point added before round, ReLU inside the chain
    "zp_before_round_relu": lambda bb, x: bb.emit(
        relax.op.astype(
            relax.op.clip(
                relax.op.round(
                    relax.op.add(
                        relax.op.nn.relu(
                            relax.op.multiply(relax.op.astype(x, "float32"), f32(0.00731234))
                        ),
                        f32(-5.0),
                    )
                ),
                -128.0,
                127.0,
            ),
            "int8",
        )
    ),
    # floor(x * s + 0.5), divide instead of multiply
    "floor_half_divide": lambda bb, x: bb.emit(
        relax.op.astype(
            relax.op.clip(
                relax.op.floor(
                    relax.op.add(
                        relax.op.divide(relax.op.astype(x, "float32"), f32(301.7)), f32(0.5)
                    )
                ),
                -128.0,
                127.0,
            ),
            "int8",
        )
    ),
}


@pytest.mark.parametrize("form", sorted(CHAIN_FORMS))
def test_chain_forms_rewritten_bit_exact(form):
    rng = np.random.default_rng(4)
    mod = module([CHAIN_FORMS[form]], (60_000,))
    mod = relax.transform.Normalize()(mod)
    out, msgs = rewrite(mod)
    assert len(msgs) == 1 and "proven bit-exact" in msgs[0], msgs
    assert "relax.round" not in op_names(out) and "relax.floor" not in op_names(out)
    x = np.concatenate(
        [rng.integers(-40_000, 40_000, 50_000), rng.integers(I32.min, I32.max, 10_000)]
    )
    x = x.astype(np.int32)
    np.testing.assert_array_equal(compile_model(out)(x)[0], run_float(mod, x)[0])


def seed_pow2_chain(bb, x):
    """Seed 003's first graph: relu -> add(64) -> right_shift(7) -> clip(-127, 127) -> cast."""
    v = bb.emit(relax.op.nn.relu(x))
    v = bb.emit(relax.op.add(v, i32(64)))
    v = bb.emit(relax.op.right_shift(v, i32(7)))
    v = bb.emit(relax.op.clip(v, -127.0, 127.0))
    return bb.emit(relax.op.astype(v, "uint8"))


def test_power_of_two_shift_form():
    mod = module([seed_pow2_chain], (70_000,))
    # Over all of int32 the add wraps near 2^31, so the chain is not monotone: refused.
    _, msgs = rewrite(mod)
    assert "left in float" in msgs[0] and "add leaves the int32 range" in msgs[0], msgs
    # A conv accumulator known to lie in +-2^24 is rewritten, exactly.
    out, msgs = rewrite(mod, input_range={"x": (-(2**24), 2**24)})
    assert "proven bit-exact" in msgs[0] and "right_shift" in msgs[0], msgs
    x = np.arange(-5_000, 65_000, dtype=np.int32)
    np.testing.assert_array_equal(compile_model(out)(x)[0], run_float(mod, x)[0])


def test_seed_003_full_graph_both_chains():
    """The kl-divergence graph: chain -> int multiply -> add -> relu -> chain, per channel."""
    rng = np.random.default_rng(5)
    c = 8
    mult = i32(rng.integers(1, 40, (1, c, 1, 1)))
    bias = i32(rng.integers(-300, 300, (1, c, 1, 1)))

    def graph(bb, x):
        v = float_chain(np.float32(0.0018843))(bb, x)
        v = bb.emit(relax.op.nn.relu(relax.op.add(relax.op.multiply(v, mult), bias)))
        return float_chain(np.float32(0.0340026), lo=-127.0, hi=127.0, out="uint8")(bb, v)

    mod = relax.transform.Normalize()(module([graph], (1, c, 40, 40)))
    out, msgs = rewrite(mod)
    assert len(msgs) == 2 and all("proven bit-exact" in m for m in msgs), msgs
    assert op_names(out).count("qnn.requantize") == 2
    assert not {"relax.round", "relax.astype"} & set(op_names(out))
    x = rng.integers(-100_000, 100_000, (1, c, 40, 40)).astype(np.int32)
    np.testing.assert_array_equal(compile_model(out)(x)[0], run_float(mod, x)[0])


def test_ties_emulated_or_refused_and_inexact_bound_is_exact():
    """A power-of-two float scale puts products on .5 ties, which round() sends to even; no
    single-rounding fixed point does that.  The pass refuses; with emulate_float32 the integer
    float32 emulation rewrites it exactly; with allow_inexact its reported bound matches an
    exhaustive count over every int16 input."""
    mod = module([float_chain(np.float32(2.0**-7))], (65_536,), dtype="int16")
    x = np.arange(-(2**15), 2**15, dtype=np.int16)
    want = run_float(mod, x)[0]
    out, msgs = rewrite(mod, emulate_float32=True)
    assert "float32 emulated in int64 ops" in msgs[0] and "proven bit-exact" in msgs[0], msgs
    assert float_values(out) == 0
    np.testing.assert_array_equal(compile_model(out)(x)[0], want)
    out, msgs = rewrite(mod)
    assert "left in float" in msgs[0] and "ties to even" in msgs[0], msgs
    assert op_names(out).count("relax.round") == 1
    out, msgs = rewrite(mod, allow_inexact=True)
    assert "NOT exact" in msgs[0], msgs
    diff = compile_model(out)(x)[0].astype(np.int64) - want
    steps, count = int(np.abs(diff).max()), int(np.count_nonzero(diff))
    assert f"differs by at most {steps} step(s) on {count} input value(s)" in msgs[0], msgs
    assert steps == 1 and count > 0


def test_integer_float32_emulation_matches_ieee():
    """The emulation's numpy form (the one each rewrite is checked with) against numpy float32
    on 200 scales: random int32, |x| around 2^24 where fl32(x) starts rounding, and inputs whose
    products sit next to .5."""
    rng = np.random.default_rng(7)
    ops = fe.NumpyOps()
    for i in range(200):
        s = np.float32(10.0 ** rng.uniform(-9, 3) if i % 5 else 2.0 ** rng.integers(-30, 8))
        ms, es = fe.split_scale(s)
        assert ms * 2.0**es == s and 2**23 <= ms < 2**24
        near = np.round((rng.integers(-300, 300, 3000) + 0.5) / s) + rng.integers(-2, 3, 3000)
        x = np.concatenate(
            [
                rng.integers(I32.min, I32.max, 3000, endpoint=True),
                rng.integers(2**24 - 50, 2**24 + 50, 200) * rng.choice([-1, 1], 200),
                np.clip(near, I32.min, I32.max),
                [I32.min, I32.max, 0, 1, -1],
            ]
        ).astype(np.int64)
        want = np.rint(x.astype(np.float32) * s).astype(np.float64)
        got = fe.multiply_round(ops, x, ms, es).astype(np.float64)
        np.testing.assert_array_equal(got, want, err_msg=f"scale {s!r}")


@pytest.mark.parametrize(
    "build, reason",
    [
        (float_chain(np.float32(-0.01)), "non-positive constant"),
        (float_chain(np.float32([[0.1, 0.2], [0.3, 0.4]]).reshape(1, 2, 2)), "more than one axis"),
        (
            lambda bb, x: bb.emit(
                relax.op.astype(
                    relax.op.round(relax.op.multiply(relax.op.astype(x, "float32"), f32(10.0))),
                    "int32",
                )
            ),
            "int32 range",
        ),
    ],
    ids=["negative", "two_axes", "no_clip"],
)
def test_refusals_name_the_problem(build, reason):
    mod = relax.transform.Normalize()(module([build], (1, 2, 2)))
    out, msgs = rewrite(mod)
    assert "left in float" in msgs[0] and reason in msgs[0], msgs
    assert "qnn.requantize" not in op_names(out)


def test_shorter_chain_proven_when_the_longer_may_wrap():
    """add(100) on a full-range int32 may wrap, so the chain from x is not monotone; the chain
    from the add's output (relu -> cast -> ...) is, and is rewritten; the add stays."""

    def graph(bb, x):
        v = bb.emit(relax.op.nn.relu(relax.op.add(x, i32(100))))
        return float_chain(np.float32(0.0018843))(bb, v)

    mod = relax.transform.Normalize()(module([graph], (20_000,)))
    out, msgs = rewrite(mod)
    assert "int32 relu -> astype" in msgs[0] and "proven bit-exact" in msgs[0], msgs
    assert op_names(out) == ["relax.add", "qnn.requantize"]
    rng = np.random.default_rng(6)
    x = rng.integers(-100_000, 100_000, 20_000).astype(np.int32)
    x[:100] = I32.max - np.arange(100)  # where the add wraps
    np.testing.assert_array_equal(compile_model(out)(x)[0], run_float(mod, x)[0])

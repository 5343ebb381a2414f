"""Tutorial 03: adding two quantized tensors that have different scales and zero points.

The question (a PyTorch ResNet-18 residual ``FloatFunctional.add``, reimplemented in C):

    "I expected x1.int_repr() + x2.int_repr() to equal out.int_repr() (with clamping).  It does
    not.  My manual formula q3 = [S1(q1 - Z1) + S2(q2 - Z2)] / S3 + Z3 only hits 51 % of the
    elements; many misses seem to come from clipping."

    python tutorials/03_quantized_add.py

(a) why adding the integer codes cannot work: the algebra, with the question's own numbers;
(b) why the manual formula hit only ~51 %: two numpy pitfalls, not the formula;
(c) how TFLite adds in integers only (left_shift 20, three fixed-point multipliers), checked
    bit for bit against LiteRT's builtin ADD on all 65536 input pairs;
(d) how PyTorch adds (dequantize, float32 add, requantize), checked bit for bit against
    ``torch.ops.quantized.add`` (skipped if torch is not installed);
(e) where the exact roundings start to matter.

Every printed claim is checked by an assert.
"""

from __future__ import annotations

import warnings

import numpy as np
import tvm
from tvm import relax

from tvm_qnn_ext import compile_model
from tvm_qnn_ext.frontend.tflite import from_tflite
from tvm_qnn_ext.op import pytorch_epilogue as pe
from tvm_qnn_ext.quantization import elementwise as ew
from tvm_qnn_ext.quantization import multiply_by_quantized_multiplier as mbqm
from tvm_qnn_ext.quantization import pytorch as torch_ref
from tvm_qnn_ext.target import resolve_target
from tvm_qnn_ext.testing.litert import run_litert
from tvm_qnn_ext.testing.tflite_builder import single_op_model

np.set_printoptions(linewidth=100)

# The question's quantization parameters (all quint8 = uint8).
S1, Z1 = 0.009925744496285915, 75  # x1: the residual branch
S2, Z2 = 0.02780967578291893, 61  # x2: the skip connection
S3, Z3 = 0.03012925386428833, 56  # out = skip_add.add(x1, x2)

# The elements visible in the question's printout (first three and last three columns of the
# last three rows), and what it printed for PyTorch's result and for the plain code sum.
Q1 = np.array([[69, 70, 61, 69, 68, 74], [66, 75, 68, 81, 66, 72], [64, 76, 75, 71, 67, 73]])
Q2 = np.array([[66, 55, 60, 53, 59, 57], [61, 55, 59, 63, 65, 51], [66, 67, 62, 69, 76, 64]])
SEED_OUT = [[59, 49, 50, 47, 52, 52], [53, 50, 52, 60, 57, 46], [57, 62, 57, 62, 67, 58]]
SEED_SUM = [[135, 125, 121, 122, 127, 131], [127, 130, 127, 144, 131, 123]]
SEED_SUM += [[130, 143, 137, 140, 143, 137]]
SEED_QPARAMS = dict(
    lhs_scale=S1, lhs_zero_point=Z1, rhs_scale=S2, rhs_zero_point=Z2,
    output_scale=S3, output_zero_point=Z3,
)  # fmt: skip
Q1, Q2, SEED_OUT = Q1.astype(np.uint8), Q2.astype(np.uint8), np.array(SEED_OUT, np.uint8)

# Every (q1, q2) pair once: a 256 x 256 grid, shaped NCHW / NHWC alike (1 channel).
GRID1 = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 256, axis=1).reshape(1, 256, 256, 1)
GRID2 = np.ascontiguousarray(GRID1.transpose(0, 2, 1, 3))


def compile_and_run(build, *inputs: np.ndarray) -> np.ndarray:
    """A one-function Relax module with our QNN op, compiled by TVM for this CPU."""
    bb = relax.BlockBuilder()
    params = [
        relax.Var(f"x{i}", relax.TensorType(a.shape, str(a.dtype))) for i, a in enumerate(inputs)
    ]
    with bb.function("main", params):
        out = bb.emit(build(*params))
        bb.emit_func_output(out)
    mod = relax.transform.LegalizeOps()(bb.get())
    vm = relax.VirtualMachine(tvm.compile(mod, resolve_target("native")), tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(a) for a in inputs]).numpy()


# The exact PyTorch result for the visible elements, from our bit-exact numpy model of
# torch.ops.quantized.add (section (d) checks that model against torch itself).
# ATen runs tensors this small through its scalar loop: vector_width=64 models that.
out_visible = torch_ref.add(Q1, S1, Z1, Q2, S2, Z2, S3, Z3, vector_width=64)
assert np.array_equal(out_visible, SEED_OUT)  # reproduces the question's printout exactly

# ============================================================================================
print("=" * 90)
print("(a) The integer codes live on different scales: q1 + q2 is meaningless")
print("=" * 90)
# real = S * (q - Z) for every tensor, so out = x1 + x2 reads
#     S3 (q3 - Z3) = S1 (q1 - Z1) + S2 (q2 - Z2)
#     q3 = Z3 + (S1/S3)(q1 - Z1) + (S2/S3)(q2 - Z2)
r1, r2 = S1 / S3, S2 / S3
print(f"q3 = {Z3} + {r1:.6f} * (q1 - {Z1}) + {r2:.6f} * (q2 - {Z2})")
print("q1 + q2 would be right only if S1 = S2 = S3 and Z3 = Z1 + Z2.")
print(f"Here one step of x1 is worth {r1:.3f} output steps and one step of x2 {r2:.3f};")
print(f"and q1 + q2 carries Z1 + Z2 = {Z1 + Z2} where the output's zero point is {Z3}.")
plain_sum = Q1.astype(np.int64) + Q2
exact_real = Z3 + r1 * (Q1.astype(np.float64) - Z1) + r2 * (Q2.astype(np.float64) - Z2)
print("q1 + q2 (the question's printout):\n", plain_sum)
print("Z3 + (S1/S3)(q1-Z1) + (S2/S3)(q2-Z2) before rounding:\n", np.round(exact_real, 2))
print("PyTorch's out.int_repr() (the question's printout):\n", SEED_OUT)
assert plain_sum.tolist() == SEED_SUM and np.all(plain_sum - SEED_OUT > 60)
assert np.array_equal(np.round(exact_real), SEED_OUT)  # the algebra is right

# ============================================================================================
print()
print("=" * 90)
print("(b) Why the manual formula hit about half the elements")
print("=" * 90)


def manual_addition(q1: np.ndarray, q2: np.ndarray) -> np.ndarray:
    """The question's code, verbatim apart from taking the int_repr arrays directly."""
    q3_1 = S1 * (q1 - Z1)
    q3_2 = S2 * (q2 - Z2)
    qres = q3_1 + q3_2
    qres = qres / S3 + Z3
    q3_int32 = (qres).round()
    return q3_int32.clip(0.255).astype(np.uint8)


def fixed_addition(q1: np.ndarray, q2: np.ndarray) -> np.ndarray:
    """The same formula with the two numpy pitfalls removed."""
    q1, q2 = q1.astype(np.int64), q2.astype(np.int64)  # subtract in a signed type
    qres = (S1 * (q1 - Z1) + S2 * (q2 - Z2)) / S3 + Z3
    return qres.round().clip(0, 255).astype(np.uint8)  # clip(lo, hi), not clip(0.255)


got = manual_addition(Q1, Q2)
print("manual_addition on the visible elements:\n", got)
hits = got == SEED_OUT
print(f"hits: {int(hits.sum())} of {hits.size}")
# Pitfall 1: int_repr().numpy() is uint8, and uint8 - python int stays uint8: it wraps.
wrapped = (np.array([69], np.uint8) - Z1)[0]
print(f"pitfall 1: np.uint8(69) - {Z1} = {wrapped} (uint8 arithmetic wraps modulo 256),")
print(f"           which adds 256 * S1/S3 = {256 * r1:.1f} or 256 * S2/S3 = {256 * r2:.1f} steps")
assert wrapped == 250
# Pitfall 2: ndarray.clip(0.255) is clip(min=0.255, max=None), a typo for clip(0, 255).
# Nothing is clamped at 255, and astype(uint8) wraps whatever exceeds it.
clipped = np.array([-3.0, 300.0]).clip(0.255)
print(f"pitfall 2: [-3, 300].clip(0.255) = {clipped.tolist()} -> astype(uint8) =",
      clipped.astype(np.uint8).tolist(), "(300 wraps to 44: no upper clamp)")  # fmt: skip
assert clipped.astype(np.uint8).tolist() == [0, 44]
no_wrap = (Q1 >= Z1) & (Q2 >= Z2)
print(f"elements where neither q1 - {Z1} nor q2 - {Z2} wraps: {int(no_wrap.sum())} of 18,")
print("exactly the elements it gets right.")
assert np.array_equal(hits, no_wrap)
assert np.array_equal(fixed_addition(Q1, Q2), SEED_OUT)
print("with both pitfalls fixed it gets all 18 right.")

# On a whole tensor of the question's shape the hit rate is the fraction of elements with
# q1 >= Z1 and q2 >= Z2.  Its 51 % says about half its elements had both inputs at or above
# their zero points.  A tensor whose inputs each lie at or above the zero point ~71 % of the
# time (normal around the zero point, shifted up by 2.9 steps) reproduces it:
rng = np.random.default_rng(0)
shape = (1, 256, 14, 14)
x1 = np.clip(np.round(rng.normal(Z1 + 2.9, 6.0, shape)), 0, 255).astype(np.uint8)
x2 = np.clip(np.round(rng.normal(Z2 + 2.9, 6.0, shape)), 0, 255).astype(np.uint8)
truth = torch_ref.add(x1, S1, Z1, x2, S2, Z2, S3, Z3)  # 50176 = 784 * 64: all vectorized
rate_manual = float(np.mean(manual_addition(x1, x2) == truth))
rate_no_wrap = float(np.mean((x1 >= Z1) & (x2 >= Z2)))
rate_fixed = float(np.mean(fixed_addition(x1, x2) == truth))
print(f"tensor {shape}: manual_addition hits {rate_manual:.1%}, the no-wrap fraction is "
      f"{rate_no_wrap:.1%}; fixed formula {rate_fixed:.1%}")  # fmt: skip
assert rate_manual == rate_no_wrap and abs(rate_manual - 0.51) < 0.01 and rate_fixed == 1.0

# ============================================================================================
print()
print("=" * 90)
print("(c) TFLite: integer-only ADD with a common scale and left_shift 20")
print("=" * 90)
# TFLite's Prepare (add.cc) computes, in double from the float32 scales:
#   twice_max = 2 * max(S1, S2)     the common scale both inputs are brought to
#   left_shift = 20                 20 fractional bits, so the < 1 input multipliers keep
#                                   precision; 255 << 20 < 2^28, so the sum fits in int32
#   input multipliers  S1 / twice_max, S2 / twice_max          (both <= 0.5)
#   output multiplier  twice_max / (2^20 * S3)
# and each real multiplier becomes a Q31 significand M and a shift: r = M * 2^(shift - 31).
p = ew.tflite_add_sub_params(S1, S2, S3, "uint8", "tflite")
twice_max = 2 * max(float(np.float32(S1)), float(np.float32(S2)))
reals = [S1 / twice_max, S2 / twice_max, twice_max / (2**20 * S3)]
rows = [("input 1", p.lhs_multiplier, p.lhs_shift), ("input 2", p.rhs_multiplier, p.rhs_shift)]
rows.append(("output", p.out_multiplier, p.out_shift))
print(f"left_shift = {p.left_shift}, twice_max = {twice_max:.8f}")
for (name, m, sh), real in zip(rows, reals, strict=True):
    print(f"  {name:8s} multiplier {real:.9e} -> M = {m:10d}, shift = {sh:3d}"
          f"   (M * 2^(shift-31) = {m * 2.0 ** (sh - 31):.9e})")  # fmt: skip
    assert abs(m * 2.0 ** (sh - 31) - real) <= 2.0 ** (sh - 32)
assert (p.left_shift, p.lhs_shift, p.rhs_shift, p.out_shift) == (20, -2, 0, -19)
assert p.rhs_multiplier == 2**30  # S2 is the larger scale: exactly 0.5

# One element by hand: the first visible pair (69, 66).
q1, q2 = 69, 66
a = mbqm((q1 - Z1) << 20, p.lhs_multiplier, p.lhs_shift)  # (q1 - Z1) on the common scale
b = mbqm((q2 - Z2) << 20, p.rhs_multiplier, p.rhs_shift)
y = int(mbqm(int(a) + int(b), p.out_multiplier, p.out_shift)) + Z3
print(f"by hand: ({q1}-{Z1})<<20 -> {int(a)},  ({q2}-{Z2})<<20 -> {int(b)},  "
      f"sum {int(a) + int(b)} -> {y - Z3} + {Z3} = {y}")  # fmt: skip
assert y == SEED_OUT[0, 0]

# A single-op uint8 ADD model with the question's quantization, built in memory, run by
# LiteRT's builtin kernels on every (q1, q2) pair, and imported + compiled by tvm_qnn_ext.
io = dict(shape=GRID1.shape, dtype="uint8")
model = single_op_model(
    "ADD",
    [dict(io, scale=S1, zero_point=Z1), dict(io, scale=S2, zero_point=Z2)],
    [dict(io, scale=S3, zero_point=Z3)],
)
litert_out = run_litert(model, [GRID1, GRID2])[0]
mod = from_tflite(model)
add_line = next(line.strip() for line in mod.script().splitlines() if '"qnn.add"' in line)
print("imported:", add_line[: add_line.index("attrs")] + "...")
assert '"rounding": "tflite"' in add_line
ours = compile_model(mod)(GRID1, GRID2)[0]
reference = ew.add(GRID1, GRID2, **SEED_QPARAMS, out_dtype="uint8")
tflite_hits = int(np.sum(ours == litert_out))
print(f"all 65536 (q1, q2) pairs: compiled qnn.add == LiteRT builtin ADD on {tflite_hits}; "
      f"numpy reference == LiteRT on {int(np.sum(reference == litert_out))}")  # fmt: skip
assert tflite_hits == 65536 and np.array_equal(reference, litert_out)
assert len(np.unique(litert_out)) > 200  # the grid covers the whole output range

# ============================================================================================
print()
print("=" * 90)
print("(d) PyTorch: FloatFunctional.add is dequantize, float32 add, requantize")
print("=" * 90)
# torch.ops.quantized.add (what FloatFunctional.add becomes after convert), vectorized loop:
#   da = fl(S1 * float(q1) + fl(S1 * -Z1))     an FMA with a premultiplied zero point
#   db = fl(S2 * float(q2) + fl(S2 * -Z2))
#   q3 = clamp(rint(fl(fl(da + db) * fl(1 / S3))) + Z3, 0, 255)    rint: half to even
# all in float32 (tvm_qnn_ext.quantization.pytorch.add; qnn.torch_add in the dialect).
try:
    import torch
except ImportError:
    torch = None
    print("torch is not installed: skipping the comparison with torch.ops.quantized.add")

torch_hits = None
if torch is not None:
    warnings.simplefilter("ignore")  # torch's deprecation notes on quantized tensors
    torch.backends.quantized.engine = "fbgemm"
    torch.set_num_threads(1)  # one chunk: 65536 = 1024 * 64 elements, all vectorized
    nchw1, nchw2 = (g.reshape(1, 1, 256, 256) for g in (GRID1, GRID2))
    t1 = torch._make_per_tensor_quantized_tensor(torch.from_numpy(nchw1.copy()), S1, Z1)
    t2 = torch._make_per_tensor_quantized_tensor(torch.from_numpy(nchw2.copy()), S2, Z2)
    skip_add = torch.ao.nn.quantized.QFunctional()  # FloatFunctional after convert()
    skip_add.scale, skip_add.zero_point = S3, Z3
    want = skip_add.add(t1, t2).int_repr().numpy()
    compiled = compile_and_run(
        lambda x, y: pe.torch_add(x, y, **SEED_QPARAMS),
        nchw1,
        nchw2,
    )
    torch_hits = int(np.sum(compiled == want))
    ref_hits = int(np.sum(torch_ref.add(nchw1, S1, Z1, nchw2, S2, Z2, S3, Z3) == want))
    print(f"all 65536 pairs: compiled qnn.torch_add == torch.ops.quantized.add on {torch_hits}; "
          f"numpy reference on {ref_hits}")  # fmt: skip
    assert torch_hits == ref_hits == 65536
    # The visible elements again, through torch itself (18 elements: ATen's scalar loop).
    v1 = torch._make_per_tensor_quantized_tensor(torch.from_numpy(Q1.copy()), S1, Z1)
    v2 = torch._make_per_tensor_quantized_tensor(torch.from_numpy(Q2.copy()), S2, Z2)
    assert np.array_equal(skip_add.add(v1, v2).int_repr().numpy(), SEED_OUT)
    print("torch reproduces the question's printed out.int_repr() on the visible elements.")
    tflite_vs_torch = int(np.sum(litert_out.reshape(want.shape) != want))
    print(f"TFLite's integer ADD and PyTorch's float ADD disagree on {tflite_vs_torch} of "
          "65536 pairs for these scales.")  # fmt: skip

# ============================================================================================
print()
print("=" * 90)
print("(e) When the roundings differ: ties")
print("=" * 90)
# With these scales no (q1, q2) pair lands on a rounding tie, so the corrected float64
# formula, TFLite and PyTorch all agree.  Equal input scales and S3 = 2 * S makes half of all
# sums exact ties, and then each framework's rounding shows:
s, z = 0.02, 128
kw = dict(lhs_scale=s, lhs_zero_point=z, rhs_scale=s, rhs_zero_point=z, output_scale=2 * s,
          output_zero_point=z, out_dtype="uint8")  # fmt: skip
a64, b64 = GRID1.astype(np.int64), GRID2.astype(np.int64)
tie_float64 = np.clip(np.round((s * (a64 - z) + s * (b64 - z)) / (2 * s) + z), 0, 255)
tie_tflite = run_litert(
    single_op_model(
        "ADD",
        [dict(io, scale=s, zero_point=z)] * 2,
        [dict(io, scale=2 * s, zero_point=z)],
    ),
    [GRID1, GRID2],
)[0]
assert np.array_equal(ew.add(GRID1, GRID2, **kw), tie_tflite)
tie_torch = torch_ref.add(GRID1, s, z, GRID2, s, z, 2 * s, z)
if torch is not None:  # the numpy model of PyTorch's add is torch's result here too
    u1, u2 = (
        torch._make_per_tensor_quantized_tensor(torch.from_numpy(g.reshape(1, 1, 256, 256)), s, z)
        for g in (GRID1, GRID2)
    )
    tie_want = torch.ops.quantized.add(u1, u2, 2 * s, z).int_repr().numpy()
    assert np.array_equal(tie_torch.reshape(tie_want.shape), tie_want)
n_tf = int(np.sum(tie_float64 != tie_tflite))
n_pt = int(np.sum(tie_float64 != tie_torch))
n_both = int(np.sum(tie_tflite != tie_torch))
print(f"S1 = S2 = {s}, S3 = {2 * s}: float64 formula vs LiteRT differ on {n_tf} pairs, "
      f"vs PyTorch on {n_pt}; LiteRT vs PyTorch on {n_both}")  # fmt: skip
assert n_both > 1000 and max(np.abs(tie_tflite.astype(int) - tie_torch).ravel()) == 1

print()
print("Summary, hit rate against the framework's own result:")
print(f"  the question's manual_addition          {rate_manual:7.1%}  (uint8 wrap, clip typo)")
print(f"  its formula, fixed (float64)            {rate_fixed:7.1%}  (no ties at these scales)")
print(f"  qnn.add, rounding='tflite' vs LiteRT    {tflite_hits / 65536:7.1%}  (all 65536 pairs)")
if torch_hits is not None:
    print(f"  qnn.torch_add vs torch quantized add    {torch_hits / 65536:7.1%}  (all 65536 pairs)")
print("\nall checks passed")

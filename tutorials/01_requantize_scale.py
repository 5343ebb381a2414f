"""Tutorial 01: where the requantize scale comes from, why per-batch min/max scaling breaks,
and how the int32 bias works.

Three questions people keep asking, answered with real numbers.  Every claim printed here is
checked by an assert, so this script fails if any of it stops being true.

    python tutorials/01_requantize_scale.py

(a) "My input scale is 0.1259, my weight scale 0.0706, my output scale 4.51: I expected the
    requantization scale to be something like 8.33.  Where does it come from?"
(b) "I quantize A with 255 / (max - min), multiply in int32, then requantize AB with its own
    min/max.  How do I get floats back?"
(c) "Why is the bias not quantized like the weights?  Is it int32 at scale s_in * s_w?"
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

import tvm_qnn_ext.op as qnn
from tvm_qnn_ext.quantization import conv as ref
from tvm_qnn_ext.quantization import (
    dequantize,
    multiply_by_quantized_multiplier,
    quantize,
    quantize_multiplier,
    requantize,
)
from tvm_qnn_ext.target import resolve_target

np.set_printoptions(linewidth=100)


def compile_and_run(build, *inputs: np.ndarray) -> np.ndarray:
    """Build a one-function Relax module with our QNN ops, compile it with TVM and run it."""
    bb = relax.BlockBuilder()
    params = [
        relax.Var(f"x{i}", relax.TensorType(a.shape, str(a.dtype))) for i, a in enumerate(inputs)
    ]
    with bb.function("main", params):
        out = bb.emit(build(*params))
        bb.emit_func_output(out)
    mod = relax.transform.LegalizeOps()(bb.get())
    vm = relax.VirtualMachine(tvm.compile(mod, resolve_target("llvm")), tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(a) for a in inputs]).numpy()


# ============================================================================================
print("=" * 90)
print("(a) The requantize multiplier is s_in * s_w / s_out")
print("=" * 90)

# The numbers from the question (a PyTorch eager-mode quantized Conv2d, 1 -> 1 channel, 3x3).
s_in = 0.125926584005  # quant.scale, zero point 0, quint8
s_w = 9.0 / 127.5  # printed as 0.0706: PyTorch's symmetric observer, max|w| / 127.5
s_out = 4.51094579697  # conv1.scale, zero point 0, quint8
x_float = np.arange(1, 17, dtype=np.float32).reshape(1, 4, 4, 1)  # NHWC
w_float = np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3, 1)  # OHWI

# PyTorch quantizes with round-half-to-even of x * (1/s): our rounding="float".
x_q = quantize(x_float, s_in, 0, "uint8", rounding="float")
w_q = quantize(w_float, s_w, 0, "int8", rounding="float")
print("input ints  :", x_q.ravel())
print("weight ints :", w_q.ravel())
# These reproduce exactly the dequantized tensors printed in the question.
seed_input = [1.0074, 2.0148, 3.0222, 4.0297, 5.0371, 6.0445, 7.0519, 8.0593]
seed_input += [8.9408, 9.9482, 10.9556, 11.9630, 12.9704, 13.9779, 14.9853, 15.9927]
seed_weight = [0.9882, 1.9765, 2.9647, 4.0235, 5.0118, 6.0000, 6.9882, 7.9765, 8.9647]
assert np.allclose(dequantize(x_q, s_in, 0).ravel(), seed_input, atol=1e-4)
assert np.allclose(dequantize(w_q, s_w, 0).ravel(), seed_weight, atol=1e-4)

# The int32 accumulator sum(x_q * w_q) represents sum(x * w) at scale s_in * s_w ...
acc = ref.conv2d(x_q, w_q)  # NHWC / OHWI, valid padding
s_acc = s_in * s_w
print("int32 accumulator:", acc.ravel(), f"at scale s_in*s_w = {s_acc:.6f}")
float_conv = np.array([348.0, 393.0, 528.0, 573.0])  # the float conv of 1..16 with 1..9
assert np.allclose(acc.ravel() * s_acc, float_conv, rtol=0.01)

# ... so going to the output scale multiplies by s_acc / s_out, a number far below 1.
real = s_in * s_w / s_out
print(f"requantize multiplier = s_in * s_w / s_out = {real:.8f}  (= 1 / {1 / real:.1f})")
assert abs(real - 0.00197) < 1e-5
print("The 8.33 in the question is 1 / 0.12, the float -> int factor of the input alone;")
print("it ignores that the accumulator carries the weight scale and the output has its own.")
assert abs(1 / 0.12 - 8.33) < 0.01 and abs(1 / 0.12 - real) > 8

# Integer-only hardware encodes it as a Q31 significand and a power-of-two shift.
m, shift = (int(v) for v in quantize_multiplier(real))
encoded = m * 2.0 ** (shift - 31)
print(f"quantize_multiplier -> M = {m}, shift = {shift}:  M * 2^(shift-31) = {encoded:.10f}")
assert 2**30 <= m < 2**31 and shift == -8
assert abs(m * 2.0 ** (shift - 31) - real) <= 2.0 ** (shift - 32)

out_tflite = requantize(acc, s_acc, 0, s_out, 0, "uint8", rounding="tflite")
out_fbgemm = requantize(acc, s_acc, 0, s_out, 0, "uint8", rounding="float")
by_hand = multiply_by_quantized_multiplier(acc, m, shift, "tflite")
print("output ints (TFLite fixed point):", out_tflite.ravel())
print("output ints (PyTorch fbgemm)    :", out_fbgemm.ravel())
seed_output = [347.3428, 392.4523, 527.7806, 572.8901]  # printed in the question
assert out_tflite.ravel().tolist() == [77, 87, 117, 127] == by_hand.ravel().tolist()
assert np.array_equal(out_tflite, out_fbgemm)
assert np.allclose(dequantize(out_tflite, s_out, 0).ravel(), seed_output, atol=1e-3)

# The same computation compiled by TVM with the QNN dialect: qnn.conv2d -> qnn.requantize.
compiled = compile_and_run(
    lambda x, w: qnn.requantize(
        relax.BlockBuilder.current().emit(qnn.conv2d(x, w)), s_acc, 0, s_out, 0, "uint8"
    ),
    x_q,
    w_q,
)
print("compiled qnn.conv2d + qnn.requantize:", compiled.ravel())
assert np.array_equal(compiled, out_tflite)

# ============================================================================================
print()
print("=" * 90)
print("(b) Per-batch min/max scaling of the product vs a proper affine scheme")
print("=" * 90)

rng = np.random.default_rng(0)
# Post-ReLU activations (non-negative), like most embeddings fed to a matmul.
calib = rng.uniform(0.0, 4.0, (8, 64, 32)).astype(np.float32)  # calibration batches
A = rng.uniform(0.0, 4.0, (64, 32)).astype(np.float32)
AB = A.astype(np.float64) @ A.T.astype(np.float64)  # the float result we want
ab_range = AB.max() - AB.min()


def max_err_pct(approx: np.ndarray) -> float:
    return float(np.max(np.abs(approx - AB)) / ab_range * 100)


# The question's scheme: zero offset, scale 255 / (max - min) chosen from this batch's data.
scale = 255.0 / (A.max() - A.min())
a_int = np.round(A * scale)
overflow = int(np.sum(a_int > 127))
A_q = a_int.astype(np.int64).astype(np.int8)  # what torch's .to(torch.int8) does: wraps
print(f"scale = 255/(max-min) = {scale:.3f}: {overflow} of {A.size} values exceed int8 and wrap")
assert overflow > A.size // 3
AB_int = A_q.astype(np.int64) @ A_q.T.astype(np.int64)
off_ab = AB_int.min()
scale_ab = 255.0 / (AB_int.max() - off_ab)
AB_q = np.round((AB_int - off_ab) * scale_ab)  # 0..255
# Question 3, "how do I get floats back": undo both steps, including the factor scale^2 that
# the int32 product carries (it is s_A * s_B in the affine notation).
AB_back = (AB_q / scale_ab + off_ab) / scale**2
AB_forgot = AB_q / scale_ab + off_ab  # forgetting s_A * s_B: off by a factor of ~4000
err_broken, err_forgot = max_err_pct(AB_back), max_err_pct(AB_forgot)
print(f"  its max error, dequantized as well as possible: {err_broken:7.1f} % of the output range")
print(f"  ... and dequantized without s_A * s_B         : {err_forgot:7.0f} % of the output range")


# Even with saturation instead of the wrap, the output parameters depend on the batch: the
# same int8 code means a different float in every batch, so no next layer can consume it
# with fixed parameters.
def code_meaning(batch: np.ndarray, code: int) -> float:
    sc = 255.0 / (batch.max() - batch.min())
    i = np.clip(np.round(batch * sc), -128, 127).astype(np.int64)
    p = i @ i.T
    return float((code / (255.0 / (p.max() - p.min())) + p.min()) / sc**2)


meaning = [code_meaning(A, 200), code_meaning(A * 1.5, 200)]
print(f"  code 200 means {meaning[0]:.2f} in one batch and {meaning[1]:.2f} in another")
assert abs(meaning[0] - meaning[1]) > 1.0

# The affine scheme: real = s * (q - zp).  Activations asymmetric (zp), product at scale
# s_A * s_B with zero point 0 in int32, output scale calibrated once on calibration data.
# (TFLite and PyTorch both widen the range to include 0, so that 0.0 is exact.)
lo_a, hi_a = min(0.0, float(calib.min())), max(0.0, float(calib.max()))
s_a = (hi_a - lo_a) / 255.0
zp_a = int(-128 - round(lo_a / s_a))
A_q8 = quantize(A, s_a, zp_a, "int8")
acc = ref.dense(A_q8, A_q8, input_zero_point=zp_a, kernel_zero_point=zp_a)  # int32
calib_ab = np.einsum("bik,bjk->bij", calib, calib)
lo_o, hi_o = min(0.0, float(calib_ab.min())), max(0.0, float(calib_ab.max()))
s_o = (hi_o - lo_o) / 255.0
zp_o = int(-128 - round(lo_o / s_o))
AB_q8 = requantize(acc, s_a * s_a, 0, s_o, zp_o, "int8")  # the fixed-point requantize of (a)
AB_affine = dequantize(AB_q8, s_o, zp_o).astype(np.float64)
saturated = AB_q8 == 127  # this batch exceeds the calibrated range in a few places
print(f"affine: s_A = {s_a:.5f} zp_A = {zp_a}; accumulator at s_A*s_B = {s_a * s_a:.3e}, zp 0;")
print(
    f"        s_out = {s_o:.4f} zp_out = {zp_o} (calibrated once); multiplier {s_a * s_a / s_o:.3e}"
)
print(f"  {int(saturated.sum())} of {AB.size} outputs exceed the calibrated range and saturate")
err = np.abs(AB_affine - AB)[~saturated]
err_affine = float(err.max() / ab_range * 100)
print(
    f"  the others: max error {err_affine:.2f} % of the output range ({err.max() / s_o:.2f} steps)"
)
assert err_affine < 1.0 and saturated.sum() < AB.size // 100
assert err_broken > 20 * err_affine and err_forgot > 1000 * err_affine
# The error is half an output step plus what the int8 inputs' own rounding (s_A / 2 per
# element) propagates through the 32-term dot product.
e = s_a / 2
row = np.abs(A).astype(np.float64).sum(axis=1)
propagated = e * (row[:, None] + row[None, :]) + A.shape[1] * e * e
assert np.all(err <= (propagated[~saturated] + s_o / 2) * (1 + 1e-6))

# ============================================================================================
print()
print("=" * 90)
print("(c) The bias is int32 at scale s_in * s_w[c], added to the int32 accumulator")
print("=" * 90)

rng = np.random.default_rng(4)
C = 4
s_in, zp_in = 0.05, -3
s_wc = rng.uniform(0.002, 0.01, C)  # per output channel
s_out, zp_out = 0.25, 5
x_q = rng.integers(-128, 128, (1, 6, 6, 8)).astype(np.int8)
w_q = rng.integers(-127, 128, (C, 3, 3, 8)).astype(np.int8)
bias = rng.uniform(-2.0, 2.0, C)  # float bias from training

s_acc_c = s_in * s_wc  # the accumulator's scale, per channel
bias_q = np.round(bias / s_acc_c).astype(np.int32)
print("float bias   :", np.round(bias, 4))
print("s_in * s_w[c]:", s_acc_c)
print("int32 bias   :", bias_q)
# The bias is much finer than the weights: its rounding error is < half an accumulator step.
assert np.all(np.abs(bias_q * s_acc_c - bias) <= s_acc_c / 2)

acc = ref.conv2d(x_q, w_q, bias_q, input_zero_point=zp_in)  # int32, bias included
out_q = requantize(acc, s_acc_c, 0, s_out, zp_out, "int8", axis=3)

# The float computation with the same (dequantized) inputs and the float bias.
xf = dequantize(x_q, s_in, zp_in).astype(np.float64)
wf = dequantize(w_q, s_wc, 0, axis=0).astype(np.float64)
win = np.lib.stride_tricks.sliding_window_view(xf[0], (3, 3), axis=(0, 1))  # 4,4,8,3,3
y_float = np.einsum("hwcij,oijc->hwo", win, wf)[None] + bias
inside = (out_q > -128) & (out_q < 127)  # away from saturation
err_steps = np.abs(dequantize(out_q, s_out, zp_out) - y_float)[inside] / s_out
bound = 0.5 + float(np.max(s_acc_c)) / (2 * s_out) + 1e-6
print(f"max |integer path - float path| = {err_steps.max():.4f} output steps (bound {bound:.4f})")
assert err_steps.max() <= bound

# PyTorch passes the float bias and adds it in float inside the kernel; the two ways round
# differently only when the value is within a bias-rounding error of a tie.
out_float_bias = np.clip(
    np.rint((acc - bias_q) * s_acc_c / s_out + bias / s_out) + zp_out, -128, 127
)
same = int(np.sum(out_float_bias == out_q))
print(f"float bias add vs int32 bias add: {same} of {out_q.size} outputs identical")
assert np.max(np.abs(out_float_bias - out_q)) <= 1 and same >= out_q.size * 0.99

compiled = compile_and_run(
    lambda x, w, b: qnn.requantize(
        relax.BlockBuilder.current().emit(qnn.conv2d(x, w, b, input_zero_point=zp_in)),
        s_acc_c,
        0,
        s_out,
        zp_out,
        "int8",
        axis=3,
    ),
    x_q,
    w_q,
    bias_q,
)
assert np.array_equal(compiled, out_q)
print("compiled qnn.conv2d(bias) + per-channel qnn.requantize == numpy reference: yes")
print("\nall checks passed")

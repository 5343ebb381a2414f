"""Tutorial 06: quantized PyTorch models, from PyTorch's side.

Three questions people ask about PyTorch's int8 inference, answered with PyTorch itself as the
oracle, and the same models compiled by tvm_qnn_ext:

    python tutorials/06_pytorch_quantized.py

(a) "After the 8x8 -> 32-bit accumulation, how do you get back to 8 bits?  My input scale is
    0.1259, weight scale 0.0706, output scale 4.51; I expected a requantization scale of 8.33."
(b) "Why is the bias not quantized?  Is it round(bias / (input_scale * weight_scale)) in int32?"
(c) How a quantized model gets from PyTorch into TVM: eager mode, FX graph mode and PT2E.
(d) Does the quantized engine matter?  ``torch.backends.quantized.engine`` is "x86" by default
    on x86; this tutorial uses "fbgemm" until (d), which shows what "x86" changes.

The residual add ("why is x1.int_repr() + x2.int_repr() wrong?") is tutorial 03.  Every printed
claim is checked by an assert.  Needs torch; without it the script says so and exits.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np

try:
    import torch
    import torch.ao.quantization as tq
except ImportError:
    print("SKIP: torch is not installed; this tutorial needs it (pip install tvm_qnn_ext[torch])")
    sys.exit(0)

from tvm_qnn_ext import compile_model
from tvm_qnn_ext.frontend.pytorch import from_pytorch
from tvm_qnn_ext.quantization import pytorch as ref
from tvm_qnn_ext.quantization import requantize

np.set_printoptions(linewidth=100)
warnings.simplefilter("ignore")  # torch's deprecation notes on eager/FX quantization
torch.backends.quantized.engine = "fbgemm"  # part (d) shows what the "x86" engine changes
torch.set_num_threads(1)
F32 = np.float32


def ir_line(mod, op: str) -> str:
    """The first line of the module's text that calls ``op``, shortened for printing."""
    line = next(s.strip() for s in mod.script().splitlines() if f'"{op}"' in s)
    return line if len(line) < 230 else line[:227] + "..."


# ============================================================================================
print("=" * 90)
print("(a) From the int32 accumulator back to uint8: the question's conv, rebuilt")
print("=" * 90)


class SeedConv(torch.nn.Module):
    """The question's model: a QuantStub and a 1 -> 1 channel 3x3 conv, weights 1..9."""

    def __init__(self, channels: int = 1):
        super().__init__()
        self.quant = tq.QuantStub()
        self.conv1 = torch.nn.Conv2d(1, channels, 3)
        with torch.no_grad():
            self.conv1.weight.copy_(torch.arange(1.0, 10.0).reshape(1, 1, 3, 3))
            self.conv1.bias.zero_()

    def forward(self, x):
        return self.conv1(self.quant(x))


x = torch.arange(1.0, 17.0).reshape(1, 1, 4, 4)  # the input 1..16
model = SeedConv().eval()
model.qconfig = tq.get_default_qconfig("fbgemm")  # the eager-mode flow: prepare, calibrate,
tq.prepare(model, inplace=True)  # convert
with torch.no_grad():
    model(x)
tq.convert(model, inplace=True)
with torch.no_grad():
    out = model(x)
xq = model.quant(x)
w = model.conv1.weight()
s_in, s_w, s_out = xq.q_scale(), float(w.q_per_channel_scales()[0]), model.conv1.scale
print(f"calibrated: input scale {s_in:.12f}, weight scale {s_w:.6f} (per channel, = 9 / 127.5),")
print(f"            output scale {s_out:.11f}, all zero points 0")
out_int = out.int_repr().numpy()
print("output (dequantized):", out.dequantize().numpy().ravel(), " int_repr:", out_int.ravel())
# The question's printout, reproduced by calibrating on its input.
assert abs(s_in - 0.125926584005) < 1e-9 and abs(s_out - 4.51094579697) < 1e-6
assert F32(s_w) == F32(9 / 127.5)  # the observer computes in float32
seed_output = [347.3428, 392.4523, 527.7806, 572.8901]
assert np.allclose(out.dequantize().numpy().ravel(), seed_output, atol=1e-3)

x_int = xq.int_repr().numpy()
w_int = w.int_repr().numpy()
acc = ref.conv2d_accumulate(x_int, 0, w_int, 0)
print("input ints :", x_int.ravel())
print("weight ints:", w_int.ravel())
print("int32 accumulator sum(x_int * w_int):", acc.ravel())
# fbgemm's requantization (tvm_qnn_ext.quantization.pytorch.fbgemm_requantize), all float32:
#   a = fl(s_in * s_w[c])          the accumulator's scale
#   m = fl(a / s_out)              the requantization multiplier
#   q = clamp(rint(fl(float32(acc) * m)) + zp_out, 0, 255)       rint: round half to even
a = ref.act_times_w_scale(s_in, [s_w])[0]
m = F32(a / F32(s_out))
y = (acc.astype(F32) * m).astype(F32)
q = np.clip(np.rint(y) + 0, 0, 255).astype(np.uint8)
print(f"a = s_in * s_w = {a:.10f};  m = a / s_out = {m:.10f}  (= 1 / {1 / m:.1f})")
print("acc * m =", y.ravel(), "-> rint ->", q.ravel())
assert abs(m - 0.00197) < 1e-5 and np.array_equal(q, out_int)
print("8.33 is 1 / s_in: it turns a float into input steps, but the accumulator counts steps")
print("of s_in * s_w, and the output wants steps of s_out: the factor is s_in * s_w / s_out.")
assert abs(1 / 0.12 - 8.33) < 0.01 and 1 / m > 60 / s_in
# Integer hardware (TFLite, gemmlowp) encodes the same m as Q31 M * 2^shift; here it agrees.
assert np.array_equal(requantize(acc, a, 0, s_out, 0, "uint8", rounding="tflite"), q)

mod = from_pytorch(model, (x,))
print("imported:", ir_line(mod, "qnn.fbgemm_requantize"))
ours = compile_model(mod)(x.numpy())[0]
print("compiled by tvm_qnn_ext:", ours.ravel(), "== torch int_repr:", out_int.ravel())
assert np.array_equal(ours, out_int)

# ============================================================================================
print()
print("=" * 90)
print("(b) The bias: fbgemm adds bias / (s_in * s_w[c]) in float, not a rounded int32")
print("=" * 90)
# fbgemm (per-channel weights): t = fl(float32(acc) + fl(bias[c] / a[c])), q = rint(fl(t * m)).
# The float bias / a is NOT rounded to an integer first.  TFLite instead stores an int32 bias,
# round(bias / (s_in * s_w[c])), rounded once by the converter and added to the accumulator.
# The two differ only when the output lies within half an accumulator step (here
# m / 2 = 0.001 output steps) of a rounding tie.  Construct one: output 0 is acc0 * m = 76.89;
# a bias worth 308.55 accumulator steps puts it at 77.4999, while 309 steps would give 77.5007.
acc0 = int(acc.ravel()[0])
bias_tie = F32(308.55 * a)
bias_plain = F32(2.0)
rows = []
for bias in (bias_tie, bias_plain):
    with torch.no_grad():
        model.conv1.set_weight_bias(w, torch.tensor([float(bias)]))
        got = model(x).int_repr().numpy()
    steps = float(bias) / float(a)
    b_int = int(np.round(steps))  # what an int32 bias would hold
    as_int32 = requantize(acc + b_int, a, 0, s_out, 0, "uint8", rounding="float")
    as_tflite = requantize(acc + b_int, a, 0, s_out, 0, "uint8", rounding="tflite")
    as_float = ref.fbgemm_requantize(acc, [a], np.array([bias]), s_out, 0, per_channel=True)
    print(f"bias {bias:.7f} = {steps:.3f} accumulator steps (int32: {b_int}):")
    print(f"  {'torch':38s} {got.ravel()}   (acc0 + bias/a) * m = "
          f"{(acc0 + steps) * float(m):.5f}")  # fmt: skip
    print(f"  {'fbgemm formula, float bias':38s} {as_float.ravel()}")
    print(f"  {f'int32 bias {b_int}, fbgemm float scaling':38s} {as_int32.ravel()}")
    print(f"  {f'int32 bias {b_int}, TFLite fixed point':38s} {as_tflite.ravel()}")
    assert np.array_equal(as_float, got)
    rows.append((got, as_int32, as_tflite))
(got, as_int32, as_tflite), (got2, as_int32_2, _) = rows
assert got.ravel()[0] == 77 and as_int32.ravel()[0] == 78 == as_tflite.ravel()[0]
assert np.array_equal(got2, as_int32_2)

# How often does it matter?  4096 output channels with the same weights and 4096 biases.
C = 4096
wide = SeedConv(C).eval()
wide.qconfig = tq.get_default_qconfig("fbgemm")
tq.prepare(wide, inplace=True)
with torch.no_grad():
    wide.conv1.weight.copy_(torch.arange(1.0, 10.0).reshape(1, 1, 3, 3).expand(C, 1, 3, 3))
    wide(x)
tq.convert(wide, inplace=True)
rng = np.random.default_rng(0)
biases = rng.uniform(-20.0, 20.0, C).astype(F32)
wq = wide.conv1.weight()
with torch.no_grad():
    wide.conv1.set_weight_bias(wq, torch.from_numpy(biases))
    want = wide(x).int_repr().numpy()
a_c = ref.act_times_w_scale(wide.quant(x).q_scale(), wq.q_per_channel_scales().numpy())
acc_c = ref.conv2d_accumulate(wide.quant(x).int_repr().numpy(), 0, wq.int_repr().numpy(), 0)
b_int = np.round(biases.astype(np.float64) / a_c).astype(np.int64)
int32_path = requantize(acc_c + b_int[None, :, None, None], a_c, 0, wide.conv1.scale, 0,
                        "uint8", axis=1, rounding="float")  # fmt: skip
n_diff = int(np.sum(int32_path != want))
print(f"{want.size} outputs, random float biases in [-20, 20]: an int32 bias changes {n_diff} "
      f"({n_diff / want.size:.2%}), each by one step")  # fmt: skip
assert np.abs(int32_path.astype(int) - want).max() == 1
assert 0 < n_diff < want.size // 100
wide_ours = compile_model(wide, example_inputs=(x,))(x.numpy())[0]
assert np.array_equal(wide_ours, want)
print("tvm_qnn_ext (qnn.fbgemm_requantize with the float bias) == torch on all of them")

# ============================================================================================
print()
print("=" * 90)
print("(c) Three ways to quantize in PyTorch, one importer")
print("=" * 90)


class Net(torch.nn.Module):
    """conv-bn-relu, conv-bn, a residual add with relu: the shape of a ResNet block."""

    def __init__(self, eager: bool = False):
        super().__init__()
        self.quant, self.eager = tq.QuantStub(), eager
        self.conv1 = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.bn1, self.relu1 = torch.nn.BatchNorm2d(16), torch.nn.ReLU()
        self.conv2 = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.bn2 = torch.nn.BatchNorm2d(16)
        self.skip = torch.nn.Conv2d(3, 16, 1)
        self.skip_add = torch.ao.nn.quantized.FloatFunctional()

    def forward(self, x):
        x = self.quant(x) if self.eager else x
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        if self.eager:
            return self.skip_add.add_relu(y, self.skip(x))
        return torch.relu(y + self.skip(x))


def float_net(eager: bool = False) -> Net:
    torch.manual_seed(0)
    net = Net(eager)
    for bn in (net.bn1, net.bn2):
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
    return net.eval()


calib = torch.from_numpy(np.random.default_rng(1).standard_normal((16, 3, 16, 16)).astype(F32))
inputs = torch.from_numpy(np.random.default_rng(2).standard_normal((32, 3, 16, 16)).astype(F32))

# Eager mode: fuse, attach a qconfig, prepare, calibrate, convert.
eager = float_net(eager=True)
tq.fuse_modules(eager, [["conv1", "bn1", "relu1"], ["conv2", "bn2"]], inplace=True)
eager.qconfig = tq.get_default_qconfig("fbgemm")
tq.prepare(eager, inplace=True)
with torch.no_grad():
    eager(calib)
tq.convert(eager, inplace=True)

# FX graph mode: the same from the float model's graph, no stubs or FloatFunctional needed.
from torch.ao.quantization.fx.custom_config import PrepareCustomConfig  # noqa: E402
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx  # noqa: E402

keep_int = PrepareCustomConfig().set_output_quantized_indexes([0])  # return int8, not float
fx = prepare_fx(float_net(), tq.get_default_qconfig_mapping("fbgemm"), (calib,), keep_int)
with torch.no_grad():
    fx(calib)
fx = convert_fx(fx)

results = []
for name, qmodel in (("eager", eager), ("FX", fx)):
    compiled = compile_model(qmodel, example_inputs=(inputs,))
    with torch.no_grad():
        want = qmodel(inputs).int_repr().numpy()
    got = compiled(inputs.numpy())[0]
    same = int(np.sum(got == want))
    print(f"{name:5s}: {same} of {want.size} outputs equal torch's int_repr "
          f"({len(np.unique(want))} distinct values)")  # fmt: skip
    assert same == want.size and len(np.unique(want)) > 50
    results.append(name)

# PT2E: torch.export, a backend Quantizer, prepare_pt2e / convert_pt2e (torchao).  The result
# is a float graph with quantize/dequantize nodes: PyTorch computes the convs in float, so
# its "reference" is only defined up to float rounding; tvm_qnn_ext runs them in integers.
try:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )
except ImportError:
    print("PT2E: torchao is not installed, skipped")
else:
    torch.backends.quantized.engine = "x86"
    exported = torch.export.export(float_net(), (inputs,)).module()
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        prepared(calib.repeat(2, 1, 1, 1))
    pt2e = convert_pt2e(prepared)
    mod = from_pytorch(pt2e, (inputs,))
    assert '"qnn.conv2d"' in mod.script() and "R.nn.conv2d" not in mod.script()
    got = compile_model(mod)(inputs.numpy())[0]
    with torch.no_grad():
        want = pt2e(inputs).numpy()
    dq = [n for n in pt2e.graph.nodes if "dequantize_per_tensor" in str(n.target)][-1]
    scale_arg = dq.args[1]  # a float, or a node naming the module attribute that holds it
    step = float(
        getattr(pt2e, scale_arg.target) if isinstance(scale_arg, torch.fx.Node) else scale_arg
    )
    steps = np.abs(got.astype(np.float64) - want) / step
    off = float(np.mean(steps > 0.5))
    print(f"PT2E : max difference {steps.max():.2f} steps of the last dequantize "
          f"({step:.5f}); {off:.2%} of {want.size} outputs off by one")  # fmt: skip
    assert steps.max() <= 1.0 + 1e-3 and off < 0.1
    results.append("PT2E")

# ============================================================================================
print()
print("=" * 90)
print('(d) The engine: "x86" (the default on x86 CPUs) sends convolutions to oneDNN')
print("=" * 90)
# Weights are prepacked for one kernel when the model is converted.  Under "x86", a conv with
# symmetric weights and groups <= 100 on a Linux CPU with AVX512-VNNI is prepacked for oneDNN,
# which requantizes differently from fbgemm:
#   fbgemm: q = rint(fl(fl(acc + bias / a[c]) * fl(a[c] / s_out))) + zp_out
#   oneDNN: q = rint(fl(fl(fl(fl(acc * src) * s_w[c]) + bias) * dst) + zp_out)
#           src = fl(1 / fl(1 / s_in)), dst = fl(1 / s_out): the zero point is added *before*
#           rounding, so a tie goes to the even output value.
# Power-of-two scales make exact ties common, and the zero point is odd, so they show.
old_engine = torch.backends.quantized.engine
tie_w = torch.quantize_per_channel(
    torch.arange(1.0, 10.0).reshape(1, 1, 3, 3).expand(C, 1, 3, 3) / 16, torch.full((C,), 1 / 16),
    torch.zeros(C, dtype=torch.long), 0, torch.qint8,
)  # fmt: skip
tie_b = torch.from_numpy(rng.integers(-80, 80, C).astype(F32) * F32(0.25))
by_engine = {}
for engine in ("fbgemm", "x86"):
    torch.backends.quantized.engine = engine
    net = SeedConv(C).eval()
    net.qconfig = tq.get_default_qconfig(engine)
    tq.prepare(net, inplace=True)
    with torch.no_grad():
        net(x)
    tq.convert(net, inplace=True)
    net.conv1.set_weight_bias(tie_w, tie_b)  # prepacked here, under this engine
    net.quant.scale, net.quant.zero_point = torch.tensor([0.125]), torch.tensor([0])
    net.conv1.scale, net.conv1.zero_point = 0.5, 3
    by_engine[engine] = net
torch.backends.quantized.engine = "fbgemm"  # the importer does not depend on the global engine
with torch.no_grad():
    outs = {e: m(x).int_repr().numpy() for e, m in by_engine.items()}
n_engine = int(np.sum(outs["fbgemm"] != outs["x86"]))
onednn = ref.onednn_conv_applies(0, 1)
print(f"same weights, biases and scales: the engines' {outs['x86'].size} outputs differ in "
      f"{n_engine} places (oneDNN used here: {onednn})")  # fmt: skip
for engine, net in by_engine.items():
    ours = compile_model(net, example_inputs=(x,))(x.numpy())[0]
    assert np.array_equal(ours, outs[engine])
print("tvm_qnn_ext == torch for both: each conv is read as the kernel it was prepacked for")
print('(compile_model(model, example_inputs=..., engine="auto" | "fbgemm" | "x86"))')
assert (n_engine > 0) == onednn
torch.backends.quantized.engine = old_engine
results.append("engines")

print(f"\nchecked: {', '.join(results)}\nall checks passed")

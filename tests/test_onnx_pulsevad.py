"""The real int8 QDQ ONNX model shipped in the pulsevad 0.1.3 wheel, against onnxruntime.

``pulsevad_2.1k_int8.onnx`` (opset 17): DequantizeLinear 49, QuantizeLinear 25, Conv 13 (1-D,
depthwise, dilated), Relu 8, Add 1, ReduceMean 1, Gemm 1; input log_mel [batch, 64, 21].
TVM's ONNX importer reads it, QDQToQNN's ONNX rules make it integer, and it is compared with
onnxruntime's default session (which fuses QDQ groups into QLinearConv/QGemm/QLinearAdd) and
with its unoptimized session (the QDQ graph evaluated literally, in float).
"""

from __future__ import annotations

import importlib.metadata
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from tvm_qnn_ext.compile import compile_model  # noqa: E402
from tvm_qnn_ext.frontend.onnx import from_onnx  # noqa: E402
from tvm_qnn_ext.target import resolve_target  # noqa: E402
from tvm_qnn_ext.transform.pipeline import run_stages  # noqa: E402
from tvm_qnn_ext.transform.qdq_to_qnn import QDQRewriteError  # noqa: E402

MODEL_FILE = "pulsevad/data/pulsevad_2.1k_int8.onnx"
SAMPLES = 100
# The pipeline's QDQToQNN stage defaults to TFLite rules, which would give the model's input
# quantize LiteRT's rounding; ONNX's is TVM's R.quantize (x / s, ties to even).
ONNX_PIPELINE = {"qdq_framework": "onnx"}

# Measured here (x86-64, onnxruntime 1.32): step differences -> element counts over the
# 100 x 2 logits, and over all 25 quantized tensors (24 intermediates + logits) on 100 inputs.
MEASURED_LOGITS = {"optimized": {0: 200}, "reference": {0: 200}}
MEASURED_INTERMEDIATES = {"optimized": {0: 530200}, "reference": {0: 530200}}


def _model_path() -> Path:
    """The .onnx inside the installed wheel, found without importing pulsevad (which needs
    torchaudio)."""
    try:
        path = Path(importlib.metadata.distribution("pulsevad").locate_file(MODEL_FILE))
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("pulsevad 0.1.3 is not installed (pip install 'tvm_qnn_ext[onnx]')")
    if not path.is_file():
        pytest.skip(f"{MODEL_FILE} is missing from the installed pulsevad")
    return path


@pytest.fixture(scope="module")
def model_path() -> Path:
    return _model_path()


def log_mel_inputs(n: int, seed: int) -> np.ndarray:
    """Features shaped like pulsevad's front end output: per mel bin (row of 21 frames),
    zero mean and unit variance, from random log spectra with per-bin levels and trends."""
    rng = np.random.default_rng(seed)
    frames = np.arange(21, dtype=np.float64)
    level = rng.uniform(-12.0, 2.0, (n, 64, 1))
    trend = rng.normal(0.0, 0.15, (n, 64, 1)) * frames
    burst = (rng.random((n, 1, 21)) < 0.3) * rng.uniform(0.0, 6.0, (n, 1, 21))
    noise = rng.normal(0.0, 1.0, (n, 64, 21)) * rng.uniform(0.1, 2.0, (n, 64, 1))
    log_mel = level + trend + burst + noise
    mean = log_mel.mean(axis=-1, keepdims=True)
    std = log_mel.std(axis=-1, keepdims=True)
    return ((log_mel - mean) / (std + 1e-6)).astype(np.float32)


def _sessions(model) -> dict[str, object]:
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return {
        "optimized": ort.InferenceSession(data, providers=["CPUExecutionProvider"]),
        "reference": ort.InferenceSession(data, plain, providers=["CPUExecutionProvider"]),
    }


def _steps(ours: np.ndarray, theirs: np.ndarray, scale: float | None = None) -> np.ndarray:
    if scale is None:  # integer tensors
        return np.abs(ours.astype(np.int64) - theirs.astype(np.int64)).ravel()
    return np.rint(np.abs(ours.astype(np.float64) - theirs) / scale).astype(np.int64).ravel()


def _histogram(steps: np.ndarray) -> dict[int, int]:
    return dict(sorted(Counter(int(s) for s in steps).items()))


def _report(name: str, hist: dict[int, int]) -> None:
    total = sum(hist.values())
    fractions = {k: f"{v / total:.5f}" for k, v in hist.items()}
    print(f"{name}: {hist} fractions {fractions}")


def _output_scale(model) -> float:
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.output[0] == model.graph.output[0].name:
            return float(onnx.numpy_helper.to_array(inits[node.input[1]]))
    raise AssertionError("the model output is not a DequantizeLinear")


def test_logits_within_one_step_of_onnxruntime(model_path):
    model = onnx.load(str(model_path))
    # The .onnx branch of load_source; batch 1; the module says it is ONNX (no options needed).
    compiled = compile_model(model_path)
    sessions = _sessions(model)
    scale = _output_scale(model)
    xs = log_mel_inputs(SAMPLES, seed=0)
    for name, sess in sessions.items():
        steps = np.concatenate(
            [
                _steps(compiled(x[None])[0], sess.run(None, {"log_mel": x[None]})[0], scale)
                for x in xs
            ]
        )
        hist = _histogram(steps)
        _report(f"logits vs onnxruntime {name}", hist)
        assert max(hist) <= 1, f"{name}: more than one step off: {hist}"
        assert sum(hist.values()) == 2 * SAMPLES
        # Recorded above; exactness is the aim (onnxruntime rounds ties to even, we away).
        assert hist.get(0, 0) / (2 * SAMPLES) >= 0.99, hist


def _with_quantized_outputs(model):
    """The model with every QuantizeLinear output also a graph output."""
    m = onnx.shape_inference.infer_shapes(model)
    typed = {v.name: v for v in m.graph.value_info}
    names = [n.output[0] for n in m.graph.node if n.op_type == "QuantizeLinear"]
    outs = {o.name for o in m.graph.output}
    m.graph.output.extend(typed[name] for name in names if name not in outs)
    return m, names


@pytest.fixture(scope="module")
def with_intermediates(model_path):
    """(model with every quantized tensor as an output, their names, compiled at batch 4)."""
    model, names = _with_quantized_outputs(onnx.load(str(model_path)))
    mod = from_onnx(model, batch=4, hard_fail=True)
    return model, names, compile_model(mod)


def _compare_quantized(with_intermediates, batches: np.ndarray) -> dict[str, np.ndarray]:
    """Step differences of every quantized tensor, per onnxruntime session."""
    model, names, compiled = with_intermediates
    out_names = [o.name for o in model.graph.output]
    result = {}
    for name, sess in _sessions(model).items():
        per_tensor = {n: [] for n in names}
        for x in batches:
            ours = dict(zip(out_names, compiled(x), strict=True))
            theirs = dict(zip(out_names, sess.run(None, {"log_mel": x}), strict=True))
            for n in names:
                per_tensor[n].append(_steps(ours[n], theirs[n]))
        result[name] = {n: np.concatenate(v) for n, v in per_tensor.items()}
    return result


def test_every_quantized_tensor_within_one_step(with_intermediates):
    """All 25 QuantizeLinear outputs (the int8 tensors between layers)."""
    xs = log_mel_inputs(SAMPLES, seed=1).reshape(-1, 4, 64, 21)
    for name, per_tensor in _compare_quantized(with_intermediates, xs).items():
        steps = np.concatenate(list(per_tensor.values()))
        hist = _histogram(steps)
        _report(f"quantized tensors vs onnxruntime {name}", hist)
        worst = {n: int(v.max()) for n, v in per_tensor.items()}
        assert max(hist) <= 1, f"{name}: tensors more than one step off: {worst}"
        assert hist.get(0, 0) / steps.size >= 0.99, hist


def test_input_quantize_rounds_ties_to_even(with_intermediates, model_path):
    """Inputs on exact rounding ties: QuantizeLinear divides in float32 and rounds half to
    even, and so must the compiled model's input quantize."""
    model = onnx.load(str(model_path))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    scale = np.float32(inits["log_mel_scale"])
    rng = np.random.default_rng(2)
    k = rng.integers(-120, 120, (8, 4, 64, 21)).astype(np.float32)
    ties = ((k + np.float32(0.5)) * scale).astype(np.float32)
    exact = (ties / scale).astype(np.float32) == k + np.float32(0.5)
    assert exact.mean() > 0.5  # most are exact float32 ties
    xs = np.where(exact, ties, log_mel_inputs(32, seed=3).reshape(8, 4, 64, 21))
    first = "log_mel_QuantizeLinear_Output"
    for name, per_tensor in _compare_quantized(with_intermediates, xs).items():
        assert per_tensor[first].max() == 0, f"{name}: input quantize differs on ties"
        assert max(int(v.max()) for v in per_tensor.values()) <= 1


_FLOAT = re.compile(r".*(?:float|bfloat|half).*")


def _float_outside_edges(mod: tvm.IRModule) -> list[str]:
    """Float TIR anywhere but on the model's float input and output buffers, after
    legalization and fusion (the kernel reading the input may hold the input quantize, the
    one writing the output the output dequantize)."""
    fused, _ = run_stages(mod, resolve_target("llvm"))
    main = fused["main"]
    float_params = {p for p in main.params if str(p.ty.dtype).startswith("float")}
    found = []
    for block in main.body.blocks:
        for b in block.bindings:
            value = b.value
            if not (isinstance(value, relax.Call) and value.op.name == "relax.call_tir"):
                continue
            func, name = fused[value.args[0]], value.args[0].name_hint
            edge = any(a in float_params for a in value.args[1].fields) or str(
                b.var.ty.dtype
            ).startswith("float")
            allowed = [str(p.name) for p in func.params if str(p.dtype).startswith("float")]
            for line in _FLOAT.findall(func.script()):
                if line.lstrip().startswith("def "):
                    continue
                if not (edge and any(a in line for a in allowed)):
                    found.append(f"{name}: {line.strip()}")
    return found


def test_integer_only_between_input_quantize_and_output_dequantize(model_path):
    assert _float_outside_edges(from_onnx(model_path, hard_fail=True)) == []
    # The walker does see float: with only ReduceMean rewritten, the convs stay float.
    left = _float_outside_edges(from_onnx(model_path, allow={"relax.mean"}))
    assert any("conv" in line for line in left), left[:3]


def test_rewrite_leaves_nothing_in_float(model_path):
    from tvm_qnn_ext.transform.report import collect_reports

    with collect_reports() as entries:
        mod, report = from_onnx(model_path, hard_fail=True, return_report=True)
    assert report.left_in_float == []
    ops = Counter(
        b.value.op.name
        for block in mod["main"].body.blocks
        for b in block.bindings
        if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op)
    )
    assert ops["qnn.conv2d"] == 13 and ops["qnn.dense"] == 1 and ops["qnn.mean"] == 1
    assert ops["relax.quantize"] == 1 and ops["qnn.dequantize"] == 1
    assert not any(name.startswith("relax.nn.conv") or name == "relax.matmul" for name in ops)
    assert any("relax.mean" in str(e) and "qnn.mean" in str(e) for e in entries)


def test_allow_list_and_hard_fail_name_the_float_regions(model_path):
    mod, report = from_onnx(model_path, allow={"relax.mean"}, return_report=True)
    assert report.left_in_float and all("relax.mean" not in s for s in report.left_in_float)
    assert any("allow-list" in s for s in report.left_in_float)
    with pytest.raises(QDQRewriteError, match="relax.nn.conv1d"):
        from_onnx(model_path, allow={"relax.mean"}, hard_fail=True)


def test_tvm_import_through_the_qnn_pipeline(model_path):
    """TVM's own importer output, untouched, through the "qnn" pipeline's QDQToQNN stage with
    the ONNX rules and hard_fail: the same integer model."""
    from tvm.relax.frontend.onnx import from_onnx as tvm_from_onnx

    model = onnx.load(str(model_path))
    mod = tvm_from_onnx(model, shape_dict={"log_mel": [2, 64, 21]})
    compiled = compile_model(mod, pipeline_options={**ONNX_PIPELINE, "qdq_hard_fail": True})
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    for x in log_mel_inputs(20, seed=4).reshape(10, 2, 64, 21):
        np.testing.assert_array_equal(compiled(x)[0], sess.run(None, {"log_mel": x})[0])

"""A small CNN quantized by onnxruntime (QDQ and QOperator formats) against onnxruntime.

The float model (Conv+Relu, MaxPool, strided depthwise Conv+Clip(0, 6), two 1x1 Convs added,
Relu, Concat, GlobalAveragePool, Flatten, Gemm) is built here with random weights and quantized
with ``quantize_static`` (int8 or uint8 activations, int8 per-channel weights): the ops most
ONNX CNNs use, beyond pulsevad's.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from tvm_qnn_ext.compile import compile_model  # noqa: E402
from tvm_qnn_ext.frontend.onnx import from_onnx  # noqa: E402

ONNX_PIPELINE = {"qdq_framework": "onnx"}
BATCH = 4


def _float_cnn():
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(np.float32(0), "lo"),
        numpy_helper.from_array(np.float32(6), "hi"),
    ]

    def w(name, shape, scale=0.3):
        inits.append(numpy_helper.from_array(rng.normal(0, scale, shape).astype(np.float32), name))
        return name

    node = helper.make_node
    nodes = [
        node("Conv", ["x", w("w1", (8, 3, 3, 3)), w("b1", (8,), 0.1)], ["c1"], pads=[1] * 4),
        node("Relu", ["c1"], ["r1"]),
        node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        node(
            "Conv",
            ["p1", w("w2", (8, 1, 3, 3)), w("b2", (8,), 0.1)],
            ["c2"],
            pads=[1] * 4,
            group=8,
            strides=[2, 2],
        ),
        node("Clip", ["c2", "lo", "hi"], ["r2"]),
        node("Conv", ["r2", w("w3", (8, 8, 1, 1)), w("b3", (8,), 0.1)], ["c3"]),
        node("Conv", ["r2", w("w4", (8, 8, 1, 1)), w("b4", (8,), 0.1)], ["c4"]),
        node("Add", ["c3", "c4"], ["a1"]),
        node("Relu", ["a1"], ["r3"]),
        node("Concat", ["r3", "r2"], ["cat"], axis=1),
        node("GlobalAveragePool", ["cat"], ["gap"]),
        node("Flatten", ["gap"], ["flat"]),
        node("Gemm", ["flat", w("wf", (5, 16)), w("bf", (5,), 0.1)], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _inputs(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (n, BATCH, 3, 16, 16)).astype(np.float32)


@pytest.fixture(scope="module", params=["QDQ-QInt8", "QOperator-QInt8", "QDQ-QUInt8"])
def quantized(request, tmp_path_factory):
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter({"x": x[:1]} for x in _inputs(8, seed=1))

        def get_next(self):
            return next(self.feeds, None)

    folder = tmp_path_factory.mktemp("cnn")
    onnx.save(_float_cnn(), folder / "cnn.onnx")
    fmt, activations = request.param.split("-")
    out = folder / f"cnn_{request.param}.onnx"
    quantize_static(
        str(folder / "cnn.onnx"),
        str(out),
        Reader(),
        quant_format=getattr(QuantFormat, fmt),
        activation_type=getattr(QuantType, activations),
        weight_type=QuantType.QInt8,
        per_channel=True,
    )
    return fmt, onnx.load(str(out))


def test_cnn_within_one_step_of_onnxruntime(quantized):
    fmt, model = quantized
    if fmt == "QOperator":
        ops = {n.op_type for n in model.graph.node}
        assert {"QLinearConv", "QLinearAdd", "QLinearConcat", "QLinearGlobalAveragePool"} <= ops
    mod, report = from_onnx(model, batch=BATCH, hard_fail=True, return_report=True)
    assert report.left_in_float == []
    compiled = compile_model(mod, pipeline_options=ONNX_PIPELINE)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    scale = float(inits["y_scale"])
    steps = np.concatenate(
        [
            np.rint(np.abs(compiled(x)[0] - sess.run(None, {"x": x})[0]) / scale).ravel()
            for x in _inputs(25, seed=2)
        ]
    )
    hist = dict(sorted(Counter(int(s) for s in steps).items()))
    print(f"CNN {fmt} logits vs onnxruntime: {hist}")
    assert max(hist) <= 1, hist
    assert hist.get(0, 0) / steps.size >= 0.99, hist

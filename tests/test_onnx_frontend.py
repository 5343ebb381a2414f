"""tvm_qnn_ext.frontend.onnx: loading, static shapes, and clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from tvm_qnn_ext.compile import compile_model  # noqa: E402
from tvm_qnn_ext.frontend.onnx import (  # noqa: E402
    OnnxImportError,
    from_onnx,
    load_model,
    static_shapes,
)
from tvm_qnn_ext.transform.qdq_to_qnn import QDQRewriteError  # noqa: E402


def _qdq_model(op: str, dims=("batch", 8), opset: int = 17, **attrs):
    """x (float) -> Q -> DQ -> op -> Q -> DQ -> y, int8 per tensor."""
    consts = [
        numpy_helper.from_array(np.float32(0.05), "s_in"),
        numpy_helper.from_array(np.int8(3), "z_in"),
        numpy_helper.from_array(np.float32(1 / 256), "s_out"),
        numpy_helper.from_array(np.int8(-128), "z_out"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s_in", "z_in"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s_in", "z_in"], ["xf"]),
        helper.make_node(op, ["xf"], ["yf"], **attrs),
        helper.make_node("QuantizeLinear", ["yf", "s_out", "z_out"], ["yq"]),
        helper.make_node("DequantizeLinear", ["yq", "s_out", "z_out"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(dims))],
        consts,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_garbage_bytes_are_not_a_model():
    with pytest.raises(OnnxImportError, match="not an ONNX model"):
        load_model(b"\x00\x01 definitely not protobuf \xff" * 8)


def test_missing_file_and_wrong_type():
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        load_model("/nonexistent/nope.onnx")
    with pytest.raises(TypeError, match="int"):
        load_model(42)


def test_invalid_graph_is_named():
    model = _qdq_model("Sigmoid")
    model.graph.node[2].input[0] = "undefined_tensor"
    with pytest.raises(OnnxImportError, match="invalid ONNX model"):
        from_onnx(model)


def test_unsupported_operator_is_listed():
    model = _qdq_model("LpNormalization", axis=-1)
    with pytest.raises(OnnxImportError, match="unsupported ONNX operators: LpNormalization"):
        from_onnx(model)


def test_dynamic_dimensions():
    model = _qdq_model("Sigmoid", dims=("batch", "features"))
    with pytest.raises(OnnxImportError, match=r"axis 1 is dynamic \(features\)"):
        from_onnx(model)
    assert static_shapes(model, {"x": [2, 5]}) == {"x": [2, 5]}
    assert static_shapes(_qdq_model("Sigmoid"), batch=3) == {"x": [3, 8]}
    with pytest.raises(OnnxImportError, match="axis 1 is 8 in the model, got 9"):
        static_shapes(_qdq_model("Sigmoid"), {"x": [1, 9]})
    with pytest.raises(OnnxImportError, match="inputs are \\['x'\\]"):
        static_shapes(model, {"y": [1, 2]})
    with pytest.raises(OnnxImportError, match="batch must be >= 1"):
        static_shapes(model, batch=0)


def test_region_without_a_rule_stays_float_and_is_reported():
    """DQ -> Softmax -> Q has no ONNX rule: it is reported, hard_fail raises, and the float
    region still computes what onnxruntime does (within one step)."""
    model = _qdq_model("Softmax", axis=-1)
    mod, report = from_onnx(model, batch=4, return_report=True)
    assert any("relax.nn.softmax" in line for line in report.left_in_float), report
    with pytest.raises(QDQRewriteError, match="relax.nn.softmax"):
        from_onnx(model, batch=4, hard_fail=True)
    compiled = compile_model(mod, pipeline_options={"qdq_framework": "onnx"})
    x = np.random.default_rng(0).uniform(-6, 6, (4, 8)).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    steps = np.abs(compiled(x)[0] - sess.run(None, {"x": x})[0]) * 256
    assert steps.max() <= 1.0 + 1e-6


def test_qoperator_needs_constant_scales():
    """QLinearConv's int32 bias is dequantized at x_scale * w_scale, which must be known."""
    w = numpy_helper.from_array(np.ones((2, 1, 1, 1), np.int8), "w")
    consts = [
        w,
        numpy_helper.from_array(np.float32([0.1, 0.2]), "w_s"),
        numpy_helper.from_array(np.int8([0, 0]), "w_z"),
        numpy_helper.from_array(np.int8(0), "x_z"),
        numpy_helper.from_array(np.float32(0.1), "y_s"),
        numpy_helper.from_array(np.int8(0), "y_z"),
        numpy_helper.from_array(np.int32([1, 2]), "b"),
    ]
    node = helper.make_node(
        "QLinearConv", ["x", "x_s", "x_z", "w", "w_s", "w_z", "y_s", "y_z", "b"], ["y"]
    )
    graph = helper.make_graph(
        [node],
        "qconv",
        [
            helper.make_tensor_value_info("x", TensorProto.INT8, [1, 1, 3, 3]),
            helper.make_tensor_value_info("x_s", TensorProto.FLOAT, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.INT8, [1, 2, 3, 3])],
        consts,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(OnnxImportError, match="QLinearConv x_scale must be a constant"):
        from_onnx(model)


def test_compile_model_reports_a_bad_onnx_file(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x08\x07 not a model")
    with pytest.raises(OnnxImportError, match="broken.onnx"):
        compile_model(path)

"""ONNX elementwise ops on one quantized tensor (``DQ -> f -> Q``) as lookup tables, against
onnxruntime on every int8/uint8 input value."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from tvm import relax

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from tvm_qnn_ext.compile import compile_model  # noqa: E402
from tvm_qnn_ext.frontend.onnx import from_onnx  # noqa: E402

# op, attributes, extra constant inputs, input scale, output scale (zero points chosen per dtype)
OPS = [
    ("Sigmoid", {}, [], 0.05, 1 / 256),
    ("Tanh", {}, [], 0.03, 1 / 128),
    ("HardSigmoid", {"alpha": 0.2, "beta": 0.5}, [], 0.05, 1 / 256),
    ("HardSwish", {}, [], 0.04, 6 / 255),
    ("LeakyRelu", {"alpha": 0.1}, [], 0.05, 0.04),
    ("Exp", {}, [], 0.02, 0.06),
    ("Softplus", {}, [], 0.05, 0.03),
    ("Gelu", {}, [], 0.03, 0.02),
    ("Elu", {"alpha": 1.0}, [], 0.04, 0.03),
    ("Mul", {}, [np.float32(0.7)], 0.05, 0.03),
    ("Add", {}, [np.float32(-0.4)], 0.05, 0.05),
]
# Measured here (onnxruntime 1.32) against both its optimized and unoptimized sessions, every
# 8-bit input of each op in both dtypes, plus swish (x * sigmoid(x), two quantized factors):
# {0: 6142, 1: 2}, the 2 in swish's product, which onnxruntime forms from rounded floats.


def _zero_point(dtype: str, op: str) -> int:
    low_only = op in ("Sigmoid", "HardSigmoid", "Exp", "Softplus")
    if dtype == "uint8":
        return 0 if low_only else 128
    return -128 if low_only else 0


def _model():
    nodes, inputs, outputs, inits, cases = [], [], [], [], []
    for op, attrs, extra, s_in, s_out in OPS:
        for dtype in ("int8", "uint8"):
            tag = f"{op.lower()}_{dtype}"
            elem = TensorProto.INT8 if dtype == "int8" else TensorProto.UINT8
            zi = 0 if dtype == "int8" else 128
            zo = _zero_point(dtype, op)
            inits += [
                numpy_helper.from_array(np.float32(s_in), f"{tag}_si"),
                numpy_helper.from_array(np.array(zi, dtype), f"{tag}_zi"),
                numpy_helper.from_array(np.float32(s_out), f"{tag}_so"),
                numpy_helper.from_array(np.array(zo, dtype), f"{tag}_zo"),
            ]
            extra_names = []
            for j, c in enumerate(extra):
                inits.append(numpy_helper.from_array(c, f"{tag}_c{j}"))
                extra_names.append(f"{tag}_c{j}")
            nodes += [
                helper.make_node("QuantizeLinear", [tag, f"{tag}_si", f"{tag}_zi"], [f"{tag}_q"]),
                helper.make_node(
                    "DequantizeLinear", [f"{tag}_q", f"{tag}_si", f"{tag}_zi"], [f"{tag}_f"]
                ),
                helper.make_node(op, [f"{tag}_f", *extra_names], [f"{tag}_y"], **attrs),
                helper.make_node(
                    "QuantizeLinear", [f"{tag}_y", f"{tag}_so", f"{tag}_zo"], [f"{tag}_out"]
                ),
            ]
            inputs.append(helper.make_tensor_value_info(tag, TensorProto.FLOAT, [256]))
            outputs.append(helper.make_tensor_value_info(f"{tag}_out", elem, [256]))
            # every 8-bit value, dequantized exactly as the model's QuantizeLinear will see it
            q = np.arange(*((-128, 128) if dtype == "int8" else (0, 256)))
            cases.append((tag, ((q - zi) * np.float32(s_in)).astype(np.float32)))
    for dtype in ("int8", "uint8"):  # swish: x * sigmoid(x), a product of two quantized tensors
        tag, zi = f"swish_{dtype}", 0 if dtype == "int8" else 128
        elem = TensorProto.INT8 if dtype == "int8" else TensorProto.UINT8
        zs = -128 if dtype == "int8" else 0
        params = {"x": (0.04, zi), "s": (1 / 256, zs), "y": (0.03, zi - 40)}
        for k, (scale, zp) in params.items():
            inits.append(numpy_helper.from_array(np.float32(scale), f"{tag}_{k}s"))
            inits.append(numpy_helper.from_array(np.array(zp, dtype), f"{tag}_{k}z"))

        def qdq(src, k, out, tag=tag):
            q = [f"{tag}_{k}s", f"{tag}_{k}z"]
            return [
                helper.make_node("QuantizeLinear", [src, *q], [f"{out}_q"]),
                helper.make_node("DequantizeLinear", [f"{out}_q", *q], [out]),
            ]

        nodes += qdq(tag, "x", f"{tag}_xf")
        nodes.append(helper.make_node("Sigmoid", [f"{tag}_xf"], [f"{tag}_sig"]))
        nodes += qdq(f"{tag}_sig", "s", f"{tag}_sf")
        nodes.append(helper.make_node("Mul", [f"{tag}_xf", f"{tag}_sf"], [f"{tag}_y"]))
        yq = [f"{tag}_ys", f"{tag}_yz"]
        nodes.append(helper.make_node("QuantizeLinear", [f"{tag}_y", *yq], [f"{tag}_out"]))
        inputs.append(helper.make_tensor_value_info(tag, TensorProto.FLOAT, [256]))
        outputs.append(helper.make_tensor_value_info(f"{tag}_out", elem, [256]))
        q = np.arange(*((-128, 128) if dtype == "int8" else (0, 256)))
        cases.append((tag, ((q - zi) * np.float32(0.04)).astype(np.float32)))
    graph = helper.make_graph(nodes, "unary", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), dict(cases)


def test_elementwise_tables_match_onnxruntime():
    model, feeds = _model()
    mod, report = from_onnx(model, hard_fail=True, return_report=True)
    assert report.left_in_float == []
    tables = [
        b
        for b in mod["main"].body.blocks[0].bindings
        if isinstance(b.value, relax.Call) and getattr(b.value.op, "name", "") == "qnn.lookup_table"
    ]
    assert len(tables) == 2 * len(OPS) + 2  # and swish's sigmoid; its product is a requantize
    compiled = compile_model(mod, pipeline_options={"qdq_framework": "onnx"})
    names = [i.name for i in model.graph.input]
    ours = dict(
        zip([o.name for o in model.graph.output], compiled(*[feeds[n] for n in names]), strict=True)
    )
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    for name, opts in (("optimized", ort.SessionOptions()), ("reference", plain)):
        sess = ort.InferenceSession(
            model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )
        theirs = dict(zip([o.name for o in model.graph.output], sess.run(None, feeds), strict=True))
        steps = {n: np.abs(ours[n].astype(np.int64) - theirs[n].astype(np.int64)) for n in ours}
        hist = dict(sorted(Counter(int(v) for s in steps.values() for v in s).items()))
        print(f"elementwise tables vs onnxruntime {name}: {hist}")
        worst = {n: int(s.max()) for n, s in steps.items() if s.max()}
        assert max(hist) <= 1, worst
        assert hist[0] / sum(hist.values()) >= 0.99, (hist, worst)

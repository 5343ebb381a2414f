"""int8 MobileNetV2-224 (made offline with TensorFlow) equals LiteRT's builtin kernels bit for bit.

The two models, per-channel and per-tensor weights, are made by
``/work/tfvenv/bin/python benchmarks/make_mobilenetv2.py`` into the model cache (see
docs/MODELS.md); TensorFlow is not part of the project's install, so each test skips when its
model is absent.
"""

from __future__ import annotations

import numpy as np
import pytest
import tflite
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from tvm_qnn_ext import compile_model
from tvm_qnn_ext.models import default_cache_dir
from tvm_qnn_ext.oracle import io_specs, litert, random_input
from tvm_qnn_ext.testing.litert import LiteRTRunner

SAMPLES = 20
LAYER_SAMPLES = 3
MODELS = {
    "per_channel": "mobilenet_v2_224_int8_per_channel.tflite",
    "per_tensor": "mobilenet_v2_224_int8_per_tensor.tflite",
}
WEIGHTED = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request) -> tuple[str, bytes]:
    path = default_cache_dir() / MODELS[request.param]
    if not path.is_file():
        pytest.skip(
            f"{path} is absent: TensorFlow makes it offline, outside the default install; run "
            "`/work/tfvenv/bin/python benchmarks/make_mobilenetv2.py` (docs/MODELS.md)"
        )
    return request.param, path.read_bytes()


def _weight_scales(data: bytes) -> dict[str, set[int]]:
    """op name -> the set of scale counts of its weight tensors."""
    from tflite.BuiltinOperator import BuiltinOperator

    names = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
    m = tflite.Model.GetRootAsModel(data, 0)
    g = m.Subgraphs(0)
    found: dict[str, set[int]] = {}
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        c = m.OperatorCodes(op.OpcodeIndex())
        name = names[max(c.BuiltinCode(), c.DeprecatedBuiltinCode())]
        if name in WEIGHTED:
            q = g.Tensors(int(op.Inputs(1))).Quantization()
            found.setdefault(name, set()).add(q.ScaleLength())
    return found


def test_weights_are_quantized_as_named(model):
    kind, data = model
    scales = _weight_scales(data)
    assert set(scales) == WEIGHTED
    for name, counts in scales.items():
        if kind == "per_tensor":
            assert counts == {1}, f"{name}: scale counts {counts}"
        else:
            assert 1 not in counts, f"{name}: scale counts {counts}"


def test_mobilenetv2_matches_litert(model):
    kind, data = model
    (spec,), (out_spec,) = io_specs(data)
    assert spec.dtype == "int8" and spec.shape == (1, 224, 224, 3)
    assert out_spec.dtype == "int8" and out_spec.shape == (1, 1000)
    compiled = compile_model(data)
    oracle = litert(data)
    rng = np.random.default_rng(0)
    refs, worst, where = [], 0, None
    for i in range(SAMPLES):
        x = random_input(spec, rng)
        (ours,), (ref,) = compiled(x), oracle([x])
        assert ours.shape == ref.shape and ours.dtype == ref.dtype
        diff = np.abs(ours.astype(np.int64) - ref.astype(np.int64))
        if diff.max() > worst:
            worst, where = int(diff.max()), (i, int((diff > 0).sum()))
        refs.append(ref)
    # The comparison means something only if the reference output depends on the input.
    refs = np.stack(refs)
    assert (refs != refs[0]).any(axis=0).sum() >= 100, "reference output barely varies"
    assert len({int(r.argmax()) for r in refs}) > 1, "reference argmax is the same for all"
    assert worst == 0, (
        f"{kind}: max difference {worst} steps over {SAMPLES} samples "
        f"(first worst sample {where[0]}: {where[1]} of 1000 outputs differ)"
    )


def test_every_layer_matches_litert(model):
    """Every operator's output, exposed with ``outputs=``, equals LiteRT's preserved tensor."""
    kind, data = model
    (spec,), _ = io_specs(data)
    runner = LiteRTRunner(data)  # builtin kernels, 1 thread
    # preserve_all_tensors keeps every intermediate readable after invoke
    interp = Interpreter(
        model_content=data,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        experimental_preserve_all_tensors=True,
        num_threads=1,
    )
    interp.allocate_tensors()
    ops = interp._get_ops_details()
    tensors = [int(d["outputs"][0]) for d in ops]
    compiled = compile_model(data, outputs=tensors)
    rng = np.random.default_rng(1)
    for s in range(LAYER_SAMPLES):
        x = random_input(spec, rng)
        interp.set_tensor(interp.get_input_details()[0]["index"], x)
        interp.invoke()
        ours = compiled(x)
        assert len(ours) == len(tensors)
        for k, (t, o) in enumerate(zip(tensors, ours, strict=True)):
            r = interp.get_tensor(t)
            diff = int(np.max(np.abs(o.astype(np.int64) - r.astype(np.int64))))
            assert diff == 0, (
                f"{kind}, sample {s}: first differing layer is op {k} {ops[k]['op_name']} "
                f"(tensor {t}): max difference {diff}, {int((o != r).sum())} elements differ"
            )
        # the final output of the plain builtin runner agrees with the preserving interpreter
        np.testing.assert_array_equal(runner([x])[0], interp.get_tensor(tensors[-1]))

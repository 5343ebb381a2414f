"""Real int8 models: our compiled module equals LiteRT's builtin kernels bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from tvm_qnn_ext import compile_model
from tvm_qnn_ext.frontend.tflite import TFLiteImportError, from_tflite
from tvm_qnn_ext.models import EXPECTED_MODELS
from tvm_qnn_ext.oracle import io_specs, litert, random_input

SAMPLES = 20


def pytest_generate_tests(metafunc):
    if "model_name" in metafunc.fixturenames:
        metafunc.parametrize("model_name", EXPECTED_MODELS)


def _steps(ours: np.ndarray, ref: np.ndarray, scale: float | None) -> int:
    """Largest difference in quantized output steps (float outputs divide by their scale)."""
    if ours.dtype.kind == "f":
        return int(np.round(np.max(np.abs(ours - ref)) / scale)) if ours.size else 0
    return int(np.max(np.abs(ours.astype(np.int64) - ref.astype(np.int64)))) if ours.size else 0


def test_model_matches_litert(model_name, models):
    _check(models[model_name].read_bytes(), model_name, SAMPLES)


@pytest.mark.slow
def test_model_matches_litert_100_samples(model_name, models):
    _check(models[model_name].read_bytes(), model_name, 100)


def _check(data: bytes, model_name: str, samples: int) -> None:
    ins, outs = io_specs(data)
    compiled = compile_model(data)
    oracle = litert(data)
    rng = np.random.default_rng(0)
    worst = 0
    for _ in range(samples):
        arrays = [random_input(s, rng) for s in ins]
        ours, ref = compiled(*arrays), oracle(arrays)
        assert len(ours) == len(ref)
        for o, r, spec in zip(ours, ref, outs, strict=True):
            assert o.shape == r.shape and o.dtype == r.dtype
            worst = max(worst, _steps(o, r, spec.scale))
    assert worst == 0, f"{model_name}: max difference {worst} steps over {samples} samples"


def test_imported_graph_is_integer_between_edges(model_name, models):
    """Weights stay int8, bias int32, and float appears only at QUANTIZE/DEQUANTIZE edges."""
    mod = from_tflite(models[model_name])
    text = mod.script()
    assert "R.nn.conv2d" not in text and "R.matmul" not in text
    func = mod["main"]
    float_producers = set()
    for block in func.body.blocks:
        for binding in block.bindings:
            ty = binding.var.ty
            if getattr(ty, "dtype", None) == "float32":
                float_producers.add(getattr(binding.value, "op", None) and binding.value.op.name)
    assert float_producers <= {"qnn.dequantize", None}, float_producers


def test_corrupt_model_gives_clear_error(tmp_path):
    with pytest.raises(TFLiteImportError, match="not a TFLite"):
        from_tflite(b"this is not a model at all")
    with pytest.raises(TFLiteImportError, match="cannot read"):
        from_tflite(tmp_path / "missing.tflite")

"""Differential fuzzing: random int8/uint8 TFLite models through our importer and compiler vs
LiteRT's builtin kernels, bit for bit (see tvm_qnn_ext.testing.fuzz_tflite)."""

from __future__ import annotations

import numpy as np
import pytest

from tvm_qnn_ext.testing import fuzz_tflite as fz

pytest.importorskip("ai_edge_litert")


def _explain(report: fz.FuzzReport) -> str:
    return "\n".join(
        f"{p.kind}: {'+'.join(p.ops)} {p.dtype} max diff {p.max_diff:g}: {p.detail[:300]}"
        for p in report.problems[:10]
    )


def test_fuzz_single_and_multi_op(tmp_path):
    report = fz.run_fuzz(150, seed=1234, n_multi=21, samples=2, out_dir=tmp_path)
    assert report.cases == 171
    assert set(report.per_op) == set(fz.fuzz_ops())  # every generated op was exercised
    assert not report.problems, _explain(report)


NEW_GENERATORS = [
    "EXPAND_DIMS",
    "RESIZE_NEAREST_NEIGHBOR",
    "RESIZE_BILINEAR",
    "PRELU",
    "ADD",
    "SUB",
]


def test_fuzz_new_generators(tmp_path):
    """Broadcast ADD/SUB forms, PRELU, both resizes and EXPAND_DIMS: 48 more cases."""
    cases = fz.generate_cases(48, 4321, NEW_GENERATORS)
    report = fz.run_cases(cases, samples=2, out_dir=tmp_path, seed=4321)
    assert report.cases == 48 and set(report.per_op) == set(NEW_GENERATORS)
    assert not report.problems, _explain(report)


def test_generated_models_use_realistic_quantization():
    """Output scales cover the op's float range: most models saturate few outputs (about 15%
    of models are deliberate edge cases with scales far too small or large)."""
    from tvm_qnn_ext.frontend.tflite import read_model
    from tvm_qnn_ext.testing.litert import LiteRTRunner

    cases = fz.generate_cases(240, 5, ["CONV_2D", "FULLY_CONNECTED", "ADD", "MUL", "MEAN"])
    fractions = []
    for case in cases:
        if read_model(case.model).operators[0].options.get("fused_activation_function", 0):
            continue  # a fused RELU6 / RELU_N1_TO_1 saturates by design
        runner = LiteRTRunner(case.model)
        out = fz.invoke_litert(runner, fz.random_inputs(case, np.random.default_rng(0)))[0]
        lo, hi = (-128, 127) if runner.outputs[0].dtype == "int8" else (0, 255)
        fractions.append(float(((out == lo) | (out == hi)).mean()))
    assert len(fractions) > 50
    assert np.mean(np.array(fractions) < 0.1) > 0.7, sorted(fractions)


def test_harness_detects_a_rounding_bug(monkeypatch, tmp_path):
    """Reintroduce a real bug the fuzzer found (QUANTIZE from float rounding like TFLite's
    reference kernel instead of LiteRT's SIMD blocks): the harness reports it, with a
    reproducer on disk."""
    from tvm_qnn_ext import op as qnn

    real = qnn.quantize
    monkeypatch.setattr(qnn, "quantize", lambda *a, **kw: real(*a, **{**kw, "rounding": "tflite"}))
    cases = fz.generate_cases(12, 3, [fz.FLOAT_QUANTIZE])
    report = fz.run_cases(cases, samples=3, out_dir=tmp_path, seed=3)
    assert report.mismatches, "the harness missed a known off-by-one"
    assert all(p.max_diff == 1 for p in report.mismatches)
    assert (tmp_path / f"case_3_{report.mismatches[0].index}_1.tflite").exists()


def test_harness_detects_broadcast_add_rounding(monkeypatch, tmp_path):
    """Drop the LiteRT SIMD-loop model of ADD (plain TFLite reference rounding): the fuzzer's
    tie-heavy broadcast ADD cases expose it."""
    from tvm_qnn_ext import op as qnn

    real = qnn.add
    monkeypatch.setattr(qnn, "add", lambda *a, **kw: real(*a, **{**kw, "litert_simd": False}))
    cases = fz.generate_cases(40, 8, ["ADD"])
    report = fz.run_cases(cases, samples=3, out_dir=tmp_path, seed=8)
    assert report.mismatches, "the harness missed LiteRT's SIMD rounding"
    assert all(p.max_diff == 1 for p in report.mismatches)


@pytest.mark.slow
def test_fuzz_thousands():
    report = fz.run_fuzz(3000, seed=77, n_multi=300, samples=3)
    assert report.cases == 3300
    assert not report.problems, _explain(report)

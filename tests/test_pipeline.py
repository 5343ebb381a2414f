"""The named "qnn" pipeline: stage order, registration with TVM, tracing, and what it builds."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from tvm_qnn_ext import compile_model
from tvm_qnn_ext.frontend.tflite import from_tflite
from tvm_qnn_ext.oracle import io_specs, litert, random_input, read_tflite
from tvm_qnn_ext.target import resolve_target
from tvm_qnn_ext.transform import collect_reports, report, run_stages, stages


def test_stages_are_ordered_and_named_uniquely():
    found = stages()
    names = [s.name for s in found]
    assert len(names) == len(set(names))
    assert [s.order for s in found] == sorted(s.order for s in found)
    assert {"legalize", "fuse", "schedule"} <= set(names)
    assert names.index("legalize") < names.index("fuse") < names.index("schedule")


def test_qnn_pipeline_is_registered_with_tvm():
    import tvm_qnn_ext.transform.pipeline  # noqa: F401

    assert isinstance(relax.get_pipeline("qnn", target=resolve_target("llvm")), tvm.transform.Pass)


def test_reports_are_collected_only_inside_the_block():
    report("nobody", "dropped")
    with collect_reports() as entries:
        report("stage", "kept")
    assert [str(e) for e in entries] == ["[stage] kept"]


def test_trace_keeps_each_stage_and_fuses_conv_with_requantize(models):
    mod = from_tflite(models["image_classification"])
    out, results = run_stages(mod, resolve_target("llvm"), trace=True)
    assert [r.stage.name for r in results] == [s.name for s in stages()]
    for r in results:
        assert r.after is not None and r.before is not None
    fused = [gv.name_hint for gv in out.functions if "conv2d" in gv.name_hint]
    assert fused and all("requantize" in n for n in fused), fused


def test_compiled_pipeline_matches_litert(models):
    data = read_tflite(models["keyword_spotting_on_off_v3"])
    model = compile_model(data, target="llvm")
    oracle = litert(data)
    rng = np.random.default_rng(0)
    inputs, _ = io_specs(data)
    for _ in range(3):
        xs = [random_input(spec, rng) for spec in inputs]
        for a, b in zip(model(*xs), oracle(xs), strict=True):
            np.testing.assert_array_equal(a, b)


def test_pipeline_without_target_is_refused():
    import tvm_qnn_ext.transform.pipeline  # noqa: F401

    with pytest.raises(Exception, match="needs a target"):
        relax.get_pipeline("qnn")(tvm.IRModule())

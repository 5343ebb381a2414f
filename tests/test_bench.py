"""tvm_qnn_ext.bench and benchmarks/: every engine timed on a small model, its outputs compared
with LiteRT builtin, thread counts in their own processes, and the suite's markdown."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from tvm_qnn_ext.bench import ENGINES, Timing, bench_in_subprocess, bench_model, format_timings
from tvm_qnn_ext.testing.tflite_builder import ModelBuilder

ROOT = Path(__file__).resolve().parent.parent
needs_importer = pytest.mark.skipif(
    importlib.util.find_spec("tvm_qnn_ext.frontend.tflite") is None,
    reason="the TFLite importer is not there yet",
)


def _add_model() -> bytes:
    """int8 ADD of two inputs with different scales (a rescaling kernel, not a copy)."""
    mb = ModelBuilder()
    a = mb.add_tensor("a", (1, 8, 8, 16), "int8", scale=0.05, zero_point=-3)
    b = mb.add_tensor("b", (1, 8, 8, 16), "int8", scale=0.03, zero_point=4)
    y = mb.add_tensor("y", (1, 8, 8, 16), "int8", scale=0.07, zero_point=1)
    mb.add_op("ADD", [a, b], [y])
    return mb.finish(inputs=[a, b], outputs=[y])


@pytest.fixture(scope="module")
def add_model(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("bench") / "add.tflite"
    p.write_bytes(_add_model())
    return p


@needs_importer
def test_every_engine_is_timed_or_says_why(add_model, tmp_path):
    timings = bench_model(add_model, ENGINES, repeat=3, warmup=1, budget_s=0, cache=tmp_path)
    by = {t.engine: t for t in timings}
    assert list(by) == list(ENGINES)
    for engine in ("tvm_qnn_ext", "litert_builtin", "litert_xnnpack", "stock_tvm"):
        assert by[engine].ms is not None and by[engine].ms > 0, by[engine]
    # bit-exact with the oracle on the benchmark inputs; the oracle against itself is 0 too
    assert by["tvm_qnn_ext"].maxdiff == 0
    assert by["litert_builtin"].maxdiff == 0
    assert by["onnxruntime"].ms is None and "ONNX" in by["onnxruntime"].note
    # the compiled libraries were kept for the next thread count
    assert (tmp_path / "add.ours.so").is_file() and (tmp_path / "add.stock.so").is_file()
    again = bench_model(add_model, ["tvm_qnn_ext"], repeat=2, warmup=0, budget_s=0, cache=tmp_path)
    assert again[0].maxdiff == 0


@needs_importer
def test_two_threads_run_in_their_own_process(add_model, tmp_path):
    (t,) = bench_in_subprocess(add_model, ["tvm_qnn_ext"], threads=2, repeat=3, budget_s=0)
    assert t.engine == "tvm_qnn_ext" and t.ms > 0 and t.maxdiff == 0


def test_worker_refuses_a_thread_count_its_pool_does_not_have(add_model, monkeypatch):
    import subprocess

    monkeypatch.delenv("TVM_NUM_THREADS", raising=False)
    cmd = [sys.executable, "-m", "tvm_qnn_ext.bench", str(add_model), "--threads", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode != 0 and "TVM_NUM_THREADS=2" in proc.stderr


def test_bad_arguments_name_the_problem(add_model):
    with pytest.raises(ValueError, match="unknown engine"):
        bench_model(add_model, ["tensorrt"])
    with pytest.raises(ValueError, match="threads must be >= 1"):
        bench_model(add_model, ["litert_builtin"], threads=0)
    with pytest.raises(RuntimeError, match="failed"):
        bench_in_subprocess(add_model.with_name("missing.tflite"), ["litert_builtin"])


def test_report_gives_ratios_of_the_measured_engines():
    timings = [
        Timing("tvm_qnn_ext", 2.0, maxdiff=0.0),
        Timing("stock_tvm", 100.0),
        Timing("litert_builtin", 4.0),
        Timing("onnxruntime", None, "no converter"),
    ]
    text = format_timings("m.tflite", timings, 1)
    assert "n/a   (no converter)" in text
    assert "litert_builtin=2.00x" in text and "stock_tvm=50.00x" in text
    assert (
        text.splitlines()[-1] == "ratio tvm_qnn_ext/litert_builtin=0.50 tvm_qnn_ext/stock_tvm=0.02"
    )


def _suite():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import suite
    finally:
        sys.path.pop(0)
    return suite


def test_suite_markdown_has_medians_speedups_geomean_and_scaling():
    suite = _suite()
    rows = {
        "a": {
            1: [
                Timing("tvm_qnn_ext", 1.0),
                Timing("litert_builtin", 4.0),
                Timing("stock_tvm", 50.0),
            ],
            2: [Timing("tvm_qnn_ext", 0.5), Timing("litert_builtin", 3.0)],
        },
        "b": {
            1: [
                Timing("tvm_qnn_ext", 2.0),
                Timing("litert_builtin", 2.0),
                Timing("stock_tvm", None, "x"),
            ],
            2: [Timing("tvm_qnn_ext", 2.0), Timing("litert_builtin", 2.0)],
        },
    }
    md = suite.markdown(rows, [1, 2])
    row_a = next(ln for ln in md.splitlines() if ln.startswith("| a |"))
    assert "| 1.000 |" in row_a and "| 4.00 |" in row_a and "| 50.00 |" in row_a
    geo = next(ln for ln in md.splitlines() if ln.startswith("| **geomean**"))
    assert f"**{np.sqrt(4.0 * 1.0):.2f}**" in geo  # builtin/ours over a and b at 1 thread
    assert "| a | 2.00x |" in md  # 1 thread / 2 threads
    assert "* stock_tvm: x (b)" in md


@needs_importer
def test_tvm_qnn_bench_prints_every_column(add_model, capsys):
    from tvm_qnn_ext import cli

    argv = ["bench", str(add_model), "--repeat", "3", "--warmup", "1", "--budget", "0"]
    assert cli.main(argv + ["--engines", "tvm_qnn_ext,litert_builtin"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("tvm_qnn_ext"))
    assert float(line.split()[1]) > 0 and "max diff vs LiteRT builtin 0" in line
    assert cli.main(argv + ["--engines", "tvm_qnn_ext,nope"]) == 1
    assert "unknown engine(s) ['nope']" in capsys.readouterr().err


def test_peak_kernel_is_correct_and_reports_json(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import peak
    finally:
        sys.path.pop(0)
    if peak.vnni_instruction() is None:
        assert peak.measure_peak_gops(1) is None
        return
    gops = peak.measure_peak_gops(1, repeat=1)  # checks every lane of the result itself
    assert gops > 10
    gemm = {"shape": [512, 512, 512], "instruction": "vnni", "gops": 300.0, "vpdpbusd": 8}
    md = peak.kernel_markdown([{"threads": 1, "cpu": "c", "peak_gops": 400.0, "gemm": [gemm]}])
    assert "| 512x512x512 | vnni | 300 | 75% | 8 |" in md

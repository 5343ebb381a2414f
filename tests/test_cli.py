"""tvm-qnn: every command on small single-op models checked against LiteRT, and error paths."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tvm_qnn_ext import cli
from tvm_qnn_ext.oracle import IOSpec, io_specs, random_input
from tvm_qnn_ext.testing.litert import run_litert
from tvm_qnn_ext.testing.tflite_builder import ModelBuilder

needs_importer = pytest.mark.skipif(
    importlib.util.find_spec("tvm_qnn_ext.frontend.tflite") is None,
    reason="the TFLite importer tvm_qnn_ext.frontend.tflite is not there yet",
)


def _requantize_model(out_zp: int = 5, out_scale: float = 0.07) -> bytes:
    """int8 -> int8 QUANTIZE: TFLite's requantize."""
    mb = ModelBuilder()
    x = mb.add_tensor("x", (1, 4, 4, 8), "int8", scale=0.05, zero_point=-3)
    y = mb.add_tensor("y", (1, 4, 4, 8), "int8", scale=out_scale, zero_point=out_zp)
    mb.add_op("QUANTIZE", [x], [y])
    return mb.finish(inputs=[x], outputs=[y])


def _qdq_model(scale: float = 0.05) -> bytes:
    """float32 -> QUANTIZE -> DEQUANTIZE -> float32."""
    mb = ModelBuilder()
    x = mb.add_tensor("x", (1, 16), "float32")
    q = mb.add_tensor("q", (1, 16), "int8", scale=scale, zero_point=-3)
    y = mb.add_tensor("y", (1, 16), "float32")
    mb.add_op("QUANTIZE", [x], [q])
    mb.add_op("DEQUANTIZE", [q], [y])
    return mb.finish(inputs=[x], outputs=[y])


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(err: str, *needles: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.startswith("tvm-qnn")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


# ------------------------------------------------------------------------- error handling


def test_tune_is_not_faked(capsys):
    code, out, err = _run(capsys, "tune")
    assert code == 2
    _one_error_line(err, "not implemented yet: see issue 5")
    assert out == ""


@pytest.mark.parametrize("command", ["explain", "compile", "check", "bench"])
def test_missing_model_file(capsys, tmp_path, command):
    extra = ["-o", str(tmp_path / "o.so")] if command == "compile" else []
    code, _, err = _run(capsys, command, str(tmp_path / "nope.tflite"), *extra)
    assert code == 1
    _one_error_line(err, "model file not found", "nope.tflite")


def test_unknown_model_name_points_to_models_list(capsys):
    code, _, err = _run(capsys, "explain", "no_such_model_xyz")
    assert code == 1
    _one_error_line(err, "no_such_model_xyz", "tvm-qnn models list")


def test_corrupt_model(capsys, tmp_path):
    bad = _write(tmp_path, "bad.tflite", b"this is not a flatbuffer at all")
    code, _, err = _run(capsys, "check", str(bad))
    assert code == 1
    _one_error_line(err, "not a TFLite model")


def test_unsupported_format(capsys, tmp_path):
    f = _write(tmp_path, "model.caffemodel", b"\x08\x07")
    code, _, err = _run(capsys, "explain", str(f))
    assert code == 1
    _one_error_line(err, "unsupported model format '.caffemodel'")


def test_corrupt_onnx_is_named(capsys, tmp_path):
    f = _write(tmp_path, "model.onnx", b"\x08\x07")
    code, _, err = _run(capsys, "explain", str(f))
    assert code == 1
    _one_error_line(err, "not an ONNX model")


def test_errors_have_no_traceback_in_a_real_process(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "tvm_qnn_ext.cli", "run", str(tmp_path / "m.so"), "--input", "x"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "compiled module not found" in proc.stderr


def test_models_list_on_empty_cache(capsys, tmp_path):
    code, _, err = _run(capsys, "models", "list", "--cache", str(tmp_path))
    assert code == 1
    assert "tvm-qnn models fetch" in err


def test_models_list_shows_the_cache(capsys, models):
    code, out, _ = _run(capsys, "models", "list")
    assert code == 0
    names = [ln.split()[0] for ln in out.splitlines()]
    assert sorted(names) == sorted(models)


def test_random_float_input_covers_the_quantized_range():
    spec = IOSpec("x", (4000,), "float32", "int8", 0.05, -3)
    x = random_input(spec, np.random.default_rng(1))
    lo, hi = (-128 + 3) * 0.05, (127 + 3) * 0.05
    assert x.dtype == np.float32
    assert lo <= x.min() < lo + 0.05 and hi - 0.05 < x.max() <= hi
    q = random_input(IOSpec("q", (4000,), "uint8", "uint8", 1.0, 0), np.random.default_rng(1))
    assert q.dtype == np.uint8 and q.min() == 0 and q.max() == 255


def test_io_specs_follow_quantize_and_dequantize():
    ins, outs = io_specs(_qdq_model())
    assert (ins[0].dtype, ins[0].qdtype, ins[0].zero_point) == ("float32", "int8", -3)
    assert outs[0].scale == pytest.approx(0.05) and outs[0].dtype == "float32"


# --------------------------------------------------------------- commands (need importer)


@needs_importer
def test_check_agrees_with_litert(capsys, tmp_path):
    model = _write(tmp_path, "rq.tflite", _requantize_model())
    code, out, _ = _run(capsys, "check", str(model), "--samples", "4", "--seed", "3")
    assert code == 0, out
    assert out.splitlines()[-1] == "maxdiff=0 over 4 samples"


@needs_importer
def test_check_float_io_model(capsys, tmp_path):
    model = _write(tmp_path, "qdq.tflite", _qdq_model())
    code, out, _ = _run(capsys, "check", str(model), "--samples", "30")
    assert code == 0, out
    assert out.splitlines()[-1] == "maxdiff=0 over 30 samples"


@needs_importer
@pytest.mark.parametrize(
    "model, wrong, expected",
    [
        # int8 output, output zero point off by one: exactly one step everywhere
        (_requantize_model, lambda: _requantize_model(out_zp=6), 1),
        # float output, quantized at twice the scale: up to one step of 0.05
        (_qdq_model, lambda: _qdq_model(scale=0.1), 1),
    ],
)
def test_check_reports_differences(capsys, tmp_path, monkeypatch, model, wrong, expected):
    """Compile a subtly different model under the original's name: check must catch it."""
    path = _write(tmp_path, "m.tflite", model())
    other = _write(tmp_path, "other.tflite", wrong())
    real_import = cli._import
    monkeypatch.setattr(cli, "_import", lambda p: real_import(other))
    code, out, _ = _run(capsys, "check", str(path), "--samples", "3")
    assert code == 1
    assert out.splitlines()[-1] == f"maxdiff={expected} over 3 samples"


@needs_importer
def test_compile_then_run_matches_litert(capsys, tmp_path):
    data = _requantize_model()
    model = _write(tmp_path, "rq.tflite", data)
    so = tmp_path / "rq.so"
    code, out, err = _run(capsys, "compile", str(model), "-o", str(so))
    assert code == 0, err
    assert so.is_file()
    x = np.random.default_rng(0).integers(-128, 128, (1, 4, 4, 8)).astype(np.int8)
    np.save(tmp_path / "x.npy", x)
    expected = run_litert(data, [x])[0]
    for runnable in (so, model):  # the compiled library, and a model compiled on the fly
        out_npz = str(tmp_path / f"out_{runnable.suffix[1:]}.npz")
        x_npy = str(tmp_path / "x.npy")
        code, _, err = _run(capsys, "run", str(runnable), "--input", x_npy, "--output", out_npz)
        assert code == 0, err
        np.testing.assert_array_equal(np.load(out_npz)["output_0"], expected)
    # printing instead of saving
    code, out, _ = _run(capsys, "run", str(so), "--input", str(tmp_path / "x.npy"))
    assert code == 0 and out.startswith("output_0 int8[1, 4, 4, 8]:")


@needs_importer
def test_run_rejects_wrong_inputs(capsys, tmp_path):
    model = _write(tmp_path, "rq.tflite", _requantize_model())
    np.save(tmp_path / "x.npy", np.zeros((1, 4, 4, 8), np.int8))
    x = str(tmp_path / "x.npy")
    code, _, err = _run(capsys, "run", str(model), "--input", x, "--input", x)
    assert code == 1
    _one_error_line(err, "model takes 1 inputs", "got 2")
    np.save(tmp_path / "f.npy", np.zeros((1, 4, 4, 8), np.float32))
    code, _, err = _run(capsys, "run", str(model), "--input", str(tmp_path / "f.npy"))
    assert code == 1
    _one_error_line(err, "expected dtype int8")
    code, _, err = _run(capsys, "run", str(model), "--input", str(tmp_path / "missing.npy"))
    assert code == 1
    _one_error_line(err, "input file not found")


@needs_importer
def test_explain_prints_qnn_ir(capsys, tmp_path):
    model = _write(tmp_path, "rq.tflite", _requantize_model())
    code, out, _ = _run(capsys, "explain", str(model))
    assert code == 0
    assert '"qnn.requantize"' in out and '"out_zero_point": [5]' in out


@needs_importer
def test_bench_reports_three_medians(capsys, tmp_path):
    model = _write(tmp_path, "qdq.tflite", _qdq_model())
    code, out, _ = _run(capsys, "bench", str(model), "--repeat", "5", "--warmup", "1")
    assert code == 0
    for name in ("tvm_qnn_ext", "litert_builtin", "litert_xnnpack"):
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(name))
        assert float(line.split()[1]) > 0
    assert out.splitlines()[-1].startswith("ratio tvm_qnn_ext/litert_builtin=")


# ------------------------------------------------------------------------ README and CI

ROOT = Path(__file__).resolve().parent.parent


def test_readme_rounding_table_matches_the_code():
    from tvm_qnn_ext.quantization import ROUNDING_MODES

    readme = (ROOT / "README.md").read_text()
    rows = [ln for ln in readme.splitlines() if ln.startswith("| `") and "` | " in ln]
    table = {ln.split("`")[1]: ln.split("` | ", 1)[1].rstrip(" |") for ln in rows}
    for mode, what in ROUNDING_MODES.items():
        assert table.get(mode) == what, f"README rounding table: {mode!r} missing or outdated"


def test_ci_runs_the_readme_test_command():
    command = ".venv/bin/python -m pytest -q"
    assert f"\n{command}\n" in (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.rstrip().splitlines()[-1] == command
    assert "set -euo pipefail" in ci

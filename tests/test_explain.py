"""tvm-qnn explain: each pipeline stage's before/after (op counts, changed lines) and reports."""

from __future__ import annotations

import re

import numpy as np
import tvm
from tvm import relax

from tvm_qnn_ext import cli
from tvm_qnn_ext import op as qnn
from tvm_qnn_ext.transform import stages
from tvm_qnn_ext.transform.explain import explain, op_counts

TARGET = tvm.target.Target({"kind": "llvm"})


def seed_module() -> tvm.IRModule:
    """conv -> bias add -> seed 003's float requantize chain -> relu -> requantize -> clip."""
    rng = np.random.default_rng(0)
    w = relax.const(rng.integers(-128, 128, (8, 3, 3, 4)).astype(np.int8))
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 6, 6, 4), "int8"))
    with bb.function("main", [x]):
        with bb.dataflow():
            acc = bb.emit(qnn.conv2d(x, w, padding=(1, 1)))
            acc = bb.emit(relax.op.add(acc, relax.const(np.arange(8, dtype=np.int32) * 100)))
            v = bb.emit(relax.op.astype(acc, "float32"))
            v = bb.emit(relax.op.multiply(v, relax.const(np.float32(0.0018843))))
            v = bb.emit(relax.op.round(v))
            v = bb.emit(relax.op.clip(v, -127.0, 127.0))
            v = bb.emit(relax.op.astype(v, "int8"))
            v = bb.emit(relax.op.nn.relu(v))
            v = bb.emit(qnn.requantize(v, 0.1, 0, 0.3, 0, "int8"))
            out = bb.emit_output(relax.op.clip(v, -10.0, 127.0))
        bb.emit_func_output(out)
    return bb.get()


def stage_section(text: str, name: str) -> str:
    match = re.search(rf"^== stage \d+ {name}:.*?(?=^== |\Z)", text, re.S | re.M)
    assert match, f"no section for stage {name}"
    return match.group(0)


def test_explain_shows_every_stage_with_counts_diffs_and_reports():
    mod = seed_module()
    text = explain(mod, TARGET)
    assert text.startswith("== imported") and '"qnn.conv2d"' in text
    for st in stages():
        stage_section(text, st.name)
    cmr = stage_section(text, "cast_multiply_round")
    assert "relax.round 1->0" in cmr and "qnn.requantize 1->2" in cmr
    assert "report: " in cmr and "proven bit-exact" in cmr
    assert re.search(r"^   -.*R\.round", cmr, re.M) and re.search(
        r"^   \+.*qnn\.requantize", cmr, re.M
    )
    assert "int32 add folded" in stage_section(text, "fold_bias_add")
    assert "clip folded" in stage_section(text, "fold_clip")
    assert "two roundings do not compose" in stage_section(text, "fold_requantize_pair")
    legal = stage_section(text, "legalize")
    assert "PrimFuncs added" in legal and "qnn.conv2d 1->0" in legal
    # Fusion leaves fewer kernels than legalization made.
    counts = re.search(r"relax\.call_tir (\d+)->(\d+)", stage_section(text, "fuse"))
    assert counts and int(counts.group(2)) < int(counts.group(1))


def test_explain_counts_match_the_modules():
    mod = seed_module()
    counts = op_counts(mod)
    assert counts["qnn.conv2d"] == 1 and counts["relax.astype"] == 2 and counts["PrimFunc"] == 0


def test_cli_explain_on_a_real_model(models, capsys):
    path = str(models["tflite_micro_speech"])
    code = cli.main(["explain", path, "--max-lines", "3", "--target", "llvm"])
    out = capsys.readouterr().out
    assert code == 0
    assert '"qnn.requantize"' in out
    legal = stage_section(out, "legalize")
    assert "more changed lines (--full)" in legal
    assert len([ln for ln in legal.splitlines() if ln.startswith(("   -", "   +"))]) == 3
    assert "report: " in stage_section(out, "schedule") or "schedule" in out


def test_cli_explain_full_prints_whole_ir(models, capsys):
    path = str(models["tflite_micro_speech"])
    assert cli.main(["explain", path, "--full", "--target", "llvm"]) == 0
    out = capsys.readouterr().out
    assert "T.prim_func" in stage_section(out, "fuse")

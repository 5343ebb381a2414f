"""Bad input to the TFLite importer: corrupt flatbuffers, unsupported ops and quantization
schemes, invalid scales, and wrong inputs at call time all give clear errors, never a crash.

The mutation loop runs in a subprocess (``python tests/test_tflite_errors.py worker ...``), so a
segfault fails the test with the mutant that caused it instead of killing pytest.
"""

from __future__ import annotations

import json
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest

from tvm_qnn_ext import compile_model
from tvm_qnn_ext.frontend.tflite import TFLiteImportError, from_tflite
from tvm_qnn_ext.testing.tflite_builder import ModelBuilder, single_op_model

MAX_RUN_ELEMENTS = 1 << 20  # mutants may declare huge shapes; those are compiled, not run


def _q(shape, dtype="int8", scale=0.05, zp=0, **kw) -> dict:
    return dict(shape=shape, dtype=dtype, scale=scale, zero_point=zp, **kw)


def _seed_models() -> list[bytes]:
    """Small valid int8 models covering the importer's main code paths."""
    from tvm_qnn_ext.testing.fuzz_tflite import generate_cases

    ops = ["CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "SOFTMAX", "SPLIT", "PAD"]
    single = generate_cases(len(ops), 11, ops)
    multi = generate_cases(3, 11, None, n_ops=3)
    return [c.model for c in single + multi]


def _mutants(model: bytes, rng: np.random.Generator, n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        b = bytearray(model)
        kind = int(rng.integers(0, 6))
        if kind == 0:  # random bytes anywhere
            for p in rng.integers(0, len(b), size=int(rng.integers(1, 9))):
                b[p] = int(rng.integers(0, 256))
        elif kind == 1:  # flips near the ends, where tables, vtables and offsets live
            for _ in range(int(rng.integers(1, 5))):
                p = int(rng.integers(0, min(256, len(b))))
                p = p if rng.random() < 0.5 else len(b) - 1 - p
                b[p] ^= 1 << int(rng.integers(0, 8))
        elif kind == 2:  # truncation
            b = b[: int(rng.integers(0, len(b)))]
        elif kind == 3:  # inserted garbage
            p = int(rng.integers(0, len(b)))
            b[p:p] = rng.integers(0, 256, size=int(rng.integers(1, 64))).astype(np.uint8).tobytes()
        elif kind == 4:  # an aligned 32-bit word set to an interesting value (offsets, lengths)
            p = 4 * int(rng.integers(0, len(b) // 4))
            v = int(rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, 64, 1 << 20]))
            b[p : p + 4] = v.to_bytes(4, "little")
        else:  # a zeroed range
            p = int(rng.integers(0, len(b)))
            b[p : p + int(rng.integers(1, 32))] = bytes(min(32, len(b) - p))[: len(b[p : p + 32])]
        out.append(bytes(b))
    return out


# ---- the subprocess workers -----------------------------------------------------------------


def _import_worker(seed: int, n_builder: int, n_real: int, real: list[str], out: Path) -> None:
    """Import every mutant; compile and run those that import.  Writes ``summary.json`` and,
    per imported mutant that ran, ``<k>.tflite`` + ``<k>.npz`` (inputs and our outputs)."""
    from tvm_qnn_ext.testing.fuzz_tflite import _compile_bisect, _flatten, _tvm_tensor

    rng = np.random.default_rng(seed)
    mutants = []
    seeds = _seed_models()
    for k, model in enumerate(seeds):
        mutants += _mutants(model, rng, n_builder // len(seeds) + (k < n_builder % len(seeds)))
    for path in real:
        mutants += _mutants(Path(path).read_bytes(), rng, n_real // max(len(real), 1))
    summary = dict(total=len(mutants), rejected=0, imported=0, ran=0, bad=[], messages=[])
    mods = {}
    for k, m in enumerate(mutants):
        print(f"import {k}", file=sys.stderr, flush=True)
        try:
            mods[f"m{k}"] = from_tflite(m)
        except TFLiteImportError as e:
            summary["rejected"] += 1
            if not str(e).strip():
                summary["bad"].append([k, "TFLiteImportError with an empty message"])
            summary["messages"].append(str(e)[:200])
        except Exception:  # noqa: BLE001 (the finding: any other exception type)
            summary["bad"].append([k, "import: " + traceback.format_exc(limit=3)[-1500:]])
    summary["imported"] = len(mods)
    failed: dict[str, str] = {}
    print("compile", file=sys.stderr, flush=True)
    for vm, names in _compile_bisect(mods, "llvm", failed):
        for name in names:
            k = int(name[1:])
            params = mods[name]["main"].params
            specs = [(tuple(int(d) for d in p.ty.shape.values), str(p.ty.dtype)) for p in params]
            if any(int(np.prod(s)) > MAX_RUN_ELEMENTS for s, _ in specs):
                continue
            print(f"run {k}", file=sys.stderr, flush=True)
            arrays = []
            for shape, dtype in specs:
                if dtype == "float32":
                    arrays.append(rng.uniform(-4, 4, size=shape).astype(np.float32))
                else:
                    info = np.iinfo(dtype)
                    arrays.append(rng.integers(info.min, info.max + 1, size=shape).astype(dtype))
            try:
                ours = _flatten(vm[name](*(_tvm_tensor(a) for a in arrays)))
            except Exception:  # noqa: BLE001
                summary["bad"].append([k, "run: " + traceback.format_exc(limit=3)[-1500:]])
                continue
            summary["ran"] += 1
            (out / f"{k}.tflite").write_bytes(mutants[k])
            saved = {f"arr_{i}": a for i, a in enumerate([*arrays, *ours])}
            np.savez(out / f"{k}.npz", n_in=len(arrays), **saved)
    for name, err in failed.items():
        summary["bad"].append([int(name[1:]), "compile: " + err])
    (out / "summary.json").write_text(json.dumps(summary))


def _litert_worker(out: Path, skip: set[int]) -> None:
    """Compare the mutants we ran with LiteRT where LiteRT accepts them too."""
    from tvm_qnn_ext.testing.litert import LiteRTRunner

    results_path = out / "litert.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for path in sorted(out.glob("*.tflite"), key=lambda p: int(p.stem)):
        k = int(path.stem)
        if str(k) in results or k in skip:
            continue
        (out / "litert.progress").write_text(str(k))
        data = np.load(out / f"{k}.npz")
        n_in = int(data["n_in"])
        arrays = [data[f"arr_{i}"] for i in range(len(data.files) - 1)]
        inputs, ours = arrays[:n_in], arrays[n_in:]
        try:
            runner = LiteRTRunner(path.read_bytes())
            ref = runner(inputs)
        except Exception as e:  # noqa: BLE001 (LiteRT rejects the mutant: nothing to compare)
            results[str(k)] = ["litert rejects", str(e)[:200]]
        else:
            same = len(ref) == len(ours) and all(
                r.shape == o.shape and r.dtype == o.dtype and np.array_equal(r, o)
                for r, o in zip(ref, ours, strict=True)
            )
            results[str(k)] = ["same" if same else "differs", ""]
        results_path.write_text(json.dumps(results))


# ---- (a) mutated flatbuffers --------------------------------------------------------------


def _run(args: list[str], timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, timeout=timeout
    )


def _last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip() and "Warning" not in ln]
    return lines[-1] if lines else ""


def test_mutated_flatbuffers_never_crash(tmp_path, request):
    pytest.importorskip("ai_edge_litert")
    real: list[str] = []
    try:
        models = request.getfixturevalue("models")
        sizes = sorted((p.stat().st_size, str(p)) for p in models.values())
        real = [p for _, p in sizes[:2]]
    except pytest.skip.Exception:
        pass
    n_builder, n_real = 220, 40 if real else 0
    proc = _run(["import", "0", str(n_builder), str(n_real), str(tmp_path), *real], 1500)
    assert proc.returncode == 0, (
        f"import worker died (rc {proc.returncode}) at {_last_line(proc.stderr)!r}:\n"
        + proc.stderr[-3000:]
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["total"] >= 200 + n_real
    assert not summary["bad"], json.dumps(summary["bad"][:5], indent=1)
    assert summary["rejected"] > 20 and summary["imported"] > 20, summary  # both paths exercised
    # LiteRT may itself crash on a corrupt model: note the mutant and carry on without it.
    skip: list[str] = []
    for _ in range(20):
        proc = _run(["litert", str(tmp_path), *skip], 900)
        if proc.returncode == 0:
            break
        skip.append((tmp_path / "litert.progress").read_text())
    results = json.loads((tmp_path / "litert.json").read_text())
    differs = sorted(int(k) for k, (v, _) in results.items() if v == "differs")
    compared = sum(v != "litert rejects" for v, _ in results.values())
    assert compared >= 20, results
    assert not differs, f"mutants {differs} import in both but outputs differ from LiteRT"


# ---- (b) unsupported models ---------------------------------------------------------------


def _unsupported_model() -> bytes:
    mb = ModelBuilder()
    x = mb.add_tensor("x", (1, 8, 8, 3), "int8", scale=0.05, zero_point=0)
    r1 = mb.add_tensor("r1", (1, 4, 4, 12), "int8", scale=0.05, zero_point=0)
    mb.add_op("SPACE_TO_DEPTH", [x], [r1], block_size=2)
    r2 = mb.add_tensor("r2", (1, 2, 2, 48), "int8", scale=0.05, zero_point=0)
    mb.add_op("SPACE_TO_DEPTH", [r1], [r2], block_size=2)
    idx = mb.add_const("idx", np.array([0, 2], np.int32))
    g = mb.add_tensor("g", (1, 2, 2, 2), "int8", scale=0.05, zero_point=0)
    mb.add_op("GATHER", [r2, idx], [g], axis=3)
    f = mb.add_tensor("f", (1, 4, 4, 3), "float32")
    w = mb.add_const("w", np.ones((2, 1, 1, 3), np.float32))
    b = mb.add_const("b", np.zeros(2, np.float32))
    fo = mb.add_tensor("fo", (1, 4, 4, 2), "float32")
    mb.add_op("CONV_2D", [f, w, b], [fo], padding="VALID")
    return mb.finish([x, f], [g, fo])


def test_unsupported_ops_listed_in_one_error():
    with pytest.raises(TFLiteImportError) as e:
        from_tflite(_unsupported_model())
    msg = str(e.value)
    assert "SPACE_TO_DEPTH x2" in msg, msg
    assert "GATHER x1" in msg, msg
    assert "CONV_2D: float32 input" in msg and "x1" in msg, msg


def test_dynamic_range_model_rejected():
    w = np.random.default_rng(0).integers(-127, 128, size=(4, 8)).astype(np.int8)
    model = single_op_model(
        "FULLY_CONNECTED",
        [dict(shape=(1, 8), dtype="float32"), _q((4, 8), scale=0.02, data=w)],
        [dict(shape=(1, 4), dtype="float32")],
    )
    with pytest.raises(TFLiteImportError, match="FULLY_CONNECTED.*dynamic-range"):
        from_tflite(model)


def test_float_model_rejected():
    mb = ModelBuilder()
    x = mb.add_tensor("x", (1, 6, 6, 2), "float32")
    w = mb.add_const("w", np.ones((3, 3, 3, 2), np.float32))
    b = mb.add_const("b", np.zeros(3, np.float32))
    y = mb.add_tensor("y", (1, 4, 4, 3), "float32")
    mb.add_op("CONV_2D", [x, w, b], [y], padding="VALID")
    z = mb.add_tensor("z", (1, 4, 4, 3), "float32")
    mb.add_op("RELU", [y], [z])
    with pytest.raises(TFLiteImportError, match="float model.*int8/uint8") as e:
        from_tflite(mb.finish([x], [z]))
    assert "CONV_2D" in str(e.value) and "RELU" in str(e.value)


def test_resource_variable_ops_rejected():
    mb = ModelBuilder()
    x = mb.add_tensor("x", (1, 4), "int8", scale=0.1, zero_point=0)
    handle = mb.add_tensor("handle", (), "int32")  # resource handles are RESOURCE-typed in TF
    mb.add_op("VAR_HANDLE", [], [handle])
    v = mb.add_tensor("v", (1, 4), "int8", scale=0.1, zero_point=0)
    mb.add_op("READ_VARIABLE", [handle], [v])
    y = mb.add_tensor("y", (1, 4), "int8", scale=0.2, zero_point=0)
    mb.add_op("ADD", [x, v], [y])
    mb.add_op("ASSIGN_VARIABLE", [handle, y], [])
    with pytest.raises(TFLiteImportError) as e:
        from_tflite(mb.finish([x], [y]))
    msg = str(e.value)
    for op in ("VAR_HANDLE x1", "READ_VARIABLE x1"):
        assert op in msg, msg


def test_variable_tensor_rejected(monkeypatch):
    import tflite

    written = []
    add_buffer = tflite.TensorAddBuffer

    def add_buffer_marking_state(b, buf):  # the builder has no variable tensors: mark "state"
        add_buffer(b, buf)
        written.append(None)
        if len(written) == 2:
            tflite.TensorAddIsVariable(b, True)

    monkeypatch.setattr(tflite, "TensorAddBuffer", add_buffer_marking_state)
    mb = ModelBuilder()
    x = mb.add_tensor("x", (1, 4), "int8", scale=0.1, zero_point=0)
    state = mb.add_tensor("state", (1, 4), "int8", scale=0.1, zero_point=0)
    y = mb.add_tensor("y", (1, 4), "int8", scale=0.2, zero_point=0)
    mb.add_op("ADD", [x, state], [y])
    model = mb.finish([x], [y])
    with pytest.raises(TFLiteImportError, match="variable tensors.*state.*stateful"):
        from_tflite(model)


@pytest.mark.parametrize("op", ["CONV_2D", "ADD"])
def test_int16x8_rejected(op):
    q16 = dict(scale=0.001, zero_point=0)
    if op == "CONV_2D":
        w = np.ones((2, 1, 1, 3), np.int8)
        model = single_op_model(
            op,
            [
                dict(shape=(1, 4, 4, 3), dtype="int16", **q16),
                _q((2, 1, 1, 3), scale=[0.01, 0.01], zp=[0, 0], data=w),
                dict(
                    shape=(2,),
                    dtype="int64",
                    scale=[1e-5] * 2,
                    zero_point=[0, 0],
                    data=np.zeros(2, np.int64),
                ),
            ],  # fmt: skip
            [dict(shape=(1, 4, 4, 2), dtype="int16", **q16)],
        )
    else:
        model = single_op_model(
            op,
            [dict(shape=(1, 8), dtype="int16", **q16)] * 2,
            [dict(shape=(1, 8), dtype="int16", **q16)],
        )
    with pytest.raises(TFLiteImportError, match=f"{op}: int16 input.*int16x8.*not supported"):
        from_tflite(model)


# ---- (c) wrong inputs at call time ----------------------------------------------------------


@pytest.fixture(scope="module")
def compiled_add():
    model = single_op_model(
        "ADD",
        [_q((1, 8), name="lhs"), _q((1, 8), name="rhs", scale=0.1)],
        [_q((1, 8), scale=0.2)],
    )
    return compile_model(model, target="llvm")


def test_call_with_wrong_inputs(compiled_add):
    good = np.zeros((1, 8), np.int8)
    assert compiled_add(good, good)[0].shape == (1, 8)
    with pytest.raises(TypeError, match="'rhs'.*int8.*float32"):
        compiled_add(good, good.astype(np.float32))
    with pytest.raises(TypeError, match="'lhs'.*int8.*uint8"):
        compiled_add(good.astype(np.uint8), good)
    with pytest.raises(ValueError, match=r"'rhs'.*\(1, 8\).*\(8,\)"):
        compiled_add(good, good.reshape(8))
    with pytest.raises(ValueError, match="takes 2 inputs, got 1"):
        compiled_add(good)


# ---- (d) invalid scales ---------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0.0, float("nan"), float("inf"), -0.5])
@pytest.mark.parametrize("where", ["activation", "weights"])
def test_invalid_scale_names_tensor(bad, where):
    w = np.ones((2, 4), np.int8)
    x_scale, w_scale = (bad, 0.02) if where == "activation" else (0.05, bad)
    model = single_op_model(
        "FULLY_CONNECTED",
        [_q((1, 4), scale=x_scale, name="act_in"), _q((2, 4), scale=w_scale, name="fc_w", data=w)],
        [_q((1, 2), scale=0.1)],
    )
    name = "act_in" if where == "activation" else "fc_w"
    with pytest.raises(TFLiteImportError, match=f"tensor '{name}'.*scale"):
        from_tflite(model)


def test_invalid_per_channel_scale_names_tensor():
    w = np.ones((3, 4), np.int8)
    model = single_op_model(
        "FULLY_CONNECTED",
        [_q((1, 4)), _q((3, 4), scale=[0.1, 0.0, 0.2], zp=[0, 0, 0], name="pc_w", data=w)],
        [_q((1, 3), scale=0.1)],
    )
    with pytest.raises(TFLiteImportError, match="tensor 'pc_w'.*scale"):
        from_tflite(model)


if __name__ == "__main__":
    if sys.argv[1] == "import":
        seed, nb, nr, out = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])
        _import_worker(seed, nb, nr, sys.argv[6:], out)
    elif sys.argv[1] == "litert":
        _litert_worker(Path(sys.argv[2]), {int(k) for k in sys.argv[3:]})

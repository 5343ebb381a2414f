"""The QNN dialect for Relax: integer operators registered from Python at import.

Each family lives in its own module; importing this package registers all of them.
"""

from . import rescale  # noqa: F401  (registers ops)
from .registry import OPS, QnnTypeError, make_call
from .rescale import dequantize, quantize, requantize

__all__ = ["OPS", "QnnTypeError", "dequantize", "make_call", "quantize", "requantize"]

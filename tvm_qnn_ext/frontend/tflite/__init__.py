"""Pre-quantized TFLite models -> QNN dialect."""

from .importer import CONVERTERS, from_tflite
from .reader import TFLiteImportError, read_model


def supported_operators() -> list[str]:
    from . import converters  # noqa: F401

    return sorted(CONVERTERS)


__all__ = ["TFLiteImportError", "from_tflite", "read_model", "supported_operators"]

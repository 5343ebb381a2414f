"""Importers: one per source framework, each producing the QNN dialect directly."""


def from_tflite(source, **options):
    """Import a .tflite model (path or bytes) as a QNN IRModule; see frontend.tflite."""
    from .tflite import from_tflite as _impl

    return _impl(source, **options)


__all__ = ["from_tflite"]

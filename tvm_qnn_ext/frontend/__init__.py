"""Importers: one per source framework, each producing the QNN dialect directly."""


def from_tflite(source, **options):
    """Import a .tflite model (path or bytes) as a QNN IRModule; see frontend.tflite."""
    from .tflite import from_tflite as _impl

    return _impl(source, **options)


def from_pytorch(model, example_inputs=None, **options):
    """Import a quantized PyTorch model (eager, FX or PT2E); see frontend.pytorch."""
    from .pytorch import from_pytorch as _impl

    return _impl(model, example_inputs, **options)


def from_onnx(source, **options):
    """Import a QDQ or QOperator int8 ONNX model (path, bytes or ModelProto); see frontend.onnx."""
    from .onnx import from_onnx as _impl

    return _impl(source, **options)


__all__ = ["from_onnx", "from_pytorch", "from_tflite"]

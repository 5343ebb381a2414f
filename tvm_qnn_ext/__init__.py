"""tvm_qnn_ext: integer-exact compilation of pre-quantized models with Apache TVM 0.27."""

from . import op  # noqa: F401  (registers the QNN dialect)
from .compile import CompiledModel, compile_model
from .target import stack_buffers

stack_buffers.install()

__version__ = "0.1.0"
__all__ = ["CompiledModel", "compile_model"]

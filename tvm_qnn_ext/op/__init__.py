"""The QNN dialect for Relax: integer operators registered from Python at import.

Each family lives in its own module; importing this package registers all of them.
"""

from . import activation, conv, pytorch_epilogue, rescale  # noqa: F401  (registers ops)
from .activation import hard_swish, leaky_relu, logistic, lookup_table, relu, softmax, tanh
from .concat import concatenate
from .conv import conv2d
from .dense import dense  # the function shadows the submodule name
from .elementwise import add, multiply, subtract
from .pool import avg_pool2d, max_pool2d, mean
from .registry import OPS, QnnTypeError, make_call
from .rescale import dequantize, quantize, requantize

__all__ = [
    "add",
    "avg_pool2d",
    "concatenate",
    "max_pool2d",
    "mean",
    "multiply",
    "subtract",
    "OPS",
    "QnnTypeError",
    "conv2d",
    "hard_swish",
    "leaky_relu",
    "logistic",
    "lookup_table",
    "relu",
    "softmax",
    "tanh",
    "dense",
    "dequantize",
    "make_call",
    "quantize",
    "requantize",
]

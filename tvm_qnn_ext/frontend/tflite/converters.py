"""Importing this module registers every TFLite operator converter."""

from . import (  # noqa: F401
    convert_activation,
    convert_elementwise,
    convert_linear,
    convert_pool,
    convert_quant,
    convert_resize,
    convert_shape,
)

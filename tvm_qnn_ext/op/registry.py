"""Registering Relax operators from Python, idempotently.

Every dialect op is declared once with :func:`register_op`.  Registration happens at import and
is guarded, so importing (or reloading) the package twice is harmless.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import tvm
import tvm_ffi
from tvm import relax
from tvm.ir import Op

from ..quantization.params import QuantizationParamError

InferFn = Callable[[relax.Call, relax.BlockBuilder], relax.TensorType]
LegalizeFn = Callable[[relax.BlockBuilder, relax.Call], relax.Expr]

# A level above TVM's default (10) so our attributes win when re-registered after a reload.
_LEVEL = 11


class QnnTypeError(TypeError):
    """An operand of a QNN op has the wrong dtype, rank or per-axis length."""


# Errors raised inside FInferType/FLegalize cross the FFI; registered, they keep their type.
tvm_ffi.register_error(QnnTypeError)
tvm_ffi.register_error(QuantizationParamError)


@dataclass(frozen=True)
class OpDef:
    name: str
    num_inputs: int
    infer: InferFn
    legalize: LegalizeFn
    description: str


OPS: dict[str, OpDef] = {}


def register_op(name: str, num_inputs: int, description: str) -> Callable[[type], type]:
    """Class decorator: the class provides static ``infer(call, bb)`` and ``legalize(bb, call)``."""

    def wrap(cls: type) -> type:
        opdef = OpDef(name, num_inputs, cls.infer, cls.legalize, description)
        OPS[name] = opdef
        _install(opdef)
        cls.op = Op.get(name)
        return cls

    return wrap


def _install(opdef: OpDef) -> None:
    if opdef.name not in tvm.ir._ffi_api.ListOpNames():
        tvm.ir._ffi_api.RegisterOp(opdef.name, opdef.description)
        Op.get(opdef.name).set_num_inputs(opdef.num_inputs)
    op = Op.get(opdef.name)
    # Indirect through OPS so a reloaded module's functions take effect.
    for key, fn in (
        ("FInferType", lambda call, bb, n=opdef.name: OPS[n].infer(call, bb)),
        ("FLegalize", lambda bb, call, n=opdef.name: OPS[n].legalize(bb, call)),
    ):
        if op.get_attr(key) is None:
            tvm.ir.register_op_attr(opdef.name, key, fn, level=_LEVEL)
    if op.get_attr("FPurity") is None:
        tvm.ir.register_op_attr(opdef.name, "FPurity", True, level=_LEVEL)


def make_call(name: str, args: list[relax.Expr], attrs: dict) -> relax.Call:
    """Build a call to a registered QNN op; ``None`` attributes are dropped."""
    return relax.Call(Op.get(name), args, attrs={k: v for k, v in attrs.items() if v is not None})

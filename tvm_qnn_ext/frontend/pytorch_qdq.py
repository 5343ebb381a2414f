"""PT2E programs through TVM's own torch frontend, then QDQToQNN.

``tvm.relax.frontend.torch.from_exported_program`` has no converter for torchao's
``quantized_decomposed`` ops; :data:`QDQ_CONVERTERS` maps them through its ``custom_convert_map``
hook to ``R.quantize`` / ``R.dequantize`` (per-tensor, and per-channel with ``axis``), so the
program reads as ``dequantize -> float op -> quantize`` regions.  QDQToQNN's PyTorch rules
(:mod:`tvm_qnn_ext.transform.qdq_rules_pytorch`) then rewrite each region into integer QNN ops.

PT2E's quantize is ``clamp(rint(x * fl32(1 / s)) + zp, qmin, qmax)``; TVM's ``R.quantize``
divides by ``s``.  Only the model's input quantize stays a quantize after the rewrite, and the
PyTorch rules replace it with ``qnn.quantize(rounding="float")`` (PyTorch's multiply by the
inverse scale).  A ``[qmin, qmax]`` narrower than the dtype becomes a clip of the integers.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import torch
import tvm
from tvm import relax

from ..transform.qdq_to_qnn import FRAMEWORK_ATTR, QDQReport, qdq_to_qnn

_DTYPES = {torch.int8: "int8", torch.uint8: "uint8", torch.int16: "int16"}
_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}


class PT2EImportError(ValueError):
    """The exported program cannot be imported; the message names the problem."""


def _dtype(node, value) -> str:
    if value not in _DTYPES:
        raise PT2EImportError(f"{node.name}: quantized dtype {value} is not int8/uint8/int16")
    return _DTYPES[value]


def _param(importer, node, value, what: str) -> relax.Expr:
    """A scale or zero point: a Python number, or a buffer/constant tensor of the program."""
    dtype = "float32" if what == "scale" else "int32"
    if isinstance(value, torch.fx.Node):
        tensor = importer.qdq_tensors.get(value.name)
        if tensor is None:
            raise PT2EImportError(f"{node.name}: {what} is computed at run time (dynamic)")
        value = tensor.detach().numpy()
    return relax.const(np.asarray(value, dtype), dtype)


def _check_range(node, dtype: str, qmin: int, qmax: int) -> None:
    lo, hi = _RANGES[dtype]
    if not lo <= qmin <= qmax <= hi:
        raise PT2EImportError(f"{node.name}: range [{qmin}, {qmax}] does not fit {dtype}")


def _quantize(node: torch.fx.Node, importer) -> relax.Var:
    x, scale, zp, qmin, qmax, qdtype = node.args[:6]
    dtype = _dtype(node, qdtype)
    _check_range(node, dtype, int(qmin), int(qmax))
    s = _param(importer, node, scale, "scale")
    z = _param(importer, node, zp, "zero point")
    bb = importer.block_builder
    q = bb.emit(relax.op.quantize(importer.env[x], s, z, axis=-1, out_dtype=dtype))
    if (int(qmin), int(qmax)) != _RANGES[dtype]:
        q = bb.emit(relax.op.clip(q, int(qmin), int(qmax)))
    return q


def _dequantize(node: torch.fx.Node, importer) -> relax.Var:
    x, scale, zp = node.args[:3]
    s = _param(importer, node, scale, "scale")
    z = _param(importer, node, zp, "zero point")
    return importer.block_builder.emit(relax.op.dequantize(importer.env[x], s, z, axis=-1))


def _dequantize_channel(node: torch.fx.Node, importer) -> relax.Var:
    x, scales, zps, axis = node.args[:4]
    s = _param(importer, node, scales, "scale")
    z = _param(importer, node, zps, "zero point")
    ndim = len(node.args[0].meta["val"].shape)
    return importer.block_builder.emit(
        relax.op.dequantize(importer.env[x], s, z, axis=int(axis) % ndim)
    )


def _refuse_dynamic(node: torch.fx.Node, importer) -> relax.Var:
    raise PT2EImportError(
        f"{node.name}: dynamic quantization ({node.target}) is not supported; "
        "use static PT2E quantization"
    )


def _unsafe_view(node: torch.fx.Node, importer) -> relax.Var:
    """``aten._unsafe_view`` (a reshape after functionalization) as TVM's ``view``."""
    return importer.convert_map["view.default"](node)


QDQ_CONVERTERS = {
    "_unsafe_view.default": _unsafe_view,
    "quantize_per_tensor.default": _quantize,
    "quantize_per_tensor.tensor": _quantize,
    "quantize_per_tensor.tensor2": _quantize,
    "dequantize_per_tensor.default": _dequantize,
    "dequantize_per_tensor.tensor": _dequantize,
    "dequantize_per_tensor.tensor2": _dequantize,
    "dequantize_per_channel.default": _dequantize_channel,
    "choose_qparams.tensor": _refuse_dynamic,
    "choose_qparams_per_token_asymmetric.default": _refuse_dynamic,
}


def _exported(ep) -> torch.export.ExportedProgram:
    if not isinstance(ep, torch.export.ExportedProgram):
        raise TypeError(
            f"expected a torch.export.ExportedProgram, got {type(ep).__name__} "
            "(export the converted PT2E module with torch.export.export first)"
        )
    return ep


def import_relax(ep: torch.export.ExportedProgram) -> tvm.IRModule:
    """TVM's ``from_exported_program`` with the quantize/dequantize converters."""
    from tvm.relax.frontend.torch import exported_program_translator as ept

    # An empty table only functionalizes (batch_norm -> its inference form, which TVM reads
    # right; it reads aten.batch_norm as training mode) and keeps conv2d, linear, max_pool2d
    # whole (the default table's max_pool2d_with_indices leaves float indices behind).
    ep = _exported(ep).run_decompositions({})
    importer = ept.ExportedProgramImporter()
    importer.qdq_tensors = _placeholder_tensors(ep)
    return importer.from_exported_program(
        ep,
        keep_params_as_input=False,
        unwrap_unit_return_tuple=False,
        no_bind_return_tuple=False,
        custom_convert_map=QDQ_CONVERTERS,
    )


def _placeholder_tensors(ep: torch.export.ExportedProgram) -> dict[str, torch.Tensor]:
    """Parameters, buffers and lifted constants by placeholder name (scales, zero points)."""
    sig = ep.graph_signature
    found = {}
    for name, target in [*sig.inputs_to_parameters.items(), *sig.inputs_to_buffers.items()]:
        found[name] = ep.state_dict[target]
    for name, target in sig.inputs_to_lifted_tensor_constants.items():
        found[name] = ep.constants[target]
    return found


def from_exported_program_qdq(
    ep: torch.export.ExportedProgram,
    hard_fail: bool = False,
    ops: Collection[str] | None = None,
    return_report: bool = False,
) -> tvm.IRModule | tuple[tvm.IRModule, QDQReport]:
    """A PT2E-quantized ``ExportedProgram`` as a QNN dialect module (``qnn.framework =
    "pytorch"``).  ``hard_fail`` raises if any region stays in float; ``ops`` is QDQToQNN's
    allow-list; ``return_report`` also returns the rewrite summary."""
    mod = import_relax(ep)
    mod, report = qdq_to_qnn(mod, framework="pytorch", hard_fail=hard_fail, ops=ops)
    mod = mod.with_attr(FRAMEWORK_ATTR, "pytorch")
    return (mod, report) if return_report else mod


__all__ = ["PT2EImportError", "QDQ_CONVERTERS", "from_exported_program_qdq", "import_relax"]

"""A second entry point, ``main_preallocated``, that runs the model without allocating.

TVM's VM lowering gives ``main`` one ``alloc_storage``/``alloc_tensor`` per intermediate and a
``kill_object`` per value on every call, which costs more than the kernels in the smallest
models.  Every shape here is static, so this pass (run on the VM-lowered module, after TVM's
``default`` build pipeline) splits ``main`` in two:

* ``main_workspace()`` runs the allocations (and the reshape views and tuples made only of
  them) once and returns them;
* ``main_preallocated(*inputs, *workspace)`` is ``main`` without them, without the kills and
  without the input checks: only the kernel calls are left.

``main`` itself is kept unchanged for callers of the plain runtime.  The result of
``main_preallocated`` lives in the workspace and is overwritten by the next call, so a caller
must copy it out (``CompiledModel`` does).
"""

from __future__ import annotations

import tvm
from tvm import relax

from .report import report

PREALLOCATED = "main_preallocated"
WORKSPACE = "main_workspace"

_VIEW_BUILTINS = ("vm.builtin.reshape",)
_INPUT_CHECKS = ("vm.builtin.check_tensor_info", "vm.builtin.match_shape")
_ASSERT_EQUAL_TO_IMM = 0  # the match_shape mode that only checks a static dimension


def _op_name(value) -> str | None:
    if isinstance(value, relax.Call):
        if isinstance(value.op, tvm.ir.Op):
            return value.op.name
        if isinstance(value.op, relax.ExternFunc):
            return value.op.global_symbol
    return None


def _is_static(arg) -> bool:
    if isinstance(arg, relax.ShapeExpr):
        return all(isinstance(d, tvm.tirx.IntImm) for d in arg.values)
    return not isinstance(arg, relax.Var)


def _only_static_checks(value) -> bool:
    """check_tensor_info, or a match_shape that asserts static dimensions and binds nothing."""
    if _op_name(value) == "vm.builtin.check_tensor_info":
        return True
    pairs = value.args[3:-1]  # (mode, value) after the tensor, the heap and ndim
    return all(int(mode) == _ASSERT_EQUAL_TO_IMM for mode in pairs[0::2])


def _hoistable(value, hoisted: set) -> bool:
    """An allocation, view or tuple that depends only on constants and hoisted values."""
    name = _op_name(value)
    if name == "relax.vm.alloc_storage":
        return all(_is_static(a) for a in value.args)
    if name == "relax.vm.alloc_tensor" or name in _VIEW_BUILTINS:
        source, *rest = value.args
        return source in hoisted and all(_is_static(a) for a in rest)
    if isinstance(value, relax.Tuple):
        return all(f in hoisted for f in value.fields)
    return False


def _split(func: relax.Function) -> tuple[list, list] | str:
    """(hoisted bindings, kept bindings), or why ``func`` cannot be split."""
    body = func.body
    if not isinstance(body, relax.SeqExpr) or any(
        isinstance(b, relax.DataflowBlock) for b in body.blocks
    ):
        return "main is not VM-lowered straight-line code"
    hoisted_vars: set = set()
    hoisted, kept = [], []
    for block in body.blocks:
        for binding in block.bindings:
            if not isinstance(binding, relax.VarBinding):
                return f"binding {binding.var.name} is a {type(binding).__name__}"
            value = binding.value
            name = _op_name(value)
            if _hoistable(value, hoisted_vars):
                hoisted.append(binding)
                hoisted_vars.add(binding.var)
            elif name in _INPUT_CHECKS:
                if not _only_static_checks(value):
                    return "an input has a dynamic shape"
            elif name in ("relax.vm.kill_object", "relax.null_value"):
                continue
            elif name == "relax.vm.alloc_storage" or name == "relax.vm.alloc_tensor":
                return f"{binding.var.name} is allocated with a dynamic size"
            else:
                kept.append(binding)
    return hoisted, kept


def _used_vars(bindings: list, result) -> list:
    seen: dict = {}
    for expr in [b.value for b in bindings] + [result]:
        for v in relax.analysis.free_vars(expr):
            seen.setdefault(v, None)
    return list(seen)


@tvm.transform.module_pass(opt_level=0, name="QnnPreallocatedMain")
def add_preallocated_main(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
    """Add ``main_workspace`` and ``main_preallocated`` next to a VM-lowered ``main``."""
    main = mod["main"]
    split = _split(main)
    if isinstance(split, str):
        report("preallocate", f"main left as is: {split}")
        return mod
    hoisted, kept = split
    result = main.body.body
    defined_by_hoisting = {b.var for b in hoisted}
    defined = defined_by_hoisting | {b.var for b in kept} | set(main.params)
    used = _used_vars(kept, result)
    undefined = [v.name for v in used if v not in defined]
    if undefined:
        report("preallocate", f"main left as is: {undefined} would be undefined")
        return mod
    workspace = [v for v in used if v in defined_by_hoisting]
    stable = defined_by_hoisting | set(main.params)
    per_call = [v.name for v in relax.analysis.free_vars(result) if v not in stable]
    if per_call:
        # callers rely on main_preallocated returning the same tensors on every call
        report("preallocate", f"main left as is: its result {per_call} is made per call")
        return mod
    ws_body = relax.SeqExpr([relax.BindingBlock(hoisted)], relax.Tuple(workspace))
    ws_func = relax.Function(
        [],
        ws_body,
        relax.TupleType([v.ty for v in workspace]),
        is_pure=False,
        attrs=tvm.ir.DictAttrs({"global_symbol": WORKSPACE}),
    )
    attrs = dict(main.attrs)
    attrs["global_symbol"] = PREALLOCATED
    # the same Var objects may not appear in two functions: copy gives fresh ones
    run_func = relax.utils.copy_with_new_vars(
        relax.Function(
            list(main.params) + workspace,
            relax.SeqExpr([relax.BindingBlock(kept)], result),
            main.ret_ty,
            is_pure=main.is_pure,
            attrs=tvm.ir.DictAttrs(attrs),
        )
    )
    mod = mod.clone()
    mod[WORKSPACE] = ws_func
    mod[PREALLOCATED] = run_func
    report(
        "preallocate",
        f"{len(hoisted)} allocations run once in {WORKSPACE}; {PREALLOCATED} keeps "
        f"{len(kept)} of main's {sum(len(b.bindings) for b in main.body.blocks)} bindings",
    )
    return mod

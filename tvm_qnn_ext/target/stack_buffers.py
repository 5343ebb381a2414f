"""Keep our kernels' small scratch buffers on the stack.

TVM 0.27's ``LowerTVMBuiltin`` turns every ``local`` allocation, and every ``global`` one of
1 KiB or more, into a ``TVMBackendAllocWorkspace``/``FreeWorkspace`` pair.  A register tile of
24 int32 vectors (1.5 KiB) inside a parallel tile loop then costs four runtime calls per tile,
and the accumulators go through that heap memory instead of staying in registers: on
MobileNetV2's 112x112 1x1 layers this was a third of the kernel's time.

Kernels that our schedule stage produced carry the function attribute :data:`ATTR`.  In them,
every constant-size allocation of at most :data:`MAX_BYTES` gets TVM's own
``disable_lower_builtin`` annotation, so LLVM sees a plain ``alloca`` (in the function, or the
parallel lambda, entry block) that SROA can promote to registers.  Functions without the
attribute are left exactly as TVM would lower them.

The annotation pass runs first in the host finalization passes of TVM's ``s_tir`` TIR pipeline
(the one ``tvm.compile`` uses for CPU targets), which :func:`install` wraps once; it is
installed on import of :mod:`tvm_qnn_ext`.
"""

from __future__ import annotations

import tvm
from tvm import tirx
from tvm.tirx import compilation_pipeline

ATTR = "qnn.stack_buffers"
MAX_BYTES = 16 * 1024  # per buffer; TVM's worker threads have megabytes of stack
_DISABLE = "disable_lower_builtin"
_PIPELINE = "s_tir"


def _constant_bytes(buffer: tirx.Buffer) -> int | None:
    dtype = tvm.runtime.DataType(str(buffer.dtype))
    size = dtype.bits * dtype.lanes // 8
    for dim in buffer.shape:
        if not isinstance(dim, tirx.IntImm):
            return None
        size *= int(dim)
    return size


def _annotate(stmt: tirx.Stmt) -> tirx.Stmt:
    if isinstance(stmt, tirx.SeqStmt):
        return tirx.SeqStmt([_annotate(s) for s in stmt.seq], stmt.span)
    if isinstance(stmt, tirx.AllocBuffer):
        size = _constant_bytes(stmt.buffer)
        if size is None or size > MAX_BYTES or _DISABLE in stmt.annotations:
            return stmt
        annotations = dict(stmt.annotations)
        annotations[_DISABLE] = tirx.IntImm("int32", 1)
        return tirx.AllocBuffer(stmt.buffer, annotations)
    if isinstance(stmt, tirx.For):
        return tirx.For(
            stmt.loop_var,
            stmt.min,
            stmt.extent,
            stmt.kind,
            _annotate(stmt.body),
            stmt.thread_binding,
            stmt.annotations,
            stmt.step,
            stmt.span,
        )
    if isinstance(stmt, tirx.AttrStmt):
        return tirx.AttrStmt(stmt.node, stmt.attr_key, stmt.value, _annotate(stmt.body), stmt.span)
    if isinstance(stmt, tirx.IfThenElse):
        else_case = None if stmt.else_case is None else _annotate(stmt.else_case)
        return tirx.IfThenElse(stmt.condition, _annotate(stmt.then_case), else_case, stmt.span)
    if isinstance(stmt, tirx.While):
        return tirx.While(stmt.condition, _annotate(stmt.body), stmt.span)
    return stmt


@tirx.transform.prim_func_pass(opt_level=0, name="QnnStackBuffers")
def annotate_stack_buffers(func: tirx.PrimFunc, _mod, _ctx) -> tirx.PrimFunc:
    """Mark the small constant-size buffers of :data:`ATTR` kernels as stack allocations."""
    if func.attrs is None or ATTR not in func.attrs:
        return func
    return func.with_body(_annotate(func.body))


def install() -> None:
    """Wrap TVM's ``s_tir`` pipeline so its host finalization runs the annotation first."""
    factory = compilation_pipeline.PIPELINE_MAP[_PIPELINE]
    if getattr(factory, "_qnn_stack_buffers", False):
        return

    def wrapped(**kwargs):
        pipeline, finalize_host, finalize_device = factory(**kwargs)

        def host_passes():
            return tvm.transform.Sequential([annotate_stack_buffers, finalize_host()])

        return pipeline, host_passes, finalize_device

    wrapped._qnn_stack_buffers = True
    compilation_pipeline.PIPELINE_MAP[_PIPELINE] = wrapped

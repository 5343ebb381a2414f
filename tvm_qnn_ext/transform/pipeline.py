"""The named Relax pipeline ``"qnn"``: our rewrites, QNN legalization, fusion, then TVM's build.

Stages are registered by the module that owns them (one pass per file) with
:func:`pipeline_stage`; ``order`` places them.  Bands:

*  0-29  graph rewrites on Relax (QDQToQNN, CastMultiplyRoundToRequantize, folding)
* 30-39  legalization of ``qnn.*`` ops to TIR
* 40-59  TIR-level fusion (AnnotateTIROpPattern, FuseOps, FuseTIR)
* 60-79  kernel scheduling for the target (tensorized int8 schedules)
* then   TVM's ``default`` build pipeline (memory planning, VM lowering)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import tvm
from tvm import relax

from .report import ReportEntry, collect_reports

PassFactory = Callable[[tvm.target.Target, dict], tvm.transform.Pass]


@dataclass(frozen=True)
class Stage:
    name: str
    order: int
    make: PassFactory
    doc: str = ""


_STAGES: dict[str, Stage] = {}

# Modules that register stages; imported lazily so importing the pipeline stays cheap.
_STAGE_MODULES = (
    "tvm_qnn_ext.transform.qdq_to_qnn",
    "tvm_qnn_ext.transform.cast_multiply_round",
    "tvm_qnn_ext.transform.fold_bias_add",
    "tvm_qnn_ext.transform.fold_clip_into_requantize",
    "tvm_qnn_ext.transform.fold_requantize_pair",
    "tvm_qnn_ext.transform.lower",
    "tvm_qnn_ext.transform.schedule_kernels",
)


def pipeline_stage(name: str, order: int, doc: str = "") -> Callable[[PassFactory], PassFactory]:
    """Register ``make(target, options) -> Pass`` as the pipeline stage ``name``."""

    def deco(make: PassFactory) -> PassFactory:
        _STAGES[name] = Stage(name, order, make, doc or (make.__doc__ or "").strip())
        return make

    return deco


def stages() -> list[Stage]:
    for m in _STAGE_MODULES:
        importlib.import_module(m)
    return sorted(_STAGES.values(), key=lambda s: s.order)


@dataclass
class StageResult:
    stage: Stage
    before: tvm.IRModule
    after: tvm.IRModule
    reports: list[ReportEntry] = field(default_factory=list)


def run_stages(
    mod: tvm.IRModule, target: tvm.target.Target, *, trace: bool = False, **options
) -> tuple[tvm.IRModule, list[StageResult]]:
    """Apply every registered stage in order; with ``trace``, keep each before/after."""
    results: list[StageResult] = []
    with target:
        for st in stages():
            with collect_reports() as entries:
                after = st.make(target, options)(mod)
            if trace:
                results.append(StageResult(st, mod, after, list(entries)))
            mod = after
    return mod, results


@relax.pipeline.register_pipeline("qnn")
def qnn_pipeline(target: tvm.target.Target | None = None, **options) -> tvm.transform.Pass:
    """The ``"qnn"`` pipeline: our stages, then TVM's ``default`` build pipeline."""

    @tvm.transform.module_pass(opt_level=0, name="QnnPipeline")
    def _pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        tgt = target or tvm.target.Target.current()
        if tgt is None:
            raise ValueError("the qnn pipeline needs a target (pass target= or use `with target:`)")
        mod, _ = run_stages(mod, tgt, **options)
        return relax.get_pipeline("default")(mod)

    return _pipeline

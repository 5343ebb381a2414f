"""Legalize ``qnn.*`` ops to TIR and fuse each kernel with its elementwise epilogue."""

from __future__ import annotations

import tvm
from tvm import relax

from .pipeline import pipeline_stage


@pipeline_stage("legalize", order=30)
def _legalize(target: tvm.target.Target, options: dict) -> tvm.transform.Pass:
    """qnn.* (and remaining relax.*) ops become TIR PrimFuncs called with call_tir."""
    return relax.transform.LegalizeOps()


@pipeline_stage("fuse", order=40)
def _fuse(target: tvm.target.Target, options: dict) -> tvm.transform.Pass:
    """Fuse each conv/dense with its requantize and other elementwise consumers into one kernel."""
    return tvm.transform.Sequential(
        [
            relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(),
            relax.transform.FuseOps(),
            relax.transform.FuseTIR(),
        ],
        name="QnnFuse",
    )

"""Compile many small single-op cases as one module, so hundreds of random cases cost one build."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from ..target import resolve_target


@dataclass
class Case:
    """One random case: input arrays and a builder that turns Relax vars into the op's output."""

    inputs: Sequence[np.ndarray]
    build: Callable[..., relax.Expr]
    meta: dict = field(default_factory=dict)


def build_module(cases: Sequence[Case]) -> tvm.IRModule:
    """One Relax function ``case_<i>`` per case."""
    bb = relax.BlockBuilder()
    for i, case in enumerate(cases):
        params = [
            relax.Var(f"x{j}", relax.TensorType(a.shape, str(a.dtype)))
            for j, a in enumerate(case.inputs)
        ]
        with bb.function(f"case_{i}", params):
            out = bb.emit(case.build(*params))
            bb.emit_func_output(out)
    return bb.get()


def run_cases(cases: Sequence[Case], target="llvm") -> list[np.ndarray]:
    """Compile all cases in one go and return each case's output."""
    mod = build_module(cases)
    mod = relax.transform.LegalizeOps()(mod)
    ex = tvm.compile(mod, resolve_target(target))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    outs = []
    for i, case in enumerate(cases):
        args = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in case.inputs]
        outs.append(vm[f"case_{i}"](*args).numpy())
    return outs

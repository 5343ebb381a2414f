"""What this CPU can do, and the TVM target that uses it."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from functools import lru_cache

import tvm
from tvm.target import codegen

# Features that decide which int8 kernels can run, by LLVM feature name.
INT8_FEATURES = (
    "avx2",
    "avx512bw",
    "avx512vnni",
    "avxvnni",
    "neon",
    "dotprod",
    "i8mm",
    "sve",
)


@dataclass(frozen=True)
class CpuInfo:
    arch: str
    mcpu: str
    triple: str
    features: frozenset[str]

    def has(self, feature: str) -> bool:
        return feature in self.features


@lru_cache(maxsize=1)
def detect_cpu() -> CpuInfo:
    """The host CPU as LLVM sees it: name, triple and int8-relevant features."""
    mcpu = codegen.llvm_get_system_cpu()
    target = tvm.target.Target({"kind": "llvm", "mcpu": mcpu})
    feats = frozenset(f for f in INT8_FEATURES if codegen.target_has_features(f, target))
    return CpuInfo(platform.machine(), mcpu, codegen.llvm_get_system_triple(), feats)


def resolve_target(target: str | dict | tvm.target.Target = "native") -> tvm.target.Target:
    """``"native"`` is this CPU with its features; dicts (or their JSON text, as on the command
    line) and Targets pass through."""
    if isinstance(target, tvm.target.Target):
        return target
    if isinstance(target, dict):
        return tvm.target.Target(target)
    if target.lstrip().startswith("{"):
        return tvm.target.Target(json.loads(target))
    if target == "native":
        cpu = detect_cpu()
        return tvm.target.Target({"kind": "llvm", "mcpu": cpu.mcpu})
    if target == "llvm":
        return tvm.target.Target({"kind": "llvm"})
    raise ValueError(
        f"target {target!r}: use 'native', 'llvm', a dict such as "
        "{'kind': 'llvm', 'mcpu': 'znver4'}, or a tvm.target.Target"
    )

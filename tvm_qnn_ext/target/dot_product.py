"""int8 dot-product instructions declared as data, and the choice of one for a target.

Each :class:`DotInstruction` says what one instruction computes (``lanes`` int32 outputs, each the
sum of ``reduction`` products of ``a_dtype`` x ``b_dtype``), which LLVM CPU feature enables it,
which LLVM intrinsics implement it, and the name of its TIR tensor intrinsic.  Kernels pack their
weights as ``[..., lanes, reduction]`` tiles and tensorize the innermost tile with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import tvm
from tvm import s_tir
from tvm.target import codegen

from . import arm_intrin, generic_intrin, x86_intrin

GENERIC = "generic"


@dataclass(frozen=True)
class DotInstruction:
    name: str
    arch: str  # "x86_64" / "aarch64" / "any"
    features: tuple[str, ...]  # LLVM features that must all be present
    a_dtype: str  # activations (broadcast operand)
    b_dtype: str  # packed weights
    lanes: int  # int32 accumulators per instruction
    reduction: int  # products summed into each lane
    llvm_intrinsics: tuple[str, ...]
    rows: int = 1  # activation rows per instruction (2 for the matrix-multiply-accumulate ones)
    scheduled: bool = True  # False: declared and codegen-checked, not yet used by the schedules
    max_accumulators: int = 24  # register budget for the schedule's output tile

    @property
    def intrin_name(self) -> str:
        return f"qnn_ext.{self.name}"


def _i(name: str, arch: str, features, a, b, lanes, red, intrinsics, **kw) -> DotInstruction:
    return DotInstruction(name, arch, tuple(features), a, b, lanes, red, tuple(intrinsics), **kw)


# In order of preference; the first one whose features the target has is used.
INSTRUCTIONS: tuple[DotInstruction, ...] = (
    _i("avx512_vnni", "x86_64", ["avx512vnni"], "uint8", "int8", 16, 4,
       ["llvm.x86.avx512.vpdpbusd.512"]),
    _i("avx_vnni", "x86_64", ["avxvnni"], "uint8", "int8", 8, 4,
       ["llvm.x86.avx512.vpdpbusd.256"], max_accumulators=12),
    _i("avx512bw_pmadd", "x86_64", ["avx512bw"], "uint8", "int8", 16, 4,
       ["llvm.x86.avx512.pmaddubs.w.512", "llvm.x86.avx512.pmaddw.d.512"], max_accumulators=16),
    _i("avx2_pmadd", "x86_64", ["avx2"], "uint8", "int8", 8, 4,
       ["llvm.x86.avx2.pmadd.ub.sw", "llvm.x86.avx2.pmadd.wd"], max_accumulators=8),
    _i("neon_i8mm_usmmla", "aarch64", ["i8mm"], "uint8", "int8", 2, 8,
       ["llvm.aarch64.neon.usmmla.v4i32.v16i8"], rows=2, scheduled=False),
    _i("neon_i8mm_smmla", "aarch64", ["i8mm"], "int8", "int8", 2, 8,
       ["llvm.aarch64.neon.smmla.v4i32.v16i8"], rows=2, scheduled=False),
    _i("neon_i8mm_ummla", "aarch64", ["i8mm"], "uint8", "uint8", 2, 8,
       ["llvm.aarch64.neon.ummla.v4i32.v16i8"], rows=2, scheduled=False),
    _i("neon_usdot", "aarch64", ["i8mm"], "uint8", "int8", 4, 4,
       ["llvm.aarch64.neon.usdot.v4i32.v16i8"], scheduled=False),
    _i("neon_sdot", "aarch64", ["dotprod"], "int8", "int8", 4, 4,
       ["llvm.aarch64.neon.sdot.v4i32.v16i8"], scheduled=False),
    _i("neon_udot", "aarch64", ["dotprod"], "uint8", "uint8", 4, 4,
       ["llvm.aarch64.neon.udot.v4i32.v16i8"], scheduled=False),
    # Widening multiply-adds on int32 vectors: any CPU (LLVM picks the widest vectors it has).
    _i(GENERIC, "any", [], "uint8", "int8", 8, 4, [], max_accumulators=8),
)  # fmt: skip

BY_NAME = {ins.name: ins for ins in INSTRUCTIONS}


def _impl(ins: DotInstruction) -> Callable:
    n = ins.name
    if n == GENERIC:
        return generic_intrin.multiply_add_impl(ins.lanes)
    if n in ("avx512_vnni", "avx_vnni"):
        return x86_intrin.vpdpbusd_impl(ins.lanes, ins.llvm_intrinsics[0])
    if n.endswith("_pmadd"):
        return x86_intrin.pmaddubsw_impl(ins.lanes, *ins.llvm_intrinsics)
    if ins.rows == 2:
        return arm_intrin.mmla_impl(ins.llvm_intrinsics[0], ins.a_dtype, ins.b_dtype)
    return arm_intrin.sdot_impl(ins.llvm_intrinsics[0], ins.a_dtype, ins.b_dtype)


def _desc(ins: DotInstruction) -> Callable:
    if ins.rows == 2:
        return arm_intrin.mmla_desc(ins.a_dtype, ins.b_dtype)
    return x86_intrin.dot_desc(ins.lanes, ins.reduction, ins.a_dtype, ins.b_dtype)


@cache
def register(ins: DotInstruction) -> str:
    """Register the instruction's TIR tensor intrinsic (once per process); returns its name."""
    if s_tir.TensorIntrin.get(ins.intrin_name, allow_missing=True) is None:
        s_tir.TensorIntrin.register(ins.intrin_name, _desc(ins), _impl(ins))
    return ins.intrin_name


def target_features(target: tvm.target.Target) -> frozenset[str]:
    names = {f for ins in INSTRUCTIONS for f in ins.features}
    return frozenset(f for f in names if codegen.target_has_features(f, target))


def target_arch(target: tvm.target.Target) -> str:
    triple = str(target.attrs.get("mtriple", "")) or codegen.llvm_get_system_triple()
    return triple.split("-")[0].replace("arm64", "aarch64")


def available(target: tvm.target.Target, scheduled_only: bool = True) -> list[DotInstruction]:
    """The instructions ``target`` can run, best first (always ends with the generic one)."""
    if str(target.kind.name) != "llvm":
        return [BY_NAME[GENERIC]]
    arch, feats = target_arch(target), target_features(target)
    return [
        ins
        for ins in INSTRUCTIONS
        if ins.arch in (arch, "any")
        and all(f in feats for f in ins.features)
        and (ins.scheduled or not scheduled_only)
    ]


def select(target: tvm.target.Target | None, name: str | None = None) -> DotInstruction:
    """The instruction kernels use on ``target``: the named one, or the best one it has."""
    if name is not None:
        if name not in BY_NAME:
            raise ValueError(f"unknown dot-product instruction {name!r}; known: {sorted(BY_NAME)}")
        return BY_NAME[name]
    if target is None:
        return BY_NAME[GENERIC]
    return available(target)[0]

"""TIR tensor intrinsic for packed depthwise taps: ``C[i] += sum_k byte_k(A[i]) * B[i, k]``.

``A`` holds one uint32 per lane whose four bytes are four taps of that lane's channel (u8);
``B`` the matching four weights per lane (s8).  Unlike the conv2d intrinsics nothing is
broadcast: every lane has its own activations, which is exactly one ``vpdpbusd``.
"""

from __future__ import annotations

from functools import cache

from tvm import s_tir
from tvm.script import tirx as T

from ..op.packed_depthwise import TAPS_PER_LANE, llvm_intrinsic, tap_byte


def _desc(lanes: int, index_dtype: str):
    taps = TAPS_PER_LANE

    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((lanes,), "uint32", offset_factor=1),
        B: T.Buffer((lanes, taps), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1),
    ):
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:lanes], B[0:lanes, 0:taps])
            T.writes(C[0:lanes])
            for i, k in T.grid(T.cast(lanes, index_dtype), T.cast(taps, index_dtype)):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + tap_byte(A[vi], vk) * T.Cast("int32", B[vi, vk])

    return desc


def _impl(lanes: int):
    taps = TAPS_PER_LANE
    nbytes = taps * lanes
    intrinsic = llvm_intrinsic(lanes)

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((lanes,), "uint32", offset_factor=1),
        B: T.Buffer((lanes, taps), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1),
    ):
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:lanes], B[0:lanes, 0:taps])
            T.writes(C[0:lanes])
            C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(intrinsic),
                C.vload([0], dtype=f"int32x{lanes}"),
                T.reinterpret(A.vload([0], dtype=f"uint32x{lanes}"), dtype=f"int8x{nbytes}"),
                B.vload([0, 0], dtype=f"int8x{nbytes}"),
                dtype=f"int32x{lanes}",
            )

    return impl


@cache
def register(lanes: int, index_dtype: str) -> str:
    """Register the intrinsic for ``lanes`` int32 lanes and loop index dtype; returns its name."""
    name = f"qnn_ext.depthwise_vpdpbusd_x{lanes}_{index_dtype}"
    if s_tir.TensorIntrin.get(name, allow_missing=True) is None:
        s_tir.TensorIntrin.register(name, _desc(lanes, index_dtype), _impl(lanes))
    return name

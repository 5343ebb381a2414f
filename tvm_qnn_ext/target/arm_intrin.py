"""TIR tensor intrinsics for AArch64 int8 dot products (declared now, scheduled in a later wave).

* ``sdot``/``udot``/``usdot``: ``C[4] += A[4] x B[4, 4]`` (A broadcast to the four lanes);
* ``smmla``/``ummla``/``usmmla``: ``C[2, 2] += A[2, 8] x B[2, 8]^T`` (a 2x2 tile per instruction).
"""

from __future__ import annotations

from tvm.script import tirx as T


def sdot_impl(llvm_intrinsic: str, a_dtype: str, b_dtype: str):
    """One ``sdot``-family instruction on a broadcast activation word."""

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((4,), a_dtype, offset_factor=1),
        B: T.Buffer((4, 4), b_dtype, offset_factor=1),
        C: T.Buffer((4,), "int32", offset_factor=1),
    ):
        with T.sblock("root"):
            T.reads(C[0:4], A[0:4], B[0:4, 0:4])
            T.writes(C[0:4])
            a32 = T.reinterpret(A.vload([0], f"{a_dtype}x4"), dtype="int32")
            C[T.ramp(T.int32(0), 1, 4)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm_intrinsic),
                C.vload([0], dtype="int32x4"),
                T.reinterpret(T.broadcast(a32, 4), dtype=f"{a_dtype}x16"),
                B.vload([0, 0], dtype=f"{b_dtype}x16"),
                dtype="int32x4",
            )

    return impl


def mmla_desc(a_dtype: str, b_dtype: str):
    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((2, 8), a_dtype, offset_factor=1),
        B: T.Buffer((2, 8), b_dtype, offset_factor=1),
        C: T.Buffer((2, 2), "int32", offset_factor=1),
    ):
        with T.sblock("root"):
            T.reads(C[0:2, 0:2], A[0:2, 0:8], B[0:2, 0:8])
            T.writes(C[0:2, 0:2])
            for i, j, k in T.grid(2, 2, 8):
                with T.sblock("update"):
                    vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                    C[vi, vj] = C[vi, vj] + T.cast(A[vi, vk], "int32") * T.cast(B[vj, vk], "int32")

    return desc


def mmla_impl(llvm_intrinsic: str, a_dtype: str, b_dtype: str):
    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((2, 8), a_dtype, offset_factor=1),
        B: T.Buffer((2, 8), b_dtype, offset_factor=1),
        C: T.Buffer((2, 2), "int32", offset_factor=1),
    ):
        with T.sblock("root"):
            T.reads(C[0:2, 0:2], A[0:2, 0:8], B[0:2, 0:8])
            T.writes(C[0:2, 0:2])
            C[0, T.ramp(T.int32(0), 1, 4)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm_intrinsic),
                C.vload([0, 0], dtype="int32x4"),
                A.vload([0, 0], dtype=f"{a_dtype}x16"),
                B.vload([0, 0], dtype=f"{b_dtype}x16"),
                dtype="int32x4",
            )

    return impl

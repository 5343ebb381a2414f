"""The portable dot-product "instruction": widening multiply-adds on plain int32 vectors."""

from __future__ import annotations

from tvm.script import tirx as T


def multiply_add_impl(lanes: int):
    """``C[lanes] += A[4] x B[lanes, 4]`` as four broadcast-multiply-adds (B read with stride 4
    along its flattened tile); LLVM picks the vector instructions."""

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((4,), "uint8", offset_factor=1),
        B: T.Buffer((lanes, 4), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1),
    ):
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            C[T.ramp(T.int32(0), 1, lanes)] = (
                C.vload([0], dtype=f"int32x{lanes}")
                + T.broadcast(T.cast(A[0], "int32"), lanes)
                * T.cast(B[0, T.ramp(T.int32(0), 4, lanes)], f"int32x{lanes}")
                + T.broadcast(T.cast(A[1], "int32"), lanes)
                * T.cast(B[0, T.ramp(T.int32(1), 4, lanes)], f"int32x{lanes}")
                + T.broadcast(T.cast(A[2], "int32"), lanes)
                * T.cast(B[0, T.ramp(T.int32(2), 4, lanes)], f"int32x{lanes}")
                + T.broadcast(T.cast(A[3], "int32"), lanes)
                * T.cast(B[0, T.ramp(T.int32(3), 4, lanes)], f"int32x{lanes}")
            )

    return impl

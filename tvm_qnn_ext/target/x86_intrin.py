"""TIR tensor intrinsics for x86 int8 dot products: ``C[lanes] += A[4] (u8) x B[lanes, 4] (s8)``.

``A`` is four consecutive activation bytes (one input pixel, four input channels), broadcast to
every lane; ``B`` is a packed weight tile, ``lanes`` output channels by four input channels.
"""

from __future__ import annotations

from tvm.script import tirx as T


def dot_desc(lanes: int, reduction: int, a_dtype: str, b_dtype: str):
    """The semantics every implementation below must match (what tensorize pattern-matches)."""

    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((reduction,), a_dtype, offset_factor=1),
        B: T.Buffer((lanes, reduction), b_dtype, offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1),
    ):
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:reduction], B[0:lanes, 0:reduction])
            T.writes(C[0:lanes])
            for i, k in T.grid(lanes, reduction):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    return desc


def vpdpbusd_impl(lanes: int, llvm_intrinsic: str):
    """One ``vpdpbusd``: each int32 lane adds four u8 x s8 products, no intermediate saturation.

    LLVM 22 declares the operands as (<N x i32>, <4N x i8>, <4N x i8>).
    """
    nbytes = 4 * lanes

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((4,), "uint8", offset_factor=1),
        B: T.Buffer((lanes, 4), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1),
    ):
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            a32 = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
            C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm_intrinsic),
                C.vload([0], dtype=f"int32x{lanes}"),
                T.reinterpret(T.broadcast(a32, lanes), dtype=f"int8x{nbytes}"),
                B.vload([0, 0], dtype=f"int8x{nbytes}"),
                dtype=f"int32x{lanes}",
            )

    return impl


def pmaddubsw_impl(lanes: int, pmaddubsw: str, pmaddwd: str):
    """``pmaddubsw`` + ``pmaddwd``, exact for every u8 x s8 operand.

    ``pmaddubsw`` adds two u8 x s8 products into a *saturating* int16: 255*-128*2 = -65280 does
    not fit.  So the activation byte is split as ``a = lo + 128*hi`` (lo = a & 127, hi = a >> 7):
    ``|lo0*b0 + lo1*b1| <= 2*127*128 = 32512`` and ``|hi0*b0 + hi1*b1| <= 2*128 = 256`` both fit
    int16 exactly; ``pmaddwd`` then widens the pair sums to int32, scaling the hi part by 128:
    ``sum = pmaddwd(p_lo, 1) + pmaddwd(p_hi, 128)``, each term at most 2*32512 resp. 2*32768.
    """
    nbytes, halves = 4 * lanes, 2 * lanes

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((4,), "uint8", offset_factor=1),
        B: T.Buffer((lanes, 4), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1),
    ):
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            a32 = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
            a = T.reinterpret(T.broadcast(a32, lanes), dtype=f"uint8x{nbytes}")
            b = B.vload([0, 0], dtype=f"int8x{nbytes}")
            lo = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(pmaddubsw),
                T.bitwise_and(a, T.broadcast(T.uint8(127), nbytes)),
                b,
                dtype=f"int16x{halves}",
            )
            hi = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(pmaddubsw),
                T.shift_right(a, T.broadcast(T.uint8(7), nbytes)),
                b,
                dtype=f"int16x{halves}",
            )
            C[T.ramp(T.int32(0), 1, lanes)] = (
                C.vload([0], dtype=f"int32x{lanes}")
                + T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id(pmaddwd),
                    lo,
                    T.broadcast(T.int16(1), halves),
                    dtype=f"int32x{lanes}",
                )
                + T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id(pmaddwd),
                    hi,
                    T.broadcast(T.int16(128), halves),
                    dtype=f"int32x{lanes}",
                )
            )

    return impl

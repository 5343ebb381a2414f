"""TIR tensor intrinsic for packed depthwise taps: ``C[i] += sum_k byte_k(A[i]) * B[i, k]``.

``A`` holds one uint32 per lane whose four bytes are four taps of that lane's channel (u8);
``B`` the matching four weights per lane (s8).  Unlike the conv2d intrinsics nothing is
broadcast: every lane has its own activations, which is exactly one ``vpdpbusd``; without VNNI,
two ``vpmaddwd`` on the even and odd bytes compute the same sum exactly.
"""

from __future__ import annotations

from functools import cache

from tvm import s_tir
from tvm.script import tirx as T

from ..op.packed_depthwise import BY_NAME, TAPS_PER_LANE, Variant, tap_byte


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


def _vpdpbusd_impl(variant: Variant):
    lanes, taps = variant.lanes, TAPS_PER_LANE
    nbytes = taps * lanes

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
                T.llvm_lookup_intrinsic_id(variant.llvm_intrinsic),
                C.vload([0], dtype=f"int32x{lanes}"),
                T.reinterpret(A.vload([0], dtype=f"uint32x{lanes}"), dtype=f"int8x{nbytes}"),
                B.vload([0, 0], dtype=f"int8x{nbytes}"),
                dtype=f"int32x{lanes}",
            )

    return impl


def _pmaddwd_impl(variant: Variant):
    """Without VNNI: bytes 0 and 2 of each lane, and bytes 1 and 3, as 16-bit pairs, each pair
    multiplied and summed into the int32 lane by ``vpmaddwd``.  The activations are 0..255 and
    the weights -128..127 as int16, so every product and pair sum is exact."""
    lanes, taps = variant.lanes, TAPS_PER_LANE
    halves = 2 * lanes
    i16 = f"int16x{halves}"

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((lanes,), "uint32", offset_factor=1),
        B: T.Buffer((lanes, taps), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1),
    ):
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:lanes], B[0:lanes, 0:taps])
            T.writes(C[0:lanes])
            a = A.vload([0], dtype=f"uint32x{lanes}")
            low_bytes = T.broadcast(T.uint32(0x00FF00FF), lanes)
            a_even = T.reinterpret(T.bitwise_and(a, low_bytes), dtype=i16)
            a_odd = T.reinterpret(
                T.bitwise_and(T.shift_right(a, T.broadcast(T.uint32(8), lanes)), low_bytes),
                dtype=i16,
            )
            b = T.reinterpret(B.vload([0, 0], dtype=f"int8x{4 * lanes}"), dtype=i16)
            eight = T.broadcast(T.int16(8), halves)
            b_even = T.shift_right(T.shift_left(b, eight), eight)  # sign-extended low bytes
            b_odd = T.shift_right(b, eight)
            C[T.ramp(T.int32(0), 1, lanes)] = (
                C.vload([0], dtype=f"int32x{lanes}")
                + T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id(variant.llvm_intrinsic),
                    a_even,
                    b_even,
                    dtype=f"int32x{lanes}",
                )
                + T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id(variant.llvm_intrinsic),
                    a_odd,
                    b_odd,
                    dtype=f"int32x{lanes}",
                )
            )

    return impl


@cache
def register(variant_name: str, index_dtype: str) -> str:
    """Register the intrinsic for a packed-depthwise variant (op/packed_depthwise.VARIANTS)
    and loop index dtype; returns its name."""
    variant = BY_NAME[variant_name]
    name = f"qnn_ext.depthwise_{variant_name}_{index_dtype}"
    if s_tir.TensorIntrin.get(name, allow_missing=True) is None:
        impl = _vpdpbusd_impl if variant.kind == "vpdpbusd" else _pmaddwd_impl
        s_tir.TensorIntrin.register(name, _desc(variant.lanes, index_dtype), impl(variant))
    return name

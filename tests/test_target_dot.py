"""int8 dot-product instructions as data: selection per target, exactness, generated code."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import s_tir, te

from tvm_qnn_ext.target import detect_cpu, dot_product
from tvm_qnn_ext.target.asm import count_instruction
from tvm_qnn_ext.target.gemm import build_int8_gemm
from tvm_qnn_ext.target.packing import pack_weights

X86 = ["avx512_vnni", "avx_vnni", "avx512bw_pmadd", "avx2_pmadd", "generic"]
AARCH64 = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon", "+dotprod", "+i8mm"]}


def _target(mcpu: str | None) -> tvm.target.Target:
    return tvm.target.Target({"kind": "llvm", **({"mcpu": mcpu} if mcpu else {})})


@pytest.mark.parametrize(
    "mcpu, expected",
    [
        ("znver4", "avx512_vnni"),
        ("icelake-server", "avx512_vnni"),
        ("alderlake", "avx_vnni"),
        ("skylake-avx512", "avx512bw_pmadd"),
        ("haswell", "avx2_pmadd"),
        ("nehalem", "generic"),
        (None, "generic"),
    ],
)
def test_selection_follows_the_target_features(mcpu, expected):
    assert dot_product.select(_target(mcpu)).name == expected


def test_arm_instructions_are_declared_but_not_yet_scheduled():
    tgt = tvm.target.Target(AARCH64)
    names = {i.name for i in dot_product.available(tgt, scheduled_only=False)}
    assert {"neon_sdot", "neon_udot", "neon_usdot", "neon_i8mm_smmla", "neon_i8mm_usmmla"} <= names
    assert dot_product.select(tgt).name == "generic"
    with pytest.raises(ValueError, match="unknown dot-product instruction"):
        dot_product.select(tgt, "vpdpbusd_typo")


def test_pack_weights_layout():
    w = np.arange(5 * 3 * 6).reshape(5, 3, 6).astype("int8")
    p = pack_weights(w, lanes=4, reduction=4)
    assert p.shape == (2, 3, 2, 4, 4)
    for o, m, c in np.ndindex(8, 3, 8):
        want = w[o, m, c] if o < 5 and c < 6 else 0
        assert p[o // 4, m, c // 4, o % 4, c % 4] == want


def _host_can_run(name: str) -> None:
    ins = dot_product.BY_NAME[name]
    missing = set(ins.features) - detect_cpu().features
    if ins.arch not in (detect_cpu().arch, "any") or missing:
        pytest.skip(f"this CPU cannot run {name} (lacks {sorted(missing)})")


@pytest.mark.parametrize("name", X86)
def test_gemm_is_exact_for_full_range_operands(name):
    """Extreme operands (255 x -128 pairs) would saturate a plain pmaddubsw."""
    _host_can_run(name)
    rng = np.random.default_rng(X86.index(name))
    for m, n, k in [(37, 40, 13), (8, 16, 64)]:
        gemm = build_int8_gemm(m, n, k, target={"kind": "llvm", "mcpu": "znver4"}, instruction=name)
        a = rng.integers(0, 256, (m, k), dtype=np.uint8)
        w = rng.integers(-128, 128, (n, k), dtype=np.int8)
        a[:3], w[:5] = 255, -128
        a[3], w[5] = 0, 127
        np.testing.assert_array_equal(gemm(a, w), a.astype(np.int64) @ w.T.astype(np.int64))


@pytest.mark.parametrize(
    "name, mnemonic, absent",
    [
        ("avx512_vnni", "vpdpbusd", "vpmaddubsw"),
        ("avx512bw_pmadd", "vpmaddubsw", "vpdpbusd"),
        ("avx2_pmadd", "vpmaddubsw", "vpdpbusd"),
    ],
)
def test_gemm_assembly_uses_the_instruction(name, mnemonic, absent):
    gemm = build_int8_gemm(64, 64, 64, target={"kind": "llvm", "mcpu": "znver4"}, instruction=name)
    asm = gemm.assembly()
    assert count_instruction(asm, mnemonic) > 0
    assert count_instruction(asm, absent) == 0


def test_avx_vnni_is_vex_encoded_without_avx512():
    """On an AVX-VNNI CPU without AVX-512 the ymm vpdpbusd must be the VEX form."""
    gemm = build_int8_gemm(16, 16, 16, target={"kind": "llvm", "mcpu": "alderlake"})
    assert gemm.instruction.name == "avx_vnni"
    asm = gemm.assembly()
    assert count_instruction(asm, "vpdpbusd") > 0
    assert "{vex}\tvpdpbusd" in asm and "zmm" not in asm


def _arm_kernel_asm(ins: dot_product.DotInstruction) -> str:
    """A one-tile kernel tensorized with ``ins``, compiled (not run) for AArch64."""
    rows, lanes, red = ins.rows, ins.lanes, ins.reduction
    a = te.placeholder((rows, red), ins.a_dtype, name="A")
    b = te.placeholder((lanes, red), ins.b_dtype, name="B")
    k = te.reduce_axis((0, red), name="k")
    c = te.compute(
        (rows, lanes),
        lambda i, j: te.sum(a[i, k].astype("int32") * b[j, k].astype("int32"), axis=k),
        name="C",
    )
    sch = s_tir.Schedule(te.create_prim_func([a, b, c]))
    block = sch.get_sblock("C")
    i = sch.get_loops(block)[0]
    sch.decompose_reduction(block, i)
    update = sch.get_sblock("C_update")
    loops = sch.get_loops(update)
    sch.tensorize(loops[0] if rows == 2 else loops[1], dot_product.register(ins))
    return tvm.compile(sch.mod, tvm.target.Target(AARCH64)).mod.inspect_source("asm")


@pytest.mark.parametrize(
    "name, mnemonic",
    [
        ("neon_sdot", "sdot"),
        ("neon_udot", "udot"),
        ("neon_usdot", "usdot"),
        ("neon_i8mm_smmla", "smmla"),
        ("neon_i8mm_ummla", "ummla"),
        ("neon_i8mm_usmmla", "usmmla"),
    ],
)
def test_arm_intrinsics_codegen(name, mnemonic):
    asm = _arm_kernel_asm(dot_product.BY_NAME[name])
    assert count_instruction(asm, mnemonic) > 0, asm[:2000]

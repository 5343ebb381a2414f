"""Tutorial 05: one int8 conv layer on x86, from plain loops to a tensorized VNNI kernel.

    TVM_NUM_THREADS=1 python tutorials/05_x86_vnni.py

A 3x3 conv (1x28x28x128 -> 128, int8, per-channel requantize fused) goes through the steps the
"qnn" pipeline takes, with the time of each step measured on this machine:

1. the portable legalization (TE loops, no schedule);
2. the dot-product instruction the target offers, as data, and its TIR tensor intrinsic;
3. weights packed at compile time into the instruction's ``lanes x 4`` tiles, operands shifted
   to u8 x s8 (the shift folded into the zero-point constant) - still unscheduled;
4. the dot product tiled in registers and tensorized, the requantize epilogue left after it;
5. the requantize epilogue fused per register tile;
6. its int32 scratch tile kept on the stack instead of TVM's workspace pool (the full pipeline).

Every step's output is checked against the numpy reference, bit for bit.  Timings are median
CPU time per call (robust to other jobs on a shared machine; use TVM_NUM_THREADS=1).
"""

from __future__ import annotations

import time

import numpy as np
import tvm
from tvm import relax, s_tir

import tvm_qnn_ext.op as qnn
from tvm_qnn_ext.quantization import conv as ref
from tvm_qnn_ext.quantization import requantize
from tvm_qnn_ext.target import dot_product, resolve_target, stack_buffers
from tvm_qnn_ext.target.asm import assembly, count_instruction
from tvm_qnn_ext.target.schedule import anchor_blocks
from tvm_qnn_ext.target.schedules.dot_tiling import (
    schedule_dot_kernel,
    tile_dot,
    vectorize_channels,
)
from tvm_qnn_ext.transform import stages

TARGET = resolve_target("native")
INS = dot_product.select(TARGET)

# ---- the layer --------------------------------------------------------------------------------
rng = np.random.default_rng(5)
H = W = 28
C = CO = 128
x = rng.integers(-128, 128, (1, H, W, C), dtype=np.int8)
w = rng.integers(-127, 128, (CO, 3, 3, C), dtype=np.int8)  # OHWI, symmetric int8 weights
bias = rng.integers(-5000, 5000, CO).astype(np.int32)
scales = list(rng.uniform(2e-5, 8e-5, CO))
ATTRS = dict(padding=(1, 1, 1, 1), input_zero_point=-3)
OPS = 2 * H * W * CO * 9 * C  # one multiply and one add per product

expected = requantize(ref.conv2d(x, w, bias, **ATTRS), scales, 0, 0.05, -2, "int8", axis=3)


def layer_module() -> tvm.IRModule:
    bb = relax.BlockBuilder()
    xv = relax.Var("x", relax.TensorType(x.shape, "int8"))
    with bb.function("main", [xv]):
        with bb.dataflow():
            acc = bb.emit(qnn.conv2d(xv, relax.const(w), relax.const(bias), **ATTRS))
            out = bb.emit_output(qnn.requantize(acc, scales, 0, 0.05, -2, "int8", axis=3))
        bb.emit_func_output(out)
    return bb.get()


def before_schedule(mod: tvm.IRModule, packed: bool) -> tvm.IRModule:
    """Our pipeline's stages up to fusion; ``packed`` legalizes under the target."""
    for st in stages():
        if st.name == "schedule":
            break
        if packed:
            with TARGET:
                mod = st.make(TARGET, {})(mod)
        else:
            mod = st.make(TARGET, {})(mod)
    return mod


def reschedule(mod: tvm.IRModule, rule) -> tvm.IRModule:
    """Apply ``rule(sch, anchor)`` to the kernel with the annotated dot-product block."""
    for gv, func in list(mod.functions.items()):
        if isinstance(func, tvm.tirx.PrimFunc) and "qnn.schedule" in func.script():
            sch = s_tir.Schedule(tvm.IRModule({"main": func}))
            (anchor, _), *_ = anchor_blocks(sch)
            print("   ", rule(sch, anchor))
            mod[gv] = sch.mod["main"]
    return mod


def cpu_seconds(fn, budget: float = 0.3) -> float:
    """Median CPU time per call (process time, so other jobs on a shared machine do not count;
    run with TVM_NUM_THREADS=1 so it is one thread's time)."""
    fn()
    per_call = []
    for _ in range(5):
        calls, start = 0, time.process_time()
        while time.process_time() - start < budget / 5:
            fn()
            calls += 1
        per_call.append((time.process_time() - start) / calls)
    return float(np.median(per_call))


def run(mod: tvm.IRModule, label: str) -> tvm.runtime.Executable:
    ex = tvm.compile(mod, TARGET, relax_pipeline=relax.get_pipeline("default"))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    xt = tvm.runtime.tensor(x)
    np.testing.assert_array_equal(vm["main"](xt).numpy(), expected)
    seconds = cpu_seconds(lambda: vm["main"](xt))
    print(f"{label:58s} {seconds * 1e3:8.3f} ms {OPS / seconds / 1e9:7.1f} GOPS   (exact)")
    return ex


print(f"target {TARGET.attrs.get('mcpu', '')}: conv 3x3 {H}x{W}x{C} -> {CO}, {OPS / 1e6:.0f} Mop")

# ---- 1. portable loops --------------------------------------------------------------------------
run(before_schedule(layer_module(), packed=False), "1. portable TE loops, unscheduled")

# ---- 2. the instruction -------------------------------------------------------------------------
print(
    f"\n2. {INS.name}: {INS.lanes} int32 lanes += {INS.reduction} x {INS.a_dtype} * {INS.b_dtype}"
)
print(f"   LLVM {', '.join(INS.llvm_intrinsics) or '(plain vector multiply-add)'}")
print(f"   features {INS.features}; TIR tensor intrinsic {dot_product.register(INS)!r}")

# ---- 3. packed weights --------------------------------------------------------------------------
packed = before_schedule(layer_module(), packed=True)
kernel = next(f for f in packed.functions.values() if isinstance(f, tvm.tirx.PrimFunc))
shapes = [tuple(int(d) for d in p.shape) for p in kernel.params]
print(f"\n3. kernel parameters after packing: {shapes}")
print(f"   (weight [O/{INS.lanes}, KH, KW, C/4, {INS.lanes}, 4]; int8 data moved to uint8 by +128)")
run(packed, "   packed weights, unscheduled (index math on every tap)")

# ---- 4. tensorized, epilogue after the dot product -----------------------------------------------


def tensorize_only(sch, anchor):
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    names = [sch.get(b).name_hint for b in blocks]
    for b in blocks[names.index("accumulate") : -1]:
        sch.compute_inline(b)
    tile = tile_dot(sch, anchor, INS, n_spatial=3)
    epilogue = blocks[-1]  # parallel rows, vectorized channels
    sch.parallel(sch.fuse(*sch.get_loops(epilogue)[:2]))
    vectorize_channels(sch, epilogue, 16)  # last: a channel remainder splits the block in two
    return f"register tile {tile}: {tile.rows} pixels x {tile.blocks * INS.lanes} channels"


print("\n4. tensorized dot product, requantize as a separate loop over the int32 result")
run(reschedule(before_schedule(layer_module(), packed=True), tensorize_only), "   tensorized")

# ---- 5. fused epilogue ------------------------------------------------------------------------
print("\n5. requantize fused per register tile")
fused = reschedule(
    before_schedule(layer_module(), packed=True),
    lambda sch, anchor: schedule_dot_kernel(sch, anchor, INS, n_spatial=3),
)
run(fused, "   tensorized + fused epilogue")

# ---- 6. the accumulator tile on the stack (what the pipeline does) ------------------------------
# TVM 0.27 turns the per-tile int32 scratch buffer (rows x channels x 4 bytes, over 1 KiB) into
# a TVMBackendAllocWorkspace/FreeWorkspace pair inside the parallel tile loop.  The schedule
# stage marks its kernels with `qnn.stack_buffers`, and tvm_qnn_ext's TIR host pass keeps such
# buffers as a stack alloca (tvm_qnn_ext/target/stack_buffers.py).
print("\n6. the accumulator tile as a stack alloca (the 'qnn' pipeline's schedule)")
for gv, func in list(fused.functions.items()):
    if isinstance(func, tvm.tirx.PrimFunc):
        fused[gv] = func.with_attr(stack_buffers.ATTR, True)
ex = run(fused, "   + scratch tile on the stack")
asm = assembly(ex)
for mnemonic in ("vpdpbusd", "vpmaddubsw", "vpmaddwd"):
    print(f"   {mnemonic}: {count_instruction(asm, mnemonic)} in the generated assembly")
if INS.name == "avx512_vnni":
    assert count_instruction(asm, "vpdpbusd") > 0

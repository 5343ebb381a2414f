"""A standalone int8 GEMM ``C[m, n] = sum_k A[m, k] (u8) * W[n, k] (s8)`` built with the same
tensorized schedule as the conv2d/dense kernels: for kernel benchmarks and assembly checks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import s_tir, te

from . import dot_product
from .asm import assembly
from .cpu import resolve_target
from .packing import pack_weights, round_up
from .schedules.dot_tiling import Tile, tile_dot


@dataclass
class Int8Gemm:
    m: int
    n: int
    k: int
    instruction: dot_product.DotInstruction
    tile: Tile
    executable: tvm.runtime.Executable

    def __post_init__(self):
        self._func = self.executable.jit()["gemm"]
        self._out = tvm.runtime.tensor(np.zeros((self.m, self.n), "int32"))

    @property
    def ops(self) -> int:
        """Integer operations per call (one multiply and one add per product)."""
        return 2 * self.m * self.n * self.k

    def pack(self, w: np.ndarray) -> tvm.runtime.Tensor:
        """``W[n, k]`` int8 in the instruction's packed tile layout (done once, ahead of time)."""
        if w.shape != (self.n, self.k) or w.dtype != np.int8:
            raise ValueError(
                f"weights must be int8 of shape {(self.n, self.k)}, got {w.dtype}{w.shape}"
            )
        ins = self.instruction
        return tvm.runtime.tensor(pack_weights(w, ins.lanes, ins.reduction))

    def run(self, a: tvm.runtime.Tensor, packed: tvm.runtime.Tensor) -> tvm.runtime.Tensor:
        self._func(a, packed, self._out)
        return self._out

    def __call__(self, a: np.ndarray, w: np.ndarray) -> np.ndarray:
        if a.shape != (self.m, self.k) or a.dtype != np.uint8:
            raise ValueError(f"activations must be uint8 of shape {(self.m, self.k)}")
        return self.run(tvm.runtime.tensor(a), self.pack(w)).numpy()

    def seconds(self, number: int = 20, repeat: int = 5) -> float:
        """Median seconds per call on random data."""
        rng = np.random.default_rng(0)
        a = tvm.runtime.tensor(rng.integers(0, 256, (self.m, self.k), dtype=np.uint8))
        b = self.pack(rng.integers(-128, 128, (self.n, self.k), dtype=np.int8))
        timer = self.executable.jit().time_evaluator(
            "gemm", tvm.cpu(), number=number, repeat=repeat
        )
        return float(np.median(timer(a, b, self._out).results))

    def gops(self, number: int = 20, repeat: int = 5) -> float:
        return self.ops / self.seconds(number, repeat) / 1e9

    def assembly(self) -> str:
        return assembly(self.executable)


def gemm_te(m: int, n: int, k: int, ins: dot_product.DotInstruction) -> list[te.Tensor]:
    kp, np_ = round_up(k, ins.reduction), round_up(n, ins.lanes)
    a = te.placeholder((m, k), "uint8", name="A")
    b = te.placeholder(
        (np_ // ins.lanes, kp // ins.reduction, ins.lanes, ins.reduction), "int8", name="W"
    )
    if kp != k:
        a_in = te.compute(
            (m, kp),
            lambda i, j: tvm.tirx.if_then_else(
                j < k, a[i, tvm.tirx.min(j, k - 1)], tvm.tirx.const(0, "uint8")
            ),
            name="pad",
        )
    else:
        a_in = a
    r = te.reduce_axis((0, kp), name="k")
    lanes, red = ins.lanes, ins.reduction
    dot = te.compute(
        (m, np_),
        lambda i, j: te.sum(
            a_in[i, r].astype("int32")
            * b[j // lanes, r // red, j % lanes, r % red].astype("int32"),
            axis=r,
        ),
        name="dot",
    )
    out = te.compute((m, n), lambda i, j: dot[i, j], name="out")
    return [a, b, out]


def build_int8_gemm(
    m: int, n: int, k: int, target="native", instruction: str | None = None
) -> Int8Gemm:
    """Compile the GEMM for ``target`` with its best (or the named) dot-product instruction."""
    tgt = resolve_target(target)
    ins = dot_product.select(tgt, instruction)
    sch = s_tir.Schedule(
        te.create_prim_func(gemm_te(m, n, k, ins)).with_attr("global_symbol", "gemm")
    )
    if k % ins.reduction:
        pad = sch.get_sblock("pad")
        sch.vectorize(sch.get_loops(pad)[-1])
    tile = tile_dot(sch, sch.get_sblock("dot"), ins, n_spatial=1, epilogue=sch.get_sblock("out"))
    ex = tvm.compile(tvm.IRModule({"gemm": sch.mod["main"]}), tgt)
    return Int8Gemm(m, n, k, ins, tile, ex)

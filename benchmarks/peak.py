"""The int8 kernel bench: this machine's measured vpdpbusd peak, and int8 GEMM GOPS as % of it.

    /work/venv/bin/python benchmarks/peak.py            # 1 and 2 threads, markdown
    /work/venv/bin/python benchmarks/peak.py --quick    # 1 thread, 512^3 and 4 layer shapes

The peak kernel runs ``CHAINS`` independent ``vpdpbusd`` accumulator chains per thread (enough
to hide the instruction's latency), built with TVM/LLVM from a TIR loop that calls
``llvm.x86.avx512.vpdpbusd.512`` (or ``.256`` with AVX-VNNI only); one instruction is
``4 * lanes`` multiply-adds, counted as 2 ops each.  GEMM shapes: 512x512x512 and every
distinct CONV_2D of the cached MobileNetV2-224 model as a GEMM (M = output pixels,
N = output channels, K = kh * kw * input channels).  The GEMM is
``tvm_qnn_ext.target.gemm.build_int8_gemm``, the schedule the conv2d/dense kernels use.
Without VNNI the peak is skipped and the GEMM figures are printed alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tvm
from tvm.script import tirx as T

from tvm_qnn_ext.target.cpu import detect_cpu, resolve_target

CHAINS = 12
ITERATIONS = 200_000
MOBILENET = "mobilenet_v2_224_int8_per_channel"


def vnni_instruction() -> tuple[str, int] | None:
    """(LLVM intrinsic, int32 lanes) of the widest VNNI dot product this CPU has, or None."""
    cpu = detect_cpu()
    if cpu.has("avx512vnni"):
        return "llvm.x86.avx512.vpdpbusd.512", 16
    if cpu.has("avxvnni"):
        return "llvm.x86.avx512.vpdpbusd.256", 8
    return None


def _peak_kernel(intrin: str, lanes: int, threads: int, iterations: int) -> tvm.tirx.PrimFunc:
    nbytes, width, acc_type = 4 * lanes, CHAINS * lanes, f"int32x{lanes}"

    @T.prim_func
    def peak(
        a: T.Buffer((nbytes,), "int8"),
        b: T.Buffer((nbytes,), "int8"),
        out: T.Buffer((threads, width), "int32"),
    ):
        T.func_attr({"global_symbol": "peak", "tirx.noalias": True})
        for t in T.parallel(threads):
            acc = T.alloc_buffer((width,), "int32", scope="local")
            for c in T.unroll(CHAINS):
                acc[T.ramp(c * lanes, 1, lanes)] = T.broadcast(0, lanes)
            for _ in range(iterations):
                for c in T.unroll(CHAINS):
                    acc[T.ramp(c * lanes, 1, lanes)] = T.call_llvm_pure_intrin(
                        acc_type,
                        intrin,
                        acc[T.ramp(c * lanes, 1, lanes)],
                        a[T.ramp(0, 1, nbytes)],
                        b[T.ramp(0, 1, nbytes)],
                    )
            for c in range(CHAINS):
                out[t, T.ramp(c * lanes, 1, lanes)] = acc[T.ramp(c * lanes, 1, lanes)]

    return peak


def measure_peak_gops(threads: int, repeat: int = 7) -> float | None:
    """Best int8 GOPS of the VNNI throughput kernel over ``repeat`` runs (None without VNNI).

    Checks the result too: all-ones operands give ``4 * iterations`` in every lane.
    """
    found = vnni_instruction()
    if found is None:
        return None
    intrin, lanes = found
    func = _peak_kernel(intrin, lanes, threads, ITERATIONS)
    run = tvm.compile(tvm.IRModule({"peak": func}), resolve_target("native")).jit()["peak"]
    a = tvm.runtime.tensor(np.ones(4 * lanes, "int8"))
    b = tvm.runtime.tensor(np.ones(4 * lanes, "int8"))
    out = tvm.runtime.tensor(np.zeros((threads, CHAINS * lanes), "int32"))
    run(a, b, out)
    if not np.all(out.numpy() == 4 * ITERATIONS):
        raise RuntimeError(f"peak kernel computed {out.numpy().ravel()[:4]}, not {4 * ITERATIONS}")
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        run(a, b, out)
        best = min(best, time.perf_counter() - t0)
    ops = 2 * 4 * lanes * CHAINS * ITERATIONS * threads
    return ops / best / 1e9


def mobilenet_gemm_shapes() -> list[tuple[int, int, int]]:
    """Every distinct CONV_2D of the cached MobileNetV2-224 model as (M, N, K); empty if absent."""
    from tvm_qnn_ext.frontend.tflite.reader import read_model
    from tvm_qnn_ext.models import default_cache_dir

    path = default_cache_dir() / f"{MOBILENET}.tflite"
    if not path.is_file():
        return []
    g = read_model(path)
    shapes = []
    for op in g.operators:
        if op.name != "CONV_2D":
            continue
        o, kh, kw, ci = g.tensors[op.inputs[1]].shape  # OHWI
        _, oh, ow, _ = g.tensors[op.outputs[0]].shape
        shape = (oh * ow, o, kh * kw * ci)
        if shape not in shapes:
            shapes.append(shape)
    return shapes


def gemm_gops(shapes: list[tuple[int, int, int]]) -> list[dict]:
    """GOPS of ``build_int8_gemm`` for each (M, N, K), with whether its assembly has vpdpbusd."""
    try:
        from tvm_qnn_ext.target.gemm import build_int8_gemm
    except ImportError as e:
        return [{"shape": list(s), "error": f"build_int8_gemm unavailable ({e})"} for s in shapes]
    from tvm_qnn_ext.target.asm import count_instruction

    rows = []
    for m, n, k in shapes:
        gemm = build_int8_gemm(m, n, k, "native")
        number = max(1, int(2e8 / gemm.ops))  # about 0.1-0.2 s per repeat at 1-2 TOPS
        rows.append(
            {
                "shape": [m, n, k],
                "instruction": getattr(gemm.instruction, "name", str(gemm.instruction)),
                "gops": gemm.gops(number=number, repeat=5),
                "vpdpbusd": count_instruction(gemm.assembly(), "vpdpbusd"),
            }
        )
    return rows


def _measure(threads: int, quick: bool) -> dict:
    shapes = [(512, 512, 512)] + mobilenet_gemm_shapes()
    if quick:
        shapes = shapes[:5]
    return {
        "threads": threads,
        "cpu": detect_cpu().mcpu,
        "features": sorted(detect_cpu().features),
        "peak_gops": measure_peak_gops(threads),
        "gemm": gemm_gops(shapes),
    }


def kernel_bench(quick: bool = False, threads: list[int] | None = None) -> list[dict]:
    """Peak and GEMM figures per thread count, each measured in its own process."""
    results = []
    for n in threads or ([1] if quick else [1, 2]):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--json", "--threads", str(n)]
        proc = subprocess.run(
            cmd + (["--quick"] if quick else []),
            env=dict(os.environ, TVM_NUM_THREADS=str(n)),
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
            results.append({"threads": n, "error": tail})
            continue
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return results


def kernel_markdown(results: list[dict]) -> str:
    out = ["\n### int8 kernels: GEMM GOPS vs the measured vpdpbusd peak\n"]
    for r in results:
        if "error" in r:
            out.append(f"{r['threads']} thread(s): failed: {r['error']}\n")
            continue
        peak = r["peak_gops"]
        peak_text = f"{peak:.0f} GOPS" if peak else "n/a (no VNNI on this CPU)"
        out.append(f"{r['threads']} thread(s), {r['cpu']}: measured peak {peak_text}\n")
        out.append("| M x N x K | instruction | GOPS | % of peak | vpdpbusd in asm |")
        out.append("|---|---|---|---|---|")
        for g in r["gemm"]:
            shape = "x".join(map(str, g["shape"]))
            if "error" in g:
                out.append(f"| {shape} | - | - | - | {g['error']} |")
                continue
            pct = f"{100 * g['gops'] / peak:.0f}%" if peak else "-"
            out.append(
                f"| {shape} | {g['instruction']} | {g['gops']:.0f} | {pct} | {g['vpdpbusd']} |"
            )
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, nargs="+")
    p.add_argument("--json", action="store_true", help="measure in this process, print JSON")
    args = p.parse_args(argv)
    if args.json:
        (n,) = args.threads or [1]
        if os.environ.get("TVM_NUM_THREADS") != str(n):
            p.error(f"--json measures in this process: set TVM_NUM_THREADS={n}")
        print(json.dumps(_measure(n, args.quick)))
        return 0
    print(kernel_markdown(kernel_bench(args.quick, args.threads)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
